//! The strict reading of a `/predict` body: straight from the bytes into
//! each row's model features, in the model's order. Apart from the route
//! because it is serde's visitor machinery, long and of one concern: a value
//! keeps the text it was written with (`3.0` stays `3.0`, as in a CSV
//! field), strings are borrowed from the body rather than copied into a map
//! per row, and keys that are no feature are kept only by name, so the route
//! can name them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// One feature value of a row, as the CSV engine would see the field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// The key is not there: an error (every feature is required).
    Absent,
    /// `null`: an empty field.
    Null,
    /// The text a CSV field would hold: a string's content, a number as
    /// written.
    Text(Cow<'a, str>),
    /// A list or an object: no field value.
    Unusable(&'static str),
}

/// A row's model features in the model's order, and the keys that are no
/// feature of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub fields: Vec<Field<'a>>,
    pub unknown: Vec<String>,
}

/// A parsed request.
pub struct Parsed<'a> {
    pub key: &'static str,
    pub rows: Vec<Row<'a>>,
    pub explain: usize,
}

/// Parses a request body keeping only the model's features, borrowing
/// strings from the body: no map per row, and other fields are skipped.
pub fn parse_request<'a>(body: &'a [u8], names: &[&str]) -> Result<Parsed<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = RequestSeed { names }.deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

struct RequestSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parsed<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            r#"an object like {"flights": [{"OPERA": ..., "TIPOVUELO": ..., "MES": ...}]} or {"instances": [...]} (a bare list is not accepted: wrap it in "instances")"#,
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut rows: Option<(&'static str, Vec<Row<'de>>)> = None;
        let mut explain = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "flights" | "instances" => {
                    let which = if key == "flights" { "flights" } else { "instances" };
                    match &rows {
                        Some((given, _)) if *given == which => {
                            return Err(de::Error::custom(format!("`{which}` is given twice")));
                        }
                        Some(_) => return Err(de::Error::custom("give flights or instances, not both")),
                        None => {}
                    }
                    rows = Some((which, map.next_value_seed(RowsSeed { names: self.names })?));
                }
                "explain" if explain.is_some() => {
                    return Err(de::Error::custom("`explain` is given twice"));
                }
                "explain" => explain = Some(map.next_value()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field `{other}`, expected `flights`, `instances` or `explain`"
                    )));
                }
            }
        }
        let (key, rows) = rows.ok_or_else(|| de::Error::custom("the body needs a \"flights\" list"))?;
        Ok(Parsed {
            key,
            rows,
            explain: explain.unwrap_or(0),
        })
    }
}

struct RowsSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<Row<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<Row<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(4096));
        while let Some(row) = seq.next_element_seed(RowSeed { names: self.names })? {
            rows.push(row);
        }
        Ok(rows)
    }
}

struct RowSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = vec![Field::Absent; self.names.len()];
        let mut unknown = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key.as_ref()) {
                // A key given twice would otherwise be decided silently by
                // whichever came last: say so instead.
                Some(j) if fields[j] != Field::Absent => {
                    return Err(de::Error::custom(format!("feature `{key}` is given twice in one row")));
                }
                Some(j) => fields[j] = map.next_value::<FieldValue<'de>>()?.0,
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                    unknown.push(key.into_owned());
                }
            }
        }
        Ok(Row { fields, unknown })
    }
}

/// A JSON value as the text a CSV field would hold: a string's content, a
/// number exactly as written (so `3.0` stays `3.0`, as it would in a CSV).
struct FieldValue<'a>(Field<'a>);

impl<'de> Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let field = match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => Field::Text(Cow::Borrowed(&text[1..text.len() - 1])),
            Some(b'"') => Field::Text(Cow::Owned(
                serde_json::from_str::<String>(text).map_err(de::Error::custom)?,
            )),
            Some(b'[') => Field::Unusable("a list"),
            Some(b'{') => Field::Unusable("an object"),
            _ if text == "null" => Field::Null,
            _ => Field::Text(Cow::Borrowed(text)),
        };
        Ok(FieldValue(field))
    }
}
