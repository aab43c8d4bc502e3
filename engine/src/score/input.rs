//! Turning raw object bytes into UTF-8 CSV text: gzip, byte-order marks and
//! encodings, the way people really export files.
//!
//! Everything here is a [`Read`] adapter, so a Cloud Storage download and a
//! local file go through the same code without a temporary file.

use std::io::{self, Cursor, Read};

use encoding_rs::WINDOWS_1252;
use encoding_rs_io::DecodeReaderBytesBuilder;
use flate2::read::MultiGzDecoder;
use serde::Serialize;

/// How much decoded text is inspected to decide the encoding.
const SNIFF_BYTES: usize = 64 * 1024;

/// What the engine found out about the input's bytes (reported in manifests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputFormat {
    /// `csv`, or `jsonl` (one JSON object per line).
    pub kind: &'static str,
    pub compression: &'static str,
    pub encoding: &'static str,
    pub byte_order_mark: bool,
    /// The field delimiter, as a one-character string (empty for JSON
    /// Lines).
    pub delimiter: String,
}

/// Why the bytes are not CSV text at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotText {
    #[error("the file is empty")]
    Empty,
    #[error("the file holds binary data (NUL bytes), not CSV text")]
    Binary,
    #[error(
        "the file is Parquet, which is read by ranges from its footer: give it as a file or a .parquet object, not a stream"
    )]
    Parquet,
}

pub type TextReader<'a> = Box<dyn Read + Send + 'a>;

/// What [`decode`] made of the bytes: text to read, or why there is none.
pub enum Decoded<'a> {
    /// UTF-8 text without a byte-order mark, and what was found out on the
    /// way.
    Text(TextReader<'a>, Partial),
    NotText(NotText),
}

/// Wraps `raw` so it yields UTF-8 text without a byte-order mark.
///
/// gzip is recognised by its magic bytes, whatever the object's name. Text
/// that is not valid UTF-8 in its first 64 KiB is read as Windows-1252 (a
/// superset of Latin-1, what Excel writes in Spanish locales), so `AÑO`
/// survives; UTF-16 with a byte-order mark is converted.
///
/// The `io::Error` is the source's (a read that failed); the data's problems
/// are [`Decoded::NotText`].
pub fn decode<'a>(raw: impl Read + Send + 'a) -> io::Result<Decoded<'a>> {
    let (magic, raw) = peek(raw, 2)?;
    let (compression, reader): (&'static str, TextReader<'a>) = if magic.starts_with(&[0x1f, 0x8b]) {
        ("gzip", Box::new(MultiGzDecoder::new(raw)))
    } else {
        ("none", Box::new(raw))
    };
    let (prefix, reader) = peek(reader, SNIFF_BYTES)?;
    if prefix.is_empty() {
        return Ok(Decoded::NotText(NotText::Empty));
    }
    // JSON Lines is told from its first character, whatever the name.
    let json_lines = prefix
        .iter()
        .skip(if prefix.starts_with(&[0xef, 0xbb, 0xbf]) { 3 } else { 0 })
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b'{');
    let partial = |encoding, byte_order_mark| Partial {
        compression,
        encoding,
        byte_order_mark,
        json_lines,
    };
    if prefix.starts_with(&[0xff, 0xfe]) || prefix.starts_with(&[0xfe, 0xff]) {
        let encoding = if prefix[0] == 0xff { "utf-16le" } else { "utf-16be" };
        let reader = DecodeReaderBytesBuilder::new().bom_sniffing(true).build(reader);
        return Ok(Decoded::Text(Box::new(reader), partial(encoding, true)));
    }
    // PAR1 and binary: a CSV header may start with the letters PAR1.
    if super::parquet_in::is_parquet(&prefix) && memchr::memchr(0, &prefix).is_some() {
        return Ok(Decoded::NotText(NotText::Parquet));
    }
    if memchr::memchr(0, &prefix).is_some() {
        return Ok(Decoded::NotText(NotText::Binary));
    }
    if let Some(rest) = prefix.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        let skip = prefix.len() - rest.len();
        let mut reader = reader;
        io::copy(&mut (&mut reader).take(skip as u64), &mut io::sink())?;
        return Ok(Decoded::Text(reader, partial("utf-8", true)));
    }
    match std::str::from_utf8(&prefix) {
        // error_len() == None: the sniffed prefix merely ends mid-character.
        Ok(_) => Ok(Decoded::Text(reader, partial("utf-8", false))),
        Err(e) if e.error_len().is_none() => Ok(Decoded::Text(reader, partial("utf-8", false))),
        Err(_) => {
            let reader = DecodeReaderBytesBuilder::new()
                .encoding(Some(WINDOWS_1252))
                .build(reader);
            Ok(Decoded::Text(Box::new(reader), partial("windows-1252", false)))
        }
    }
}

