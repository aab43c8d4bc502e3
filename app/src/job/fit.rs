//! Fit on upload: a labelled file under `TRAINING_PREFIX` becomes a new
//! version of a model instead of being scored.
//!
//! `training/<model>/data.csv` fits model `<model>` with the spec in
//! `training/<model>/spec.json` (features, target, options: [`SpecFile`]),
//! or, without one, the spec of the model's current `@production`. The rows
//! are split as the spec says (a split column, or a fraction held out
//! deterministically), the new version is stored in the registry, and the
//! held-out rows measure it, and the current `@production` (the champion)
//! on the same rows. The fit's manifest is the commit, as for scoring: one
//! per training-file generation, create-only, with the decision in it
//! (`@staging`; with `PROMOTE=auto` also `@production` when the
//! challenger's ROC AUC is at least the champion's). The aliases move
//! after the commit (`JobRunner::promote_fit`), and `promoted.json`
//! records that they did, so a redelivery after a crash in between moves
//! them and never twice.

use std::time::{Instant, SystemTime};

use serde::Deserialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::run::Failure;
use super::{JobError, JobRunner, Outcome};
use crate::config::Promote;
use crate::event::ObjectRef;
use crate::layout::OutputNames;
use crate::manifest::{Champion, FitInfo, JobFacts, Manifest, Status};
use crate::model::fit::{self, ClassWeight, FitError, FitSpec, HandleUnknown, SettingError, Split, ThresholdRule};
use crate::registry::{DEFAULT_ALIAS, FitRecord, Registry, RegistryError, STAGING_ALIAS};
use crate::storage::blocking::StreamReader;
use crate::storage::{StorageError, read_all};

/// The spec object's name, in a model's training folder.
pub const SPEC_NAME: &str = "spec.json";
/// What a spec without a split holds out.
const DEFAULT_TEST_FRACTION: f64 = 0.33;

/// Why a training file cannot be fitted: said in its committed failure
/// report, never retried (a new spec or a new upload is a new event).
#[derive(Debug, thiserror::Error)]
enum Unfittable {
    #[error("a training file goes in a folder named after its model: {prefix}<model-name>/{rest}")]
    NoModelFolder { prefix: String, rest: String },
    #[error(transparent)]
    ModelName(RegistryError),
    #[error("{uri} is not a training spec: {error}")]
    NotASpec { uri: String, error: serde_json::Error },
    #[error("{uri}: {error}")]
    BadSetting { uri: String, error: SettingError },
    #[error(
        "no spec for model {model}: write {spec_uri} (e.g. {{\"target\": \"y\", \"categorical\": [\"a\"], \"numeric\": [\"b\"]}}), or promote a version of {model} to @{} whose spec a refit reuses",
        DEFAULT_ALIAS
    )]
    NoSpec { model: String, spec_uri: String },
    #[error("the spec of {model}@{} cannot be read: {error}", DEFAULT_ALIAS)]
    UnreadableProduction { model: String, error: RegistryError },
    #[error("its champion {model}@{} cannot be read: {error}", DEFAULT_ALIAS)]
    UnreadableChampion { model: String, error: RegistryError },
    #[error("{error} (spec: {spec})")]
    Fit { error: FitError, spec: String },
}

/// A training folder's `spec.json`: what `scorer train` takes as flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub target: String,
    #[serde(default)]
    pub categorical: Vec<String>,
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Rows whose `split_column` is `train_value` (default `train`) train;
    /// the others are held out. Without it, `test_fraction` (default 0.33,
    /// as `scorer train`)
    /// of the rows is held out, chosen by `seed` (default 42).
    pub split_column: Option<String>,
    pub train_value: Option<String>,
    pub test_fraction: Option<f64>,
    pub seed: Option<u64>,
    pub class_weight: Option<String>,
    pub sample_weight: Option<String>,
    pub c: Option<f64>,
    pub max_iter: Option<usize>,
    /// A rule (`max-f1`, `recall>=0.6`) or a fixed threshold, as text or
    /// as a number.
    pub threshold: Option<Threshold>,
    pub handle_unknown: Option<String>,
    #[serde(default)]
    pub missing_level: bool,
}

/// `threshold` in a spec: `"max-f1"`, `"recall>=0.6"`, `"0.4"` or `0.4`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    Rule(String),
    Fixed(f64),
}

