//! The predictions as CSV. By default: the input's header line with the new
//! column names, then every kept input record exactly as it came (decoded to
//! UTF-8, line end `\n`, the input's own delimiter and quoting) with the new
//! fields appended; copying the record instead of re-serialising its fields
//! is both faithful and cheaper. With another delimiter asked for
//! (`OUTPUT_DELIMITER=,` for loaders that expect commas), every field is
//! re-serialised in it.

use std::io::Write;

use super::fields::Fields;
use super::{Provenance, Scored, Shape, Sink};
use crate::score::ScoreError;

pub struct CsvSink<'w> {
    out: &'w mut (dyn Write + Send),
    /// The output's delimiter.
    delimiter: u8,
    /// Re-serialise every field (the delimiters differ).
    fields: Option<Fields>,
    provenance: Option<(Provenance, String)>,
    buf: Vec<u8>,
}

impl<'w> CsvSink<'w> {
    pub fn new(
        shape: &Shape<'_>,
        delimiter: Option<u8>,
        provenance: Option<Provenance>,
        out: &'w mut (dyn Write + Send),
    ) -> Result<CsvSink<'w>, ScoreError> {
        let out_delimiter = delimiter.unwrap_or(shape.delimiter);
        let mut sink = CsvSink {
            out,
            delimiter: out_delimiter,
            // JSON Lines input has no record to pass through.
            fields: (shape.json_lines || out_delimiter != shape.delimiter)
                .then(|| Fields::new(shape.json_lines, shape.delimiter, shape.columns)),
            provenance: provenance.map(|p| {
                let at = p.scored_at_text();
                (p, at)
            }),
            buf: Vec::with_capacity(1 << 20),
        };
        if sink.fields.is_some() {
            for (i, name) in shape.columns.iter().enumerate() {
                if i > 0 {
                    sink.buf.push(out_delimiter);
                }
                push_field(&mut sink.buf, name, out_delimiter);
            }
        } else {
            sink.buf.extend_from_slice(shape.header_line);
        }
        for name in shape.output_columns {
            sink.buf.push(out_delimiter);
            push_field(&mut sink.buf, name, out_delimiter);
        }
        sink.buf.push(b'\n');
        sink.flush_buf()?;
        Ok(sink)
    }

    fn flush_buf(&mut self) -> Result<(), ScoreError> {
        self.out.write_all(&self.buf).map_err(ScoreError::Write)?;
        self.buf.clear();
        Ok(())
    }
}

impl Sink for CsvSink<'_> {
    fn rows(&mut self, scored: &Scored) -> Result<(), ScoreError> {
        let d = self.delimiter;
        for row in &scored.rows {
            let record = &scored.bytes[row.start..row.end];
            match &mut self.fields {
                None => self.buf.extend_from_slice(record),
                Some(fields) => {
                    fields.split(record);
                    for i in 0..fields.len() {
                        if i > 0 {
                            self.buf.push(d);
                        }
                        push_field(&mut self.buf, &fields.get(i).unwrap_or_default(), d);
                    }
                }
            }
            self.buf.push(d);
            let _ = write!(self.buf, "{}", row.probability);
            self.buf.push(d);
            self.buf.push(if row.prediction { b'1' } else { b'0' });
            if let Some(explanation) = &row.explanation {
                self.buf.push(d);
                push_field(&mut self.buf, explanation, d);
            }
            if let Some((p, at)) = &self.provenance {
                self.buf.push(d);
                push_field(&mut self.buf, &p.source_uri, d);
                let _ = write!(self.buf, "{d}{}{d}", p.source_generation, d = d as char);
                if p.row_numbers {
                    let _ = write!(self.buf, "{}", row.row);
                }
                self.buf.push(d);
                push_field(&mut self.buf, &p.model_version, d);
                self.buf.push(d);
                self.buf.extend_from_slice(at.as_bytes());
            }
            self.buf.push(b'\n');
        }
        self.flush_buf()
    }

    fn finish(mut self: Box<Self>) -> Result<(), ScoreError> {
        self.flush_buf()?;
        self.out.flush().map_err(ScoreError::Write)
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
