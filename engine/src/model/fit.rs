//! Fitting: a class-weighted, L2-regularised logistic regression minimised
//! with smartcore's L-BFGS.
//!
//! smartcore's own `LogisticRegression` has no class or sample weights (the
//! challenge model used `class_weight='balanced'`) and no probabilities, so we
//! hand smartcore's optimiser the same objective scikit-learn minimises:
//!
//! ```text
//! (1/S) Σ s_i · logloss(y_i, z_i)  +  (1/(2·C·S)) · ‖w‖²      S = Σ s_i
//! ```
//!
//! with `s_i = n / (2·n_class(y_i))` when balanced (else 1) and the intercept
//! left unpenalised. A full one-hot set per column is collinear with the
//! intercept; the L2 term makes the optimum unique.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use indexmap::IndexMap;
use smartcore::optimization::FunctionOrder;
use smartcore::optimization::first_order::FirstOrderOptimizer;
use smartcore::optimization::first_order::lbfgs::LBFGS;
use smartcore::optimization::line_search::Backtracking;

use super::artifact::{Artifact, FORMAT, Feature, SplitDescription, Training};
use super::evaluation::EvaluationBuilder;
use super::training_data::{self, Skipped, TrainingRow};
use super::{Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("reading the training data failed: {0}")]
    Read(std::io::Error),
    #[error("the training data is empty")]
    Empty,
    #[error("the training data is binary (NUL bytes), not CSV text")]
    NotText,
    #[error("the training data is not readable CSV: {0}")]
    Unreadable(String),
    #[error("the training data has a header line but no rows")]
    HeaderOnly,
    #[error("the training data has no column{} {} (the header has: {})", if .missing.len() > 1 { "s" } else { "" }, .missing.join(", "), .found.join(", "))]
    MissingColumns { missing: Vec<String>, found: Vec<String> },
    #[error("no row has {column}={value} (values seen: {seen})")]
    NoTrainRows {
        column: String,
        value: String,
        seen: String,
    },
    #[error("labels must be 0/1; {column} holds {holds}")]
    LabelsNotBinary { column: String, holds: String },
    #[error("{column} is not numeric (first non-number at line {line}: {value:?})")]
    NotNumeric { column: String, line: u64, value: String },
    #[error("no usable training rows: {0}")]
    NoRows(String),
    #[error("the training rows hold a single class ({0}); both 0 and 1 are needed")]
    SingleClass(u8),
    #[error("invalid training settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How rows are split into training and held-out sets.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// Rows whose `column` equals `train_value` train; all others are held out.
    Column { column: String, train_value: String },
    /// A deterministic pseudo-random `test_fraction` of rows is held out.
    Fraction { test_fraction: f64, seed: u64 },
    /// Train on everything.
    None,
}

/// What to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSpec {
    pub name: String,
    pub target: String,
    pub categorical: Vec<String>,
    pub numeric: Vec<String>,
    pub split: Split,
    pub balanced: bool,
    /// Inverse L2 regularisation strength (scikit-learn's `C`).
    pub c: f64,
    pub threshold: f64,
    pub max_iterations: usize,
}

impl FitSpec {
    /// The feature spec and settings an existing artifact was trained with:
    /// what `TRAINING_DATA_URI` refits when nothing else is said.
    pub fn like(artifact: &Artifact) -> FitSpec {
        let mut categorical = Vec::new();
        let mut numeric = Vec::new();
        for feature in &artifact.features {
            match feature {
                Feature::Categorical { name, .. } => categorical.push(name.clone()),
                Feature::Numeric { name, .. } => numeric.push(name.clone()),
            }
        }
        let split = match &artifact.training.split {
            SplitDescription::Column { column, train_value } => Split::Column {
                column: column.clone(),
                train_value: train_value.clone(),
            },
            SplitDescription::Fraction { test_fraction, seed } => Split::Fraction {
                test_fraction: *test_fraction,
                seed: *seed,
            },
            SplitDescription::None => Split::None,
        };
        FitSpec {
            name: artifact.name.clone(),
            target: artifact.target.clone(),
            categorical,
            numeric,
            split,
            balanced: artifact.training.class_weight == "balanced",
            c: artifact.training.c,
            threshold: artifact.threshold,
            max_iterations: 1000,
        }
    }
}