impl SpecFile {
    fn into_spec(self, name: &str) -> Result<FitSpec, SettingError> {
        let mut spec = FitSpec::new(name, &self.target, &[], &[]);
        spec.categorical = self.categorical;
        spec.numeric = self.numeric;
        spec.split = match self.split_column {
            Some(column) => Split::Column {
                column,
                train_value: self.train_value.unwrap_or_else(|| "train".to_owned()),
            },
            None => Split::Fraction {
                test_fraction: self.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION),
                seed: self.seed.unwrap_or(42),
            },
        };
        if let Some(w) = self.class_weight {
            spec.class_weight = w.parse::<ClassWeight>()?;
        }
        spec.sample_weight = self.sample_weight;
        if let Some(c) = self.c {
            spec.c = c;
        }
        if let Some(n) = self.max_iter {
            spec.max_iterations = n;
        }
        if let Some(t) = self.threshold {
            spec.threshold = match t {
                Threshold::Rule(text) => text.parse::<ThresholdRule>()?,
                Threshold::Fixed(value) => value.to_string().parse::<ThresholdRule>()?,
            };
        }
        if let Some(h) = self.handle_unknown {
            spec.handle_unknown = h.parse::<HandleUnknown>()?;
        }
        spec.missing_level = self.missing_level;
        Ok(spec)
    }
}

impl JobRunner {
    /// The model a training file fits: the folder right under the prefix.
    fn training_model_name(&self, name: &str) -> Result<String, Unfittable> {
        let prefix = self.training.training_prefix.as_deref().unwrap_or_default();
        let rest = name.strip_prefix(prefix).unwrap_or(name);
        match rest.split_once('/') {
            Some((model, _)) if !model.is_empty() => {
                crate::registry::check_model_name(model).map_err(Unfittable::ModelName)?;
                Ok(model.to_owned())
            }
            _ => Err(Unfittable::NoModelFolder {
                prefix: prefix.to_owned(),
                rest: rest.to_owned(),
            }),
        }
    }

