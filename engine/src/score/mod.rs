//! The scoring engine: a CSV byte stream in, predictions and rejected rows
//! out, in bounded memory whatever the file size.
//!
//! The rooms, in the order a byte meets them:
//!
//! - [`parquet_in`]: a Parquet object read by row group through ranged
//!   reads, its rows scored as JSON Lines rows;
//! - [`input`]: raw bytes to UTF-8 text (gzip, byte-order marks, encodings)
//!   and the delimiter; text that starts with `{` is JSON Lines, read line
//!   by line by `jsonl` instead of the CSV rooms below;
//! - [`chunker`]: the text cut at record ends into chunks of a few MiB;
//! - [`records`]: the same record rules over a chunk in memory, so the
//!   checks of a chunk agree with where it was cut;
//! - [`plan`]: what is decided once per file (where the model's columns are,
//!   the schema polars parses each chunk with) and the scoring of one chunk;
//! - [`logit`]: the model's logit over a parsed chunk, with polars, by the
//!   same maths as one row online ([`crate::model::Term::contribution`]);
//! - [`output`]: the predictions in the format asked for (by default every
//!   kept input record exactly as it came, with the probability and the
//!   prediction appended; or JSON Lines, or Parquet);
//! - [`rejects`]: rows the model cannot take, with their line and reason;
//! - [`pipeline`]: reading, scoring and writing overlapped on three threads
//!   with bounded channels.
//!
//! The same engine serves local files and Cloud Storage objects: it only sees
//! a [`Read`](std::io::Read) and a [`Write`](std::io::Write). A read error that
//! is the source's fault (storage), not the data's, reaches it wrapped in a
//! [`SourceError`], so it is reported as such rather than as a corrupt file.

pub mod chunker;
pub mod input;
mod jsonl;
pub mod logit;
pub mod output;
pub mod parquet_in;
pub mod pipeline;
pub mod plan;
pub mod records;
pub mod rejects;
pub mod shard;

use std::io;

use polars::prelude::PolarsError;
use serde::Serialize;

use crate::model::{Evaluation, EvaluationBuilder};
pub use input::InputFormat;
use input::NotText;
pub use output::{OutputFormat, OutputOptions, Provenance, format_explanation};
pub use pipeline::score;
pub use rejects::{CsvRejects, RejectSink, RejectedRow};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Target chunk size: memory in flight is a small multiple of it.
    pub chunk_bytes: usize,
    /// A longer record is rejected and skipped, never buffered.
    pub max_record_bytes: usize,
    /// When above 0, add an `explanation` column with that many top
    /// contributions per row.
    pub explain: usize,
    /// Set when scoring one range of a file ([`shard`]): the file's text
    /// format, decided once from the file's start (not from the range's),
    /// and an empty range is no error.
    pub range_of: Option<input::Partial>,
    /// The predictions' format (and provenance columns).
    pub output: OutputOptions,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            chunk_bytes: 8 << 20,
            max_record_bytes: 16 << 20,
            explain: 0,
            range_of: None,
            output: OutputOptions::default(),
        }
    }
}

/// What one scored file amounted to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub rows_in: u64,
    pub rows_scored: u64,
    pub rows_rejected: u64,
    pub blank_lines: u64,
    pub format: InputFormat,
    pub columns: Vec<String>,
    /// Output columns appended after the input's.
    pub output_columns: Vec<String>,
    /// Values that added nothing to a scored row's logit, per column: an
    /// unknown or missing category under `handle_unknown: ignore`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ignored_values: std::collections::BTreeMap<String, u64>,
    /// Rows whose label column held 0 or 1 (metrics are over these).
    pub labelled_rows: u64,
    pub metrics: Option<Evaluation>,
    /// What `metrics` was computed from, for merging the metrics of the
    /// ranges of one file.
    #[serde(skip)]
    pub evaluation: EvaluationBuilder,
    pub seconds: f64,
}

/// Why a file as a whole cannot be scored. Permanent: retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRejection {
    #[error(transparent)]
    NotText(#[from] NotText),
    #[error("the file has a header line but no data rows")]
    HeaderOnly,
    #[error("missing required column{} {} (the header has: {})", if .missing.len() > 1 { "s" } else { "" }, .missing.join(", "), .found.join(", "))]
    MissingColumns { missing: Vec<String>, found: Vec<String> },
    #[error("column {0:?} appears more than once in the header; which one to use is ambiguous")]
    DuplicateColumn(String),
    #[error("the input cannot be decoded: {0}")]
    Undecodable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{0}")]
    Rejected(#[from] FileRejection),
    /// Reading the input failed in storage: possibly transient.
    #[error("reading the input failed: {0}")]
    Read(io::Error),
    #[error("writing the output failed: {0}")]
    Write(io::Error),
    #[error("scoring engine error: {0}")]
    Engine(#[from] PolarsError),
}

impl ScoreError {
    /// A read error wrapping a [`SourceError`] is the source's (possibly
    /// transient); anything else from the reader (a truncated gzip, say) is
    /// the data's fault and permanent.
    pub(crate) fn from_read(e: io::Error) -> ScoreError {
        if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
            ScoreError::Read(e)
        } else {
            ScoreError::Rejected(FileRejection::Undecodable(e.to_string()))
        }
    }
}

/// An error of the byte source (storage, a network), as opposed to the
/// bytes' content: whoever feeds the engine wraps its own errors in one,
/// inside an `io::Error`, and finds them again in [`ScoreError::Read`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    /// `error` as an `io::Error` the engine recognises as the source's.
    pub fn io(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
        io::Error::other(SourceError(Box::new(error)))
    }

    /// The source's own error in an `io::Error` from [`ScoreError::Read`],
    /// if that is what it holds.
    pub fn find<E: std::error::Error + 'static>(e: &io::Error) -> Option<&E> {
        e.get_ref()?.downcast_ref::<SourceError>()?.0.downcast_ref::<E>()
    }
}
