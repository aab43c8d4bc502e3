//! Fitting: a class- and sample-weighted, L2-regularised logistic
//! regression, minimised by damped Newton steps (a dense Hessian, when the
//! parameters are at most `newton::MAX_PARAMS`, 2,000) or smartcore's L-BFGS
//! finished by Newton, to scikit-learn's exact optimum.
//!
//! smartcore's own `LogisticRegression` has no class or sample weights (the
//! challenge model used `class_weight='balanced'`) and no probabilities, so we
//! minimise the objective scikit-learn minimises ourselves:
//!
//! ```text
//! (1/S) Σ s_i · logloss(y_i, z_i)  +  (1/(2·C·S)) · ‖w‖²      S = Σ s_i
//! ```
//!
//! with `s_i` the row's class weight (`S / (2·S_class)` when balanced)
//! times its sample weight, and the intercept
//! left unpenalised. A full one-hot set per column is collinear with the
//! intercept; the L2 term makes the optimum unique.

mod encoding;
mod newton;
mod spec;

use std::io::Read;

use smartcore::optimization::FunctionOrder;
use smartcore::optimization::first_order::FirstOrderOptimizer;
use smartcore::optimization::first_order::lbfgs::LBFGS;
use smartcore::optimization::line_search::Backtracking;

pub use spec::{ClassWeight, DEFAULT_MAX_ITERATIONS, FitSpec, HandleUnknown, SettingError, Split, ThresholdRule};

use super::artifact::{Artifact, FORMAT, SplitDescription, Training};
use super::curves::{Curves, choose_threshold};
use super::evaluation::EvaluationBuilder;
use super::training_data::{self, Skipped, TrainingRow};
use super::{Model, ModelError};
use encoding::Encoding;
use spec::validate_spec;

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

/// The outcome of a fit: the artifact (already validated) and its bytes.
pub struct Fitted {
    pub model: Model,
    /// Pretty JSON with a trailing newline: what `--out` writes.
    pub json: Vec<u8>,
    /// Rows left out, by reason (in the artifact only as a count).
    pub skipped: Vec<Skipped>,
    /// The same, in words.
    pub skipped_text: String,
    /// The curves of the held-out rows (the training rows when nothing was
    /// held out), with the chosen threshold marked.
    pub curves: Option<Curves>,
    /// The fitted model against a champion on the same held-out rows, when
    /// a champion was given.
    pub comparison: Option<Comparison>,
}

/// A challenger and a champion on the same held-out rows (those both can
/// score).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    pub rows: u64,
    pub challenger_roc_auc: Option<f64>,
    pub champion_roc_auc: Option<f64>,
    /// Held-out rows the champion could not score (left out of both).
    pub champion_rejected: u64,
}

/// Fits a model to CSV data read from `input` (anything `scorer score`
/// reads: gzip, any common delimiter, a byte-order mark, Latin-1 or UTF-16).
/// `data_name` is recorded in the artifact.
pub fn fit(input: impl Read + Send, data_name: &str, spec: &FitSpec) -> Result<Fitted, FitError> {
    fit_against(input, data_name, spec, None)
}

