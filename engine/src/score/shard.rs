//! One byte range of a CSV file, scored on its own: the header found once,
//! the range's records found from raw bytes, so that many tasks can score
//! one large object in parallel through ranged reads.
//!
//! A range's nominal bounds `[from, to)` fall anywhere, usually inside a
//! record. Each range owns the records that *start* inside it:
//!
//! - it starts at the first line start at or after `from` (speculatively:
//!   it cannot know whether that newline was inside a quoted field), except
//!   the first range, which starts right after the header;
//! - it ends at the end of the record in progress at `to`, which it finds
//!   with the chunker's quote rules ([`RecordScanner`]), since from its
//!   start it does know the quote state.
//!
//! So the real end of range `i` is a true record boundary whenever its start
//! was, and the ranges chain (each real end equals the next real start) only
//! when every speculative start was a true boundary: by induction from the
//! header, which is one. A chain that does not close means a quoted newline
//! fooled a start; the caller then scores that range again from the
//! previous range's real end, a true record boundary. The quote
//! rules are those of [`super::chunker`]; a property test holds the two to
//! the same record ends.
//!
//! The bytes stay raw here: '"', '\n' and the delimiters are ASCII in every
//! encoding that can be split this way (UTF-8, Windows-1252); gzip and
//! UTF-16 cannot be split at all ([`splittable`]).

use std::io::{self, Read, Write};

use super::input::Partial;
use super::{RejectSink, ScoreError, ScoreOptions, Summary};
use crate::model::Model;

/// Where records end in raw CSV bytes, fed in pieces: the chunker's rules
/// (a `\n` outside quotes ends a record; a quote opens a quoted field only at
/// the start of a field once the delimiter is known; `""` inside a quoted
/// field is an escaped quote).
#[derive(Debug, Clone)]
pub struct RecordScanner {
    delimiter: Option<u8>,
    in_quotes: bool,
    /// The previous byte was the quote that closed a quoted field.
    after_closing_quote: bool,
    /// The next byte starts a record.
    at_record_start: bool,
    /// The previous byte, if any.
    previous: Option<u8>,
}

impl RecordScanner {
    /// A scanner at the start of a record. `delimiter` is `None` for the
    /// header (a quote then opens a field anywhere, as the chunker reads it).
    pub fn new(delimiter: Option<u8>) -> RecordScanner {
        RecordScanner {
            delimiter,
            in_quotes: false,
            after_closing_quote: false,
            at_record_start: true,
            previous: None,
        }
    }

    /// Scans `bytes`, returning the offset just past the first record end
    /// in it, if there is one. The scanner then stands at the start of the
    /// next record; call again with the rest to find the next end.
    pub fn next_end(&mut self, bytes: &[u8]) -> Option<usize> {
        for (pos, &b) in bytes.iter().enumerate() {
            let closing_before = std::mem::take(&mut self.after_closing_quote);
            let record_start = std::mem::take(&mut self.at_record_start);
            let previous = self.previous.replace(b);
            match b {
                b'"' if self.in_quotes => {
                    self.in_quotes = false;
                    self.after_closing_quote = true;
                }
                b'"' => {
                    let field_start = match self.delimiter {
                        None => true,
                        Some(d) => record_start || previous == Some(d),
                    };
                    if closing_before || field_start {
                        self.in_quotes = true;
                    }
                }
                b'\n' if !self.in_quotes => {
                    self.at_record_start = true;
                    return Some(pos + 1);
                }
                _ => {}
            }
        }
        None
    }
}

/// Length of the header record at the start of `bytes` (its line end
/// included), if `bytes` holds all of it.
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    RecordScanner::new(None).next_end(bytes)
}

/// Whether a file whose first bytes decode as `text` can be cut into byte
/// ranges: not compressed, and in an encoding where quotes, line ends and
/// delimiters are single ASCII bytes.
pub fn splittable(text: &Partial) -> bool {
    text.compression == "none" && matches!(text.encoding, "utf-8" | "windows-1252") && !text.json_lines
}

