//! The scoring engine: a CSV byte stream in, predictions and rejected rows
//! out, in bounded memory whatever the file size.
//!
//! The stream is decoded ([`input`]), cut at record ends into chunks of a few
//! megabytes ([`chunker`], on its own thread), and each chunk is parsed by
//! polars from memory, scored with polars expressions and written by polars'
//! batched CSV writer. Rows the model cannot take are split off and reported
//! ([`rejects`]) with their line number and reason.
//!
//! The same engine serves local files and Cloud Storage objects: it only sees
//! a [`Read`] and a [`Write`].

pub mod chunker;
pub mod input;
pub mod rejects;

use std::io::{self, Cursor, Read, Write};
use std::sync::mpsc;
use std::time::Instant;

use polars::prelude::*;
use serde::Serialize;

use crate::model::fit::parse_label;
use crate::model::{Metrics, MetricsAccumulator, Model, Term};
use crate::storage::StorageError;
use chunker::{Chunk, Chunker, Piece};
pub use input::InputFormat;
use input::NotText;
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
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            chunk_bytes: 8 << 20,
            max_record_bytes: 16 << 20,
            explain: 0,
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
    /// Rows whose label column held 0 or 1 (metrics are over these).
    pub labelled_rows: u64,
    pub metrics: Option<Metrics>,
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
    /// Storage errors surface as `io::Error`s wrapping a [`StorageError`];
    /// anything else from the reader (a truncated gzip, say) is the data's
    /// fault and permanent.
    fn from_read(e: io::Error) -> ScoreError {
        if e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
            ScoreError::Read(e)
        } else {
            ScoreError::Rejected(FileRejection::Undecodable(e.to_string()))
        }
    }
}

/// A polars write error as our own, keeping a storage error recognisable.
fn write_error(e: PolarsError) -> ScoreError {
    match e {
        PolarsError::IO { error, .. } => match error.get_ref().and_then(|inner| inner.downcast_ref::<StorageError>()) {
            Some(storage) => ScoreError::Write(storage.clone().into_io()),
            None => ScoreError::Write(io::Error::new(error.kind(), error.to_string())),
        },
        other => ScoreError::Engine(other),
    }
}