/// The outcome of a fit: the artifact (already validated) and its bytes.
pub struct Fitted {
    pub model: Model,
    /// Pretty JSON with a trailing newline: what `--out` writes.
    pub json: Vec<u8>,
    /// Rows left out, by reason (in the artifact only as a count).
    pub skipped: Vec<Skipped>,
    /// The same, in words.
    pub skipped_text: String,
}

/// One usable row, encoded for the optimiser.
struct Encoded {
    /// Parameter index of each categorical column's active level.
    levels: Vec<u32>,
    /// Raw numeric values; `None` is missing (imputed with the mean).
    numbers: Vec<Option<f64>>,
    label: bool,
}

/// Fits a model to CSV data read from `input` (anything `scorer score`
/// reads: gzip, any common delimiter, a byte-order mark, Latin-1 or UTF-16).
/// `data_name` is recorded in the artifact.
pub fn fit(input: impl Read + Send, data_name: &str, spec: &FitSpec) -> Result<Fitted, FitError> {
    validate_spec(spec)?;
    let data = training_data::read(input, spec)?;
    let skipped_text = data.describe_skipped();
    if data.train.is_empty() {
        return Err(FitError::NoRows(if data.skipped.is_empty() {
            "every row was held out".to_owned()
        } else {
            format!("skipped {skipped_text}")
        }));
    }
    let usable = &data.train;
    let vocabularies: Vec<Vec<String>> = (0..spec.categorical.len())
        .map(|j| sorted_levels(usable.iter().map(|r| r.levels[j].as_str())))
        .collect();
    let stats: Vec<(f64, f64)> = (0..spec.numeric.len())
        .map(|j| mean_std(usable.iter().filter_map(|r| r.numbers[j])))
        .collect();

    // Parameter layout: [intercept, every categorical level..., every numeric].
    let mut offsets = Vec::with_capacity(vocabularies.len());
    let mut index_of: Vec<HashMap<&str, u32>> = Vec::new();
    let mut next = 1u32;
    for vocab in &vocabularies {
        offsets.push(next);
        index_of.push(
            vocab
                .iter()
                .enumerate()
                .map(|(k, level)| (level.as_str(), next + k as u32))
                .collect(),
        );
        next += vocab.len() as u32;
    }
    let numeric_offset = next as usize;
    let n_params = numeric_offset + spec.numeric.len();
    let rows: Vec<Encoded> = usable
        .iter()
        .map(|r| Encoded {
            levels: r
                .levels
                .iter()
                .enumerate()
                .map(|(j, level)| index_of[j][level.as_str()])
                .collect(),
            numbers: r.numbers.clone(),
            label: r.label,
        })
        .collect();

    let positives = rows.iter().filter(|r| r.label).count() as u64;
    let n = rows.len() as u64;
    if positives == 0 || positives == n {
        return Err(FitError::SingleClass(u8::from(positives == n)));
    }
    let (w0, w1) = if spec.balanced {
        (
            n as f64 / (2.0 * (n - positives) as f64),
            n as f64 / (2.0 * positives as f64),
        )
    } else {
        (1.0, 1.0)
    };
    let total_weight = w0 * (n - positives) as f64 + w1 * positives as f64;
    let penalty = 1.0 / (2.0 * spec.c * total_weight);

    // Standardised numeric values, missing -> 0 (the mean).
    let standardised: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            r.numbers
                .iter()
                .zip(&stats)
                .map(|(x, (mean, std))| x.map_or(0.0, |x| (x - mean) / std))
                .collect()
        })
        .collect();
    let logit_of = |theta: &[f64], i: usize| -> f64 {
        let mut z = theta[0];
        for &k in &rows[i].levels {
            z += theta[k as usize];
        }
        for (j, x) in standardised[i].iter().enumerate() {
            z += theta[numeric_offset + j] * x;
        }
        z
    };
    let objective = |theta: &Vec<f64>| -> f64 {
        let mut loss = 0.0;
        for (i, row) in rows.iter().enumerate() {
            let z = logit_of(theta, i);
            // log(1 + e^z) - y·z, computed without overflow.
            let softplus = if z > 0.0 {
                z + (-z).exp().ln_1p()
            } else {
                z.exp().ln_1p()
            };
            let (weight, y) = if row.label { (w1, 1.0) } else { (w0, 0.0) };
            loss += weight * (softplus - y * z);
        }
        let l2: f64 = theta[1..].iter().map(|w| w * w).sum();
        loss / total_weight + penalty * l2
    };
    let gradient = |g: &mut Vec<f64>, theta: &Vec<f64>| {
        g.iter_mut().for_each(|v| *v = 0.0);
        for (i, row) in rows.iter().enumerate() {
            let z = logit_of(theta, i);
            let (weight, y) = if row.label { (w1, 1.0) } else { (w0, 0.0) };
            let residual = weight * (Model::probability(z) - y) / total_weight;
            g[0] += residual;
            for &k in &row.levels {
                g[k as usize] += residual;
            }
            for (j, x) in standardised[i].iter().enumerate() {
                g[numeric_offset + j] += residual * x;
            }
        }
        for k in 1..g.len() {
            g[k] += 2.0 * penalty * theta[k];
        }
    };
    let optimiser = LBFGS {
        max_iter: spec.max_iterations,
        g_atol: 1e-10,
        ..Default::default()
    };
    let line_search = Backtracking::<f64> {
        order: FunctionOrder::THIRD,
        ..Default::default()
    };
    let result = optimiser.optimize(&objective, &gradient, &vec![0.0; n_params], &line_search);
    let theta = result.x;
    // smartcore reports NaN when the start point is already optimal.
    let final_objective = objective(&theta);

    let mut features = Vec::new();
    for (j, name) in spec.categorical.iter().enumerate() {
        let weights: IndexMap<String, f64> = vocabularies[j]
            .iter()
            .enumerate()
            .map(|(k, level)| (level.clone(), theta[offsets[j] as usize + k]))
            .collect();
        features.push(Feature::Categorical {
            name: name.clone(),
            weights,
        });
    }
    for (j, name) in spec.numeric.iter().enumerate() {
        features.push(Feature::Numeric {
            name: name.clone(),
            mean: stats[j].0,
            std: stats[j].1,
            weight: theta[numeric_offset + j],
        });
    }
    let mut artifact = Artifact {
        format: FORMAT.to_owned(),
        name: spec.name.clone(),
        target: spec.target.clone(),
        threshold: spec.threshold,
        intercept: theta[0],
        features,
        training: Training {
            data: data_name.to_owned(),
            data_sha256: data.sha256.clone(),
            split: match &spec.split {
                Split::Column { column, train_value } => SplitDescription::Column {
                    column: column.clone(),
                    train_value: train_value.clone(),
                },
                Split::Fraction { test_fraction, seed } => SplitDescription::Fraction {
                    test_fraction: *test_fraction,
                    seed: *seed,
                },
                Split::None => SplitDescription::None,
            },
            rows: n,
            positives,
            rows_skipped: data.skipped_rows(),
            class_weight: if spec.balanced { "balanced" } else { "none" }.to_owned(),
            c: spec.c,
            solver: "smartcore L-BFGS (weighted L2 log-loss)".to_owned(),
            iterations: result.iterations as u64,
            objective: final_objective,
            missing_numeric: "imputed with the training mean".to_owned(),
            holdout: None,
        },
    };

    // Held-out metrics with the fitted model, through the same per-row
    // logit as the online API (and, term by term, the batch engine).
    let model = Model::from_artifact(artifact.clone(), String::new())?;
    let mut holdout = EvaluationBuilder::default();
    for row in &data.holdout {
        if let Ok(z) = model.logit(row_getter(spec, row)) {
            let p = Model::probability(z);
            holdout.add(row.label, p, model.predict(p));
        }
    }
    artifact.training.holdout = holdout.finish();

    let mut json = serde_json::to_vec_pretty(&artifact).map_err(ModelError::from)?;
    json.push(b'\n');
    let model = Model::from_json(&json)?;
    Ok(Fitted {
        model,
        json,
        skipped: data.skipped,
        skipped_text,
    })
}