/// Wraps `raw` as text in an encoding decided from elsewhere: a range of a
/// file starts with the file's header, but its own first 64 KiB may not
/// show the file's encoding (a Windows-1252 file whose accents come later),
/// so every range decodes as the file's start said. Only for
/// [`super::shard::splittable`] formats.
pub fn decode_as<'a>(raw: impl Read + Send + 'a, text: Partial) -> io::Result<Decoded<'a>> {
    let (prefix, mut reader) = peek(raw, 3)?;
    if prefix.is_empty() {
        return Ok(Decoded::NotText(NotText::Empty));
    }
    if text.byte_order_mark && prefix.starts_with(&[0xef, 0xbb, 0xbf]) {
        io::copy(&mut (&mut reader).take(3), &mut io::sink())?;
    }
    if text.encoding == "windows-1252" {
        let reader = DecodeReaderBytesBuilder::new()
            .encoding(Some(WINDOWS_1252))
            .build(reader);
        return Ok(Decoded::Text(Box::new(reader), text));
    }
    Ok(Decoded::Text(reader, text))
}

/// The format facts known before the header is read.
#[derive(Debug, Clone, Copy)]
pub struct Partial {
    pub compression: &'static str,
    pub encoding: &'static str,
    pub byte_order_mark: bool,
    /// The text starts with `{`: JSON Lines, not CSV.
    pub json_lines: bool,
}

impl Partial {
    pub fn with_delimiter(self, delimiter: u8) -> InputFormat {
        InputFormat {
            kind: "csv",
            compression: self.compression,
            encoding: self.encoding,
            byte_order_mark: self.byte_order_mark,
            delimiter: char::from(delimiter).to_string(),
        }
    }

    /// The format of a JSON Lines file.
    pub fn json_lines_format(self) -> InputFormat {
        InputFormat {
            kind: "jsonl",
            compression: self.compression,
            encoding: self.encoding,
            byte_order_mark: self.byte_order_mark,
            delimiter: String::new(),
        }
    }
}

/// Reads up to `n` bytes (fewer only at end of input) and returns them with
/// a reader that yields them again, followed by the rest.
fn peek<'a>(mut reader: impl Read + Send + 'a, n: usize) -> io::Result<(Vec<u8>, TextReader<'a>)> {
    let mut prefix = Vec::with_capacity(n);
    (&mut reader).take(n as u64).read_to_end(&mut prefix)?;
    let again = Cursor::new(prefix.clone()).chain(reader);
    Ok((prefix, Box::new(again)))
}

/// Picks the delimiter from the header line: the most frequent of `,` `;`
/// tab `|` outside quotes; `,` when none appears (a one-column file).
pub fn sniff_delimiter(header: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
    let mut in_quotes = false;
    for &b in header {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && let Some(entry) = counts.iter_mut().find(|(c, _)| *c == b) {
            entry.1 += 1;
        }
    }
    // Ties keep the earlier (more conventional) delimiter.
    let mut best = counts[0];
    for entry in counts {
        if entry.1 > best.1 {
            best = entry;
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn text(bytes: &[u8]) -> (String, Partial) {
        let Decoded::Text(mut reader, partial) = decode(bytes).unwrap() else {
            panic!("not text")
        };
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        (out, partial)
    }

    #[test]
    fn plain_utf8_passes_through() {
        let (t, p) = text("a,b\n1,ñ\n".as_bytes());
        assert_eq!(t, "a,b\n1,ñ\n");
        assert_eq!((p.compression, p.encoding, p.byte_order_mark), ("none", "utf-8", false));
    }

    #[test]
    fn utf8_bom_is_stripped() {
        let (t, p) = text(b"\xef\xbb\xbfOPERA,MES\n");
        assert_eq!(t, "OPERA,MES\n");
        assert!(p.byte_order_mark);
    }

    #[test]
    fn latin1_is_decoded_as_windows_1252() {
        let (t, p) = text(b"D\xcdA,A\xd1O\n1,2017\n");
        assert_eq!(t, "DÍA,AÑO\n1,2017\n");
        assert_eq!(p.encoding, "windows-1252");
    }

    #[test]
    fn utf16_with_bom_is_converted() {
        let mut bytes = vec![0xff, 0xfe];
        for unit in "A,Ñ\n".encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        let (t, p) = text(&bytes);
        assert_eq!(t, "A,Ñ\n");
        assert_eq!(p.encoding, "utf-16le");
    }

    #[test]
    fn gzip_is_recognised_by_magic() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"x,y\n1,2\n").unwrap();
        let (t, p) = text(&gz.finish().unwrap());
        assert_eq!(t, "x,y\n1,2\n");
        assert_eq!(p.compression, "gzip");
    }

    #[test]
    fn empty_and_binary_are_not_text() {
        assert!(matches!(decode(&b""[..]).unwrap(), Decoded::NotText(NotText::Empty)));
        assert!(matches!(
            decode(&b"PK\x03\x04\x00\x00"[..]).unwrap(),
            Decoded::NotText(NotText::Binary)
        ));
    }

    #[test]
    fn delimiter_is_sniffed_from_the_header() {
        assert_eq!(sniff_delimiter(b"a,b,c"), b',');
        assert_eq!(sniff_delimiter(b"a;b;\"c,d\""), b';');
        assert_eq!(sniff_delimiter(b"a\tb"), b'\t');
        assert_eq!(sniff_delimiter(b"single"), b',');
    }
}
