//! What a fit is asked for: the target, the feature columns, the split into
//! training and held-out rows, the weights, the regularisation and how the
//! threshold is chosen, and the checks those settings must pass before any
//! data is read (so a bad flag fails at once, not after a large download).
//! Refitting an existing model starts from the spec its artifact records
//! ([`FitSpec::like`]). Each setting parses from the text users write
//! (`--class-weight 0=1,1=3.5`, `--threshold recall>=0.6`) and prints back
//! as the same text, which is how the artifact records it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::FitError;
pub use crate::model::artifact::HandleUnknown;
use crate::model::artifact::{Artifact, Feature, SplitDescription};

/// A setting's text that means nothing: what `--class-weight`,
/// `--threshold` and `--handle-unknown` (and their spec fields) refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("{0:?} is not CLASS=WEIGHT (use balanced, none or 0=1.0,1=3.5)")]
    NotClassWeight(String),
    #[error("class {0:?} is not 0 or 1")]
    NotAClass(String),
    #[error("weight {weight:?} of class {class} is not a positive number")]
    NotAWeight { class: usize, weight: String },
    #[error("{what} {value:?} is not a number in (0, 1){}", if *.rule_hint { " (or use max-f1, recall>=R, precision>=P)" } else { "" })]
    NotAFraction {
        what: &'static str,
        value: String,
        rule_hint: bool,
    },
    #[error("{0:?} is not error or ignore")]
    NotHandleUnknown(String),
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

/// Per-class weights of the log-loss, as scikit-learn's `class_weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassWeight {
    None,
    /// `n / (2 · n_class)`, counted on the training rows (unweighted, as
    /// scikit-learn counts them).
    Balanced,
    /// Fixed weights of class 0 and class 1.
    Fixed([f64; 2]),
}

impl FromStr for ClassWeight {
    type Err = SettingError;

    /// `none`, `balanced` or `0=W0,1=W1` (either may be left out: weight 1).
    fn from_str(text: &str) -> Result<ClassWeight, SettingError> {
        match text.trim() {
            "none" | "" => return Ok(ClassWeight::None),
            "balanced" => return Ok(ClassWeight::Balanced),
            _ => {}
        }
        let mut weights = [1.0, 1.0];
        for part in text.split(',') {
            let (class, weight) = part
                .split_once('=')
                .ok_or_else(|| SettingError::NotClassWeight(part.to_owned()))?;
            let class: usize = match class.trim() {
                "0" => 0,
                "1" => 1,
                other => return Err(SettingError::NotAClass(other.to_owned())),
            };
            let not_a_weight = || SettingError::NotAWeight {
                class,
                weight: weight.trim().to_owned(),
            };
            let value: f64 = weight.trim().parse().map_err(|_| not_a_weight())?;
            if !(value.is_finite() && value > 0.0) {
                return Err(not_a_weight());
            }
            weights[class] = value;
        }
        Ok(ClassWeight::Fixed(weights))
    }
}

impl fmt::Display for ClassWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassWeight::None => f.write_str("none"),
            ClassWeight::Balanced => f.write_str("balanced"),
            ClassWeight::Fixed([w0, w1]) => write!(f, "0={w0},1={w1}"),
        }
    }
}

/// How the threshold (probability from which the prediction is 1) is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    Fixed(f64),
    /// The threshold of largest F1 on the held-out rows (the training rows
    /// when nothing is held out).
    MaxF1,
    /// The highest threshold whose recall is at least this.
    MinRecall(f64),
    /// The lowest threshold whose precision is at least this.
    MinPrecision(f64),
}

impl FromStr for ThresholdRule {
    type Err = SettingError;

    /// `0.5`, `max-f1`, `recall>=0.6` or `precision>=0.8`.
    fn from_str(text: &str) -> Result<ThresholdRule, SettingError> {
        let text = text.trim();
        let fraction = |value: &str, what: &'static str, rule_hint: bool| -> Result<f64, SettingError> {
            match value.trim().parse::<f64>() {
                Ok(x) if x > 0.0 && x < 1.0 => Ok(x),
                _ => Err(SettingError::NotAFraction {
                    what,
                    value: value.trim().to_owned(),
                    rule_hint,
                }),
            }
        };
        if text == "max-f1" {
            Ok(ThresholdRule::MaxF1)
        } else if let Some(value) = text.strip_prefix("recall>=") {
            Ok(ThresholdRule::MinRecall(fraction(value, "recall", false)?))
        } else if let Some(value) = text.strip_prefix("precision>=") {
            Ok(ThresholdRule::MinPrecision(fraction(value, "precision", false)?))
        } else {
            fraction(text, "threshold", true).map(ThresholdRule::Fixed)
        }
    }
}

impl fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdRule::Fixed(t) => write!(f, "{t}"),
            ThresholdRule::MaxF1 => f.write_str("max-f1"),
            ThresholdRule::MinRecall(r) => write!(f, "recall>={r}"),
            ThresholdRule::MinPrecision(p) => write!(f, "precision>={p}"),
        }
    }
}

/// The default L-BFGS iteration limit.
pub const DEFAULT_MAX_ITERATIONS: usize = 1000;

