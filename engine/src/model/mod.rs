//! The logistic regression: its artifact, how it is fitted, and how one row
//! becomes a probability.
//!
//! [`Model`] is the parsed, validated form of an [`Artifact`]: if a `Model`
//! exists, every weight is finite, every standard deviation positive and every
//! feature name unique, so the scoring paths never re-check.

pub mod artifact;
pub mod curves;
pub mod evaluation;
pub mod fit;
pub mod plots;
pub mod training_data;

use std::collections::{HashMap, HashSet};
use std::fmt;

use sha2::{Digest, Sha256};

pub use artifact::{Artifact, FORMAT, Feature, HandleUnknown};
pub use evaluation::{Evaluation, EvaluationBuilder};

/// The artifact shipped in `data/`, compiled into the binary so the container
/// and `scorer demo` always have a model.
pub const DEFAULT_ARTIFACT: &[u8] = include_bytes!("../../../data/model.json");
/// Where the default artifact lives in the repository (for messages).
pub const DEFAULT_ARTIFACT_PATH: &str = "data/model.json";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model artifact is not valid {FORMAT} JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("unsupported model format {found:?}: this build reads {FORMAT}")]
    Format { found: String },
    #[error("invalid model artifact: {0}")]
    Invalid(String),
}

/// A value the model cannot take, with enough context to fix the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub column: String,
    pub value: Option<String>,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The field is empty (or absent) and the feature cannot be imputed.
    Missing,
    /// A categorical value outside the fitted vocabulary.
    Unknown { known: String },
    /// A numeric field that does not parse as a finite number.
    NotANumber,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value.as_deref().unwrap_or("");
        match &self.reason {
            RejectReason::Missing => write!(f, "{}: missing value", self.column),
            RejectReason::Unknown { known } => {
                write!(f, "{}: unknown value {value:?} (expected one of {known})", self.column)
            }
            RejectReason::NotANumber => write!(f, "{}: {value:?} is not a number", self.column),
        }
    }
}

/// One compiled term of the logit.
#[derive(Debug, Clone)]
pub enum Term {
    Categorical {
        name: String,
        weights: HashMap<String, f64>,
        /// Human list of the vocabulary, for rejection messages.
        known: String,
        /// The missing level's weight, when the fit learned one.
        missing: Option<f64>,
        /// An unknown value (or a missing one without a missing level)
        /// adds nothing instead of rejecting the row.
        ignore_unknown: bool,
    },
    Numeric {
        name: String,
        mean: f64,
        std: f64,
        weight: f64,
    },
}

impl Term {
    pub fn name(&self) -> &str {
        match self {
            Term::Categorical { name, .. } | Term::Numeric { name, .. } => name,
        }
    }

    /// This term's contribution to the logit for one raw field value. Values
    /// match exactly (the batch engine's polars expressions do the same); an
    /// empty field is missing, which a numeric term imputes.
    pub fn contribution(&self, raw: Option<&str>) -> Result<f64, Rejection> {
        self.assess(raw).map(|(x, _)| x)
    }

    /// Whether this term may ignore a value (and so must be counted).
    pub fn ignores_unknown(&self) -> bool {
        matches!(
            self,
            Term::Categorical {
                ignore_unknown: true,
                ..
            }
        )
    }