/// A row's raw feature text by feature name (numbers as they were read).
fn row_getter<'a>(spec: &'a FitSpec, row: &'a TrainingRow) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name: &str| {
        spec.categorical
            .iter()
            .position(|c| c == name)
            .map(|j| row.levels[j].as_str())
            .or_else(|| {
                spec.numeric
                    .iter()
                    .position(|c| c == name)
                    .and_then(|j| row.raw_numbers[j].as_deref())
            })
    }
}

fn validate_spec(spec: &FitSpec) -> Result<(), FitError> {
    let bad = |m: String| Err(FitError::Settings(m));
    if spec.categorical.is_empty() && spec.numeric.is_empty() {
        return bad("name at least one --categorical or --numeric column".into());
    }
    if !(spec.c.is_finite() && spec.c > 0.0) {
        return bad(format!("C must be a positive number, got {}", spec.c));
    }
    if !(spec.threshold > 0.0 && spec.threshold < 1.0) {
        return bad(format!("threshold must be in (0, 1), got {}", spec.threshold));
    }
    if let Split::Fraction { test_fraction, .. } = spec.split
        && !(0.0..1.0).contains(&test_fraction)
    {
        return bad(format!("test fraction must be in [0, 1), got {test_fraction}"));
    }
    let mut all: Vec<&String> = spec.categorical.iter().chain(&spec.numeric).collect();
    all.push(&spec.target);
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    if unique.len() != all.len() {
        return bad("a column is named twice among target, categorical and numeric".into());
    }
    Ok(())
}

