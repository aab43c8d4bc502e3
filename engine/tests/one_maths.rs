//! One maths, proven once: for random models (categorical and numeric
//! terms) and random rows (known, unknown, empty and malformed values), the
//! batch engine (polars over a CSV) and the online path (`Model::logit`, one
//! row at a time) agree on every row: the same probability to 1e-12 where
//! the row scores, the same rejection with the same reason where it does not.

use std::io::Cursor;

use scorer_engine::model::Model;
use scorer_engine::score::{self, RejectedRow, ScoreOptions};

/// A small deterministic generator (splitmix64), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const LEVELS: [&str; 10] = [
    "a",
    "B",
    "12",
    "3",
    "x y",
    "Grupo LATAM",
    "ñandú",
    "q\"uote",
    "c,omma",
    "7",
];
const NUMBERS: [&str; 16] = [
    "1", "-2.5", "1e3", "1E-2", " 5", "5.", ".5", "+3", "inf", "NaN", "abc", "0x10", "1e400", "-0", "3.0", "12",
];

enum Kind {
    Categorical(Vec<(String, f64)>),
    Numeric,
}

/// A random valid artifact: 1 to 4 features.
fn random_model(rng: &mut Rng) -> (Model, Vec<(String, Kind)>) {
    let n = 1 + rng.below(4);
    let mut features = Vec::new();
    let mut json_features = Vec::new();
    for i in 0..n {
        let name = format!("f{i}");
        if rng.below(2) == 0 {
            let mut levels: Vec<(String, f64)> = Vec::new();
            for level in LEVELS {
                if rng.below(2) == 0 {
                    levels.push((level.to_owned(), rng.float(-5.0, 5.0)));
                }
            }
            if levels.is_empty() {
                levels.push(("a".to_owned(), 1.0));
            }
            let weights: serde_json::Map<String, serde_json::Value> =
                levels.iter().map(|(k, w)| (k.clone(), (*w).into())).collect();
            json_features.push(serde_json::json!({"kind": "categorical", "name": name, "weights": weights}));
            features.push((name, Kind::Categorical(levels)));
        } else {
            let (mean, std, weight) = (rng.float(-10.0, 10.0), rng.float(0.1, 5.0), rng.float(-3.0, 3.0));
            json_features
                .push(serde_json::json!({"kind": "numeric", "name": name, "mean": mean, "std": std, "weight": weight}));
            features.push((name, Kind::Numeric));
        }
    }
    let artifact = serde_json::json!({
        "format": scorer_engine::model::FORMAT,
        "name": "random",
        "target": "y",
        "threshold": rng.float(0.05, 0.95),
        "intercept": rng.float(-2.0, 2.0),
        "features": json_features,
        "training": {
            "data": "r.csv", "data_sha256": "00", "split": {"kind": "none"},
            "rows": 1, "positives": 1, "rows_skipped": 0, "class_weight": "none",
            "c": 1.0, "solver": "x", "iterations": 1, "objective": 0.0,
            "missing_numeric": "mean", "holdout": null
        }
    });
    let model = Model::from_json(artifact.to_string().as_bytes()).expect("a valid random artifact");
    (model, features)
}

/// A random value for a feature: often a good one, sometimes not.
fn random_value(rng: &mut Rng, kind: &Kind) -> String {
    match (kind, rng.below(10)) {
        (_, 0) => String::new(),
        (_, 1) => rng.pick(&LEVELS).to_owned(),
        (_, 2) => rng.pick(&NUMBERS).to_owned(),
        (Kind::Categorical(levels), _) => levels[rng.below(levels.len())].0.clone(),
        (Kind::Numeric, _) => format!("{}", rng.float(-20.0, 20.0)),
    }
}

#[test]
fn batch_and_online_agree_on_every_row_of_random_models() {
    let mut rng = Rng(20261129);
    let (mut rows_checked, mut rejects_checked) = (0, 0);
    for case in 0..150 {
        let (model, features) = random_model(&mut rng);
        // The header, a second column order check: an extra column first.
        let mut csv = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let mut header = vec!["extra".to_owned()];
        header.extend(features.iter().map(|(n, _)| n.clone()));
        csv.write_record(&header).unwrap();
        let mut rows: Vec<Vec<String>> = Vec::new();
        for r in 0..60 {
            let mut row = vec![format!("row{r}")];
            row.extend(features.iter().map(|(_, kind)| random_value(&mut rng, kind)));
            csv.write_record(&row).unwrap();
            rows.push(row);
        }
        let input = csv.into_inner().unwrap();
        let mut out = Vec::new();
        let mut rejects: Vec<RejectedRow> = Vec::new();
        let summary = score::score(
            Cursor::new(input),
            &model,
            &mut out,
            &mut rejects,
            &ScoreOptions::default(),
        )
        .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(summary.rows_in, rows.len() as u64, "case {case}");

        // The batch's probabilities, by the extra column's row label.
        let mut reader = csv::ReaderBuilder::new().from_reader(out.as_slice());
        let columns = reader.headers().unwrap().clone();
        let probability_at = columns.iter().position(|c| c == "probability").unwrap();
        let mut batch = std::collections::HashMap::new();
        for record in reader.records() {
            let record = record.unwrap();
            batch.insert(record[0].to_owned(), record[probability_at].parse::<f64>().unwrap());
        }
        let rejected: std::collections::HashMap<u64, &RejectedRow> = rejects.iter().map(|r| (r.row, r)).collect();

        for (i, row) in rows.iter().enumerate() {
            let get = |name: &str| {
                features
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|j| row[j + 1].as_str())
            };
            let online = model.logit(get);
            match (online, batch.get(&row[0]), rejected.get(&(i as u64 + 1))) {
                (Ok(z), Some(p), None) if z.is_finite() => {
                    let expected = Model::probability(z);
                    assert!(
                        (expected - p).abs() <= 1e-12,
                        "case {case} row {i} {row:?}: online {expected}, batch {p}"
                    );
                    rows_checked += 1;
                }
                (online, None, Some(rejection)) if online.as_ref().map_or(true, |z| !z.is_finite()) => {
                    let reasons: Vec<String> = model.rejections(get).iter().map(ToString::to_string).collect();
                    if !reasons.is_empty() {
                        assert_eq!(rejection.reason, reasons.join("; "), "case {case} row {i} {row:?}");
                    }
                    rejects_checked += 1;
                }
                (online, batch, rejection) => {
                    panic!("case {case} row {i} {row:?}: online {online:?}, batch {batch:?}, rejected {rejection:?}")
                }
            }
        }
    }
    assert!(
        rows_checked > 3000 && rejects_checked > 1000,
        "{rows_checked} scored, {rejects_checked} rejected"
    );
}