/// Where a range really began and ended, known once it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    /// Offset of the range's first record (its real start).
    pub start: u64,
    /// Offset just past its last record (its real end).
    pub end: u64,
    /// Line ends in `[start, end)`: the physical lines the range holds.
    pub newlines: u64,
}

/// The records of one range, read from a raw stream that begins at
/// `begin`: a [`Read`] that yields exactly the bytes `[start, end)` of the
/// module doc and then ends, recording its [`Extent`].
pub struct RangeReader<R> {
    inner: R,
    /// Offset of the next byte `inner` yields.
    position: u64,
    /// Bytes read from `inner` but not yet handed out.
    pending: Vec<u8>,
    pending_at: usize,
    /// Until the first line start is found, bytes are skipped.
    seeking_start: bool,
    limit: u64,
    scanner: RecordScanner,
    /// Everything handed out so far ends at a record end.
    at_boundary: bool,
    extent: Extent,
    done: bool,
}

impl<R: Read> RangeReader<R> {
    /// The range whose nominal end is `limit`, read from `inner`, whose
    /// first byte is at offset `begin`. With `at_record_start` the range
    /// starts at `begin` (the first range: right after the header);
    /// otherwise at the first line start after `begin`: pass `begin =
    /// from - 1`, so that a record starting exactly at `from` is found.
    pub fn new(inner: R, begin: u64, at_record_start: bool, limit: u64, delimiter: u8) -> RangeReader<R> {
        RangeReader {
            inner,
            position: begin,
            pending: Vec::new(),
            pending_at: 0,
            seeking_start: !at_record_start,
            limit,
            scanner: RecordScanner::new(Some(delimiter)),
            at_boundary: true,
            extent: Extent {
                start: begin,
                end: begin,
                newlines: 0,
            },
            done: false,
        }
    }

    /// Where the range began and ended; final once `read` returned 0.
    pub fn extent(&self) -> Extent {
        self.extent
    }

    fn fill(&mut self) -> io::Result<bool> {
        self.pending.resize(256 * 1024, 0);
        self.pending_at = 0;
        let n = loop {
            match self.inner.read(&mut self.pending) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.pending.truncate(n);
        Ok(n > 0)
    }
}

impl<R: Read> Read for RangeReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if self.pending_at == self.pending.len() && !self.fill()? {
                // The object ends: so does the range (its last record may
                // lack a line end).
                if self.seeking_start {
                    self.extent.start = self.position;
                }
                self.extent.end = self.position;
                self.done = true;
                return Ok(0);
            }
            let available = &self.pending[self.pending_at..];
            if self.seeking_start {
                match memchr::memchr(b'\n', available) {
                    Some(i) => {
                        self.pending_at += i + 1;
                        self.position += i as u64 + 1;
                        self.seeking_start = false;
                        self.extent.start = self.position;
                        self.extent.end = self.position;
                    }
                    None => {
                        self.position += available.len() as u64;
                        self.pending_at = self.pending.len();
                    }
                }
                continue;
            }
            if self.at_boundary && self.position >= self.limit {
                // At a record start at or past the nominal end: the next
                // record belongs to the next range.
                self.done = true;
                return Ok(0);
            }
            let want = available.len().min(out.len());
            // Hand out bytes up to the first record end at or past the
            // limit, and no further.
            let mut take = want;
            let mut scanned = 0;
            let mut last_end = None;
            while scanned < want {
                match self.scanner.next_end(&available[scanned..want]) {
                    Some(end) => {
                        scanned += end;
                        last_end = Some(scanned);
                        if self.position + scanned as u64 >= self.limit {
                            take = scanned;
                            break;
                        }
                    }
                    None => break,
                }
            }
            self.at_boundary = last_end == Some(take);
            out[..take].copy_from_slice(&available[..take]);
            self.extent.newlines += memchr::memchr_iter(b'\n', &available[..take]).count() as u64;
            self.pending_at += take;
            self.position += take as u64;
            self.extent.end = self.position;
            return Ok(take);
        }
    }
}

