//! The chunker's record rules over a chunk already in memory: where each
//! record starts and ends, and how many field delimiters it holds outside
//! quotes. The careful path (`plan`) uses them to find and check the records
//! of a chunk, and must agree byte for byte with where the chunker cut, so
//! they live beside it rather than in the parser: a quote opens a quoted
//! field only at the start of a field, `""` inside one is an escaped quote,
//! and a record ends at a `\n` outside quotes.

/// Field delimiters outside quoted fields, with the chunker's quote rules,
/// when the record's quoting is regular: every quote opens a field at its
/// start, closes it right before a delimiter or the line end, or is the
/// escaped `""` inside it. `None` otherwise (a stray `5"` inside a field, a
/// closing quote followed by more text, a quote left open): polars reads
/// such quotes differently from the chunker and the `csv` crate (it may
/// open a quoted field mid-field and swallow the next record), so a record
/// like that must take the careful path, whatever its field count.
pub fn regular_delimiters(bytes: &[u8], delimiter: u8) -> Option<u64> {
    if memchr::memchr(b'"', bytes).is_none() {
        // The common case: a plain count, which the compiler vectorises.
        return Some(bytes.iter().filter(|b| **b == delimiter).count() as u64);
    }
    let mut count = 0u64;
    let mut in_quotes = false;
    let mut closed_at: Option<usize> = None;
    for pos in memchr::memchr3_iter(b'"', b'\n', delimiter, bytes) {
        let b = bytes[pos];
        if b == b'"' {
            if in_quotes {
                in_quotes = false;
                closed_at = Some(pos);
                if !matches!(bytes.get(pos + 1), None | Some(b'"' | b'\r' | b'\n'))
                    && bytes.get(pos + 1) != Some(&delimiter)
                {
                    return None;
                }
            } else if closed_at.is_some_and(|c| c + 1 == pos)
                || pos == 0
                || bytes[pos - 1] == delimiter
                || bytes[pos - 1] == b'\n'
            {
                in_quotes = true;
            } else {
                return None;
            }
        } else if !in_quotes && b == delimiter {
            count += 1;
        }
    }
    (!in_quotes).then_some(count)
}

/// One record of a chunk: its bytes (line end included) and the line it
/// starts on, relative to the chunk's first line (0-based).
pub struct RecordSpan {
    pub start: usize,
    pub end: usize,
    pub line: u64,
    pub blank: bool,
}

/// Splits a chunk into records with the chunker's own rules, so the careful
/// path agrees with the cut on where every record starts and ends.
pub fn split_records(bytes: &[u8], delimiter: u8) -> Vec<RecordSpan> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut closed_at: Option<usize> = None;
    let mut record_start = 0usize;
    let mut line = 0u64;
    let mut record_line = 0u64;
    for pos in memchr::memchr2_iter(b'"', b'\n', bytes) {
        if bytes[pos] == b'"' {
            if in_quotes {
                in_quotes = false;
                closed_at = Some(pos);
            } else if closed_at.is_some_and(|c| c + 1 == pos) || pos == record_start || bytes[pos - 1] == delimiter {
                in_quotes = true;
            }
            continue;
        }
        line += 1;
        if in_quotes {
            continue;
        }
        let len = pos + 1 - record_start;
        out.push(RecordSpan {
            start: record_start,
            end: pos + 1,
            line: record_line,
            blank: len == 1 || (len == 2 && bytes[pos - 1] == b'\r'),
        });
        record_start = pos + 1;
        record_line = line;
        closed_at = None;
    }
    if record_start < bytes.len() {
        out.push(RecordSpan {
            start: record_start,
            end: bytes.len(),
            line: record_line,
            blank: bytes[record_start..].iter().all(|b| *b == b'\r'),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_records_agrees_with_lines_and_blanks() {
        let spans = split_records(b"a,b\r\n\r\n\"x\ny\",2\nlast", b',');
        let lines: Vec<u64> = spans.iter().map(|s| s.line).collect();
        let blanks: Vec<bool> = spans.iter().map(|s| s.blank).collect();
        assert_eq!(lines, [0, 1, 2, 4]);
        assert_eq!(blanks, [false, true, false, false]);
        assert_eq!(spans[3].start, 15);
    }

    #[test]
    fn delimiters_inside_quotes_do_not_count() {
        assert_eq!(regular_delimiters(b"a,b,c\nd,e,f\n", b','), Some(4));
        assert_eq!(regular_delimiters(b"\"a,b\",c\n\"x\"\"y,\",z\n", b','), Some(2));
        assert_eq!(regular_delimiters(b"a;\"b;c\";d\r\n", b';'), Some(2));
        assert_eq!(regular_delimiters(b"\"say \"\"hi\"\"\nthen\",x\n", b','), Some(1));
    }

    #[test]
    fn irregular_quoting_is_not_counted() {
        // A stray quote inside a field: polars may open a quoted field there.
        assert_eq!(regular_delimiters(b"1,5\" tall,y\n", b','), None);
        // Text after a closing quote.
        assert_eq!(regular_delimiters(b"\"a\"b,c\n", b','), None);
        // A quote left open.
        assert_eq!(regular_delimiters(b"a,\"b,c\n", b','), None);
    }
}
