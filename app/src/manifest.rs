//! Where a job's outputs go, and the manifest that commits them.
//!
//! For input `a/b.csv` at generation `G` the output bucket holds:
//!
//! ```text
//! a/b.csv/G/predictions.csv   every scored row: input columns, probability, prediction
//! a/b.csv/G/errors.csv        rejected rows (line, row, column, value, reason), if any
//! a/b.csv/G/manifest.json     written last, create-only: the commit point
//! _leases/a/b.csv/G/NNNNNN.json   who is scoring it, until when
//! ```
//!
//! The input name is kept whole and followed by `/G/`, so outputs of two
//! different inputs or generations can never collide, and a re-upload gets
//! fresh outputs. Should a crashed attempt have left a predictions or errors
//! object without a manifest, the next attempt writes `predictions.2.csv`
//! (and so on): the manifest always names the objects it commits.

use serde::{Deserialize, Serialize};

use crate::event::{Generation, ObjectName};
use crate::model::Metrics;
use crate::score::InputFormat;

/// Prefix of lease objects in the output bucket (cleaned by a lifecycle rule).
pub const LEASE_PREFIX: &str = "_leases/";
/// Prefix of models fitted at start from `TRAINING_DATA_URI`.
pub const MODEL_PREFIX: &str = "_models/";

/// The output object names for one input generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputNames {
    prefix: String,
    lease_prefix: String,
}

impl OutputNames {
    pub fn new(input: &ObjectName, generation: Generation) -> OutputNames {
        OutputNames {
            prefix: format!("{}/{}/", input.as_str(), generation),
            lease_prefix: format!("{LEASE_PREFIX}{}/{}/", input.as_str(), generation),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.prefix)
    }

    /// `predictions.csv`, then `predictions.2.csv`, ... for attempt `n`.
    pub fn predictions(&self, n: u32) -> String {
        self.numbered("predictions", n)
    }

    pub fn errors(&self, n: u32) -> String {
        self.numbered("errors", n)
    }

    fn numbered(&self, stem: &str, n: u32) -> String {
        if n <= 1 {
            format!("{}{stem}.csv", self.prefix)
        } else {
            format!("{}{stem}.{n}.csv", self.prefix)
        }
    }

    pub fn lease(&self, seq: u32) -> String {
        format!("{}{seq:06}.json", self.lease_prefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every row was scored or rejected with a reason.
    Scored,
    /// The file as a whole could not be scored; `failure` says why.
    Failed,
}

/// The commit record of one input generation. Re-running the same input with
/// the same model yields the same manifest except `timings` and the output
/// objects' `generation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub status: Status,
    pub input: InputInfo,
    pub outputs: Outputs,
    pub rows: Rows,
    pub model: ModelInfo,
    pub labelled_rows: u64,
    pub metrics: Option<Metrics>,
    pub failure: Option<String>,
    pub timings: Timings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    pub uri: String,
    pub bucket: String,
    pub name: String,
    /// As a string: local generations exceed JSON's exact integers.
    pub generation: String,
    pub size: u64,
    pub format: Option<InputFormatInfo>,
    pub columns: Vec<String>,
}

/// [`InputFormat`] as stored (owned, deserialisable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFormatInfo {
    pub compression: String,
    pub encoding: String,
    pub byte_order_mark: bool,
    pub delimiter: String,
}

impl From<&InputFormat> for InputFormatInfo {
    fn from(f: &InputFormat) -> Self {
        InputFormatInfo {
            compression: f.compression.to_owned(),
            encoding: f.encoding.to_owned(),
            byte_order_mark: f.byte_order_mark,
            delimiter: f.delimiter.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Outputs {
    pub predictions: Option<OutputObject>,
    pub errors: Option<OutputObject>,
    /// The extra columns appended to every scored row.
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputObject {
    pub name: String,
    pub uri: String,
    pub size: u64,
    /// CRC32C of the content, 8 hex digits.
    pub crc32c: String,
    pub generation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rows {
    #[serde(rename = "in")]
    pub input: u64,
    pub scored: u64,
    pub rejected: u64,
    pub blank_lines: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub target: String,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub started_at: String,
    pub finished_at: String,
    /// Reading, scoring and writing the predictions.
    pub score_ms: u64,
    /// Everything, lease and commit included.
    pub total_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_input_whole_and_are_keyed_by_generation() {
        let n = OutputNames::new(&ObjectName::parse("a/b.csv").unwrap(), Generation::new(17).unwrap());
        assert_eq!(n.manifest(), "a/b.csv/17/manifest.json");
        assert_eq!(n.predictions(1), "a/b.csv/17/predictions.csv");
        assert_eq!(n.predictions(2), "a/b.csv/17/predictions.2.csv");
        assert_eq!(n.errors(1), "a/b.csv/17/errors.csv");
        assert_eq!(n.lease(3), "_leases/a/b.csv/17/000003.json");
    }

    #[test]
    fn an_input_named_like_an_output_does_not_collide() {
        let a = OutputNames::new(&ObjectName::parse("x.csv").unwrap(), Generation::new(5).unwrap());
        let b = OutputNames::new(
            &ObjectName::parse("x.csv/5/predictions.csv").unwrap(),
            Generation::new(5).unwrap(),
        );
        assert_ne!(a.predictions(1), b.predictions(1));
        assert!(!b.manifest().starts_with(&a.manifest()));
    }
}
