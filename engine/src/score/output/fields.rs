//! A record's fields, for the formats that re-serialise them: split with
//! the CSV rules of the input (its delimiter, `"` quoting) without an
//! allocation per field.

/// Splits records into fields, reusing its buffers.
pub struct Fields {
    reader: csv_core::Reader,
    /// The unquoted fields of the current record, back to back.
    text: Vec<u8>,
    /// The end of each field in `text`.
    ends: Vec<usize>,
    count: usize,
}

impl Fields {
    pub fn new(delimiter: u8) -> Fields {
        Fields {
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

    pub fn len(&self) -> usize {
        self.count
    }

    /// Field `i` of the record, `None` past its last field. Text that is not
    /// UTF-8 (a file that changes encoding after its first 64 KiB) is
    /// replaced with U+FFFD rather than failing the file.
    pub fn get(&self, i: usize) -> Option<std::borrow::Cow<'_, str>> {
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
        let mut fields = Fields::new(delimiter);
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