/// Levels in a stable, readable order: numerically when every level is an
/// integer (so months read 1..12), otherwise lexicographically.
fn sorted_levels<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = values.collect();
    let mut levels: Vec<String> = set.into_iter().map(str::to_owned).collect();
    if levels.iter().all(|l| l.parse::<i64>().is_ok()) {
        levels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
    }
    levels
}

fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (mean, if std > 0.0 { std } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(categorical: &[&str], numeric: &[&str]) -> FitSpec {
        FitSpec {
            name: "t".into(),
            target: "y".into(),
            categorical: categorical.iter().map(|s| s.to_string()).collect(),
            numeric: numeric.iter().map(|s| s.to_string()).collect(),
            split: Split::None,
            balanced: false,
            c: 1.0,
            threshold: 0.5,
            max_iterations: 500,
        }
    }

    #[test]
    fn learns_the_direction_of_a_categorical_and_a_numeric_signal() {
        let mut csv = String::from("colour,size,y\n");
        for i in 0..200 {
            let red = i % 2 == 0;
            let size = (i % 10) as f64;
            let y = u8::from(red && size > 2.0 || size > 7.0);
            csv.push_str(&format!("{},{},{}\n", if red { "red" } else { "blue" }, size, y));
        }
        let fitted = fit(csv.as_bytes(), "t.csv", &spec(&["colour"], &["size"])).unwrap();
        let a = fitted.model.artifact();
        let Feature::Categorical { weights, .. } = &a.features[0] else {
            panic!()
        };
        assert!(weights["red"] > weights["blue"]);
        let Feature::Numeric { weight, mean, .. } = &a.features[1] else {
            panic!()
        };
        assert!(*weight > 0.0);
        assert!((mean - 4.5).abs() < 1e-9);
        assert_eq!(a.training.rows, 200);
    }

    #[test]
    fn unusable_rows_are_skipped_and_counted() {
        let csv = "c,y\na,1\nb,0\n,1\na,maybe\nb,1\na,0\n";
        let fitted = match fit(csv.as_bytes(), "t.csv", &spec(&["c"], &[])) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(fitted.model.artifact().training.rows, 4);
        assert_eq!(fitted.model.artifact().training.rows_skipped, 2);
    }

    fn error(csv: &str, spec: &FitSpec) -> String {
        match fit(csv.as_bytes(), "t.csv", spec) {
            Ok(_) => panic!("fitted {csv:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn whole_file_problems_say_what_is_wrong() {
        assert_eq!(
            error("c,y\na,1\n", &spec(&["d"], &[])),
            "the training data has no column d (the header has: c, y)"
        );
        assert_eq!(
            error("c,y\na,1\nb,1\n", &spec(&["c"], &[])),
            "the training rows hold a single class (1); both 0 and 1 are needed"
        );
        assert_eq!(
            error("c,n,y\na,Grupo LATAM,1\nb,x,0\n", &spec(&["c"], &["n"])),
            "n is not numeric (first non-number at line 2: \"Grupo LATAM\")"
        );
        let mut by_column = spec(&["c"], &[]);
        by_column.split = Split::Column {
            column: "s".into(),
            train_value: "TRAIN".into(),
        };
        assert_eq!(
            error("c,s,y\na,train,1\nb,test,0\n", &by_column),
            "no row has s=TRAIN (values seen: test, train)"
        );
        let mut months = String::from("c,y\n");
        for m in 1..=12 {
            months.push_str(&format!("a,{m}\n"));
        }
        assert_eq!(error(&months, &spec(&["c"], &[])), "labels must be 0/1; y holds 1..12");
    }

    #[test]
    fn skipped_rows_are_counted_by_reason_with_their_lines() {
        let csv = "c,n,y\na,1,1\n,2,0\nb,x,1\na,3,maybe\nb,4,0\n,5,1\na,6,0\n";
        let fitted = match fit(csv.as_bytes(), "t.csv", &spec(&["c"], &["n"])) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(fitted.model.artifact().training.rows_skipped, 4);
        assert_eq!(
            fitted.skipped_text,
            "2 with an empty c (lines 3, 7); 1 with a n that is not a number (line 4); 1 with label \"maybe\" (not 0 or 1) in y (line 5)"
        );
    }

    #[test]
    fn training_reads_what_scoring_reads() {
        let plain = "c;y\r\na;1\r\nb;0\r\na;1\r\nb;0\r\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, format!("\u{feff}{plain}").as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let a = fit(plain.as_bytes(), "t.csv", &spec(&["c"], &[])).unwrap_or_else(|e| panic!("{e}"));
        let b = fit(&gz[..], "t.csv", &spec(&["c"], &[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.model.artifact().features, b.model.artifact().features);
        assert_eq!(a.model.artifact().training.rows, 4);
    }

    #[test]
    fn months_sort_numerically() {
        let levels = sorted_levels(["10", "2", "1", "12"].into_iter());
        assert_eq!(levels, ["1", "2", "10", "12"]);
        let levels = sorted_levels(["b", "a", "10"].into_iter());
        assert_eq!(levels, ["10", "a", "b"]);
    }

    #[test]
    fn fraction_split_is_deterministic_and_roughly_the_fraction() {
        let held: usize = (0..10_000u64)
            .filter(|i| training_data::unit_interval(training_data::splitmix64(42 ^ i)) < 0.33)
            .count();
        assert!((3_000..3_600).contains(&held), "{held}");
    }
}
