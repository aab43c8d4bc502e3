//! The predictions as JSON Lines: one object per row, the input's columns
//! (as text, an empty field as `null`) under the header's names, then the
//! appended columns with their types (`probability` a number, `prediction`
//! 0 or 1, `source_generation` and `row_number` integers). A JSON Lines
//! input's objects pass through as they came (every key, every type), the
//! appended keys added before their closing brace.

use std::io::Write;

use super::fields::Fields;
use super::{Provenance, Scored, Shape, Sink, unique_names};
use crate::score::ScoreError;

pub struct JsonlSink<'w> {
    out: &'w mut (dyn Write + Send),
    fields: Fields,
    /// `"name":` for each input column, JSON-escaped once.
    keys: Vec<Vec<u8>>,
    /// The appended columns' keys, in order.
    appended: Vec<Vec<u8>>,
    provenance: Option<(Provenance, String)>,
    /// The input is JSON Lines: its objects pass through.
    pass_through: bool,
    buf: Vec<u8>,
}

fn key(name: &str) -> Vec<u8> {
    let mut key = serde_json::to_vec(name).unwrap_or_else(|_| b"\"\"".to_vec());
    key.push(b':');
    key
}

impl<'w> JsonlSink<'w> {
    pub fn new(shape: &Shape<'_>, provenance: Option<Provenance>, out: &'w mut (dyn Write + Send)) -> JsonlSink<'w> {
        JsonlSink {
            out,
            fields: Fields::new(shape.json_lines, shape.delimiter, shape.columns),
            keys: unique_names(shape.columns).iter().map(|n| key(n)).collect(),
            appended: shape.output_columns.iter().map(|n| key(n)).collect(),
            provenance: provenance.map(|p| {
                let at = p.scored_at_text();
                (p, at)
            }),
            pass_through: shape.json_lines,
            buf: Vec::with_capacity(1 << 20),
        }
    }
}

/// `text` as a JSON string.
fn push_str(buf: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, text);
}

impl Sink for JsonlSink<'_> {
    fn rows(&mut self, scored: &Scored) -> Result<(), ScoreError> {
        for row in &scored.rows {
            let record = &scored.bytes[row.start..row.end];
            if self.pass_through {
                // A scored line is an object: it ends with `}` (the engine
                // rejected every line that does not parse as one) and has
                // at least one key (the model's features).
                let end = record.iter().rposition(|b| *b == b'}').unwrap_or(record.len());
                self.buf.extend_from_slice(&record[..end]);
                self.buf.truncate(self.buf.len() - trailing_space(&record[..end]));
                self.append(row);
                continue;
            }
            self.fields.split(record);
            self.buf.push(b'{');
            for (i, key) in self.keys.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(key);
                match self.fields.get(i) {
                    Some(value) if !value.is_empty() => push_str(&mut self.buf, &value),
                    _ => self.buf.extend_from_slice(b"null"),
                }
            }
            self.append(row);
        }
        self.out.write_all(&self.buf).map_err(ScoreError::Write)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ScoreError> {
        self.out.flush().map_err(ScoreError::Write)
    }
}

/// Whitespace bytes at the end of `bytes`.
fn trailing_space(bytes: &[u8]) -> usize {
    bytes.iter().rev().take_while(|b| b.is_ascii_whitespace()).count()
}

impl JsonlSink<'_> {
    /// The appended keys and the closing brace and line end.
    fn append(&mut self, row: &super::OutRow) {
        {
            let mut keys = self.appended.iter();
            let mut next = |buf: &mut Vec<u8>| {
                buf.push(b',');
                if let Some(k) = keys.next() {
                    buf.extend_from_slice(k);
                }
            };
            next(&mut self.buf);
            // serde_json writes a finite f64 in its shortest round-trip form.
            let _ = serde_json::to_writer(&mut self.buf, &row.probability);
            next(&mut self.buf);
            self.buf.push(if row.prediction { b'1' } else { b'0' });
            if let Some(explanation) = &row.explanation {
                next(&mut self.buf);
                push_str(&mut self.buf, explanation);
            }
            if let Some((p, at)) = &self.provenance {
                next(&mut self.buf);
                push_str(&mut self.buf, &p.source_uri);
                next(&mut self.buf);
                let _ = write!(self.buf, "{}", p.source_generation);
                next(&mut self.buf);
                if p.row_numbers {
                    let _ = write!(self.buf, "{}", row.row);
                } else {
                    self.buf.extend_from_slice(b"null");
                }
                next(&mut self.buf);
                push_str(&mut self.buf, &p.model_version);
                next(&mut self.buf);
                push_str(&mut self.buf, at);
            }
            self.buf.extend_from_slice(b"}\n");
        }
    }
}
