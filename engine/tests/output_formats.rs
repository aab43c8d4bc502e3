//! One file, every output format: the rows, their order, their values and
//! their scores are the same whether written as CSV (passed through or with
//! another delimiter), JSON Lines or Parquet, and the provenance columns say
//! where each row came from. Parquet is read back with polars' own reader,
//! as a consumer would.

use std::io::Cursor;

use polars::prelude::*;
use scorer_engine::model::Model;
use scorer_engine::score::{self, OutputFormat, OutputOptions, Provenance, RejectedRow, ScoreOptions};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/scl_flights_2017.csv");

fn run(input: &[u8], output: OutputOptions, chunk_bytes: usize) -> (Vec<u8>, score::Summary, Vec<RejectedRow>) {
    let model = Model::default_model().expect("built-in model");
    let mut out = Vec::new();
    let mut rejects = Vec::new();
    let options = ScoreOptions {
        chunk_bytes,
        output,
        ..ScoreOptions::default()
    };
    let summary = score::score(Cursor::new(input.to_vec()), &model, &mut out, &mut rejects, &options).expect("scores");
    (out, summary, rejects)
}

fn provenance(row_numbers: bool) -> Provenance {
    Provenance {
        source_uri: "gs://in/flights/a.csv".into(),
        source_generation: 1_764_410_400_123_456,
        model_version: "v-test".into(),
        scored_at_micros: 1_764_410_400_123_456,
        row_numbers,
    }
}

/// A small file with what trips writers up: quotes, delimiters and a line
/// break inside a field, an empty field, a rejected row, a `;` delimiter.
fn awkward() -> Vec<u8> {
    let shipped = std::fs::read_to_string(SHIPPED).expect("shipped data");
    let mut lines = shipped.lines();
    let header = lines.next().expect("header").replace(',', ";");
    let mut text = format!("{header}\n");
    for (i, line) in lines.take(200).enumerate() {
        // split;OPERA;TIPOVUELO;MES;atraso_15
        let mut fields: Vec<String> = line.split(',').map(String::from).collect();
        match i {
            3 => fields[0] = "\"a \"\"q\"\"; b\nc\"".into(),
            4 => fields[0] = String::new(),
            7 => fields[2] = "Z".into(),
            _ => {}
        }
        text.push_str(&fields.join(";"));
        text.push('\n');
    }
    text.into_bytes()
}

fn csv_rows(bytes: &[u8], delimiter: u8) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(bytes)
        .records()
        .map(|r| r.expect("valid CSV").iter().map(String::from).collect())
        .collect()
}

#[test]
fn every_format_holds_the_same_rows_and_scores() {
    let input = awkward();
    let (csv_out, summary, rejects) = run(&input, OutputOptions::default(), 4096);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(summary.rows_scored >= 190);
    let reference = csv_rows(&csv_out, b';');
    assert_eq!(reference.len() as u64, summary.rows_scored);
    let columns = summary.columns.clone();
    let n = columns.len();

    // CSV normalised to commas: the same fields, every one.
    let (comma, _, _) = run(
        &input,
        OutputOptions {
            delimiter: Some(b','),
            ..Default::default()
        },
        4096,
    );
    assert_eq!(csv_rows(&comma, b','), reference);
    assert!(comma.starts_with(b"split,OPERA,TIPOVUELO,MES,atraso_15,probability,prediction\n"));

    // JSON Lines with provenance.
    let (jsonl, _, _) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Jsonl,
            provenance: Some(provenance(true)),
            ..Default::default()
        },
        4096,
    );
    let lines: Vec<&str> = std::str::from_utf8(&jsonl)
        .expect("UTF-8")
        .split('\n')
        .filter(|l| !l.is_empty())
        .collect();
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line an object"))
        .collect();
    // serde_json's own float parsing may be 1 ulp off; the text is exact.
    let probability_text = |line: &str| -> f64 {
        let rest = &line[line.find("\"probability\":").expect("probability") + 14..];
        rest[..rest.find(',').expect("more fields")].parse().expect("a number")
    };
    assert_eq!(objects.len(), reference.len());
    for ((object, row), line) in objects.iter().zip(&reference).zip(&lines) {
        for (i, name) in columns.iter().enumerate() {
            let expected = if row[i].is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(row[i].clone())
            };
            assert_eq!(object[name], expected, "{name}");
        }
        let p: f64 = row[n].parse().expect("probability");
        assert_eq!(probability_text(line), p);
        assert_eq!(
            object["prediction"].as_i64(),
            Some(row[n + 1].parse().expect("prediction"))
        );
        assert_eq!(object["source_uri"], "gs://in/flights/a.csv");
        assert_eq!(object["source_generation"].as_i64(), Some(1_764_410_400_123_456));
        assert_eq!(object["scored_at"], "2025-11-29T10:00:00.123456Z");
        assert_eq!(object["model_version"], "v-test");
    }
    // Row numbers are the file's (the rejected row is missing from them).
    let numbers: Vec<i64> = objects
        .iter()
        .map(|o| o["row_number"].as_i64().expect("row number"))
        .collect();
    assert_eq!(numbers[..8], [1, 2, 3, 4, 5, 6, 7, 9]);
    assert_eq!(objects[3]["split"], "a \"q\"; b\nc");
    assert_eq!(objects[4]["split"], serde_json::Value::Null);

    // Parquet with provenance, in small chunks: several row groups.
    let (parquet, _, _) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Parquet,
            provenance: Some(provenance(true)),
            ..Default::default()
        },
        4096,
    );
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
    let frame = ParquetReader::new(Cursor::new(parquet))
        .finish()
        .expect("readable Parquet");
    assert_eq!(frame.height(), reference.len());
    let schema = frame.schema();
    assert_eq!(schema.get("probability"), Some(&DataType::Float64));
    assert_eq!(schema.get("prediction"), Some(&DataType::Int64));
    assert_eq!(schema.get("row_number"), Some(&DataType::Int64));
    assert_eq!(schema.get("source_generation"), Some(&DataType::Int64));
    assert!(matches!(
        schema.get("scored_at"),
        Some(DataType::Datetime(TimeUnit::Microseconds, Some(_)))
    ));
    let probability = frame.column("probability").expect("column").f64().expect("f64").clone();
    let split = frame.column("split").expect("column").str().expect("str").clone();
    let opera = frame.column("OPERA").expect("column").str().expect("str").clone();
    for (i, row) in reference.iter().enumerate() {
        assert_eq!(probability.get(i), Some(row[n].parse::<f64>().expect("probability")));
        assert_eq!(split.get(i), (!row[0].is_empty()).then_some(row[0].as_str()));
        assert_eq!(opera.get(i), Some(row[1].as_str()));
    }
}

