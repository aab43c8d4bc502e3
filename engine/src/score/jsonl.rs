//! JSON Lines input: one object per line, streamed in chunks like CSV, in
//! bounded memory whatever the file size.
//!
//! The file's columns are the keys of its first object, in their order,
//! then the model's features and label if the first object lacks them
//! (what CSV and Parquet outputs hold; a JSON Lines output passes every
//! object through whole). Each line is one record: a line that is not a
//! JSON object, lacks one of the model's features, or gives a feature an
//! array or an object is rejected with its line number; a `null` feature
//! is a missing value, as an empty CSV field is. Values reach the model as
//! the text a CSV field would hold: a string as it is, a number as JSON
//! writes it (`11`, `11.5`), so `"11"` and `11` score alike.

use std::io::{self, BufRead, BufReader};
use std::time::Instant;

use polars::prelude::*;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

use super::input::{Partial, TextReader};
use super::output::fields::{Names, pick, value_text};
use super::output::{self, Shape};
use super::pipeline::State;
use super::plan::{Plan, Record};
use super::{FileRejection, NotText, RejectSink, RejectedRow, ScoreError, ScoreOptions, Summary};
use crate::model::Model;

/// One line read, or how long the one skipped was.
enum Line {
    Text,
    Oversized(u64),
}

/// Reads one line (its `\n` included) onto `buf`, unless it is longer than
/// `max`: then it is skipped, never buffered. `None` at the end.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<Line>> {
    let start = buf.len();
    let mut skipped: Option<u64> = None;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(match (skipped, buf.len() > start) {
                (Some(n), _) => Some(Line::Oversized(n)),
                (None, true) => Some(Line::Text),
                (None, false) => None,
            });
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        match &mut skipped {
            Some(n) => *n += take as u64,
            None if buf.len() - start + take > max => {
                skipped = Some((buf.len() - start + take) as u64);
                buf.truncate(start);
            }
            None => buf.extend_from_slice(&available[..take]),
        }
        reader.consume(take);
        if done {
            return Ok(Some(match skipped {
                Some(n) => Line::Oversized(n),
                None => Line::Text,
            }));
        }
    }
}

/// The keys of a JSON object in the order they appear.
fn keys_in_order(text: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_slice(text).deserialize_map(Keys)
}

/// A chunk's lines on their way to the model.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Per projected column, its values for the records kept so far.
    values: Vec<Vec<Option<String>>>,
    rejected: Vec<RejectedRow>,
}