/// Scores one CSV stream. `out` receives the predictions CSV (a header even
/// when no row scores); `rejects` receives each rejected row.
pub fn score(
    input: impl Read + Send,
    model: &Model,
    out: &mut (dyn Write + Send),
    rejects: &mut dyn RejectSink,
    options: &ScoreOptions,
) -> Result<Summary, ScoreError> {
    let started = Instant::now();
    let (text, partial) = match input::decode(input).map_err(ScoreError::from_read)? {
        Ok(decoded) => decoded,
        Err(not_text) => return Err(FileRejection::from(not_text).into()),
    };
    let mut chunker = Chunker::new(text, options.chunk_bytes, options.max_record_bytes);
    let header = chunker
        .header()
        .map_err(ScoreError::from_read)?
        .ok_or(FileRejection::NotText(NotText::Empty))?;
    let delimiter = input::sniff_delimiter(&header);
    chunker.set_delimiter(delimiter);
    let columns = parse_header(&header, delimiter)?;
    let plan = Plan::new(model, &columns, delimiter, options)?;

    let mut writer = out;
    write_header(&mut writer, &columns, &plan.output_columns, delimiter).map_err(ScoreError::Write)?;
    let mut state = State::default();

    std::thread::scope(|scope| -> Result<(), ScoreError> {
        // Reading and cutting overlap with parsing and scoring; the bounded
        // channel keeps at most two chunks waiting.
        let (tx, rx) = mpsc::sync_channel::<io::Result<Piece>>(2);
        scope.spawn(move || {
            loop {
                let piece = chunker.next_piece().transpose();
                let stop = !matches!(piece, Some(Ok(_)));
                if let Some(piece) = piece
                    && tx.send(piece).is_err()
                {
                    return;
                }
                if stop {
                    return;
                }
            }
        });
        // Serialising the output overlaps with scoring the next chunk.
        let (frames, frames_rx) = mpsc::sync_channel::<DataFrame>(2);
        let output_schema = &plan.output_schema;
        let writer_thread = scope.spawn(move || -> Result<(), ScoreError> {
            let mut csv_writer = CsvWriter::new(&mut *writer)
                .include_header(false)
                .with_separator(b',')
                .batched(output_schema)
                .map_err(write_error)?;
            for df in frames_rx {
                csv_writer.write_batch(&df).map_err(write_error)?;
            }
            csv_writer.finish().map_err(write_error)?;
            writer.flush().map_err(ScoreError::Write)
        });
        let scoring = (|| -> Result<(), ScoreError> {
            for piece in rx {
                match piece.map_err(ScoreError::from_read)? {
                    Piece::Oversized { row, line, bytes } => {
                        state.rows_in += 1;
                        state.rejected += 1;
                        rejects
                            .reject(&RejectedRow {
                                line,
                                row,
                                column: String::new(),
                                value: String::new(),
                                reason: format!(
                                    "record is {bytes} bytes, over the {} byte limit; skipped",
                                    options.max_record_bytes
                                ),
                            })
                            .map_err(ScoreError::Write)?;
                    }
                    Piece::Chunk(chunk) => {
                        state.blank += chunk.blank;
                        if let Some(df) = plan.score_chunk(&chunk, model, rejects, &mut state)?
                            && frames.send(df).is_err()
                        {
                            // The writer stopped; its error is the one to report.
                            break;
                        }
                    }
                }
            }
            Ok(())
        })();
        drop(frames);
        let written = writer_thread.join().unwrap_or_else(|_| {
            Err(ScoreError::Engine(PolarsError::ComputeError(
                "the writer thread panicked".into(),
            )))
        });
        written?;
        scoring
    })?;
    if state.rows_in == 0 {
        return Err(FileRejection::HeaderOnly.into());
    }
    Ok(Summary {
        rows_in: state.rows_in,
        rows_scored: state.scored,
        rows_rejected: state.rejected,
        blank_lines: state.blank,
        format: partial.with_delimiter(delimiter),
        columns,
        output_columns: plan.output_columns.clone(),
        labelled_rows: state.metrics.rows(),
        metrics: state.metrics.finish(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Default)]
struct State {
    rows_in: u64,
    scored: u64,
    rejected: u64,
    blank: u64,
    metrics: MetricsAccumulator,
}

fn parse_header(header: &[u8], delimiter: u8) -> Result<Vec<String>, FileRejection> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_reader(header);
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(|s| s.trim().to_owned()).collect()),
        Ok(false) => Err(FileRejection::NotText(NotText::Empty)),
        Err(e) => Err(FileRejection::Undecodable(format!("header line: {e}"))),
    }
}

fn write_header(out: &mut dyn Write, columns: &[String], extra: &[String], _input_delimiter: u8) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(columns.iter().chain(extra))?;
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    out.write_all(&bytes)
}

/// Everything decided once per file: column positions, the polars schema and
/// the scoring expressions.
struct Plan {
    /// Internal names `c0..cN`, so duplicate or odd header names are harmless.
    input_schema: SchemaRef,
    output_schema: Schema,
    output_columns: Vec<String>,
    /// Internal column name of each model term, in term order.
    feature_columns: Vec<PlSmallStr>,
    target_column: Option<PlSmallStr>,
    logit: Expr,
    threshold: f64,
    n_fields: usize,
    /// The input's field delimiter.
    delimiter: u8,
    explain: usize,
}

const LOGIT: &str = "__logit";
const PROBABILITY: &str = "__probability";
const PREDICTION: &str = "__prediction";
const EXPLANATION: &str = "__explanation";

