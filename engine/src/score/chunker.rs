//! Cutting a text stream into chunks of whole CSV records.
//!
//! polars parses a buffer, never a stream, and its file scan maps the whole
//! file; cutting the stream at record ends lets polars parse each chunk from
//! memory while the process holds only a few chunks at a time, whatever the
//! file size.
//!
//! A record ends at a `\n` outside quotes. A quote opens a quoted field only
//! at the start of a field (as RFC 4180 and the `csv` crate read it), so a
//! stray `5"` inside a field cannot swallow the rest of the file; `""` inside
//! a quoted field is an escaped quote.

use std::io::{self, Read};

// The record rules over a chunk in memory now live in `records`; this path
// stays public so callers that named them here keep working.
pub use super::records::{RecordSpan, regular_delimiters, split_records};

/// Complete records, ready for the parser.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// 1-based number of the first data record in the file.
    pub first_row: u64,
    /// Physical line on which the first record starts (the header is line 1).
    pub first_line: u64,
    /// Records in the chunk, blank lines included.
    pub records: u64,
    /// Blank lines among them (skipped by the parser, not rows).
    pub blank: u64,
    /// Whether some record spans several lines (a quoted newline), so the
    /// line of a record cannot be computed from its index alone.
    pub multiline: bool,
}

/// What the chunker hands out.
#[derive(Debug)]
pub enum Piece {
    Chunk(Chunk),
    /// A record longer than the limit; its bytes were skipped, not buffered.
    Oversized {
        row: u64,
        line: u64,
        bytes: u64,
    },
}

pub struct Chunker<R> {
    reader: R,
    /// Unconsumed bytes; always begins at a record start.
    buf: Vec<u8>,
    eof: bool,
    target: usize,
    max_record: usize,
    delimiter: Option<u8>,
    next_row: u64,
    next_line: u64,
}

