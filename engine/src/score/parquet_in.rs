//! Parquet input, read row group by row group through ranged reads of the
//! object ([`RandomAccess`]): the footer first, then each row group's
//! column chunks, never the whole object at once and never a temporary
//! file, so memory is bounded by the largest row group, not the file.
//!
//! Each row becomes one JSON object and is scored by the JSON Lines rooms
//! (`jsonl`): its columns, its checks and its rejected rows (numbered by row,
//! a row being a line) are a JSON Lines file's. Values reach the model as
//! text, as they would from a CSV: a string as it is, a number as written
//! (`11`, `11.5`), a date or timestamp as Parquet's reader prints it.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Buf as _, Bytes};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader as _, Length};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::{Field, reader::RowIter};

use super::input::Partial;
use super::{FileRejection, RejectSink, ScoreError, ScoreOptions, SourceError, Summary};
use crate::model::Model;

/// An object read by byte ranges (a Cloud Storage object, a local file).
pub trait RandomAccess: Send + Sync {
    /// The object's size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes from `offset` (fewer only past the end). An error
    /// of the source (not of the bytes) is wrapped in a [`SourceError`].
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

/// A local file, read with positioned reads.
pub struct FileRanges(pub std::fs::File);

impl RandomAccess for FileRanges {
    fn size(&self) -> u64 {
        self.0.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        // A length from a corrupt footer is never allocated past the end.
        let len = len.min(self.size().saturating_sub(offset) as usize);
        let mut buf = vec![0; len];
        let mut filled = 0;
        while filled < len {
            match self.0.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SourceError::io(e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

/// The Parquet reader's view of a [`RandomAccess`]: once the footer is
/// read, every request inside a row group is served from that row group's
/// bytes, fetched whole in one ranged read when first asked for (the
/// reader asks for page headers and pages one by one: a request each would
/// be hundreds of round trips per row group).
#[derive(Clone)]
struct Ranges(Arc<Inner>);

struct Inner {
    source: Arc<dyn RandomAccess>,
    /// Each row group's byte span `[start, end)`, known after the footer.
    spans: OnceLock<Vec<(u64, u64)>>,
    /// The row group being read: its span's start and bytes.
    current: Mutex<Option<(u64, Bytes)>>,
}

fn external(e: io::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl Ranges {
    fn new(source: Arc<dyn RandomAccess>) -> Ranges {
        Ranges(Arc::new(Inner {
            source,
            spans: OnceLock::new(),
            current: Mutex::new(None),
        }))
    }

    /// `[start, start + len)` from the row group holding it, if one does.
    fn cached(&self, start: u64, len: u64) -> parquet::errors::Result<Option<Bytes>> {
        let Some(spans) = self.0.spans.get() else {
            return Ok(None);
        };
        let Some(&(from, to)) = spans.iter().find(|(from, to)| start >= *from && start + len <= *to) else {
            return Ok(None);
        };
        let mut current = self
            .0
            .current
            .lock()
            .map_err(|_| ParquetError::General("the row group cache is poisoned".into()))?;
        let bytes = match current.as_ref() {
            Some((at, bytes)) if *at == from => bytes.clone(),
            _ => {
                // The previous row group goes first: one held at a time.
                *current = None;
                let bytes = Bytes::from(self.0.source.read_at(from, (to - from) as usize).map_err(external)?);
                *current = Some((from, bytes.clone()));
                bytes
            }
        };
        let (a, b) = ((start - from) as usize, (start - from + len) as usize);
        if b > bytes.len() {
            return Err(ParquetError::EOF(format!(
                "the object ends inside row group bytes {from}..{to}"
            )));
        }
        Ok(Some(bytes.slice(a..b)))
    }
}

impl Length for Ranges {
    fn len(&self) -> u64 {
        self.0.source.size()
    }
}

/// What a reader asks for when it reads on from an offset.
enum ReadFrom {
    /// Inside a row group: its bytes to the end of the row group.
    Cached(bytes::buf::Reader<Bytes>),
    /// Elsewhere (the footer): fetched a block at a time as it is consumed.
    On(ReadOn),
}

impl Read for ReadFrom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadFrom::Cached(r) => r.read(buf),
            ReadFrom::On(r) => r.read(buf),
        }
    }
}

struct ReadOn {
    source: Arc<dyn RandomAccess>,
    at: u64,
    block: Vec<u8>,
    pos: usize,
}

/// Bytes fetched per request when the reader reads on outside a row group.
const READ_ON_BLOCK: usize = 64 << 10;

impl Read for ReadOn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.block.len() {
            self.block = self.source.read_at(self.at, READ_ON_BLOCK)?;
            self.at += self.block.len() as u64;
            self.pos = 0;
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChunkReader for Ranges {
    type T = ReadFrom;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ReadFrom> {
        let end = self
            .0
            .spans
            .get()
            .and_then(|spans| spans.iter().find(|(from, to)| start >= *from && start < *to))
            .map(|&(_, to)| to);
        if let Some(end) = end
            && let Some(bytes) = self.cached(start, end - start)?
        {
            return Ok(ReadFrom::Cached(bytes.reader()));
        }
        Ok(ReadFrom::On(ReadOn {
            source: self.0.source.clone(),
            at: start,
            block: Vec::new(),
            pos: 0,
        }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if let Some(bytes) = self.cached(start, length as u64)? {
            return Ok(bytes);
        }
        let bytes = self.0.source.read_at(start, length).map_err(external)?;
        if bytes.len() < length {
            return Err(ParquetError::EOF(format!(
                "{length} bytes at {start} asked for, {} there",
                bytes.len()
            )));
        }
        Ok(Bytes::from(bytes))
    }
}

/// The rows of a Parquet file as JSON Lines text.
struct RowsAsLines {
    rows: RowIter<'static>,
    line: Vec<u8>,
    pos: usize,
}

impl Read for RowsAsLines {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.line.len() {
            let Some(row) = self.rows.next() else {
                return Ok(0);
            };
            let row = row.map_err(to_io)?;
            self.line.clear();
            self.pos = 0;
            self.line.push(b'{');
            for (i, (name, field)) in row.get_column_iter().enumerate() {
                if i > 0 {
                    self.line.push(b',');
                }
                write_json(&mut self.line, &serde_json::Value::String(name.clone()));
                self.line.push(b':');
                write_json(&mut self.line, &json_value(field));
            }
            self.line.extend_from_slice(b"}\n");
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn write_json(buf: &mut Vec<u8>, value: &serde_json::Value) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
}

/// A Parquet value as JSON: numbers and booleans as themselves, text as a
/// string, anything else (dates, timestamps, decimals, bytes, nested
/// values) as the string Parquet's reader prints.
fn json_value(field: &Field) -> serde_json::Value {
    use serde_json::Value;
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        // As the f32 prints (0.1, not 0.10000000149011612).
        Field::Float(x) => x
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Field::Double(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Field::Str(s) => Value::String(s.clone()),
        // Text written without its UTF-8 annotation (Hive, Impala, old Spark).
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => Value::String(format!("{b:?}")),
        },
        other => Value::String(other.to_string().trim_matches('"').to_owned()),
    }
}

/// A read error: the source's if it wrapped one, else the file's.
fn to_io(e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// Whether `head` (a file's first bytes) is Parquet's magic number.
pub fn is_parquet(head: &[u8]) -> bool {
    head.starts_with(b"PAR1")
}

/// The most compressed bytes one row group may hold (and four times as much
/// uncompressed): a row group is held in memory whole while its rows are
/// read, so a larger one is refused, with what to do, rather than risking
/// the instance.
pub const MAX_ROW_GROUP_BYTES: u64 = 256 << 20;

/// Scores a Parquet object (see the module doc). A file the Parquet reader
/// panics on (a corrupt footer, a value it cannot print) is refused as
/// undecodable, never retried.
pub fn score(
    source: Arc<dyn RandomAccess>,
    model: &Model,
    out: &mut (dyn io::Write + Send),
    rejects: &mut dyn RejectSink,
    options: &ScoreOptions,
) -> Result<Summary, ScoreError> {
    let run = std::panic::AssertUnwindSafe(|| score_unguarded(source, model, out, rejects, options));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ScoreError::Rejected(FileRejection::Undecodable(format!(
            "Parquet: the reader failed on this file: {message}"
        ))))
    })
}

fn score_unguarded(
    source: Arc<dyn RandomAccess>,
    model: &Model,
    out: &mut (dyn io::Write + Send),
    rejects: &mut dyn RejectSink,
    options: &ScoreOptions,
) -> Result<Summary, ScoreError> {
    let started = std::time::Instant::now();
    let undecodable = |e: String| ScoreError::Rejected(FileRejection::Undecodable(format!("Parquet: {e}")));
    let head = source.read_at(0, 4).map_err(ScoreError::from_read)?;
    if !is_parquet(&head) {
        return Err(undecodable(
            "the object does not start with Parquet's magic number PAR1".into(),
        ));
    }
    // A source's error stays the source's (retried); any other is the file's.
    let ranges = Ranges::new(source);
    let reader = SerializedFileReader::new(ranges.clone()).map_err(|e| ScoreError::from_read(to_io(e)))?;
    let mut spans = Vec::new();
    for (i, group) in reader.metadata().row_groups().iter().enumerate() {
        // Checked here: the crate asserts on negative offsets in a corrupt
        // footer.
        let mut from = u64::MAX;
        let mut to = 0u64;
        for column in group.columns() {
            let (start, len) = (column.data_page_offset(), column.compressed_size());
            let start = column.dictionary_page_offset().map_or(start, |d| d.min(start));
            if start < 0 || len < 0 {
                return Err(undecodable(format!("row group {i} has a negative offset or size")));
            }
            from = from.min(start as u64);
            to = to.max(start as u64 + len as u64);
        }
        let bytes = to.saturating_sub(from);
        if bytes > MAX_ROW_GROUP_BYTES || group.total_byte_size() as u64 > MAX_ROW_GROUP_BYTES * 4 {
            return Err(undecodable(format!(
                "row group {i} holds {bytes} bytes ({} uncompressed), over the {} MiB a row group may take here: \
                 write the file with smaller row groups (pyarrow: row_group_size; polars: row_group_size)",
                group.total_byte_size(),
                MAX_ROW_GROUP_BYTES >> 20
            )));
        }
        spans.push((from.min(to), to));
    }
    let _ = ranges.0.spans.set(spans);
    let rows = RowIter::from_file_into(Box::new(reader));
    let text = Box::new(RowsAsLines {
        rows,
        line: Vec::new(),
        pos: 0,
    });
    let partial = Partial {
        compression: "none",
        encoding: "utf-8",
        byte_order_mark: false,
        json_lines: true,
    };
    let mut summary = super::jsonl::score(text, partial, model, out, rejects, options, started)?;
    summary.format.kind = "parquet";
    Ok(summary)
}