impl Plan {
    fn new(model: &Model, columns: &[String], delimiter: u8, options: &ScoreOptions) -> Result<Plan, ScoreError> {
        let internal = |i: usize| PlSmallStr::from(format!("c{i}"));
        let find = |name: &str| -> Result<Option<usize>, FileRejection> {
            let mut hits = columns.iter().enumerate().filter(|(_, c)| c.as_str() == name);
            match (hits.next(), hits.next()) {
                (None, _) => Ok(None),
                (Some((i, _)), None) => Ok(Some(i)),
                (Some(_), Some(_)) => Err(FileRejection::DuplicateColumn(name.to_owned())),
            }
        };
        let mut missing = Vec::new();
        let mut feature_columns = Vec::new();
        for name in model.required_columns() {
            match find(name)? {
                Some(i) => feature_columns.push(internal(i)),
                None => missing.push(name.to_owned()),
            }
        }
        if !missing.is_empty() {
            return Err(FileRejection::MissingColumns {
                missing,
                found: columns.to_vec(),
            }
            .into());
        }
        let target_column = find(model.target())?.map(internal);

        let input_schema: Schema = (0..columns.len())
            .map(|i| Field::new(internal(i), DataType::String))
            .collect();
        let mut output_schema = input_schema.clone();
        output_schema.insert(PROBABILITY.into(), DataType::Float64);
        output_schema.insert(PREDICTION.into(), DataType::Int32);
        let taken = |name: &str| columns.iter().any(|c| c == name);
        let out_name = |name: &str| {
            if taken(name) {
                format!("scorer_{name}")
            } else {
                name.to_owned()
            }
        };
        let mut output_columns = vec![out_name("probability"), out_name("prediction")];
        if options.explain > 0 {
            output_schema.insert(EXPLANATION.into(), DataType::String);
            output_columns.push(out_name("explanation"));
        }

        let mut logit = lit(model.intercept());
        for (term, column) in model.terms().iter().zip(&feature_columns) {
            logit = logit + term_expr(term, col(column.clone()));
        }
        Ok(Plan {
            input_schema: Arc::new(input_schema),
            output_schema,
            output_columns,
            feature_columns,
            target_column,
            logit,
            threshold: model.threshold(),
            n_fields: columns.len(),
            delimiter,
            explain: options.explain,
        })
    }