    /// The contribution, and whether the value was ignored (unknown, or
    /// missing without a missing level, under `handle_unknown: ignore`).
    pub fn assess(&self, raw: Option<&str>) -> Result<(f64, bool), Rejection> {
        let value = raw.filter(|v| !v.is_empty());
        match self {
            Term::Categorical {
                name,
                weights,
                known,
                missing,
                ignore_unknown,
            } => {
                let Some(value) = value else {
                    return match (missing, ignore_unknown) {
                        (Some(w), _) => Ok((*w, false)),
                        (None, true) => Ok((0.0, true)),
                        (None, false) => Err(Rejection {
                            column: name.clone(),
                            value: None,
                            reason: RejectReason::Missing,
                        }),
                    };
                };
                match weights.get(value) {
                    Some(w) => Ok((*w, false)),
                    None if *ignore_unknown => Ok((0.0, true)),
                    None => Err(Rejection {
                        column: name.clone(),
                        value: Some(value.to_owned()),
                        reason: RejectReason::Unknown { known: known.clone() },
                    }),
                }
            }
            Term::Numeric {
                name,
                mean,
                std,
                weight,
            } => {
                let Some(value) = value else { return Ok((0.0, false)) };
                match value.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok((weight * (x - mean) / std, false)),
                    _ => Err(Rejection {
                        column: name.clone(),
                        value: Some(value.to_owned()),
                        reason: RejectReason::NotANumber,
                    }),
                }
            }
        }
    }
}

/// A validated model, ready to score.
#[derive(Debug, Clone)]
pub struct Model {
    artifact: Artifact,
    version: String,
    terms: Vec<Term>,
}