/// Scores a JSON Lines text (see the module doc).
pub(super) fn score(
    text: TextReader<'_>,
    partial: Partial,
    model: &Model,
    out: &mut (dyn io::Write + Send),
    rejects: &mut dyn RejectSink,
    options: &ScoreOptions,
    started: Instant,
) -> Result<Summary, ScoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, text);
    let max = options.max_record_bytes;
    // The first object names the columns.
    let mut first = Vec::new();
    let mut line_no = 0u64;
    let mut blank = 0u64;
    let columns = loop {
        first.clear();
        match next_line(&mut reader, &mut first, max).map_err(ScoreError::from_read)? {
            None => return Err(FileRejection::NotText(NotText::Empty).into()),
            Some(Line::Oversized(n)) => {
                return Err(FileRejection::Undecodable(format!(
                    "the first JSON line is {n} bytes, over the {max} byte limit"
                ))
                .into());
            }
            Some(Line::Text) => {
                line_no += 1;
                if first.iter().all(u8::is_ascii_whitespace) {
                    blank += 1;
                    continue;
                }
                break keys_in_order(&first).map_err(|e| {
                    FileRejection::Undecodable(format!("line {line_no}: the first line is not a JSON object: {e}"))
                })?;
            }
        }
    };
    // Writers that leave out null values (`omitempty`, BigQuery's JSON
    // export) may leave a feature out of the first object too: the model's
    // columns are the file's whether or not the first line has them, and
    // each line without a feature is rejected on its own.
    let mut columns = columns;
    for name in model.required_columns().chain(std::iter::once(model.target())) {
        if !columns.iter().any(|c| c == name) {
            columns.push(name.to_owned());
        }
    }
    let plan = Plan::new(model, &columns, b',', options)?;
    let names: Vec<&str> = plan.projection().iter().map(|&i| columns[i].as_str()).collect();
    let index = Names::new(names.iter().copied());
    let features: Vec<bool> = names
        .iter()
        .map(|n| model.required_columns().any(|f| f == *n))
        .collect();

    let shape = Shape {
        header_line: &[],
        columns: &columns,
        delimiter: b',',
        json_lines: true,
        output_columns: &plan.output_columns,
    };
    let mut sink = output::sink(&options.output, &shape, options.explain > 0, out)?;
    let mut state = State {
        blank,
        ..State::default()
    };
    let mut row = 0u64;
    let mut batch = Batch {
        values: vec![Vec::new(); names.len()],
        ..Batch::default()
    };
    // The first object's line is the first record.
    batch.bytes.extend_from_slice(&first);
    let mut at = Some(line_no);
    loop {
        let start = match at.take() {
            Some(_) => 0,
            None => {
                let start = batch.bytes.len();
                match next_line(&mut reader, &mut batch.bytes, max).map_err(ScoreError::from_read)? {
                    None => break,
                    Some(Line::Oversized(n)) => {
                        line_no += 1;
                        row += 1;
                        state.rows_in += 1;
                        state.rejected += 1;
                        batch.rejected.push(RejectedRow {
                            line: line_no,
                            row,
                            column: String::new(),
                            value: String::new(),
                            reason: format!("record is {n} bytes, over the {max} byte limit; skipped"),
                        });
                        continue;
                    }
                    Some(Line::Text) => {
                        line_no += 1;
                        start
                    }
                }
            }
        };
        let text = &batch.bytes[start..];
        if text.iter().all(u8::is_ascii_whitespace) {
            state.blank += 1;
            batch.bytes.truncate(start);
            continue;
        }
        row += 1;
        match parse_record(text, &names, &index, &features) {
            Ok(values) => {
                for (column, value) in batch.values.iter_mut().zip(values) {
                    column.push(value);
                }
                batch.records.push(Record {
                    row,
                    line: line_no,
                    start,
                    end: batch.bytes.len(),
                });
            }
            Err((column, value, reason)) => {
                state.rows_in += 1;
                state.rejected += 1;
                batch.rejected.push(RejectedRow {
                    line: line_no,
                    row,
                    column,
                    value,
                    reason,
                });
                batch.bytes.truncate(start);
            }
        }
        if batch.bytes.len() >= options.chunk_bytes {
            flush(&mut batch, &plan, model, rejects, &mut state, sink.as_mut())?;
        }
    }
    flush(&mut batch, &plan, model, rejects, &mut state, sink.as_mut())?;
    sink.finish()?;
    if state.rows_in == 0 {
        return Err(FileRejection::HeaderOnly.into());
    }
    Ok(state.summary(
        partial.json_lines_format(),
        columns,
        plan.output_columns.clone(),
        started,
    ))
}

/// A line's values for the projected columns, or why it is rejected
/// (column, value, reason).
fn parse_record(
    text: &[u8],
    names: &[&str],
    index: &Names,
    features: &[bool],
) -> Result<Vec<Option<String>>, (String, String, String)> {
    let picked = match pick(text, index) {
        Ok(picked) => picked,
        Err(e) => {
            let what = if e.is_data() {
                "not a JSON object"
            } else {
                "not valid JSON"
            };
            return Err((String::new(), String::new(), format!("the line is {what}: {e}")));
        }
    };
    let mut values = Vec::with_capacity(names.len());
    for ((name, feature), value) in names.iter().zip(features).zip(&picked) {
        match value.as_ref() {
            None if *feature => {
                return Err(((*name).to_owned(), String::new(), format!("missing feature {name}")));
            }
            Some(value @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) if *feature => {
                return Err((
                    (*name).to_owned(),
                    value.to_string(),
                    format!(
                        "{name} holds {}, not a value",
                        if value.is_array() { "an array" } else { "an object" }
                    ),
                ));
            }
            value => values.push(value.and_then(value_text)),
        }
    }
    Ok(values)
}

/// Scores and writes the batch's kept records, reports its rejected ones,
/// and empties it.
fn flush(
    batch: &mut Batch,
    plan: &Plan,
    model: &Model,
    rejects: &mut dyn RejectSink,
    state: &mut State,
    sink: &mut dyn output::Sink,
) -> Result<(), ScoreError> {
    let rejected = std::mem::take(&mut batch.rejected);
    let records = std::mem::take(&mut batch.records);
    let bytes = std::mem::take(&mut batch.bytes);
    let columns: Vec<Column> = plan
        .projection()
        .iter()
        .zip(batch.values.iter_mut())
        .map(|(&i, values)| Column::new(Plan::column_name(i), std::mem::take(values)))
        .collect();
    if records.is_empty() {
        return super::pipeline::emit(rejects, rejected);
    }
    let frame = DataFrame::new(records.len(), columns)?;
    if let Some(scored) = plan.score_frame(frame, &records, bytes, model, rejects, state, rejected)? {
        sink.rows(&scored)?;
    }
    Ok(())
}
