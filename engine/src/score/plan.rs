//! What is decided once per file (where the model's columns are, the schema
//! polars parses each chunk with, the names of the appended columns), and
//! the scoring of one chunk: parse, find the broken records, compute the
//! logits, split kept rows from rejected ones.

use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;

use super::chunker::{self, Chunk};
use super::logit::Logit;
use super::output::{OutRow, PROVENANCE_COLUMNS, Scored, format_explanation};
use super::pipeline::{State, emit};
use super::{FileRejection, RejectSink, RejectedRow, ScoreError, ScoreOptions};
use crate::model::{Model, parse_label};

/// One non-blank record of a chunk.
#[derive(Clone, Copy)]
pub struct Record {
    pub row: u64,
    pub line: u64,
    pub start: usize,
    pub end: usize,
}

/// Everything decided once per file: column positions, the polars schema and
/// the compiled logit.
pub struct Plan {
    /// Internal names `c0..cN`, so duplicate or odd header names are harmless.
    input_schema: SchemaRef,
    /// The columns polars materialises: the features and the target.
    projection: Arc<Vec<usize>>,
    /// The names appended to the input's columns.
    pub output_columns: Vec<String>,
    /// Internal column name of each model term, in term order.
    feature_columns: Vec<PlSmallStr>,
    target_column: Option<PlSmallStr>,
    logit: Logit,
    threshold: f64,
    n_fields: usize,
    /// The input's field delimiter, also used for the appended fields.
    delimiter: u8,
    explain: usize,
}

impl Plan {
    pub fn new(model: &Model, columns: &[String], delimiter: u8, options: &ScoreOptions) -> Result<Plan, ScoreError> {
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
        if options.output.provenance.is_some() {
            output_columns.extend(PROVENANCE_COLUMNS.map(out_name));
        }
        let feature_columns: Vec<PlSmallStr> = feature_indices.iter().map(|&i| internal(i)).collect();
        let logit = Logit::new(model)?;
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

    /// Parses, scores and splits one chunk; returns the rows to write.
    pub fn score_chunk(
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
        self.score_frame(df, &kept, chunk.bytes, model, rejects, state, rejected)
    }

    /// Internal name of input column `i` in the frames [`Plan::score_frame`]
    /// takes.
    pub fn column_name(i: usize) -> PlSmallStr {
        PlSmallStr::from(format!("c{i}"))
    }

    /// The input columns a frame must hold (by [`Plan::column_name`]): the
    /// model's features and the target, if the file has it.
    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    /// Scores the rows of a parsed frame (one row per `kept` record, in
    /// order, their bytes in `bytes`) and splits kept rows from rejected
    /// ones; `rejected` holds the chunk's rows rejected before parsing.
    #[allow(clippy::too_many_arguments)]
    pub fn score_frame(
        &self,
        df: DataFrame,
        kept: &[Record],
        bytes: Vec<u8>,
        model: &Model,
        rejects: &mut dyn RejectSink,
        state: &mut State,
        mut rejected: Vec<RejectedRow>,
    ) -> Result<Option<Scored>, ScoreError> {
        state.rows_in += df.height() as u64;
        let columns: Vec<&Series> = self
            .feature_columns
            .iter()
            .map(|c| df.column(c.as_str()).map(Column::as_materialized_series))
            .collect::<PolarsResult<_>>()?;
        let logits = self.logit.evaluate(&columns, df.height())?;
        let features: Vec<&StringChunked> = columns.iter().map(|c| c.str()).collect::<PolarsResult<_>>()?;
        let labels = match &self.target_column {
            Some(target) => Some(df.column(target.as_str())?.str()?),
            None => None,
        };
        let names: Vec<&str> = model.required_columns().collect();
        let mut rows = Vec::with_capacity(kept.len());
        for (i, (logit, record)) in logits.iter().zip(kept).enumerate() {
            let get = |name: &str| names.iter().position(|n| *n == name).and_then(|j| features[j].get(i));
            match logit {
                Some(z) if z.is_finite() => {
                    if model.ignores_unknown() {
                        state.count_ignored(model, &get);
                    }
                    let p = Model::probability(z);
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
                    while end > record.start && matches!(bytes[end - 1], b'\n' | b'\r') {
                        end -= 1;
                    }
                    rows.push(OutRow {
                        start: record.start,
                        end,
                        row: record.row,
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
        Ok(Some(Scored { bytes, rows }))
    }

    /// polars pads a short (ragged) record with nulls instead of failing, so
    /// the fast path is trusted only when every record holds exactly the
    /// delimiters its fields need (counted per record: a short row and a long
    /// one in the same chunk must not cancel out).
    pub fn well_formed(&self, chunk: &Chunk, records: &[Record]) -> bool {
        let expected = self.n_fields as u64 - 1;
        records
            .iter()
            .all(|r| chunker::regular_delimiters(&chunk.bytes[r.start..r.end], self.delimiter) == Some(expected))
    }

    /// Re-reads a chunk record by record: records with the wrong number of
    /// fields, unreadable quoting or invalid UTF-8 are rejected; the rest are
    /// re-serialised (comma-delimited) for polars.
    pub fn clean_chunk(
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
