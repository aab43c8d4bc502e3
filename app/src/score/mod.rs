//! The scoring engine: a CSV byte stream in, predictions and rejected rows
//! out, in bounded memory whatever the file size.
//!
//! The stream is decoded ([`input`]), cut at record ends into chunks of a few
//! megabytes ([`chunker`], on its own thread), and each chunk's model columns
//! are parsed by polars from memory and scored with polars expressions. The
//! output is every input record exactly as it came (decoded to UTF-8, line
//! end normalised to `\n`) with the probability and the prediction appended,
//! written on a third thread; copying the record instead of re-serialising
//! its fields is both faithful and cheaper. Rows the model cannot take are
//! left out and reported ([`rejects`]) with their line number and reason.
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

    let writer = out;
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
        // Writing overlaps with scoring the next chunk.
        let (frames, frames_rx) = mpsc::sync_channel::<Scored>(2);
        let plan_ref = &plan;
        let header = &header;
        let writer_thread = scope.spawn(move || -> Result<(), ScoreError> {
            let mut buf = Vec::with_capacity(1 << 20);
            plan_ref.write_header(&mut buf, header);
            writer.write_all(&buf).map_err(ScoreError::Write)?;
            for scored in frames_rx {
                buf.clear();
                plan_ref.write_rows(&mut buf, &scored);
                writer.write_all(&buf).map_err(ScoreError::Write)?;
            }
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
                        if let Some(scored) = plan.score_chunk(chunk, model, rejects, &mut state)?
                            && frames.send(scored).is_err()
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

/// A chunk's scored rows on their way to the writer: the chunk's bytes and,
/// per kept record, where it is and what it scored.
struct Scored {
    bytes: Vec<u8>,
    rows: Vec<OutRow>,
}

struct OutRow {
    /// The record in `Scored::bytes`, line end excluded.
    start: usize,
    end: usize,
    probability: f64,
    prediction: bool,
    explanation: Option<String>,
}

/// One non-blank record of a chunk.
#[derive(Clone, Copy)]
struct Record {
    row: u64,
    line: u64,
    start: usize,
    end: usize,
}

/// Everything decided once per file: column positions, the polars schema and
/// the scoring expressions.
struct Plan {
    /// Internal names `c0..cN`, so duplicate or odd header names are harmless.
    input_schema: SchemaRef,
    /// The columns polars materialises: the features and the target.
    projection: Arc<Vec<usize>>,
    output_columns: Vec<String>,
    /// Internal column name of each model term, in term order.
    feature_columns: Vec<PlSmallStr>,
    target_column: Option<PlSmallStr>,
    logit: Expr,
    threshold: f64,
    n_fields: usize,
    /// The input's field delimiter, also used for the appended fields.
    delimiter: u8,
    explain: usize,
}

const LOGIT: &str = "__logit";
const PROBABILITY: &str = "__probability";

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
        let mut feature_indices = Vec::new();
        for name in model.required_columns() {
            match find(name)? {
                Some(i) => feature_indices.push(i),
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
        let target_index = find(model.target())?;
        let mut projection: Vec<usize> = feature_indices.iter().copied().chain(target_index).collect();
        projection.sort_unstable();
        projection.dedup();

        let input_schema: Schema = (0..columns.len())
            .map(|i| Field::new(internal(i), DataType::String))
            .collect();
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
            output_columns.push(out_name("explanation"));
        }
        let feature_columns: Vec<PlSmallStr> = feature_indices.iter().map(|&i| internal(i)).collect();
        let mut logit = lit(model.intercept());
        for (term, column) in model.terms().iter().zip(&feature_columns) {
            logit = logit + term_expr(term, col(column.clone()));
        }
        Ok(Plan {
            input_schema: Arc::new(input_schema),
            projection: Arc::new(projection),
            output_columns,
            feature_columns,
            target_column: target_index.map(internal),
            logit,
            threshold: model.threshold(),
            n_fields: columns.len(),
            delimiter,
            explain: options.explain,
        })
    }

    /// Parses the model's columns of a chunk (polars still checks every
    /// field, but builds only these columns).
    fn parse(&self, bytes: &[u8], delimiter: u8) -> PolarsResult<DataFrame> {
        CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(self.input_schema.clone()))
            .with_projection(Some(self.projection.clone()))
            .with_rechunk(false)
            .map_parse_options(|o| o.with_separator(delimiter).with_quote_char(Some(b'"')))
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
    }

    /// The original header line and the appended column names.
    fn write_header(&self, buf: &mut Vec<u8>, header: &[u8]) {
        buf.extend_from_slice(header);
        for name in &self.output_columns {
            buf.push(self.delimiter);
            push_field(buf, name, self.delimiter);
        }
        buf.push(b'\n');
    }

    /// Each kept record as it came, then its scores.
    fn write_rows(&self, buf: &mut Vec<u8>, scored: &Scored) {
        use std::io::Write as _;
        for row in &scored.rows {
            buf.extend_from_slice(&scored.bytes[row.start..row.end]);
            buf.push(self.delimiter);
            let _ = write!(buf, "{}", row.probability);
            buf.push(self.delimiter);
            buf.push(if row.prediction { b'1' } else { b'0' });
            if let Some(explanation) = &row.explanation {
                buf.push(self.delimiter);
                push_field(buf, explanation, self.delimiter);
            }
            buf.push(b'\n');
        }
    }

    /// Parses, scores and splits one chunk; returns the rows to write.
    fn score_chunk(
        &self,
        chunk: Chunk,
        model: &Model,
        rejects: &mut dyn RejectSink,
        state: &mut State,
    ) -> Result<Option<Scored>, ScoreError> {
        // Where every record is, found with the chunker's own rules.
        let records: Vec<Record> = chunker::split_records(&chunk.bytes, self.delimiter)
            .iter()
            .filter(|s| !s.blank)
            .enumerate()
            .map(|(i, s)| Record {
                row: chunk.first_row + i as u64,
                line: chunk.first_line + s.line,
                start: s.start,
                end: s.end,
            })
            .collect();
        let fast = if self.well_formed(&chunk, &records) {
            match self.parse(&chunk.bytes, self.delimiter) {
                Ok(df) if df.height() == records.len() => Some(df),
                _ => None,
            }
        } else {
            None
        };
        // Rejected rows of this chunk, reported in file order at the end.
        let mut rejected: Vec<RejectedRow> = Vec::new();
        let (df, kept) = match fast {
            Some(df) => (df, records),
            None => {
                // The careful path: find the broken records one by one, report
                // them, and hand polars only the well-formed ones.
                let (clean, kept) = self.clean_chunk(&chunk, &records, &mut rejected, state)?;
                if kept.is_empty() {
                    emit(rejects, rejected)?;
                    return Ok(None);
                }
                let df = self.parse(&clean, b',')?;
                if df.height() != kept.len() {
                    return Err(ScoreError::Engine(PolarsError::ComputeError(
                        format!(
                            "re-parsed {} rows where {} were expected (line {})",
                            df.height(),
                            kept.len(),
                            chunk.first_line
                        )
                        .into(),
                    )));
                }
                (df, kept)
            }
        };
        state.rows_in += df.height() as u64;
        let scored = df
            .lazy()
            .with_column(self.logit.clone().alias(LOGIT))
            .with_column((lit(1.0) / (lit(1.0) + (-col(LOGIT)).exp())).alias(PROBABILITY))
            .collect()?;
        let logits = scored.column(LOGIT)?.f64()?;
        let probabilities = scored.column(PROBABILITY)?.f64()?;
        let features: Vec<&StringChunked> = self
            .feature_columns
            .iter()
            .map(|c| scored.column(c.as_str()).and_then(|c| c.str()))
            .collect::<PolarsResult<_>>()?;
        let labels = match &self.target_column {
            Some(target) => Some(scored.column(target.as_str())?.str()?),
            None => None,
        };
        let names: Vec<&str> = model.required_columns().collect();
        let mut rows = Vec::with_capacity(kept.len());
        for (i, ((logit, probability), record)) in logits.iter().zip(probabilities.iter()).zip(&kept).enumerate() {
            let get = |name: &str| names.iter().position(|n| *n == name).and_then(|j| features[j].get(i));
            match (logit, probability) {
                (Some(z), Some(p)) if z.is_finite() => {
                    let prediction = p >= self.threshold;
                    if let Some(labels) = labels
                        && let Some(label) = parse_label(labels.get(i))
                    {
                        state.metrics.add(label, p, prediction);
                    }
                    let explanation = (self.explain > 0).then(|| {
                        model
                            .explain(get)
                            .map(|parts| format_explanation(&parts, self.explain))
                            .unwrap_or_default()
                    });
                    let mut end = record.end;
                    while end > record.start && matches!(chunk.bytes[end - 1], b'\n' | b'\r') {
                        end -= 1;
                    }
                    rows.push(OutRow {
                        start: record.start,
                        end,
                        probability: p,
                        prediction,
                        explanation,
                    });
                }
                _ => {
                    let problems = model.rejections(get);
                    let first = problems.first();
                    let reason = if problems.is_empty() {
                        "the scoring engine could not compute a finite score for this row".to_owned()
                    } else {
                        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    };
                    rejected.push(RejectedRow {
                        line: record.line,
                        row: record.row,
                        column: first.map(|p| p.column.clone()).unwrap_or_default(),
                        value: first.and_then(|p| p.value.clone()).unwrap_or_default(),
                        reason,
                    });
                }
            }
        }
        state.rejected += (kept.len() - rows.len()) as u64;
        state.scored += rows.len() as u64;
        emit(rejects, rejected)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(Scored {
            bytes: chunk.bytes,
            rows,
        }))
    }

    /// polars pads a short (ragged) record with nulls instead of failing, so
    /// the fast path is trusted only when every record holds exactly the
    /// delimiters its fields need (counted per record: a short row and a long
    /// one in the same chunk must not cancel out).
    fn well_formed(&self, chunk: &Chunk, records: &[Record]) -> bool {
        let expected = self.n_fields as u64 - 1;
        records
            .iter()
            .all(|r| chunker::delimiters_outside_quotes(&chunk.bytes[r.start..r.end], self.delimiter) == expected)
    }

    /// Re-reads a chunk record by record: records with the wrong number of
    /// fields, unreadable quoting or invalid UTF-8 are rejected; the rest are
    /// re-serialised (comma-delimited) for polars.
    fn clean_chunk(
        &self,
        chunk: &Chunk,
        records: &[Record],
        broken: &mut Vec<RejectedRow>,
        state: &mut State,
    ) -> Result<(Vec<u8>, Vec<Record>), ScoreError> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::with_capacity(chunk.bytes.len()));
        let mut kept = Vec::new();
        let mut fields = csv::ByteRecord::new();
        for record in records {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(self.delimiter)
                .from_reader(&chunk.bytes[record.start..record.end]);
            let problem = match reader.read_byte_record(&mut fields) {
                Err(e) => Some(format!("unreadable record: {e}")),
                Ok(false) => Some("unreadable record".to_owned()),
                Ok(true) if fields.len() != self.n_fields => {
                    Some(format!("expected {} fields, found {}", self.n_fields, fields.len()))
                }
                Ok(true) if std::str::from_utf8(fields.as_slice()).is_err() => {
                    Some("the record is not valid UTF-8 text".to_owned())
                }
                Ok(true) => None,
            };
            match problem {
                Some(reason) => {
                    state.rows_in += 1;
                    state.rejected += 1;
                    broken.push(RejectedRow {
                        line: record.line,
                        row: record.row,
                        column: String::new(),
                        value: String::new(),
                        reason,
                    });
                }
                None => {
                    writer
                        .write_byte_record(&fields)
                        .map_err(|e| ScoreError::Write(e.into()))?;
                    kept.push(*record);
                }
            }
        }
        let clean = writer.into_inner().map_err(|e| ScoreError::Write(e.into_error()))?;
        Ok((clean, kept))
    }
}

/// A field, quoted when it holds the delimiter, a quote or a line end.
fn push_field(buf: &mut Vec<u8>, text: &str, delimiter: u8) {
    let needs_quotes = text
        .bytes()
        .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if needs_quotes {
        buf.push(b'"');
        for b in text.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(text.as_bytes());
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