/// [`fit`], and the result compared with `champion` on the held-out rows.
pub fn fit_against(
    input: impl Read + Send,
    data_name: &str,
    spec: &FitSpec,
    champion: Option<&Model>,
) -> Result<Fitted, FitError> {
    validate_spec(spec)?;
    let extra: Vec<String> = champion
        .map(|m| m.required_columns().map(str::to_owned).collect())
        .unwrap_or_default();
    let data = training_data::read(input, spec, &extra)?;
    let skipped_text = data.describe_skipped();
    if data.train.is_empty() {
        return Err(FitError::NoRows(if data.skipped.is_empty() {
            "every row was held out".to_owned()
        } else {
            format!("skipped {skipped_text}")
        }));
    }
    let encoding = Encoding::new(&data.train, spec);
    let numeric_offset = encoding.numeric_offset;
    let rows = &encoding.rows;
    let standardised = &encoding.standardised;
    let positives = rows.iter().filter(|r| r.label).count() as u64;
    let n = rows.len() as u64;
    if positives == 0 || positives == n {
        return Err(FitError::SingleClass(u8::from(positives == n)));
    }
    // Class weights as scikit-learn (1.6 and later) computes them:
    // 'balanced' is S / (2 · S_class) over the sums of the sample weights
    // (the counts, without a weight column); each row's weight is its class
    // weight times its sample weight.
    let [w0, w1] = match spec.class_weight {
        ClassWeight::Balanced => {
            let sum = |class: bool| -> f64 { data.train.iter().filter(|r| r.label == class).map(|r| r.weight).sum() };
            let (s0, s1) = (sum(false), sum(true));
            if s0 <= 0.0 || s1 <= 0.0 {
                return Err(FitError::Settings(
                    "class_weight balanced needs a positive sample weight in each class".into(),
                ));
            }
            [(s0 + s1) / (2.0 * s0), (s0 + s1) / (2.0 * s1)]
        }
        ClassWeight::Fixed(w) => w,
        ClassWeight::None => [1.0, 1.0],
    };
    let weights: Vec<f64> = data
        .train
        .iter()
        .map(|r| r.weight * if r.label { w1 } else { w0 })
        .collect();
    // A class whose rows all weigh nothing leaves no finite optimum (the
    // intercept would climb forever).
    for class in [false, true] {
        let sum: f64 = data
            .train
            .iter()
            .zip(&weights)
            .filter(|(r, _)| r.label == class)
            .map(|(_, w)| w)
            .sum();
        if sum <= 0.0 {
            return Err(FitError::Settings(format!(
                "every training row of class {} weighs nothing (sample and class weights): nothing to fit",
                u8::from(class)
            )));
        }
    }
    let total_weight: f64 = weights.iter().sum();
    if !(total_weight > 0.0 && total_weight.is_finite()) {
        return Err(FitError::Settings(format!(
            "the training rows' weights sum to {total_weight}; at least one must be positive"
        )));
    }
    let penalty = 1.0 / (2.0 * spec.c * total_weight);

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
            let y = if row.label { 1.0 } else { 0.0 };
            loss += weights[i] * (softplus - y * z);
        }
        let l2: f64 = theta[1..].iter().map(|w| w * w).sum();
        loss / total_weight + penalty * l2
    };
    let gradient = |g: &mut Vec<f64>, theta: &Vec<f64>| {
        g.iter_mut().for_each(|v| *v = 0.0);
        for (i, row) in rows.iter().enumerate() {
            let z = logit_of(theta, i);
            let y = if row.label { 1.0 } else { 0.0 };
            let residual = weights[i] * (Model::probability(z) - y) / total_weight;
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
    let problem = newton::Problem {
        rows,
        standardised,
        weights: &weights,
        total_weight,
        penalty,
        numeric_offset,
    };
    let zero = vec![0.0; encoding.n_params];
    // Newton from zero when the Hessian is small (a few steps, one pass
    // each); otherwise, or if it has not converged, L-BFGS, which stops on
    // a relative change of the objective and so leaves the near-flat
    // direction of a full one-hot set (the intercept against every level,
    // held only by the L2 term) about 1e-4 short: a few Newton steps then
    // finish the job.
    let direct = (encoding.n_params <= newton::MAX_PARAMS).then(|| {
        newton::minimise(
            zero.clone(),
            &problem,
            &objective,
            &gradient,
            newton::SOLVE_STEPS.min(spec.max_iterations),
        )
    });
    let (polish, lbfgs_iterations, direct_newton) = match direct {
        Some(solved) if solved.converged => (solved, 0, true),
        _ => {
            let optimiser = LBFGS {
                max_iter: spec.max_iterations,
                g_atol: 1e-10,
                ..Default::default()
            };
            let line_search = Backtracking::<f64> {
                order: FunctionOrder::THIRD,
                ..Default::default()
            };
            let result = optimiser.optimize(&objective, &gradient, &zero, &line_search);
            let polish = newton::minimise(result.x, &problem, &objective, &gradient, newton::POLISH_STEPS);
            (polish, result.iterations, false)
        }
    };
    let theta = polish.theta;
    // smartcore reports NaN when the start point is already optimal.
    let final_objective = objective(&theta);

    let features = encoding.features(spec, &theta);
    let fixed_threshold = match spec.threshold {
        ThresholdRule::Fixed(t) => t,
        _ => 0.5,
    };
    let mut artifact = Artifact {
        format: FORMAT.to_owned(),
        name: spec.name.clone(),
        target: spec.target.clone(),
        threshold: fixed_threshold,
        intercept: theta[0],
        features,
        handle_unknown: spec.handle_unknown,
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
            class_weight: spec.class_weight.to_string(),
            sample_weight: spec.sample_weight.clone(),
            missing_level: spec.missing_level,
            threshold_rule: match spec.threshold {
                ThresholdRule::Fixed(_) => None,
                rule => Some(rule.to_string()),
            },
            max_iter: (spec.max_iterations != DEFAULT_MAX_ITERATIONS).then_some(spec.max_iterations as u64),
            c: spec.c,
            solver: match (direct_newton, polish.steps) {
                (true, _) => "Newton, Cholesky (weighted L2 log-loss)",
                (false, 0) => "smartcore L-BFGS (weighted L2 log-loss)",
                (false, _) => "smartcore L-BFGS, then Newton (weighted L2 log-loss)",
            }
            .to_owned(),
            iterations: (lbfgs_iterations + polish.steps) as u64,
            objective: final_objective,
            missing_numeric: "imputed with the training mean".to_owned(),
            holdout: None,
        },
    };

    // Probabilities of the held-out rows (the training rows when nothing is
    // held out, for the threshold rule and the curves), through the same
    // per-row logit as the online API (and, term by term, the batch engine).
    let model = Model::from_artifact(artifact.clone(), String::new())?;
    let (judged, of) = if data.holdout.is_empty() {
        (&data.train, format!("training rows of {data_name} (nothing held out)"))
    } else {
        (&data.holdout, format!("held-out rows of {data_name}"))
    };
    let scored: Vec<(bool, f64)> = judged
        .iter()
        .filter_map(|row| {
            model
                .logit(row_getter(spec, row))
                .ok()
                .map(|z| (row.label, Model::probability(z)))
        })
        .collect();
    let mut sweep = EvaluationBuilder::default();
    for &(label, p) in &scored {
        sweep.add(label, p, false);
    }
    artifact.threshold = choose_threshold(&sweep, spec.threshold)
        .map_err(|e| FitError::Settings(format!("--threshold {}: {e}", spec.threshold)))?;
    let mut evaluation = EvaluationBuilder::default();
    for &(label, p) in &scored {
        evaluation.add(label, p, p >= artifact.threshold);
    }
    if !data.holdout.is_empty() {
        artifact.training.holdout = evaluation.finish();
    }
    let curves = Curves::new(&evaluation, artifact.threshold, &of);

    let comparison = champion.map(|champion| {
        let mut challenger_eval = EvaluationBuilder::default();
        let mut champion_eval = EvaluationBuilder::default();
        let mut champion_rejected = 0;
        let challenger = Model::from_artifact(artifact.clone(), String::new());
        for row in &data.holdout {
            let get = |name: &str| {
                extra
                    .iter()
                    .position(|c| c == name)
                    .and_then(|j| row.extra[j].as_deref())
            };
            let Ok(z) = champion.logit(get) else {
                champion_rejected += 1;
                continue;
            };
            let p = Model::probability(z);
            champion_eval.add(row.label, p, champion.predict(p));
            if let Ok(challenger) = &challenger
                && let Ok(z) = challenger.logit(row_getter(spec, row))
            {
                let p = Model::probability(z);
                challenger_eval.add(row.label, p, challenger.predict(p));
            }
        }
        Comparison {
            rows: champion_eval.rows(),
            challenger_roc_auc: challenger_eval.finish().and_then(|e| e.roc_auc),
            champion_roc_auc: champion_eval.finish().and_then(|e| e.roc_auc),
            champion_rejected,
        }
    });

    let mut json = serde_json::to_vec_pretty(&artifact).map_err(ModelError::from)?;
    json.push(b'\n');
    let model = Model::from_json(&json)?;
    Ok(Fitted {
        model,
        json,
        skipped: data.skipped,
        skipped_text,
        curves,
        comparison,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::artifact::Feature;

    fn spec(categorical: &[&str], numeric: &[&str]) -> FitSpec {
        FitSpec::new("t", "y", categorical, numeric)
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
    fn a_class_whose_rows_weigh_nothing_is_refused_whatever_the_class_weights() {
        let csv = "c,w,y\na,1,0\nb,1,0\na,0,1\nb,0,1\n";
        let mut weighted = spec(&["c"], &[]);
        weighted.sample_weight = Some("w".into());
        for class_weight in [ClassWeight::None, ClassWeight::Fixed([1.0, 2.0]), ClassWeight::Balanced] {
            weighted.class_weight = class_weight;
            let e = error(csv, &weighted);
            assert!(
                e.contains("weighs nothing") || e.contains("positive sample weight"),
                "{class_weight}: {e}"
            );
        }
    }

    #[test]
    fn fraction_split_is_deterministic_and_roughly_the_fraction() {
        let held: usize = (0..10_000u64)
            .filter(|i| training_data::unit_interval(training_data::splitmix64(42 ^ i)) < 0.33)
            .count();
        assert!((3_000..3_600).contains(&held), "{held}");
    }
}
