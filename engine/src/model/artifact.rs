//! The model artifact: a small, versioned, human-readable JSON file.
//!
//! The file is the contract between `scorer train`, the batch engine, the
//! online API and the Python baselines in `bench/`, so its shape is spelled out
//! here once and documented in `data/README.md`:
//!
//! ```text
//! logit = intercept
//!       + Σ categorical  weights[value]     (empty: missing; unknown: error or 0)
//!       + Σ numeric      weight * (x - mean) / std      (missing x: term 0)
//! probability = 1 / (1 + e^-logit);  prediction = probability >= threshold
//! ```

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::evaluation::Evaluation;

/// The only format this build reads and writes.
pub const FORMAT: &str = "scorer-logreg/1";

/// The artifact exactly as it is stored. Use [`super::Model`] to score: it is
/// only built from an artifact that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub format: String,
    /// A human name for the model; the version is the content hash.
    pub name: String,
    /// The 0/1 label column the model was trained on. When an input carries
    /// it, scoring reports metrics against it.
    pub target: String,
    pub threshold: f64,
    pub intercept: f64,
    pub features: Vec<Feature>,
    /// What a categorical value outside the vocabulary does (absent: error).
    #[serde(default, skip_serializing_if = "HandleUnknown::is_error")]
    pub handle_unknown: HandleUnknown,
    pub training: Training,
}

/// What scoring does with a categorical value the fit never saw (or an
/// empty one when the fit learned no missing level), as scikit-learn's
/// `OneHotEncoder(handle_unknown=...)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandleUnknown {
    /// Reject the row, naming the value and the known levels.
    #[default]
    Error,
    /// Add nothing to the logit, and count it per column.
    Ignore,
}

impl HandleUnknown {
    pub fn is_error(&self) -> bool {
        *self == HandleUnknown::Error
    }
}

impl std::str::FromStr for HandleUnknown {
    type Err = crate::model::fit::SettingError;

    fn from_str(text: &str) -> Result<HandleUnknown, Self::Err> {
        match text.trim() {
            "error" => Ok(HandleUnknown::Error),
            "ignore" => Ok(HandleUnknown::Ignore),
            other => Err(crate::model::fit::SettingError::NotHandleUnknown(other.to_owned())),
        }
    }
}

/// One input column and what it contributes to the logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Feature {
    /// One-hot encoded: the vocabulary learned at fit time, each level with its
    /// weight. A value outside the vocabulary is rejected, not guessed.
    Categorical {
        name: String,
        weights: IndexMap<String, f64>,
        /// The weight of an empty value, when the fit learned a missing
        /// level; without one an empty value is unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<f64>,
    },
    /// Standardised with the training mean and standard deviation. A missing
    /// (empty) value is imputed with the training mean, so it adds nothing.
    Numeric {
        name: String,
        mean: f64,
        std: f64,
        weight: f64,
    },
}

impl Feature {
    pub fn name(&self) -> &str {
        match self {
            Feature::Categorical { name, .. } | Feature::Numeric { name, .. } => name,
        }
    }
}

/// How the model was trained, so a reader can reproduce and judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// File name of the training data (no directories: artifacts are shared).
    pub data: String,
    /// SHA-256 of the training data bytes.
    pub data_sha256: String,
    /// How training and held-out rows were separated.
    pub split: SplitDescription,
    /// Rows used for the fit, and how many of them were positive.
    pub rows: u64,
    pub positives: u64,
    /// Rows of the training data skipped because a value was unusable.
    pub rows_skipped: u64,
    /// `"balanced"` (weights n / (2 n_class), as scikit-learn), `"none"`
    /// or fixed weights `"0=1,1=3.5"`.
    pub class_weight: String,
    /// The column whose values weighted each training row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_weight: Option<String>,
    /// Whether empty categorical values were a level of their own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_level: bool,
    /// The rule that chose the threshold (absent: given as a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_rule: Option<String>,
    /// The iteration limit, when not the default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iter: Option<u64>,
    /// Inverse L2 regularisation strength, as scikit-learn's `C`.
    pub c: f64,
    pub solver: String,
    pub iterations: u64,
    /// Final value of the (weighted, mean) training objective.
    pub objective: f64,
    pub missing_numeric: String,
    /// Evaluation on the held-out rows, when there were any.
    pub holdout: Option<Evaluation>,
}

/// Which rows were held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitDescription {
    /// Rows whose `column` equals `train_value` were fitted; the rest held out.
    Column { column: String, train_value: String },
    /// A deterministic pseudo-random fraction of the rows was held out.
    Fraction { test_fraction: f64, seed: u64 },
    /// Every row was used for the fit; no held-out metrics.
    None,
}