    fn parse(&self, bytes: &[u8], delimiter: u8) -> PolarsResult<DataFrame> {
        CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(self.input_schema.clone()))
            .with_rechunk(false)
            .map_parse_options(|o| o.with_separator(delimiter).with_quote_char(Some(b'"')))
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
    }

    /// Parses, scores and splits one chunk; returns the frame to write.
    fn score_chunk(
        &self,
        chunk: &Chunk,
        model: &Model,
        rejects: &mut dyn RejectSink,
        state: &mut State,
    ) -> Result<Option<DataFrame>, ScoreError> {
        let expected = (chunk.records - chunk.blank) as usize;
        let fast = match self.parse(&chunk.bytes, self.delimiter) {
            Ok(df) if df.height() == expected && self.well_formed(chunk) => Some(df),
            _ => None,
        };
        // Rejected rows of this chunk, reported in file order at the end.
        let mut rejected: Vec<RejectedRow> = Vec::new();
        let (df, positions) = match fast {
            Some(df) => {
                let positions = if chunk.multiline || chunk.blank > 0 {
                    Positions::Listed(record_positions(chunk, self.delimiter))
                } else {
                    Positions::Sequential {
                        first_row: chunk.first_row,
                        first_line: chunk.first_line,
                    }
                };
                (df, positions)
            }
            None => {
                // The careful path: find the broken records one by one, report
                // them, and hand polars only the well-formed ones.
                let (clean, listed) = self.clean_chunk(chunk, &mut rejected, state)?;
                if listed.is_empty() {
                    emit(rejects, rejected)?;
                    return Ok(None);
                }
                let df = self.parse(&clean, b',')?;
                if df.height() != listed.len() {
                    return Err(ScoreError::Engine(PolarsError::ComputeError(
                        format!(
                            "re-parsed {} rows where {} were expected (line {})",
                            df.height(),
                            listed.len(),
                            chunk.first_line
                        )
                        .into(),
                    )));
                }
                (df, Positions::Listed(listed))
            }
        };
        state.rows_in += df.height() as u64;
        if df.height() == 0 {
            emit(rejects, rejected)?;
            return Ok(None);
        }
        let scored = df
            .lazy()
            .with_column(self.logit.clone().alias(LOGIT))
            .with_column((lit(1.0) / (lit(1.0) + (-col(LOGIT)).exp())).alias(PROBABILITY))
            .with_column(
                col(PROBABILITY)
                    .gt_eq(lit(self.threshold))
                    .cast(DataType::Int32)
                    .alias(PREDICTION),
            )
            .collect()?;
        let logits = scored.column(LOGIT)?.f64()?.clone();
        let valid: BooleanChunked = logits.iter().map(|z| Some(z.is_some_and(f64::is_finite))).collect();
        let n_valid = valid.sum().unwrap_or(0) as usize;
        if n_valid < scored.height() {
            self.collect_rejections(&scored, &valid, &positions, model, &mut rejected)?;
        }
        emit(rejects, rejected)?;
        state.rejected += (scored.height() - n_valid) as u64;
        state.scored += n_valid as u64;

        let mut kept = if n_valid == scored.height() {
            scored
        } else {
            scored.filter(&valid)?
        };
        if let Some(target) = &self.target_column {
            let labels = kept.column(target.as_str())?.str()?;
            let probs = kept.column(PROBABILITY)?.f64()?;
            let preds = kept.column(PREDICTION)?.i32()?;
            for ((label, p), pred) in labels.iter().zip(probs.iter()).zip(preds.iter()) {
                if let (Some(label), Some(p), Some(pred)) = (parse_label(label), p, pred) {
                    state.metrics.add(label, p, pred == 1);
                }
            }
        }
        if self.explain > 0 {
            let explanations = self.explanations(&kept, model)?;
            kept.with_column(Column::new(EXPLANATION.into(), explanations))?;
        }
        let mut names: Vec<PlSmallStr> = self.input_schema.iter_names().cloned().collect();
        names.push(PROBABILITY.into());
        names.push(PREDICTION.into());
        if self.explain > 0 {
            names.push(EXPLANATION.into());
        }
        Ok(Some(kept.select(names)?))
    }

    /// polars pads a short (ragged) record with nulls instead of failing, so
    /// the fast path is trusted only when the chunk holds exactly the
    /// delimiters its records need.
    fn well_formed(&self, chunk: &Chunk) -> bool {
        let records = chunk.records - chunk.blank;
        chunker::delimiters_outside_quotes(&chunk.bytes, self.delimiter) == records * (self.n_fields as u64 - 1)
    }

    fn collect_rejections(
        &self,
        scored: &DataFrame,
        valid: &BooleanChunked,
        positions: &Positions,
        model: &Model,
        rejected: &mut Vec<RejectedRow>,
    ) -> Result<(), ScoreError> {
        let features: Vec<&StringChunked> = self
            .feature_columns
            .iter()
            .map(|c| scored.column(c.as_str()).and_then(|c| c.str()))
            .collect::<PolarsResult<_>>()?;
        let names: Vec<&str> = model.required_columns().collect();
        for (i, ok) in valid.iter().enumerate() {
            if ok == Some(true) {
                continue;
            }
            let get = |name: &str| names.iter().position(|n| *n == name).and_then(|j| features[j].get(i));
            let problems = model.rejections(get);
            let (row, line) = positions.at(i);
            let first = problems.first();
            let reason = if problems.is_empty() {
                "the scoring engine could not compute a finite score for this row".to_owned()
            } else {
                problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            };
            rejected.push(RejectedRow {
                line,
                row,
                column: first.map(|p| p.column.clone()).unwrap_or_default(),
                value: first.and_then(|p| p.value.clone()).unwrap_or_default(),
                reason,
            });
        }
        Ok(())
    }

    fn explanations(&self, kept: &DataFrame, model: &Model) -> PolarsResult<StringChunked> {
        let features: Vec<&StringChunked> = self
            .feature_columns
            .iter()
            .map(|c| kept.column(c.as_str()).and_then(|c| c.str()))
            .collect::<PolarsResult<_>>()?;
        let names: Vec<&str> = model.required_columns().collect();
        Ok((0..kept.height())
            .map(|i| {
                let get = |name: &str| names.iter().position(|n| *n == name).and_then(|j| features[j].get(i));
                model
                    .explain(get)
                    .ok()
                    .map(|parts| format_explanation(&parts, self.explain))
            })
            .collect())
    }

    /// Re-reads a chunk record by record: records with the wrong number of
    /// fields, unreadable quoting or invalid UTF-8 are rejected; the rest are
    /// re-serialised (comma-delimited) for polars.
    fn clean_chunk(
        &self,
        chunk: &Chunk,
        broken: &mut Vec<RejectedRow>,
        state: &mut State,
    ) -> Result<(Vec<u8>, RowPositions), ScoreError> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::with_capacity(chunk.bytes.len()));
        let mut listed = Vec::new();
        let mut record = csv::ByteRecord::new();
        let mut row = chunk.first_row;
        for span in chunker::split_records(&chunk.bytes, self.delimiter) {
            if span.blank {
                continue;
            }
            let line = chunk.first_line + span.line;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(self.delimiter)
                .from_reader(&chunk.bytes[span.start..span.end]);
            let problem = match reader.read_byte_record(&mut record) {
                Err(e) => Some(format!("unreadable record: {e}")),
                Ok(false) => Some("unreadable record".to_owned()),
                Ok(true) if record.len() != self.n_fields => {
                    Some(format!("expected {} fields, found {}", self.n_fields, record.len()))
                }
                Ok(true) if std::str::from_utf8(record.as_slice()).is_err() => {
                    Some("the record is not valid UTF-8 text".to_owned())
                }
                Ok(true) => None,
            };
            match problem {
                Some(reason) => {
                    state.rows_in += 1;
                    state.rejected += 1;
                    broken.push(RejectedRow {
                        line,
                        row,
                        column: String::new(),
                        value: String::new(),
                        reason,
                    });
                }
                None => {
                    writer
                        .write_byte_record(&record)
                        .map_err(|e| ScoreError::Write(e.into()))?;
                    listed.push((row, line));
                }
            }
            row += 1;
        }
        let clean = writer.into_inner().map_err(|e| ScoreError::Write(e.into_error()))?;
        Ok((clean, listed))
    }
}

