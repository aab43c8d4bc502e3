//! Reading training data: the same input layer as scoring (gzip, byte-order
//! marks, encodings, delimiter sniffing; any `Read`, so standard input too),
//! then the columns a fit needs, with every row that cannot be used counted
//! by reason and every whole-file problem said in words.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Cursor, Read};

use sha2::{Digest, Sha256};

use super::fit::{FitError, FitSpec, Split};
use super::parse_label;
use crate::score::chunker::Chunker;
use crate::score::input::{self, Decoded, NotText};

/// How many line numbers are kept per skip reason.
const SHOWN_LINES: usize = 3;

/// One usable row: its values as text, in spec order.
pub struct TrainingRow {
    pub line: u64,
    pub label: bool,
    /// The row's sample weight (1 without a weight column).
    pub weight: f64,
    /// Categorical values; empty is the missing level (only with one).
    pub levels: Vec<String>,
    /// Numeric values; `None` is missing (imputed with the mean).
    pub numbers: Vec<Option<f64>>,
    /// The same as they were written (`None`: empty).
    pub raw_numbers: Vec<Option<String>>,
    /// Held-out rows only: the values of the extra columns asked for (a
    /// champion model's features), in the order asked; `None` where the
    /// file has no such column (the champion then rejects the row).
    pub extra: Vec<Option<String>>,
}

/// Rows skipped for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: String,
    pub rows: u64,
    pub first_lines: Vec<u64>,
}

/// The training data, split and checked.
pub struct TrainingData {
    pub train: Vec<TrainingRow>,
    pub holdout: Vec<TrainingRow>,
    /// Skipped rows by reason, most frequent first.
    pub skipped: Vec<Skipped>,
    /// SHA-256 of the raw bytes as read.
    pub sha256: String,
}

impl TrainingData {
    pub fn skipped_rows(&self) -> u64 {
        self.skipped.iter().map(|s| s.rows).sum()
    }