/// Scores one range: the file's `header` bytes (its first record, as
/// [`header_len`] measures it), then the range's records. `text` is the
/// file's text format as its first bytes decided it. Lines and rows in the
/// summary and the rejects are numbered as if the range followed the header
/// directly: the caller adds the lines and rows of the ranges before it.
pub fn score_range<R: Read + Send>(
    header: &[u8],
    range: &mut RangeReader<R>,
    text: Partial,
    model: &Model,
    out: &mut (dyn Write + Send),
    rejects: &mut dyn RejectSink,
    options: &ScoreOptions,
) -> Result<(Summary, Extent), ScoreError> {
    let options = ScoreOptions {
        range_of: Some(text),
        ..options.clone()
    };
    let input = io::Cursor::new(header).chain(&mut *range);
    let summary = super::pipeline::score(input, model, out, rejects, &options)?;
    Ok((summary, range.extent()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(bytes: &[u8], delimiter: Option<u8>) -> Vec<usize> {
        let mut scanner = RecordScanner::new(delimiter);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(end) = scanner.next_end(&bytes[at..]) {
            at += end;
            out.push(at);
        }
        out
    }

    #[test]
    fn quoted_newlines_and_escaped_quotes_do_not_end_records() {
        let csv = b"a,b\n\"x\ny\",1\n\"say \"\"hi\"\"\n\",2\n5\" tall,3\n";
        assert_eq!(ends(csv, Some(b',')), vec![4, 12, 28, 38]);
        // A stray quote inside a field does not open a quoted field.
        assert_eq!(ends(b"1,5\" x\n2,3\n", Some(b',')), vec![7, 11]);
    }

    #[test]
    fn header_length_includes_its_line_end() {
        assert_eq!(header_len(b"a,b\r\n1,2\n"), Some(5));
        assert_eq!(header_len(b"\"a\nb\",c\n1,2\n"), Some(8));
        assert_eq!(header_len(b"a,b"), None);
    }

    fn range(bytes: &[u8], from: u64, to: u64, first: bool) -> (Vec<u8>, Extent) {
        let begin = if first { from } else { from.saturating_sub(1) };
        let mut reader = RangeReader::new(&bytes[begin as usize..], begin, first, to, b',');
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (out, reader.extent())
    }

    #[test]
    fn ranges_chain_and_together_hold_every_record_once() {
        let body = b"h1,h2\n1,a\n22,bb\n333,ccc\n4444,dddd\n55555,eeeee";
        let header = header_len(body).unwrap() as u64;
        let size = body.len() as u64;
        for tasks in 1..=12u64 {
            let mut joined = Vec::new();
            let mut previous_end = header;
            for i in 0..tasks {
                let from = (size * i / tasks).max(if i == 0 { header } else { 0 });
                let to = if i + 1 == tasks {
                    u64::MAX
                } else {
                    size * (i + 1) / tasks
                };
                let (bytes, extent) = range(body, from, to, i == 0);
                assert_eq!(extent.start, previous_end, "{tasks} tasks, range {i}");
                assert_eq!(bytes.len() as u64, extent.end - extent.start);
                previous_end = extent.end;
                joined.extend(bytes);
            }
            assert_eq!(previous_end, size);
            assert_eq!(joined, body[header as usize..]);
        }
    }

    #[test]
    fn a_quoted_newline_at_a_boundary_breaks_the_chain() {
        let body = b"h,v\n1,\"long\nquoted\"\n2,x\n";
        // The second range starts speculatively after the quoted newline.
        let (_, first) = range(body, 4, 9, true);
        let (_, second) = range(body, 9, u64::MAX, false);
        assert_eq!(first.end, 20);
        assert_eq!(second.start, 12);
        assert_ne!(first.end, second.start);
    }

    #[test]
    fn a_range_holding_no_record_start_is_empty() {
        let body = b"h,v\n1,aaaaaaaaaaaaaaaaaaaa\n2,b\n";
        let (bytes, extent) = range(body, 10, 20, false);
        assert!(bytes.is_empty());
        assert_eq!((extent.start, extent.end), (27, 27));
    }
}