#[test]
fn a_range_without_row_numbers_leaves_them_empty() {
    let input = awkward();
    let (parquet, _, _) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Parquet,
            provenance: Some(provenance(false)),
            ..Default::default()
        },
        1 << 20,
    );
    let frame = ParquetReader::new(Cursor::new(parquet))
        .finish()
        .expect("readable Parquet");
    assert_eq!(frame.column("row_number").expect("column").null_count(), frame.height());
}

#[test]
fn a_parquet_of_no_rows_is_still_a_parquet_file() {
    let input = b"split,OPERA,TIPOVUELO,MES,atraso_15\ntrain,Grupo LATAM,Z,11,0\n";
    let (parquet, summary, rejects) = run(
        input,
        OutputOptions {
            format: OutputFormat::Parquet,
            ..Default::default()
        },
        1 << 20,
    );
    assert_eq!((summary.rows_scored, rejects.len()), (0, 1));
    let frame = ParquetReader::new(Cursor::new(parquet))
        .finish()
        .expect("readable Parquet");
    assert_eq!(frame.height(), 0);
    assert!(frame.schema().get("probability").is_some());
}

#[test]
fn parquet_bytes_do_not_depend_on_where_chunks_were_cut() {
    // More rows than one row group, so groups are cut across chunks.
    let input = std::fs::read(SHIPPED).expect("shipped data");
    let parquet = |chunk_bytes| {
        let options = OutputOptions {
            format: OutputFormat::Parquet,
            provenance: Some(provenance(true)),
            ..Default::default()
        };
        run(&input, options, chunk_bytes).0
    };
    let small = parquet(64 << 10);
    assert!(small == parquet(8 << 20), "the same input gave other Parquet bytes");
    let frame = ParquetReader::new(Cursor::new(small))
        .finish()
        .expect("readable Parquet");
    assert_eq!(frame.height(), 68_206);
    let numbers = frame.column("row_number").expect("column").i64().expect("i64").clone();
    assert!(numbers.iter().enumerate().all(|(i, n)| n == Some(i as i64 + 1)));
}

/// The shipped rows as JSON Lines, numbers as numbers, with what trips a
/// reader up: a line that is no object, one missing a feature, a feature
/// holding an array, a blank line, a null label, an extra key.
fn json_lines() -> (Vec<u8>, usize) {
    let shipped = std::fs::read_to_string(SHIPPED).expect("shipped data");
    let mut text = String::new();
    let mut kept = 0;
    for (i, line) in shipped.lines().skip(1).take(300).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        // Written by hand: serde_json's own maps would sort the keys.
        let object = format!(
            r#"{{"split": "{}", "OPERA": "{}", "TIPOVUELO": "{}", "MES": {}, "atraso_15": {}}}"#,
            f[0], f[1], f[2], f[3], f[4]
        );
        match i {
            5 => text.push_str("[1, 2, 3]\n"),
            6 => text.push_str("{\"OPERA\": \"Grupo LATAM\", \"MES\": 3}\n"),
            7 => text.push_str("{\"OPERA\": [\"x\"], \"TIPOVUELO\": \"I\", \"MES\": 3}\n"),
            8 => text.push_str("  \n"),
            9 => text.push_str("{\"OPERA\": \"Sky Airline\", \"TIPOVUELO\": \"N\", \"MES\": 4, \"atraso_15\": null, \"extra\": {\"k\": 1}}\n"),
            _ => {
                text.push_str(&object);
                text.push('\n');
            }
        }
        if !matches!(i, 5..=8) {
            kept += 1;
        }
    }
    (text.into_bytes(), kept)
}

