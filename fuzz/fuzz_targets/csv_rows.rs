//! Arbitrary bytes as an input CSV, scored by `scorer_engine::score::score` with the
//! shipped model: the engine must never panic, a file fails only as a whole
//! rejection (never an engine error), and the counts must add up.
//!
//! Input layout: byte 0 picks a header that is prepended (so most inputs get
//! past the header checks and reach row validation; `0` prepends nothing and
//! the whole rest is the file), byte 1 picks the engine options (chunk size,
//! record limit, explanations) and whether the input arrives in reads of one
//! to three bytes, the rest is the file body.

#![no_main]

use std::io::{self, Read};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use scorer_engine::model::Model;
use scorer_engine::score::{self, CsvRejects, RejectSink, RejectedRow, ScoreError, ScoreOptions};

static MODEL: LazyLock<Model> = LazyLock::new(|| {
    Model::from_json(include_str!("../../data/model.json").as_bytes()).expect("the shipped model loads")
});

/// Headers holding the model's columns (OPERA, TIPOVUELO, MES), with and
/// without the label, in other orders, with other delimiters and extra or
/// duplicate non-model columns.
const HEADERS: &[&[u8]] = &[
    b"",
    b"OPERA,TIPOVUELO,MES\n",
    b"OPERA,TIPOVUELO,MES,atraso_15\n",
    b"split,OPERA,TIPOVUELO,MES,atraso_15\n",
    b"OPERA;TIPOVUELO;MES\r\n",
    b"MES\tOPERA\tx\tTIPOVUELO\n",
    b"x,\"OPERA\",x,TIPOVUELO,MES,\n",
    b"OPERA|TIPOVUELO|MES|probability\n",
];

/// Byte 1, bits 0-2. Every chunk costs a polars parse and query (a few ms
/// under the sanitizer), so one-record chunks get one value in eight and most
/// inputs fit one chunk (past 64 KiB the engine only repeats itself).
const CHUNK_BYTES: [usize; 8] = [1, 64, 4096, 64 << 10, 64 << 10, 64 << 10, 64 << 10, 64 << 10];
/// Byte 1, bits 3-4.
const MAX_RECORD_BYTES: [usize; 4] = [8, 64, 4096, 16 << 20];

/// A reader that hands out one to three bytes per read (byte 1, bit 7), so
/// every decoder and the chunker see records split across reads.
struct Trickle<'a> {
    bytes: &'a [u8],
    reads: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let n = buf.len().min(self.bytes.len()).min(1 + self.reads % 3);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// Keeps every rejected row for the checks and also writes the errors CSV the
/// way the job does.
struct Tee<S> {
    rows: Vec<RejectedRow>,
    csv: S,
}

impl<S: RejectSink> RejectSink for Tee<S> {
    fn reject(&mut self, row: &RejectedRow) -> io::Result<()> {
        self.rows.push(row.clone());
        self.csv.reject(row)
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, opts, body @ ..] = data else {
        return;
    };
    let header = HEADERS[usize::from(*which) % HEADERS.len()];
    let input = [header, body].concat();
    let options = ScoreOptions {
        chunk_bytes: CHUNK_BYTES[usize::from(opts & 7)],
        max_record_bytes: MAX_RECORD_BYTES[usize::from((opts >> 3) & 3)],
        explain: usize::from((opts >> 5) & 3) % 3,
        range_of: None,
    };
    let reader: Box<dyn Read + Send + '_> = if opts & 0x80 != 0 {
        Box::new(Trickle {
            bytes: &input,
            reads: 0,
        })
    } else {
        Box::new(&input[..])
    };

    let mut out: Vec<u8> = Vec::new();
    let mut rejects = Tee {
        rows: Vec::new(),
        csv: CsvRejects::new(|| Ok(Vec::<u8>::new())),
    };
    let summary = match score::score(reader, &MODEL, &mut out, &mut rejects, &options) {
        Ok(summary) => summary,
        // The data's fault: the file as a whole cannot be scored.
        Err(ScoreError::Rejected(_)) => return,
        // Nothing here can fail to read or write (the input and outputs are
        // in memory), and a bad row must be rejected on its own, never fail
        // the engine.
        Err(e) => panic!("{e}"),
    };

    // Counts add up, and every rejected row was reported exactly once.
    assert!(summary.rows_in > 0, "an accepted file without rows");
    assert_eq!(
        summary.rows_in,
        summary.rows_scored + summary.rows_rejected,
        "{summary:?}"
    );
    assert_eq!(rejects.rows.len() as u64, summary.rows_rejected);
    assert_eq!(rejects.csv.count(), summary.rows_rejected);
    assert_eq!(summary.output_columns.len(), if options.explain > 0 { 3 } else { 2 });
    let mut previous = 0u64;
    for row in &rejects.rows {
        assert!(
            row.row > previous,
            "rejected rows out of order or repeated: {:?}",
            rejects.rows
        );
        assert!(row.row <= summary.rows_in, "row {} of {}", row.row, summary.rows_in);
        assert!(row.line >= 2, "row {} on line {}", row.row, row.line);
        assert!(!row.reason.is_empty());
        previous = row.row;
    }

    // The errors CSV reads back as a header and one record per rejected row.
    let errors = rejects.csv.finish().expect("in memory");
    assert_eq!(errors.is_some(), summary.rows_rejected > 0);
    if let Some(errors) = errors {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&errors[..]);
        let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("errors CSV")).collect();
        assert_eq!(records.len() as u64, summary.rows_rejected);
        assert!(records.iter().all(|r| r.len() == 5));
    }

    // Plain text (not gzip, no quote anywhere, so no record spans lines):
    // the output is the header line and one line per scored row.
    let plain = !input.starts_with(&[0x1f, 0x8b]) && !input.contains(&b'"');
    if !plain {
        return;
    }
    let text = String::from_utf8(out).expect("the output is UTF-8");
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len() as u64, summary.rows_scored + 1, "{summary:?}\n{text:?}");
    if options.explain > 0 || text.contains('\r') {
        return;
    }
    // Without explanations or stray CRs, each line splits on the delimiter:
    // it ends in its probability and prediction, and the probability is the
    // one the model computes row by row from the same fields (the engine's
    // polars expressions and `Model::logit` must agree).
    let delimiter = summary.format.delimiter.chars().next().expect("a delimiter");
    let (header, rows) = lines.split_first().expect("a header line");
    let names: Vec<&str> = header.split(delimiter).map(str::trim).collect();
    assert_eq!(
        names.len(),
        summary.columns.len() + summary.output_columns.len(),
        "{header:?}"
    );
    for line in rows {
        let fields: Vec<&str> = line.split(delimiter).collect();
        assert_eq!(fields.len(), names.len(), "{line:?} under {header:?}");
        let (record, appended) = fields.split_at(summary.columns.len());
        let probability: f64 = appended[0]
            .parse()
            .unwrap_or_else(|_| panic!("no probability in {line:?}"));
        assert!((0.0..=1.0).contains(&probability), "{line:?}");
        let expected = if MODEL.predict(probability) { "1" } else { "0" };
        assert_eq!(appended[1], expected, "{line:?}");
        let get = |name: &str| names.iter().position(|n| *n == name).map(|i| record[i]);
        let logit = MODEL
            .logit(get)
            .unwrap_or_else(|e| panic!("{line:?} was scored but the model rejects it: {e}"));
        let recomputed = Model::probability(logit);
        assert!(
            (recomputed - probability).abs() <= 1e-12,
            "{line:?}: the engine says {probability}, the model {recomputed}"
        );
    }
});