/// What to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSpec {
    pub name: String,
    pub target: String,
    pub categorical: Vec<String>,
    pub numeric: Vec<String>,
    pub split: Split,
    pub class_weight: ClassWeight,
    /// A numeric column whose value weights each training row.
    pub sample_weight: Option<String>,
    /// An empty categorical value is a level of its own (learned like any
    /// other) instead of a reason to skip the row.
    pub missing_level: bool,
    pub handle_unknown: HandleUnknown,
    /// Inverse L2 regularisation strength (scikit-learn's `C`).
    pub c: f64,
    pub threshold: ThresholdRule,
    pub max_iterations: usize,
}

impl FitSpec {
    /// A spec with scikit-learn's defaults for everything but the columns.
    pub fn new(name: &str, target: &str, categorical: &[&str], numeric: &[&str]) -> FitSpec {
        FitSpec {
            name: name.to_owned(),
            target: target.to_owned(),
            categorical: categorical.iter().map(|c| (*c).to_owned()).collect(),
            numeric: numeric.iter().map(|c| (*c).to_owned()).collect(),
            split: Split::None,
            class_weight: ClassWeight::None,
            sample_weight: None,
            missing_level: false,
            handle_unknown: HandleUnknown::Error,
            c: 1.0,
            threshold: ThresholdRule::Fixed(0.5),
            max_iterations: DEFAULT_MAX_ITERATIONS,
        }
    }

    /// The feature spec and settings an existing artifact was trained with:
    /// what a refit does when nothing else is said.
    pub fn like(artifact: &Artifact) -> FitSpec {
        let mut categorical = Vec::new();
        let mut numeric = Vec::new();
        let mut missing_level = false;
        for feature in &artifact.features {
            match feature {
                Feature::Categorical { name, missing, .. } => {
                    categorical.push(name.clone());
                    missing_level |= missing.is_some();
                }
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
        let training = &artifact.training;
        FitSpec {
            name: artifact.name.clone(),
            target: artifact.target.clone(),
            categorical,
            numeric,
            split,
            class_weight: training.class_weight.parse().unwrap_or(ClassWeight::None),
            sample_weight: training.sample_weight.clone(),
            missing_level: missing_level || training.missing_level,
            handle_unknown: artifact.handle_unknown,
            c: training.c,
            threshold: training
                .threshold_rule
                .as_deref()
                .and_then(|rule| rule.parse().ok())
                .unwrap_or(ThresholdRule::Fixed(artifact.threshold)),
            max_iterations: training.max_iter.map_or(DEFAULT_MAX_ITERATIONS, |n| n as usize),
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
    if spec.max_iterations == 0 {
        return bad("the iteration limit must be at least 1".into());
    }
    if let ThresholdRule::Fixed(t) = spec.threshold
        && !(t > 0.0 && t < 1.0)
    {
        return bad(format!("threshold must be in (0, 1), got {t}"));
    }
    if let ClassWeight::Fixed(w) = spec.class_weight
        && !w.iter().all(|w| w.is_finite() && *w > 0.0)
    {
        return bad(format!(
            "class weights must be positive numbers, got {}",
            spec.class_weight
        ));
    }
    if let Split::Fraction { test_fraction, .. } = spec.split
        && !(0.0..1.0).contains(&test_fraction)
    {
        return bad(format!("test fraction must be in [0, 1), got {test_fraction}"));
    }
    let mut all: Vec<&String> = spec.categorical.iter().chain(&spec.numeric).collect();
    all.push(&spec.target);
    if let Some(weight) = &spec.sample_weight {
        all.push(weight);
    }
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    if unique.len() != all.len() {
        return bad("a column is named twice among target, sample weight, categorical and numeric".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_what_users_write_and_print_back_the_same() {
        for text in ["none", "balanced", "0=1,1=3.5"] {
            assert_eq!(text.parse::<ClassWeight>().unwrap().to_string(), text);
        }
        assert_eq!("1=2".parse::<ClassWeight>().unwrap(), ClassWeight::Fixed([1.0, 2.0]));
        assert_eq!(
            "2=1".parse::<ClassWeight>().unwrap_err().to_string(),
            "class \"2\" is not 0 or 1"
        );
        assert_eq!(
            "0=-1".parse::<ClassWeight>().unwrap_err(),
            SettingError::NotAWeight {
                class: 0,
                weight: "-1".into()
            }
        );
        for text in ["0.5", "max-f1", "recall>=0.6", "precision>=0.8"] {
            assert_eq!(text.parse::<ThresholdRule>().unwrap().to_string(), text);
        }
        assert!("recall>=1.5".parse::<ThresholdRule>().is_err());
        assert!(
            "high"
                .parse::<ThresholdRule>()
                .unwrap_err()
                .to_string()
                .contains("max-f1")
        );
        assert!(
            !"recall>=2"
                .parse::<ThresholdRule>()
                .unwrap_err()
                .to_string()
                .contains("max-f1")
        );
        assert_eq!("ignore".parse::<HandleUnknown>().unwrap(), HandleUnknown::Ignore);
    }
}
