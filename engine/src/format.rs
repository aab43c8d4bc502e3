//! Input formats, told from an object's name: the one place a new format is
//! registered. (The engine then reads the bytes: gzip by its magic number,
//! JSON Lines by its first `{`.)

use serde::{Deserialize, Serialize};

/// A format the engine can score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Delimited text, optionally gzip-compressed (`.csv`, `.csv.gz`).
    Csv,
    /// One JSON object per line, optionally gzip-compressed (`.jsonl`,
    /// `.ndjson`, and `.gz` of either).
    JsonLines,
    /// Apache Parquet (`.parquet`), read by ranges, never streamed whole.
    Parquet,
}

impl Format {
    /// The format an object's name says it is in, if any (case-insensitive).
    pub fn for_object(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            return Some(Format::Parquet);
        }
        let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(Format::JsonLines)
        } else {
            None
        }
    }

    /// What the name must end with, for messages.
    pub const ACCEPTED: &'static str = ".csv, .jsonl or .ndjson (or .gz of one), or .parquet";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_the_format() {
        for (name, format) in [
            ("a.csv", Some(Format::Csv)),
            ("A.CSV", Some(Format::Csv)),
            ("x/y.csv.gz", Some(Format::Csv)),
            ("a.csv.tmp", None),
            ("a.json", None),
            ("a.gz", None),
            ("events/x.jsonl", Some(Format::JsonLines)),
            ("x.NDJSON.gz", Some(Format::JsonLines)),
            ("y/z.parquet", Some(Format::Parquet)),
            ("y/z.parquet.gz", None),
        ] {
            assert_eq!(Format::for_object(name), format, "{name}");
        }
    }
}