#[test]
fn json_lines_in_scores_as_csv_in_does_and_passes_objects_through() {
    let (input, kept) = json_lines();
    let (out, summary, rejects) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Jsonl,
            ..Default::default()
        },
        4096,
    );
    assert_eq!(summary.format.kind, "jsonl");
    assert_eq!(summary.columns, ["split", "OPERA", "TIPOVUELO", "MES", "atraso_15"]);
    assert_eq!(summary.rows_scored as usize, kept, "{rejects:?}");
    assert_eq!(summary.blank_lines, 1);
    let lines: Vec<(u64, &str)> = rejects.iter().map(|r| (r.line, r.column.as_str())).collect();
    // No header line: the sixth line is line 6.
    assert_eq!(lines, [(6, ""), (7, "TIPOVUELO"), (8, "OPERA")], "{rejects:?}");
    assert!(rejects[0].reason.contains("not a JSON object"), "{}", rejects[0].reason);
    assert!(
        rejects[1].reason.contains("missing feature TIPOVUELO"),
        "{}",
        rejects[1].reason
    );

    // The same rows as CSV score the same.
    let csv: String = String::from_utf8(input.clone())
        .expect("UTF-8")
        .lines()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 5..=8))
        .map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(l).expect("object");
            let text = |k: &str| match &v[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            format!(
                "{},{},{},{},{}\n",
                text("split"),
                text("OPERA"),
                text("TIPOVUELO"),
                text("MES"),
                text("atraso_15")
            )
        })
        .collect();
    let (csv_out, _, csv_rejects) = run(
        format!("split,OPERA,TIPOVUELO,MES,atraso_15\n{csv}").as_bytes(),
        OutputOptions::default(),
        4096,
    );
    assert!(csv_rejects.is_empty(), "{csv_rejects:?}");
    let reference = csv_rows(&csv_out, b',');
    let objects: Vec<serde_json::Value> = std::str::from_utf8(&out)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line an object"))
        .collect();
    assert_eq!(objects.len(), reference.len());
    for (object, row) in objects.iter().zip(&reference) {
        assert_eq!(object["prediction"].to_string(), row[6]);
        // Passed through: numbers stay numbers, extra keys stay.
        assert_eq!(object["MES"].to_string(), row[3]);
    }
    assert_eq!(objects[5]["extra"]["k"], 1);
    assert!(objects[5]["atraso_15"].is_null());

    // CSV and Parquet out of JSON Lines in: the first object's columns.
    let (csv_from_json, _, _) = run(&input, OutputOptions::default(), 4096);
    assert_eq!(csv_rows(&csv_from_json, b','), reference);
    let (parquet, _, _) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Parquet,
            ..Default::default()
        },
        4096,
    );
    let frame = ParquetReader::new(Cursor::new(parquet))
        .finish()
        .expect("readable Parquet");
    assert_eq!(frame.height(), reference.len());
    assert_eq!(
        frame.column("MES").expect("column").str().expect("str").get(0),
        Some(reference[0][3].as_str())
    );
}

#[test]
fn gzip_json_lines_are_read_too() {
    use std::io::Write as _;
    let (input, kept) = json_lines();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&input).expect("gzip");
    let (_, summary, _) = run(&gz.finish().expect("gzip"), OutputOptions::default(), 1 << 20);
    assert_eq!((summary.format.kind, summary.format.compression), ("jsonl", "gzip"));
    assert_eq!(summary.rows_scored as usize, kept);
}

#[test]
fn a_first_object_without_a_feature_rejects_that_line_only() {
    let input = b"{\"OPERA\": \"Grupo LATAM\", \"MES\": 3}\n{\"OPERA\": \"Grupo LATAM\", \"TIPOVUELO\": \"I\", \"MES\": 3, \"atraso_15\": 1}\n";
    let (_, summary, rejects) = run(input, OutputOptions::default(), 1 << 20);
    assert_eq!((summary.rows_scored, summary.rows_rejected), (1, 1));
    assert_eq!((rejects[0].line, rejects[0].column.as_str()), (1, "TIPOVUELO"));
    assert_eq!(summary.labelled_rows, 1);
}