    /// The spec for `model`: its folder's spec object, else its
    /// `@production`'s; and where it came from.
    async fn training_spec(
        &self,
        registry: &Registry,
        model: &str,
    ) -> Result<Result<(FitSpec, String), Unfittable>, JobError> {
        let prefix = self.training.training_prefix.as_deref().unwrap_or_default();
        let spec_name = format!("{prefix}{model}/{SPEC_NAME}");
        match read_all(self.input.as_ref(), &spec_name, 1 << 20).await {
            Ok((meta, bytes)) => {
                let uri = format!("{}#{}", self.input.uri(&spec_name), meta.generation);
                let spec = match serde_json::from_slice::<SpecFile>(&bytes) {
                    Ok(file) => file.into_spec(model).map_err(|error| Unfittable::BadSetting {
                        uri: uri.clone(),
                        error,
                    }),
                    Err(error) => Err(Unfittable::NotASpec {
                        uri: uri.clone(),
                        error,
                    }),
                };
                return Ok(spec.map(|s| (s, uri)));
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match registry
            .resolve(&crate::registry::ModelRef::alias(model, DEFAULT_ALIAS))
            .await
        {
            Ok(production) => Ok(Ok((
                FitSpec::like(production.artifact()),
                format!("the spec of {model}@{DEFAULT_ALIAS} ({})", production.version()),
            ))),
            Err(RegistryError::Unknown(_)) => Ok(Err(Unfittable::NoSpec {
                model: model.to_owned(),
                spec_uri: self.input.uri(&spec_name),
            })),
            Err(error @ (RegistryError::BadArtifact { .. } | RegistryError::Invalid(_))) => {
                Ok(Err(Unfittable::UnreadableProduction {
                    model: model.to_owned(),
                    error,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fits a training file and commits the fit's manifest.
    pub(super) async fn fit_and_commit(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        cancel: CancellationToken,
    ) -> Result<Outcome, JobError> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let registry = Registry::new(self.output.clone());
        let fail = |why: Unfittable| Failure::Model(format!("the training file was not fitted: {why}"));
        let model_name = match self.training_model_name(object.name.as_str()) {
            Ok(name) => name,
            Err(why) => return self.report_failure(object, names, None, fail(why), started_at).await,
        };
        let (spec, spec_source) = match self.training_spec(&registry, &model_name).await? {
            Ok(found) => found,
            Err(why) => return self.report_failure(object, names, None, fail(why), started_at).await,
        };
        // The champion: @production as the fit starts.
        let champion = match registry
            .resolve(&crate::registry::ModelRef::alias(&model_name, DEFAULT_ALIAS))
            .await
        {
            Ok(model) => Some(model),
            Err(RegistryError::Unknown(_)) => None,
            // A champion that cannot be read cannot be compared with: the
            // training file's failure, said, not a retry loop.
            Err(error @ (RegistryError::BadArtifact { .. } | RegistryError::Invalid(_))) => {
                let why = Unfittable::UnreadableChampion {
                    model: model_name.clone(),
                    error,
                };
                return self.report_failure(object, names, None, fail(why), started_at).await;
            }
            Err(e) => return Err(e.into()),
        };
        let (meta, stream) = match self.open_input(object).await? {
            Ok(opened) => opened,
            Err(failure) => return self.report_failure(object, names, None, failure, started_at).await,
        };
        let data_name = object.name.as_str().rsplit('/').next().unwrap_or_default().to_owned();
        let fitted = {
            let handle = Handle::current();
            let spec = spec.clone();
            let champion = champion.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || {
                let reader = StreamReader::new(stream, handle, cancel);
                fit::fit_against(reader, &data_name, &spec, champion.as_ref())
            })
            .await
            .map_err(|e| JobError::Internal(format!("fitting thread: {e}")))?
        };
        let fitted = match fitted {
            Ok(fitted) => fitted,
            Err(FitError::Read(e)) => {
                let failure = super::run::read_failure(&e)?;
                return self
                    .report_failure(object, names, Some(&meta), failure, started_at)
                    .await;
            }
            Err(error) => {
                let why = Unfittable::Fit {
                    error,
                    spec: spec_source.clone(),
                };
                return self
                    .report_failure(object, names, Some(&meta), fail(why), started_at)
                    .await;
            }
        };
        let (model, new_version) = registry.publish(&fitted.json).await?;
        let artifact_uri = registry.uri(&crate::layout::model_version(model.name(), model.version()));
        let curves = match &fitted.curves {
            Some(curves) => self.put_curves(names, model.version(), curves).await?,
            None => Vec::new(),
        };
        let record = FitRecord {
            input_uri: self.input.uri(object.name.as_str()),
            generation: object.generation.to_string(),
            manifest_uri: self.output.uri(&names.manifest()),
            curves: curves.iter().map(|c| c.uri.clone()).collect(),
        };
        registry.record_fit(model.name(), model.version(), &record).await?;

        // The decision, made now and recorded in the commit.
        let comparison = fitted.comparison.clone();
        let mut promote_to = vec![STAGING_ALIAS.to_owned()];
        let decision = match (self.training.promote, &champion, &comparison) {
            (Promote::Staging, _, _) => "PROMOTE=staging: @staging only".to_owned(),
            (Promote::Auto, None, _) => {
                promote_to.push(DEFAULT_ALIAS.to_owned());
                format!("PROMOTE=auto and {model_name} had no @{DEFAULT_ALIAS}: the first version serves")
            }
            (Promote::Auto, Some(champ), Some(c)) => match (c.challenger_roc_auc, c.champion_roc_auc) {
                (Some(new), Some(old)) if new >= old => {
                    promote_to.push(DEFAULT_ALIAS.to_owned());
                    format!(
                        "PROMOTE=auto: held-out ROC AUC {new:.4} >= {old:.4} of {} on the same {} rows: promoted",
                        champ.version(),
                        c.rows
                    )
                }
                (Some(new), Some(old)) => format!(
                    "PROMOTE=auto: held-out ROC AUC {new:.4} < {old:.4} of {} on the same {} rows: @staging only",
                    champ.version(),
                    c.rows
                ),
                _ if c.rows == 0 => format!(
                    "PROMOTE=auto: the champion {} scored none of the held-out rows ({} rejected): nothing to compare, @staging only",
                    champ.version(),
                    c.champion_rejected
                ),
                _ => "PROMOTE=auto: no ROC AUC to compare on the held-out rows (nothing held out, or one class): @staging only".to_owned(),
            },
            (Promote::Auto, Some(_), None) => "PROMOTE=auto: no comparison: @staging only".to_owned(),
        };
        let holdout_rows = fitted.model.artifact().training.holdout.as_ref().map_or(0, |e| e.rows);
        let training = &fitted.model.artifact().training;
        let info = FitInfo {
            spec: spec_source,
            artifact_uri,
            new_version,
            rows_read: training.rows + holdout_rows + training.rows_skipped,
            training_rows: training.rows,
            holdout_rows,
            rows_skipped: training.rows_skipped,
            holdout: training.holdout.clone(),
            champion: champion.as_ref().zip(comparison).map(|(m, c)| Champion {
                version: m.version().to_owned(),
                rows: c.rows,
                challenger_roc_auc: c.challenger_roc_auc,
                champion_roc_auc: c.champion_roc_auc,
                champion_rejected: c.champion_rejected,
            }),
            promote_to,
            decision,
            fit_ms: started.elapsed().as_millis() as u64,
        };
        let facts = JobFacts {
            object,
            input_uri: self.input.uri(object.name.as_str()),
            size: Some(meta.size),
            manifest_uri: self.output.uri(&names.manifest()),
            model: &model,
            started_at,
            score_ms: started.elapsed().as_millis() as u64,
            execution: None,
            chosen_by: None,
        };
        self.commit(names, Manifest::fitted(facts, info, curves)).await
    }

    /// Moves the aliases a committed fit decided on, once: `promoted.json`
    /// says they moved. Runs after every commit or duplicate of a fit.
    pub(super) async fn promote_fit(&self, names: &OutputNames, manifest: &Manifest) -> Result<(), JobError> {
        let Some(fit) = manifest.fit.as_ref().filter(|_| manifest.status == Status::Fitted) else {
            return Ok(());
        };
        if self
            .read_json::<serde_json::Value>(&names.promoted(), 1 << 20)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let registry = Registry::new(self.output.clone());
        let set_by = format!("fit of {}#{}", manifest.input.uri, manifest.input.generation);
        let (name, version) = (&manifest.model.name, &manifest.model.version);
        // @production moves only while it still points at the champion the
        // decision was made against (nothing, when there was none): a fit
        // never undoes a promotion or a rollback made since. @staging is
        // simply the latest fit.
        let champion = fit.champion.as_ref().map(|c| c.version.as_str());
        let mut changes = Vec::new();
        for alias in &fit.promote_to {
            let moved = if alias == DEFAULT_ALIAS {
                registry
                    .promote_if(name, version, alias, champion, &set_by, &fit.decision)
                    .await
            } else {
                registry.promote(name, version, alias, &set_by, &fit.decision).await
            };
            let change = match moved {
                Ok(change) => {
                    tracing::info!(
                        model = change.model,
                        alias = change.alias,
                        from = change.from,
                        to = change.to,
                        changed = change.changed,
                        "fit on upload moved an alias"
                    );
                    serde_json::to_value(&change).map_err(|e| JobError::Internal(e.to_string()))?
                }
                Err(e) if e.is_transient() => return Err(JobError::Transient(e.to_string())),
                Err(RegistryError::Storage(s)) => return Err(s.into()),
                // Moved since, or a version that cannot be promoted: said
                // and recorded, not retried forever.
                Err(e) => {
                    tracing::warn!(model = %name, alias = %alias, version = %version, reason = %e, "fit on upload left an alias as it is");
                    serde_json::json!({"model": name, "alias": alias, "to": version, "skipped": e.to_string()})
                }
            };
            changes.push(change);
        }
        self.put_record(&names.promoted(), &changes).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<FitSpec, String> {
        serde_json::from_str::<SpecFile>(json)
            .map_err(|e| e.to_string())?
            .into_spec("m")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_threshold_is_a_rule_or_a_number_as_text_or_as_a_number() {
        for (json, rule) in [
            (r#"{"target": "y", "threshold": 0.4}"#, ThresholdRule::Fixed(0.4)),
            (r#"{"target": "y", "threshold": "0.4"}"#, ThresholdRule::Fixed(0.4)),
            (
                r#"{"target": "y", "threshold": "recall>=0.6"}"#,
                ThresholdRule::MinRecall(0.6),
            ),
        ] {
            assert_eq!(spec(json).unwrap().threshold, rule, "{json}");
        }
        let refused = spec(r#"{"target": "y", "threshold": 2}"#).unwrap_err();
        assert!(
            refused.contains("threshold \"2\" is not a number in (0, 1)"),
            "{refused}"
        );
        assert!(spec(r#"{"target": "y", "threshold": true}"#).is_err());
    }
}