impl Model {
    /// Parses and validates an artifact; the version is the content hash of
    /// exactly these bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Model, ModelError> {
        #[derive(serde::Deserialize)]
        struct FormatOnly {
            format: Option<String>,
        }
        // Look at the format first so an artifact from a newer build fails
        // with "unsupported format", not with a confusing field error.
        let probe: FormatOnly = serde_json::from_slice(bytes)?;
        match probe.format.as_deref() {
            Some(FORMAT) => {}
            other => {
                return Err(ModelError::Format {
                    found: other.unwrap_or("(none)").to_owned(),
                });
            }
        }
        let artifact: Artifact = serde_json::from_slice(bytes)?;
        let digest = Sha256::digest(bytes);
        let version = format!("sha256:{}", &hex::encode(digest)[..16]);
        Self::from_artifact(artifact, version)
    }

    /// The model compiled into the binary.
    pub fn default_model() -> Result<Model, ModelError> {
        Self::from_json(DEFAULT_ARTIFACT)
    }

    fn from_artifact(artifact: Artifact, version: String) -> Result<Model, ModelError> {
        let invalid = |msg: String| Err(ModelError::Invalid(msg));
        if !(artifact.threshold > 0.0 && artifact.threshold < 1.0) {
            return invalid(format!("threshold {} is not in (0, 1)", artifact.threshold));
        }
        if !artifact.intercept.is_finite() {
            return invalid("intercept is not finite".into());
        }
        if artifact.features.is_empty() {
            return invalid("no features".into());
        }
        let mut seen = HashSet::new();
        let mut terms = Vec::with_capacity(artifact.features.len());
        for feature in &artifact.features {
            let name = feature.name();
            if name.is_empty() {
                return invalid("a feature has an empty name".into());
            }
            if !seen.insert(name.to_owned()) {
                return invalid(format!("feature {name:?} appears twice"));
            }
            if name == artifact.target {
                return invalid(format!("feature {name:?} is also the target"));
            }
            terms.push(match feature {
                Feature::Categorical { name, weights, missing } => {
                    if weights.is_empty() && missing.is_none() {
                        return invalid(format!("categorical feature {name:?} has no levels"));
                    }
                    if let Some((level, _)) = weights.iter().find(|(_, w)| !w.is_finite()) {
                        return invalid(format!("weight of {name}={level:?} is not finite"));
                    }
                    if let Some(level) = weights.keys().find(|l| l.trim() != l.as_str() || l.is_empty()) {
                        return invalid(format!("level {level:?} of {name} is empty or padded"));
                    }
                    if missing.is_some_and(|w| !w.is_finite()) {
                        return invalid(format!("the missing level's weight of {name} is not finite"));
                    }
                    Term::Categorical {
                        name: name.clone(),
                        weights: weights.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                        known: describe_levels(weights.keys()),
                        missing: *missing,
                        ignore_unknown: artifact.handle_unknown == HandleUnknown::Ignore,
                    }
                }
                Feature::Numeric {
                    name,
                    mean,
                    std,
                    weight,
                } => {
                    if !(mean.is_finite() && weight.is_finite() && std.is_finite() && *std > 0.0) {
                        return invalid(format!(
                            "numeric feature {name:?} needs finite mean and weight and a positive std"
                        ));
                    }
                    Term::Numeric {
                        name: name.clone(),
                        mean: *mean,
                        std: *std,
                        weight: *weight,
                    }
                }
            });
        }
        Ok(Model {
            artifact,
            version,
            terms,
        })
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// Content hash of the artifact bytes: `sha256:` and 16 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn name(&self) -> &str {
        &self.artifact.name
    }

    pub fn target(&self) -> &str {
        &self.artifact.target
    }

    pub fn threshold(&self) -> f64 {
        self.artifact.threshold
    }

    pub fn intercept(&self) -> f64 {
        self.artifact.intercept
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The input columns the model needs, in artifact order.
    pub fn required_columns(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(Term::name)
    }

    /// The logit of one row, reading each feature's raw text through `get`.
    /// The first unusable value rejects the row.
    pub fn logit<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Result<f64, Rejection> {
        let mut logit = self.artifact.intercept;
        for term in &self.terms {
            logit += term.contribution(get(term.name()))?;
        }
        Ok(logit)
    }

    /// The logit of one row, and which columns' values were ignored
    /// (`handle_unknown: ignore`), for counting.
    pub fn logit_noting<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        mut ignored: impl FnMut(&str),
    ) -> Result<f64, Rejection> {
        let mut logit = self.artifact.intercept;
        for term in &self.terms {
            let (x, was_ignored) = term.assess(get(term.name()))?;
            if was_ignored {
                ignored(term.name());
            }
            logit += x;
        }
        Ok(logit)
    }

    /// Whether any term can ignore a value.
    pub fn ignores_unknown(&self) -> bool {
        self.terms.iter().any(Term::ignores_unknown)
    }

    /// Every unusable value of one row (not only the first), for error files
    /// and API messages that should name everything wrong at once.
    pub fn rejections<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Vec<Rejection> {
        self.terms
            .iter()
            .filter_map(|term| term.contribution(get(term.name())).err())
            .collect()
    }

    /// Each feature's contribution to the logit, largest magnitude first:
    /// for a logistic regression, coefficient times (standardised) value.
    pub fn explain<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Result<Vec<Contribution>, Rejection> {
        let mut out = Vec::with_capacity(self.terms.len());
        for term in &self.terms {
            let raw = get(term.name());
            let contribution = term.contribution(raw)?;
            out.push(Contribution {
                feature: term.name().to_owned(),
                value: raw.unwrap_or_default().to_owned(),
                contribution,
            });
        }
        out.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        Ok(out)
    }

    pub fn probability(logit: f64) -> f64 {
        1.0 / (1.0 + (-logit).exp())
    }

    pub fn predict(&self, probability: f64) -> bool {
        probability >= self.artifact.threshold
    }
}

/// One feature's share of a row's logit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Contribution {
    pub feature: String,
    pub value: String,
    /// Added to the logit; positive pushes the probability up.
    pub contribution: f64,
}

/// A 0/1 label; anything else is not a label.
pub fn parse_label(raw: Option<&str>) -> Option<bool> {
    match raw.map(str::trim) {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    }
}