#[test]
fn parquet_in_is_read_by_ranges_and_scores_as_its_rows() {
    use scorer_engine::score::parquet_in::{self, RandomAccess};
    use std::sync::{Arc, Mutex};

    /// A file in memory that records the ranges asked for.
    struct Recorded(Vec<u8>, Mutex<Vec<(u64, usize)>>);
    impl RandomAccess for Recorded {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.1.lock().expect("lock").push((offset, len));
            let start = (offset as usize).min(self.0.len());
            Ok(self.0[start..(start + len).min(self.0.len())].to_vec())
        }
    }

    // The shipped data as Parquet (several row groups), with a rejected row.
    let mut input = std::fs::read_to_string(SHIPPED).expect("shipped data");
    input = input.replacen("train,Grupo LATAM,N,10,0\n", "train,Grupo LATAM,Z,10,0\n", 1);
    let (parquet, _, _) = run(
        input.as_bytes(),
        OutputOptions {
            format: OutputFormat::Parquet,
            ..Default::default()
        },
        1 << 20,
    );
    let (expected, expected_summary, _) = run(input.as_bytes(), OutputOptions::default(), 1 << 20);
    let size = parquet.len();
    let source = Arc::new(Recorded(parquet, Mutex::new(Vec::new())));
    let model = Model::default_model().expect("built-in model");
    let mut out = Vec::new();
    let mut rejects: Vec<RejectedRow> = Vec::new();
    let summary =
        parquet_in::score(source.clone(), &model, &mut out, &mut rejects, &ScoreOptions::default()).expect("scores");
    assert_eq!(summary.format.kind, "parquet");
    assert_eq!(summary.rows_scored, expected_summary.rows_scored);
    // Its rows: the input's columns, then the scores (as text from the
    // typed columns), the rows the CSV run scored.
    let got = csv_rows(&out, b',');
    let want = csv_rows(&expected, b',');
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[..5], w[..5]);
        assert_eq!(g[5], w[5], "probability, as the earlier run wrote it");
    }
    // Read by ranges: never one read of the whole file.
    let reads = source.1.lock().expect("lock").clone();
    assert!(reads.iter().all(|(_, len)| *len < size), "{reads:?}");
    // The magic number, the footer (its length, then itself), then one
    // read per row group (two: 68,206 rows in groups of 65,536).
    assert!(reads.len() <= 6, "{reads:?}");

    // A stream of Parquet is told what to do instead.
    let mut sink = Vec::new();
    let err = score::score(
        Cursor::new(source.0.clone()),
        &model,
        &mut sink,
        &mut Vec::new(),
        &ScoreOptions::default(),
    )
    .expect_err("a stream of Parquet");
    assert!(err.to_string().contains("Parquet"), "{err}");
}

#[test]
fn a_broken_parquet_file_is_refused_and_a_csv_starting_par1_is_csv() {
    use scorer_engine::score::{ScoreError, parquet_in};
    use std::sync::Arc;

    struct Bytes(Vec<u8>);
    impl parquet_in::RandomAccess for Bytes {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            let start = (offset as usize).min(self.0.len());
            Ok(self.0[start..(start + len).min(self.0.len())].to_vec())
        }
    }
    let input = std::fs::read(SHIPPED).expect("shipped data");
    let (parquet, _, _) = run(
        &input,
        OutputOptions {
            format: OutputFormat::Parquet,
            ..Default::default()
        },
        1 << 20,
    );
    let model = Model::default_model().expect("built-in model");
    // Every byte of the footer flipped in turn, and the data cut short: a
    // refusal each time (or a scored file, if the byte did not matter),
    // never a panic nor an error that would be retried.
    let footer = u32::from_le_bytes(
        parquet[parquet.len() - 8..parquet.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let mut broken: Vec<Vec<u8>> = (parquet.len() - 8 - footer..parquet.len() - 8)
        .step_by(7)
        .map(|i| {
            let mut b = parquet.clone();
            b[i] ^= 0xa5;
            b
        })
        .collect();
    broken.push([&parquet[..1000], &parquet[parquet.len() - 8 - footer..]].concat());
    for bytes in broken {
        match parquet_in::score(
            Arc::new(Bytes(bytes)),
            &model,
            &mut Vec::new(),
            &mut Vec::new(),
            &ScoreOptions::default(),
        ) {
            Ok(_) | Err(ScoreError::Rejected(_)) => {}
            Err(e) => panic!("a broken file must be refused, not {e:?}"),
        }
    }
    let csv = b"PAR1,OPERA,TIPOVUELO,MES\nx,Grupo LATAM,I,3\n";
    let (_, summary, _) = run(csv, OutputOptions::default(), 1 << 20);
    assert_eq!(summary.rows_scored, 1);
}
