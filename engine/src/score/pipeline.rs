//! The pipeline: reading and cutting, parsing and scoring, and writing
//! overlap on three threads joined by bounded channels, so memory in flight
//! is a few chunks whatever the file size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::Instant;

use polars::prelude::PolarsError;

use super::chunker::{Chunker, Piece};
use super::input::{self, NotText};
use super::output::{self, Scored, Shape};
use super::plan::Plan;
use super::{FileRejection, RejectSink, RejectedRow, ScoreError, ScoreOptions, Summary};
use crate::model::{EvaluationBuilder, Model};

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
    let decoded = match options.range_of {
        Some(text) => input::decode_as(input, text),
        None => input::decode(input),
    };
    let (text, partial) = match decoded.map_err(ScoreError::from_read)? {
        input::Decoded::Text(text, partial) => (text, partial),
        input::Decoded::NotText(not_text) => return Err(FileRejection::from(not_text).into()),
    };
    if partial.json_lines && options.range_of.is_none() {
        return super::jsonl::score(text, partial, model, out, rejects, options, started);
    }
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
        let columns_ref = &columns;
        let writer_thread = scope.spawn(move || -> Result<(), ScoreError> {
            let shape = Shape {
                header_line: header,
                columns: columns_ref,
                delimiter,
                json_lines: false,
                output_columns: &plan_ref.output_columns,
            };
            let mut sink = output::sink(&options.output, &shape, options.explain > 0, writer)?;
            for scored in frames_rx {
                sink.rows(&scored)?;
            }
            sink.finish()
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
    if state.rows_in == 0 && options.range_of.is_none() {
        return Err(FileRejection::HeaderOnly.into());
    }
    Ok(state.summary(
        partial.with_delimiter(delimiter),
        columns,
        plan.output_columns.clone(),
        started,
    ))
}

#[derive(Default)]
pub struct State {
    pub rows_in: u64,
    pub scored: u64,
    pub rejected: u64,
    pub blank: u64,
    pub metrics: EvaluationBuilder,
    /// Values ignored per column (`handle_unknown: ignore`) in scored rows.
    pub ignored: BTreeMap<String, u64>,
}

impl State {
    /// Counts the ignored values of one scored row.
    pub fn count_ignored<'a>(&mut self, model: &Model, get: &impl Fn(&str) -> Option<&'a str>) {
        for term in model.terms().iter().filter(|t| t.ignores_unknown()) {
            if let Ok((_, true)) = term.assess(get(term.name())) {
                *self.ignored.entry(term.name().to_owned()).or_default() += 1;
            }
        }
    }

    /// What the file amounted to, once every row is counted.
    pub fn summary(
        self,
        format: super::InputFormat,
        columns: Vec<String>,
        output_columns: Vec<String>,
        started: Instant,
    ) -> Summary {
        Summary {
            rows_in: self.rows_in,
            rows_scored: self.scored,
            rows_rejected: self.rejected,
            blank_lines: self.blank,
            format,
            columns,
            output_columns,
            ignored_values: self.ignored,
            labelled_rows: self.metrics.rows(),
            metrics: self.metrics.finish(),
            evaluation: self.metrics,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
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

/// Reports a chunk's rejected rows in file order.
pub fn emit(rejects: &mut dyn RejectSink, mut rows: Vec<RejectedRow>) -> Result<(), ScoreError> {
    rows.sort_by_key(|r| r.row);
    for row in &rows {
        rejects.reject(row).map_err(ScoreError::Write)?;
    }
    Ok(())
}