    /// `5 with an empty OPERA (lines 17, 230, 981, ...); 3 ...`.
    pub fn describe_skipped(&self) -> String {
        self.skipped
            .iter()
            .map(|s| {
                let lines: Vec<String> = s.first_lines.iter().map(u64::to_string).collect();
                let more = if s.rows as usize > s.first_lines.len() {
                    ", ..."
                } else {
                    ""
                };
                format!(
                    "{} {} (line{} {}{more})",
                    s.rows,
                    s.reason,
                    if s.rows > 1 { "s" } else { "" },
                    lines.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// CRLF line ends as LF, streaming: the `csv` crate misplaces the line of
/// a record by one in CRLF text (it counts the `\n` of the previous line
/// end at the start of the next record), and training errors name lines.
struct CrlfToLf<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A `\r` held back: it may be the first half of a CRLF.
    held_cr: bool,
    eof: bool,
}

impl<R: Read> CrlfToLf<R> {
    fn new(inner: R) -> Self {
        CrlfToLf {
            inner,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            held_cr: false,
            eof: false,
        }
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n < out.len() {
            if self.start == self.end {
                if self.eof || n > 0 {
                    break;
                }
                self.end = self.inner.read(&mut self.buf)?;
                self.start = 0;
                if self.end == 0 {
                    self.eof = true;
                    if self.held_cr {
                        self.held_cr = false;
                        out[n] = b'\r';
                        n += 1;
                    }
                    break;
                }
            }
            let b = self.buf[self.start];
            if self.held_cr {
                self.held_cr = false;
                if b != b'\n' {
                    out[n] = b'\r';
                    n += 1;
                    continue;
                }
            }
            self.start += 1;
            if b == b'\r' {
                self.held_cr = true;
            } else {
                out[n] = b;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hasher.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[derive(Default)]
struct SkipCounter(BTreeMap<String, (u64, Vec<u64>)>);

impl SkipCounter {
    fn add(&mut self, reason: String, line: u64) {
        let entry = self.0.entry(reason).or_default();
        entry.0 += 1;
        if entry.1.len() < SHOWN_LINES {
            entry.1.push(line);
        }
    }

    fn finish(self) -> Vec<Skipped> {
        let mut out: Vec<Skipped> = self
            .0
            .into_iter()
            .map(|(reason, (rows, first_lines))| Skipped {
                reason,
                rows,
                first_lines,
            })
            .collect();
        out.sort_by(|a, b| b.rows.cmp(&a.rows).then(a.reason.cmp(&b.reason)));
        out
    }
}

/// Up to `n` distinct values, readably: integers as a range when they all
/// are (`1..12`), else a list.
fn describe_values(values: &BTreeSet<String>) -> String {
    let ints: Option<Vec<i64>> = values.iter().map(|v| v.parse().ok()).collect();
    if let Some(ints) = ints
        && ints.len() > 3
        && let (Some(lo), Some(hi)) = (ints.iter().min(), ints.iter().max())
    {
        return format!("{lo}..{hi}");
    }
    let shown: Vec<&str> = values.iter().take(8).map(String::as_str).collect();
    let more = if values.len() > shown.len() { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Reads and checks training data for `spec`; held-out rows also keep the
/// `extra` columns (empty where the file has no such column).
pub fn read(raw: impl Read + Send, spec: &FitSpec, extra: &[String]) -> Result<TrainingData, FitError> {
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let raw = Hashing {
        inner: raw,
        hasher: hasher.clone(),
    };
    let text = match input::decode(raw).map_err(FitError::Read)? {
        Decoded::Text(text, _format) => text,
        Decoded::NotText(NotText::Empty) => return Err(FitError::Empty),
        Decoded::NotText(NotText::Binary | NotText::Parquet) => return Err(FitError::NotText),
    };
    // The delimiter is sniffed from the whole header record, read as
    // `score` reads it (the chunker's header): one read of a decoder, a pipe
    // or a gzip stream may hold only part of the first line. The header is
    // then put back in front of the rest, so the CSV reader reads from the
    // start and its line numbers are the file's.
    let max_record = crate::score::ScoreOptions::default().max_record_bytes;
    let mut chunker = Chunker::new(CrlfToLf::new(text), 64 << 10, max_record);
    let Some(header) = chunker.header().map_err(FitError::Read)? else {
        return Err(FitError::Empty);
    };
    let delimiter = input::sniff_delimiter(&header);
    let mut replay = header;
    replay.push(b'\n');
    let text = BufReader::with_capacity(1 << 20, Cursor::new(replay).chain(chunker.into_rest()));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| FitError::Unreadable(format!("header line: {e}")))?
        .iter()
        .map(|c| c.trim().to_owned())
        .collect();
    let find = |name: &str| columns.iter().position(|c| c == name);
    let mut wanted: Vec<&str> = vec![spec.target.as_str()];
    wanted.extend(spec.categorical.iter().map(String::as_str));
    wanted.extend(spec.numeric.iter().map(String::as_str));
    if let Split::Column { column, .. } = &spec.split {
        wanted.push(column);
    }
    if let Some(column) = &spec.sample_weight {
        wanted.push(column);
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| find(w).is_none())
        .map(|w| (*w).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(FitError::MissingColumns {
            missing,
            found: columns,
        });
    }
    let at = |name: &str| find(name).unwrap_or_default();
    let target = at(&spec.target);
    let categorical: Vec<usize> = spec.categorical.iter().map(|c| at(c)).collect();
    let numeric: Vec<usize> = spec.numeric.iter().map(|c| at(c)).collect();
    let split_column = match &spec.split {
        Split::Column { column, .. } => Some(at(column)),
        _ => None,
    };
    let weight_column = spec.sample_weight.as_deref().map(at);
    let extra_columns: Vec<Option<usize>> = extra.iter().map(|c| find(c)).collect();

    let mut skips = SkipCounter::default();
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    // What whole-file errors need to say.
    let mut split_values = BTreeSet::new();
    let mut label_values = BTreeSet::new();
    let (mut binary_labels, mut other_labels) = (0u64, 0u64);
    let mut numbers_seen = vec![0u64; numeric.len()];
    let mut first_non_number: Vec<Option<(u64, String)>> = vec![None; numeric.len()];
    let mut record = csv::ByteRecord::new();
    let mut index = 0u64;
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                skips.add(format!("unreadable record ({e})"), line);
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let row_index = index;
        index += 1;
        if record.len() != columns.len() {
            skips.add(format!("with {} fields, not {}", record.len(), columns.len()), line);
            continue;
        }
        let Ok(fields) = record.iter().map(std::str::from_utf8).collect::<Result<Vec<&str>, _>>() else {
            skips.add("that are not valid UTF-8 text".into(), line);
            continue;
        };
        let is_train = match (&spec.split, split_column) {
            (Split::Column { train_value, .. }, Some(c)) => {
                let value = fields[c].trim();
                if split_values.len() < 64 {
                    split_values.insert(value.to_owned());
                }
                value == train_value
            }
            (Split::Fraction { test_fraction, seed }, _) => {
                unit_interval(splitmix64(seed ^ row_index)) >= *test_fraction
            }
            _ => true,
        };
        let raw_label = fields[target].trim();
        if !raw_label.is_empty() {
            match parse_label(Some(raw_label)) {
                Some(_) => binary_labels += 1,
                None => other_labels += 1,
            }
            if label_values.len() < 64 {
                label_values.insert(raw_label.to_owned());
            }
        }
        let Some(label) = parse_label(Some(raw_label)) else {
            let shown = if raw_label.is_empty() {
                "empty".to_owned()
            } else {
                format!("{raw_label:?}")
            };
            skips.add(format!("with label {shown} (not 0 or 1) in {}", spec.target), line);
            continue;
        };
        let mut levels = Vec::with_capacity(categorical.len());
        let mut problem = None;
        for (j, &c) in categorical.iter().enumerate() {
            let value = fields[c];
            if value.is_empty() && !spec.missing_level {
                problem.get_or_insert_with(|| format!("with an empty {}", spec.categorical[j]));
            }
            levels.push(value.to_owned());
        }
        let mut numbers = Vec::with_capacity(numeric.len());
        let mut raw_numbers = Vec::with_capacity(numeric.len());
        for (j, &c) in numeric.iter().enumerate() {
            let value = fields[c];
            if value.is_empty() {
                numbers.push(None);
                raw_numbers.push(None);
                continue;
            }
            raw_numbers.push(Some(value.to_owned()));
            match value.parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    numbers_seen[j] += 1;
                    numbers.push(Some(x));
                }
                _ => {
                    first_non_number[j].get_or_insert_with(|| (line, value.to_owned()));
                    problem.get_or_insert_with(|| format!("with a {} that is not a number", spec.numeric[j]));
                    numbers.push(None);
                }
            }
        }
        let weight = match weight_column {
            None => 1.0,
            Some(c) => match fields[c].trim().parse::<f64>() {
                Ok(w) if w.is_finite() && w >= 0.0 => w,
                _ => {
                    problem.get_or_insert_with(|| {
                        format!(
                            "with a sample weight {} that is not a number >= 0",
                            spec.sample_weight.as_deref().unwrap_or_default()
                        )
                    });
                    0.0
                }
            },
        };
        if let Some(reason) = problem {
            skips.add(reason, line);
            continue;
        }
        let extra = if is_train {
            Vec::new()
        } else {
            extra_columns.iter().map(|c| c.map(|c| fields[c].to_owned())).collect()
        };
        let row = TrainingRow {
            line,
            label,
            weight,
            extra,
            levels,
            numbers,
            raw_numbers,
        };
        if is_train { train.push(row) } else { holdout.push(row) }
    }
    let sha256 = hex::encode(hasher.lock().map(|h| h.clone().finalize()).unwrap_or_default());

    // Whole-file problems, said in words rather than as "no usable rows".
    if index == 0 {
        return Err(FitError::HeaderOnly);
    }
    if let (Split::Column { column, train_value }, Some(_)) = (&spec.split, split_column)
        && !split_values.contains(train_value.as_str())
    {
        return Err(FitError::NoTrainRows {
            column: column.clone(),
            value: train_value.clone(),
            seen: describe_values(&split_values),
        });
    }
    if other_labels > binary_labels {
        return Err(FitError::LabelsNotBinary {
            column: spec.target.clone(),
            holds: describe_values(&label_values),
        });
    }
    for (j, seen) in numbers_seen.iter().enumerate() {
        if *seen == 0
            && let Some((line, value)) = &first_non_number[j]
        {
            return Err(FitError::NotNumeric {
                column: spec.numeric[j].clone(),
                line: *line,
                value: value.clone(),
            });
        }
    }
    Ok(TrainingData {
        train,
        holdout,
        skipped: skips.finish(),
        sha256,
    })
}

pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn unit_interval(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `.1` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn crlf_becomes_lf_across_any_read_size() {
        let input = b"a,b\r\nc\r,d\r\n\r\ne,f\r";
        for size in 1..8 {
            let mut reader = CrlfToLf::new(Trickle(input, size));
            let mut out = Vec::new();
            let mut piece = vec![0; size];
            loop {
                let n = reader.read(&mut piece).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&piece[..n]);
            }
            assert_eq!(out, b"a,b\nc\r,d\n\ne,f\r", "read size {size}");
        }
    }
}