/// Reports a chunk's rejected rows in file order.
fn emit(rejects: &mut dyn RejectSink, mut rows: Vec<RejectedRow>) -> Result<(), ScoreError> {
    rows.sort_by_key(|r| r.row);
    for row in &rows {
        rejects.reject(row).map_err(ScoreError::Write)?;
    }
    Ok(())
}

/// (row, line) of each row.
type RowPositions = Vec<(u64, u64)>;

/// Where each row of a parsed chunk came from.
enum Positions {
    Sequential { first_row: u64, first_line: u64 },
    Listed(RowPositions),
}

impl Positions {
    fn at(&self, i: usize) -> (u64, u64) {
        match self {
            Positions::Sequential { first_row, first_line } => (first_row + i as u64, first_line + i as u64),
            Positions::Listed(v) => v.get(i).copied().unwrap_or((0, 0)),
        }
    }
}

/// Row and line of every non-blank record of a chunk (for chunks with quoted
/// newlines or blank lines, where index arithmetic is not enough).
fn record_positions(chunk: &Chunk, delimiter: u8) -> RowPositions {
    chunker::split_records(&chunk.bytes, delimiter)
        .iter()
        .filter(|s| !s.blank)
        .enumerate()
        .map(|(i, s)| (chunk.first_row + i as u64, chunk.first_line + s.line))
        .collect()
}

/// `OPERA=Grupo LATAM:+0.312; MES=12:+0.250` for the top `n` contributions.
pub fn format_explanation(parts: &[crate::model::Contribution], n: usize) -> String {
    parts
        .iter()
        .take(n)
        .map(|c| format!("{}={}:{:+.4}", c.feature, c.value, c.contribution))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The logit term of one feature as a polars expression; null when the value
/// cannot be used (so the row is rejected).
fn term_expr(term: &Term, column: Expr) -> Expr {
    match term {
        Term::Categorical { weights, .. } => {
            let mut levels: Vec<(&String, &f64)> = weights.iter().collect();
            levels.sort_by(|a, b| a.0.cmp(b.0));
            let old = Series::new("old".into(), levels.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
            let new = Series::new("new".into(), levels.iter().map(|(_, w)| **w).collect::<Vec<_>>());
            column.replace_strict(
                lit(old).implode(true),
                lit(new).implode(true),
                Some(lit(NULL).cast(DataType::Float64)),
                Some(DataType::Float64),
            )
        }
        Term::Numeric { mean, std, weight, .. } => when(column.clone().is_null())
            .then(lit(0.0))
            .otherwise((column.cast(DataType::Float64) - lit(*mean)) / lit(*std) * lit(*weight)),
    }
}
