//! Rows the model cannot take: where they are and why.

use std::io::{self, Write};

/// One rejected input row. `line` is the physical line it starts on (the
/// header is line 1); `row` counts data records from 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejectedRow {
    pub line: u64,
    pub row: u64,
    /// The first offending column (empty for whole-record problems).
    pub column: String,
    pub value: String,
    /// Every problem of the row, `; `-separated.
    pub reason: String,
}

/// Where rejected rows go. The job streams them to the errors object; tests
/// collect them.
pub trait RejectSink: Send {
    fn reject(&mut self, row: &RejectedRow) -> io::Result<()>;
}

impl RejectSink for Vec<RejectedRow> {
    fn reject(&mut self, row: &RejectedRow) -> io::Result<()> {
        self.push(row.clone());
        Ok(())
    }
}

/// The errors file's header.
pub const ERRORS_HEADER: [&str; 5] = ["line", "row", "column", "value", "reason"];

/// Writes rejected rows as CSV; the writer is created on the first row, so a
/// clean file produces no errors object at all.
pub struct CsvRejects<W: Write, F: FnMut() -> io::Result<W>> {
    open: F,
    writer: Option<csv::Writer<W>>,
    count: u64,
}

impl<W: Write, F: FnMut() -> io::Result<W>> CsvRejects<W, F> {
    pub fn new(open: F) -> Self {
        CsvRejects {
            open,
            writer: None,
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes and returns the inner writer, if any row was written.
    pub fn finish(self) -> io::Result<Option<W>> {
        match self.writer {
            None => Ok(None),
            Some(w) => w.into_inner().map(Some).map_err(|e| e.into_error()),
        }
    }
}

impl<W: Write + Send, F: FnMut() -> io::Result<W> + Send> RejectSink for CsvRejects<W, F> {
    fn reject(&mut self, row: &RejectedRow) -> io::Result<()> {
        if self.writer.is_none() {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer((self.open)()?);
            w.write_record(ERRORS_HEADER)?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_record([
                row.line.to_string().as_str(),
                row.row.to_string().as_str(),
                &row.column,
                &row.value,
                &row.reason,
            ])?;
        }
        self.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_once_and_quotes_as_needed() {
        let mut sink = CsvRejects::new(|| Ok(Vec::new()));
        for line in [2, 5] {
            sink.reject(&RejectedRow {
                line,
                row: line - 1,
                column: "OPERA".into(),
                value: "Foo, Inc".into(),
                reason: "OPERA: unknown value".into(),
            })
            .unwrap();
        }
        let text = String::from_utf8(sink.finish().unwrap().unwrap()).unwrap();
        assert_eq!(
            text,
            "line,row,column,value,reason\n2,1,OPERA,\"Foo, Inc\",OPERA: unknown value\n5,4,OPERA,\"Foo, Inc\",OPERA: unknown value\n"
        );
    }

    #[test]
    fn no_rows_means_no_writer() {
        let sink = CsvRejects::new(|| -> io::Result<Vec<u8>> { panic!("opened without a row") });
        assert!(sink.finish().unwrap().is_none());
    }
}
