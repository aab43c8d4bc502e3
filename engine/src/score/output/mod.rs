//! The predictions object in the format asked for: every kept input row
//! with its probability and prediction (and, if asked, an explanation and
//! the row's provenance).
//!
//! - [`csv`]: by default each record exactly as it came, in the input's own
//!   delimiter and quoting, with the new fields appended (byte-for-byte
//!   pass-through); with another delimiter asked for, every field
//!   re-serialised;
//! - [`jsonl`]: one JSON object per row, the header's names as keys;
//! - [`parquet`]: row groups of a fixed number of rows, typed columns,
//!   zstd-compressed, each written when complete so memory stays flat.
//!
//! Each is a [`Sink`] over the output stream, fed the chunks in file order by
//! the pipeline's writer thread.

pub mod csv;
pub(crate) mod fields;
pub mod jsonl;
pub mod parquet;

use std::io::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ScoreError;
pub use csv::format_explanation;

/// The predictions object's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Delimited text, the input's records passed through.
    #[default]
    Csv,
    /// Newline-delimited JSON objects.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 3] = [OutputFormat::Csv, OutputFormat::Jsonl, OutputFormat::Parquet];

    /// The object name's extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Csv => "text/csv",
            OutputFormat::Jsonl => "application/x-ndjson",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Whether rows carry their provenance unless told otherwise: a table
    /// of many files' rows needs it; a CSV keeps its columns as they were.
    pub fn provenance_by_default(self) -> bool {
        !matches!(self, OutputFormat::Csv)
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}: use csv, jsonl or parquet")]
pub struct UnknownOutputFormat(pub String);

impl FromStr for OutputFormat {
    type Err = UnknownOutputFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(OutputFormat::Csv),
            "jsonl" | "ndjson" | "json-lines" | "jsonlines" => Ok(OutputFormat::Jsonl),
            "parquet" => Ok(OutputFormat::Parquet),
            _ => Err(UnknownOutputFormat(s.to_owned())),
        }
    }
}

/// Where each row came from, the same for every row of one file but the
/// row number: with it, a table of many files' predictions traces each row
/// back to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub source_uri: String,
    pub source_generation: i64,
    pub model_version: String,
    /// When the file's scoring started, microseconds since the Unix epoch.
    pub scored_at_micros: i64,
    /// Row numbers are the file's own (as `errors.csv` counts them); a range
    /// scored on its own does not know how many rows precede it, and leaves
    /// them empty.
    pub row_numbers: bool,
}

/// The provenance columns, in order.
pub const PROVENANCE_COLUMNS: [&str; 5] = [
    "source_uri",
    "source_generation",
    "row_number",
    "model_version",
    "scored_at",
];

impl Provenance {
    /// `scored_at` as RFC 3339 (UTC, microseconds), for text formats.
    pub fn scored_at_text(&self) -> String {
        rfc3339_micros(self.scored_at_micros)
    }
}

/// How the predictions are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputOptions {
    pub format: OutputFormat,
    /// CSV only: the delimiter of the output; the input's own when `None`.
    pub delimiter: Option<u8>,
    /// Provenance columns, when asked for.
    pub provenance: Option<Provenance>,
}

/// A chunk's scored rows on their way to the writer: the chunk's bytes and,
/// per kept record, where it is and what it scored.
pub struct Scored {
    pub bytes: Vec<u8>,
    pub rows: Vec<OutRow>,
}

pub struct OutRow {
    /// The record in `Scored::bytes`, line end excluded.
    pub start: usize,
    pub end: usize,
    /// The record's number in the file (data records from 1).
    pub row: u64,
    pub probability: f64,
    pub prediction: bool,
    pub explanation: Option<String>,
}

/// What a sink knows of the file: its header, its columns and the names of
/// the appended columns.
pub struct Shape<'a> {
    pub header_line: &'a [u8],
    pub columns: &'a [String],
    /// The input's delimiter (CSV).
    pub delimiter: u8,
    /// The input is JSON Lines: records are objects, not delimited text.
    pub json_lines: bool,
    /// Appended after the input's columns: probability, prediction, then
    /// explanation and the provenance columns when asked for.
    pub output_columns: &'a [String],
}

/// One output format over the output stream.
pub trait Sink: Send {
    /// Writes a chunk's rows.
    fn rows(&mut self, scored: &Scored) -> Result<(), ScoreError>;
    /// Completes the object (a Parquet footer) and flushes.
    fn finish(self: Box<Self>) -> Result<(), ScoreError>;
}

/// The sink for `options` over `out`; the header (CSV) is written now.
pub fn sink<'w>(
    options: &OutputOptions,
    shape: &Shape<'_>,
    explain: bool,
    out: &'w mut (dyn Write + Send),
) -> Result<Box<dyn Sink + 'w>, ScoreError> {
    let provenance = options.provenance.clone();
    Ok(match options.format {
        OutputFormat::Csv => Box::new(csv::CsvSink::new(shape, options.delimiter, provenance, out)?),
        OutputFormat::Jsonl => Box::new(jsonl::JsonlSink::new(shape, provenance, out)),
        OutputFormat::Parquet => Box::new(parquet::ParquetSink::new(shape, explain, provenance, out)?),
    })
}

/// Column names usable as keys and Parquet fields: an empty name becomes
/// `column_N`, and a repeated one gets `_N` (N its 1-based position).
pub(crate) fn unique_names(columns: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let name = if name.is_empty() {
                format!("column_{}", i + 1)
            } else {
                name.clone()
            };
            if seen.insert(name.clone()) {
                name
            } else {
                let renamed = format!("{name}_{}", i + 1);
                seen.insert(renamed.clone());
                renamed
            }
        })
        .collect()
}

/// `1970-01-01T00:00:00.000000Z` for microseconds since the epoch (UTC).
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{frac:06}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_name_themselves() {
        for format in OutputFormat::ALL {
            assert_eq!(format.extension().parse::<OutputFormat>(), Ok(format));
        }
        assert_eq!("NDJSON".parse::<OutputFormat>(), Ok(OutputFormat::Jsonl));
        assert!("xlsx".parse::<OutputFormat>().is_err());
    }

    #[test]
    fn names_become_unique_keys() {
        let names: Vec<String> = ["a", "", "a", "b"].map(String::from).to_vec();
        assert_eq!(unique_names(&names), ["a", "column_2", "a_3", "b"]);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(1_764_410_400_123_456), "2025-11-29T10:00:00.123456Z");
        assert_eq!(rfc3339_micros(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