/// The scanner's view of `buf[..scanned]`.
#[derive(Default)]
struct Scan {
    scanned: usize,
    in_quotes: bool,
    /// Where the last quoted field closed (may be before the buffer after an
    /// oversized record was dropped, hence signed).
    closed_at: Option<i64>,
    record_start: usize,
    /// The byte before `buf[0]`, when `buf` starts mid-record.
    before: Option<u8>,
    /// The first record is over the limit: its end and the newlines in it.
    oversized_first: Option<(usize, u64)>,
    /// A later record is over the limit: cut before it.
    stop: bool,
    /// End (exclusive) of the last complete record, and the counts up to it.
    last_end: usize,
    records: u64,
    blank: u64,
    lines: u64,
    newlines: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, target: usize, max_record: usize) -> Self {
        Chunker {
            reader,
            buf: Vec::new(),
            eof: false,
            target: target.max(1),
            max_record: max_record.max(1),
            delimiter: None,
            next_row: 1,
            next_line: 1,
        }
    }

    /// Reads the header record (without its line end), before the delimiter
    /// is known; `None` when the input has no bytes. Counts its lines.
    pub fn header(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.next_piece_limited(1)? {
            None => Ok(None),
            Some(Piece::Oversized { bytes, .. }) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the header line is longer than {bytes} bytes"),
            )),
            Some(Piece::Chunk(chunk)) => {
                self.next_row = 1;
                let mut bytes = chunk.bytes;
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                Ok(Some(bytes))
            }
        }
    }

    /// What has not been handed out yet: the bytes read ahead, then the rest
    /// of the input. After [`Chunker::header`], the input after its header,
    /// for a reader that takes it from there (training data).
    pub fn into_rest(self) -> io::Chain<io::Cursor<Vec<u8>>, R> {
        io::Cursor::new(self.buf).chain(self.reader)
    }

    /// From now on, quotes open only at the start of a field.
    pub fn set_delimiter(&mut self, delimiter: u8) {
        self.delimiter = Some(delimiter);
    }

    /// The next chunk of about `target` bytes, or `None` at end of input.
    pub fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        self.next_piece_limited(u64::MAX)
    }

    fn next_piece_limited(&mut self, max_records: u64) -> io::Result<Option<Piece>> {
        let mut scan = Scan::default();
        loop {
            self.scan(&mut scan, max_records);
            if let Some((end, newlines)) = scan.oversized_first {
                // A complete record over the limit, at the start of the buffer.
                let piece = Piece::Oversized {
                    row: self.next_row,
                    line: self.next_line,
                    bytes: end as u64,
                };
                self.buf.drain(..end);
                self.next_row += 1;
                self.next_line += newlines;
                return Ok(Some(piece));
            }
            let have_record = scan.records > 0;
            if have_record && (scan.stop || self.buf.len() >= self.target || scan.records >= max_records) {
                return Ok(Some(Piece::Chunk(self.cut(&scan))));
            }
            if self.eof {
                let tail = self.buf.len() - scan.last_end;
                if tail > 0 {
                    // The last record has no line end: it ends with the input.
                    if tail > self.max_record + 2 {
                        if have_record {
                            return Ok(Some(Piece::Chunk(self.cut(&scan))));
                        }
                        let piece = Piece::Oversized {
                            row: self.next_row,
                            line: self.next_line,
                            bytes: tail as u64,
                        };
                        self.buf.clear();
                        self.next_row += 1;
                        return Ok(Some(piece));
                    }
                    let blank = self.buf[scan.last_end..].iter().all(|b| *b == b'\r');
                    scan.records += 1;
                    scan.blank += u64::from(blank);
                    scan.lines = scan.newlines + 1;
                    scan.last_end = self.buf.len();
                }
                if scan.records == 0 {
                    return Ok(None);
                }
                return Ok(Some(Piece::Chunk(self.cut(&scan))));
            }
            if !have_record && self.buf.len() > self.max_record + 2 {
                return self.skip_oversized(scan).map(Some);
            }
            self.fill()?;
        }
    }

    /// Reads more input (at most a MiB, or the target if smaller).
    fn fill(&mut self) -> io::Result<()> {
        let want = self.target.clamp(1, 1 << 20);
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let result = loop {
            match self.reader.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                self.buf.truncate(start);
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.buf.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Advances the scan over newly read bytes, stopping after `max_records`.
    fn scan(&self, s: &mut Scan, max_records: u64) {
        let buf = &self.buf;
        let from = s.scanned;
        for pos in memchr::memchr2_iter(b'"', b'\n', &buf[from..]).map(|p| p + from) {
            if buf[pos] == b'"' {
                if s.in_quotes {
                    s.in_quotes = false;
                    s.closed_at = Some(pos as i64);
                } else if s.closed_at.is_some_and(|c| c + 1 == pos as i64) {
                    s.in_quotes = true; // `""`: an escaped quote inside the field
                } else {
                    let previous = if pos == 0 { s.before } else { Some(buf[pos - 1]) };
                    let field_start = match self.delimiter {
                        None => true,
                        Some(d) => pos == s.record_start || previous == Some(d),
                    };
                    if field_start {
                        s.in_quotes = true;
                    }
                }
                continue;
            }
            s.newlines += 1;
            if s.in_quotes {
                continue;
            }
            let len = (pos + 1).saturating_sub(s.record_start);
            if len > self.max_record + 2 {
                if s.records == 0 {
                    s.oversized_first = Some((pos + 1, s.newlines));
                } else {
                    s.stop = true;
                }
                s.scanned = pos + 1;
                return;
            }
            s.blank += u64::from(len == 1 || (len == 2 && buf[pos - 1] == b'\r'));
            s.records += 1;
            s.lines = s.newlines;
            s.last_end = pos + 1;
            s.record_start = pos + 1;
            s.closed_at = None;
            if s.records >= max_records {
                s.scanned = pos + 1;
                return;
            }
        }
        s.scanned = buf.len();
    }

    fn cut(&mut self, s: &Scan) -> Chunk {
        let rest = self.buf.split_off(s.last_end);
        let bytes = std::mem::replace(&mut self.buf, rest);
        let chunk = Chunk {
            bytes,
            first_row: self.next_row,
            first_line: self.next_line,
            records: s.records,
            blank: s.blank,
            multiline: s.lines != s.records,
        };
        self.next_row += s.records - s.blank;
        self.next_line += s.lines;
        chunk
    }

    /// Drops a record longer than the limit without holding it in memory.
    fn skip_oversized(&mut self, mut s: Scan) -> io::Result<Piece> {
        let (row, line) = (self.next_row, self.next_line);
        let mut skipped = 0u64;
        loop {
            if s.records > 0 {
                self.buf.drain(..s.last_end);
                skipped += s.last_end as u64;
                self.next_line += s.lines;
                break;
            }
            // Drop what was scanned, keeping just enough state to go on.
            let len = self.buf.len();
            skipped += len as u64;
            self.next_line += s.newlines;
            s = Scan {
                in_quotes: s.in_quotes,
                closed_at: s.closed_at.map(|c| c - len as i64),
                record_start: usize::MAX,
                before: self.buf.last().copied().or(s.before),
                ..Scan::default()
            };
            self.buf.clear();
            if self.eof {
                break;
            }
            self.fill()?;
            self.scan(&mut s, 1);
        }
        self.next_row += 1;
        Ok(Piece::Oversized {
            row,
            line,
            bytes: skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(input: &str, target: usize, max_record: usize) -> (Vec<u8>, Vec<Piece>) {
        let mut c = Chunker::new(input.as_bytes(), target, max_record);
        let header = c.header().unwrap().unwrap();
        c.set_delimiter(b',');
        let mut out = Vec::new();
        while let Some(p) = c.next_piece().unwrap() {
            out.push(p);
        }
        (header, out)
    }

    fn chunks(ps: &[Piece]) -> Vec<&Chunk> {
        ps.iter()
            .filter_map(|p| match p {
                Piece::Chunk(c) => Some(c),
                Piece::Oversized { .. } => None,
            })
            .collect()
    }

    #[test]
    fn cuts_only_at_record_ends_and_keeps_every_byte() {
        let body: String = (0..1000).map(|i| format!("{i},\"a\nb\",x\n")).collect();
        let input = format!("h1,h2,h3\n{body}");
        let (header, ps) = pieces(&input, 100, 1 << 20);
        assert_eq!(header, b"h1,h2,h3");
        let cs = chunks(&ps);
        assert!(cs.len() > 10);
        let joined: Vec<u8> = cs.iter().flat_map(|c| c.bytes.clone()).collect();
        assert_eq!(joined, body.as_bytes());
        for c in &cs {
            assert!(c.bytes.ends_with(b",x\n"));
            assert!(c.multiline);
        }
        assert_eq!(cs.iter().map(|c| c.records).sum::<u64>(), 1000);
        // Each record spans two lines: record r starts on line 2 + 2(r-1).
        for c in &cs {
            assert_eq!(c.first_line, 2 + 2 * (c.first_row - 1));
        }
    }

    #[test]
    fn crlf_blank_lines_and_a_missing_final_newline() {
        let (header, ps) = pieces("a,b\r\n1,2\r\n\r\n3,4", 1 << 20, 1 << 20);
        assert_eq!(header, b"a,b");
        let cs = chunks(&ps);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].records, 3);
        assert_eq!(cs[0].blank, 1);
        assert_eq!(cs[0].first_line, 2);
        assert!(!cs[0].multiline);
    }

    #[test]
    fn stray_quote_inside_a_field_does_not_open_a_quoted_field() {
        let (_, ps) = pieces("a,b\n5\",x\n6,y\n", 1, 1 << 20);
        let cs = chunks(&ps);
        assert_eq!(cs.iter().map(|c| c.records).sum::<u64>(), 2);
    }

    #[test]
    fn escaped_quotes_stay_inside_the_field() {
        let (_, ps) = pieces("a,b\n\"say \"\"hi\n\"\"\",1\n2,3\n", 1 << 20, 1 << 20);
        let cs = chunks(&ps);
        assert_eq!(cs[0].records, 2);
        assert!(cs[0].multiline);
    }

    #[test]
    fn oversized_record_is_skipped_and_reported_and_the_rest_is_kept() {
        let long = "x".repeat(5000);
        let input = format!("a,b\n1,2\n{long},3\n4,5\n");
        let (_, ps) = pieces(&input, 64, 1000);
        let mut rows = Vec::new();
        let mut oversized = Vec::new();
        for p in &ps {
            match p {
                Piece::Chunk(c) => rows.push((c.first_row, String::from_utf8(c.bytes.clone()).unwrap())),
                Piece::Oversized { row, line, bytes } => oversized.push((*row, *line, *bytes)),
            }
        }
        assert_eq!(oversized.len(), 1);
        assert_eq!((oversized[0].0, oversized[0].1), (2, 3));
        assert!(oversized[0].2 >= 5000);
        let text: String = rows.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(text, "1,2\n4,5\n");
        assert_eq!(rows.last().unwrap().0, 3);
    }

    #[test]
    fn empty_input_has_no_header() {
        let mut c = Chunker::new(&b""[..], 10, 10);
        assert!(c.header().unwrap().is_none());
    }
}
