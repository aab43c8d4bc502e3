//! Input formats, told from an object's name: the one place a new format is
//! registered.

use serde::{Deserialize, Serialize};

/// A format the engine can score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Delimited text, optionally gzip-compressed (`.csv`, `.csv.gz`).
    Csv,
}

impl Format {
    /// The format an object's name says it is in, if any (case-insensitive).
    pub fn for_object(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".csv.gz") {
            Some(Format::Csv)
        } else {
            None
        }
    }

    /// What the name must end with, for messages.
    pub const ACCEPTED: &'static str = ".csv or .csv.gz";
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
        ] {
            assert_eq!(Format::for_object(name), format, "{name}");
        }
    }
}
