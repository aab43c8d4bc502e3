//! A record's fields, for the formats that re-serialise them: a CSV record
//! split with the CSV rules of the input (its delimiter, `"` quoting)
//! without an allocation per field; a JSON Lines record's values under the
//! file's column names.

use std::borrow::Cow;

/// Splits records of either input kind.
pub enum Fields {
    /// Boxed: the CSV reader's state is large.
    Csv(Box<CsvFields>),
    Json(JsonFields),
}

impl Fields {
    /// For records of a file with these `columns`: JSON Lines when
    /// `json_lines`, else CSV in `delimiter`.
    pub fn new(json_lines: bool, delimiter: u8, columns: &[String]) -> Fields {
        if json_lines {
            Fields::Json(JsonFields {
                index: Names::new(columns.iter().map(String::as_str)),
                values: Vec::new(),
            })
        } else {
            Fields::Csv(Box::new(CsvFields::new(delimiter)))
        }
    }

    pub fn split(&mut self, record: &[u8]) {
        match self {
            Fields::Csv(f) => f.split(record),
            Fields::Json(f) => f.split(record),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Fields::Csv(f) => f.count,
            Fields::Json(f) => f.values.len(),
        }
    }

    /// Field `i` of the record; `None` past its last field, and for a JSON
    /// value that is null or absent.
    pub fn get(&self, i: usize) -> Option<Cow<'_, str>> {
        match self {
            Fields::Csv(f) => f.get(i),
            Fields::Json(f) => f.values.get(i)?.as_deref().map(Cow::Borrowed),
        }
    }
}

/// A JSON object's values as text, in the file's column order: a string as
/// it is, a number or a boolean as JSON writes it, an array or object as
/// its JSON text; null (or absent) as `None`.
pub struct JsonFields {
    index: Names,
    values: Vec<Option<String>>,
}

impl JsonFields {
    fn split(&mut self, record: &[u8]) {
        let picked = pick(record, &self.index).unwrap_or_else(|_| vec![None; self.index.len()]);
        self.values = picked.iter().map(|v| v.as_ref().and_then(value_text)).collect();
    }
}

/// Column names and their positions, for [`pick`].
pub struct Names {
    positions: std::collections::HashMap<String, usize>,
    len: usize,
}

impl Names {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Names {
        let mut positions = std::collections::HashMap::new();
        let mut len = 0;
        for (i, name) in names.into_iter().enumerate() {
            positions.entry(name.to_owned()).or_insert(i);
            len = i + 1;
        }
        Names { positions, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// The values of the named keys of a JSON object (the last of a repeated
/// key), each at its name's position; other keys are skipped, not built.
/// An error if the text is not one JSON object.
pub fn pick(text: &[u8], names: &Names) -> Result<Vec<Option<serde_json::Value>>, serde_json::Error> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Pick<'n>(&'n Names);
    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = Vec<Option<serde_json::Value>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![None; self.0.len()];
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match self.0.positions.get(key.as_ref()) {
                    Some(&i) => out[i] = Some(map.next_value::<serde_json::Value>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let out = (&mut de).deserialize_map(Pick(names))?;
    de.end()?;
    Ok(out)
}

/// A JSON value as the text a CSV field would hold.
pub fn value_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Splits CSV records into fields, reusing its buffers.
pub struct CsvFields {
    reader: csv_core::Reader,
    /// The unquoted fields of the current record, back to back.
    text: Vec<u8>,
    /// The end of each field in `text`.
    ends: Vec<usize>,
    count: usize,
}

impl CsvFields {
    pub fn new(delimiter: u8) -> CsvFields {
        CsvFields {
            reader: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            text: Vec::new(),
            ends: vec![0; 64],
            count: 0,
        }
    }

    /// Splits one record (its bytes, line end excluded).
    pub fn split(&mut self, record: &[u8]) {
        use csv_core::ReadRecordResult::*;
        self.reader.reset();
        self.text.clear();
        self.text.resize(record.len().max(1), 0);
        let (mut input, mut out_at, mut ends_at) = (record, 0, 0);
        loop {
            let (result, read, wrote, ended) =
                self.reader
                    .read_record(input, &mut self.text[out_at..], &mut self.ends[ends_at..]);
            input = &input[read..];
            out_at += wrote;
            ends_at += ended;
            match result {
                // An empty input ends the record: the caller gave one whole.
                InputEmpty => {
                    input = &[];
                }
                OutputFull => {
                    let len = self.text.len();
                    self.text.resize(len * 2, 0);
                }
                OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                Record | End => break,
            }
        }
        self.count = ends_at;
    }

    /// Field `i` of the record, `None` past its last field. Text that is not
    /// UTF-8 (a file that changes encoding after its first 64 KiB) is
    /// replaced with U+FFFD rather than failing the file.
    pub fn get(&self, i: usize) -> Option<Cow<'_, str>> {
        if i >= self.count {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(String::from_utf8_lossy(&self.text[start..self.ends[i]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(delimiter: u8, record: &str) -> Vec<String> {
        let mut fields = Fields::new(false, delimiter, &[]);
        fields.split(record.as_bytes());
        (0..fields.len())
            .map(|i| fields.get(i).unwrap_or_default().into_owned())
            .collect()
    }

    #[test]
    fn quoted_fields_lose_their_quotes() {
        assert_eq!(split(b',', r#"a,"b,c","d ""e""",,f"#), ["a", "b,c", "d \"e\"", "", "f"]);
        assert_eq!(split(b';', "x;\"multi\nline\";1.5"), ["x", "multi\nline", "1.5"]);
    }

    #[test]
    fn long_records_and_many_fields_grow_the_buffers() {
        let record = (0..500).map(|i| format!("\"v{i}\"")).collect::<Vec<_>>().join(",");
        let fields = split(b',', &record);
        assert_eq!(fields.len(), 500);
        assert_eq!(fields[499], "v499");
    }
}