fn describe_levels<'a>(levels: impl Iterator<Item = &'a String>) -> String {
    let levels: Vec<&String> = levels.collect();
    const SHOWN: usize = 25;
    let mut text = levels
        .iter()
        .take(SHOWN)
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if levels.len() > SHOWN {
        text.push_str(&format!(", ... ({} values)", levels.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vec<u8> {
        serde_json::json!({
            "format": FORMAT,
            "name": "tiny",
            "target": "y",
            "threshold": 0.5,
            "intercept": -1.0,
            "features": [
                {"kind": "categorical", "name": "colour", "weights": {"red": 2.0, "blue": 0.0}},
                {"kind": "numeric", "name": "size", "mean": 10.0, "std": 2.0, "weight": 0.5}
            ],
            "training": {
                "data": "t.csv", "data_sha256": "00", "split": {"kind": "none"},
                "rows": 2, "positives": 1, "rows_skipped": 0, "class_weight": "none",
                "c": 1.0, "solver": "x", "iterations": 1, "objective": 0.0,
                "missing_numeric": "mean", "holdout": null
            }
        })
        .to_string()
        .into_bytes()
    }

    fn row<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn logit_adds_intercept_level_weight_and_standardised_numeric() {
        let model = Model::from_json(&tiny()).unwrap();
        let logit = model.logit(row(&[("colour", "red"), ("size", "14")])).unwrap();
        assert_eq!(logit, -1.0 + 2.0 + 0.5 * (14.0 - 10.0) / 2.0);
    }

    #[test]
    fn missing_numeric_is_imputed_but_missing_category_is_rejected() {
        let model = Model::from_json(&tiny()).unwrap();
        assert_eq!(model.logit(row(&[("colour", "blue"), ("size", "")])).unwrap(), -1.0);
        assert!(model.logit(row(&[("colour", " blue"), ("size", "")])).is_err());
        let err = model.logit(row(&[("size", "1")])).unwrap_err();
        assert_eq!(err.reason, RejectReason::Missing);
        assert_eq!(err.to_string(), "colour: missing value");
    }

    #[test]
    fn rejections_name_column_and_value() {
        let model = Model::from_json(&tiny()).unwrap();
        let errs = model.rejections(row(&[("colour", "green"), ("size", "big")]));
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "colour: unknown value \"green\" (expected one of blue, red)"
        );
        assert_eq!(errs[1].to_string(), "size: \"big\" is not a number");
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = Model::from_json(&tiny()).unwrap();
        let mut other = tiny();
        other.push(b'\n');
        let b = Model::from_json(&other).unwrap();
        assert!(a.version().starts_with("sha256:"));
        assert_eq!(a.version().len(), "sha256:".len() + 16);
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn artifact_round_trips_through_json() {
        let model = Model::from_json(&tiny()).unwrap();
        let text = serde_json::to_string_pretty(model.artifact()).unwrap();
        let again = Model::from_json(text.as_bytes()).unwrap();
        assert_eq!(again.artifact(), model.artifact());
    }

    #[test]
    fn invalid_artifacts_are_refused_with_a_reason() {
        let mut v: serde_json::Value = serde_json::from_slice(&tiny()).unwrap();
        v["threshold"] = 1.5.into();
        let err = Model::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");

        let mut v: serde_json::Value = serde_json::from_slice(&tiny()).unwrap();
        v["features"][1]["std"] = 0.0.into();
        assert!(Model::from_json(v.to_string().as_bytes()).is_err());

        let mut v: serde_json::Value = serde_json::from_slice(&tiny()).unwrap();
        v["format"] = "scorer-logreg/9".into();
        let err = Model::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unsupported model format"), "{err}");

        let mut v: serde_json::Value = serde_json::from_slice(&tiny()).unwrap();
        v["features"][1]["name"] = "colour".into();
        assert!(Model::from_json(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn explanation_orders_by_magnitude() {
        let model = Model::from_json(&tiny()).unwrap();
        let parts = model.explain(row(&[("colour", "red"), ("size", "11")])).unwrap();
        assert_eq!(parts[0].feature, "colour");
        assert_eq!(parts[0].contribution, 2.0);
        assert_eq!(parts[1].contribution, 0.25);
    }

    #[test]
    fn shipped_default_model_loads() {
        let model = Model::default_model().unwrap();
        assert_eq!(model.target(), "atraso_15");
        let names: Vec<_> = model.required_columns().collect();
        assert_eq!(names, ["OPERA", "TIPOVUELO", "MES"]);
    }
}
