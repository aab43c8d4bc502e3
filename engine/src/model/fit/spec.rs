//! What a fit is asked for: the target, the feature columns, the split into
//! training and held-out rows and the regularisation, and the checks those
//! settings must pass before any data is read (so a bad flag fails at once,
//! not after a large download). Refitting an existing model starts from the
//! spec its artifact records ([`FitSpec::like`]).

use std::collections::BTreeSet;

use super::FitError;
use crate::model::artifact::{Artifact, Feature, SplitDescription};

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

pub(super) fn validate_spec(spec: &FitSpec) -> Result<(), FitError> {
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
