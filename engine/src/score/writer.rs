//! The predictions file: the input's header line with the new column names,
//! then every kept input record exactly as it came (decoded to UTF-8, line
//! end `\n`, the input's own delimiter and quoting) with the probability and
//! the prediction appended. Copying the record instead of re-serialising its
//! fields is both faithful and cheaper.

use std::io::Write as _;

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
    pub probability: f64,
    pub prediction: bool,
    pub explanation: Option<String>,
}

/// Writes records in the input's delimiter.
pub struct RowWriter {
    pub delimiter: u8,
    /// The names appended to the header.
    pub output_columns: Vec<String>,
}

impl RowWriter {
    /// The original header line and the appended column names.
    pub fn write_header(&self, buf: &mut Vec<u8>, header: &[u8]) {
        buf.extend_from_slice(header);
        for name in &self.output_columns {
            buf.push(self.delimiter);
            push_field(buf, name, self.delimiter);
        }
        buf.push(b'\n');
    }

    /// Each kept record as it came, then its scores.
    pub fn write_rows(&self, buf: &mut Vec<u8>, scored: &Scored) {
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
}

/// A field, quoted when it holds the delimiter, a quote or a line end.
pub fn push_field(buf: &mut Vec<u8>, text: &str, delimiter: u8) {
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

/// `OPERA=Grupo LATAM:+0.312; MES=12:+0.250` for the top `n` contributions.
pub fn format_explanation(parts: &[crate::model::Contribution], n: usize) -> String {
    parts
        .iter()
        .take(n)
        .map(|c| format!("{}={}:{:+.4}", c.feature, c.value, c.contribution))
        .collect::<Vec<_>>()
        .join("; ")
}
