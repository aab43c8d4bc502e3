//! The manifest: the commit record of one input generation, written last
//! and create-only beside the outputs it names (where: [`crate::layout`]). A
//! reader finds an input's outputs through its manifest, never by listing.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::ObjectRef;
use crate::model::{Evaluation, Model};
use crate::score::{InputFormat, Summary};
use crate::storage::ObjectMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every row was scored or rejected with a reason.
    Scored,
    /// The file as a whole could not be scored; `failure` says why.
    Failed,
    /// A training file: a new model version was fitted; `fit` says which,
    /// how it did and what it was promoted to.
    Fitted,
}

/// The commit record of one input generation. Re-running the same input with
/// the same model yields the same manifest except `timings` and the output
/// objects' `generation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    /// Where this manifest is (absent from manifests of earlier versions).
    #[serde(default)]
    pub manifest_uri: String,
    pub status: Status,
    pub input: InputInfo,
    pub outputs: Outputs,
    pub rows: Rows,
    pub model: ModelInfo,
    pub labelled_rows: u64,
    pub metrics: Option<Evaluation>,
    /// Values that added nothing to a scored row's logit, per column (an
    /// unknown or missing category, `handle_unknown: ignore`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ignored_values: std::collections::BTreeMap<String, u64>,
    pub failure: Option<String>,
    /// A training file's fit (status `fitted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitInfo>,
    pub timings: Timings,
    /// For an input scored by a Cloud Run job (too large for a push
    /// request): the execution, its tasks, and whether it fell back to one
    /// task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ExecutionInfo>,
}

/// The job execution that scored an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// `projects/P/locations/L/jobs/J/executions/E`, or a local run's name.
    pub name: String,
    /// Tasks the input was cut into.
    pub tasks: u32,
    /// Why the ranges were not used and the input was scored whole by one
    /// task, if they were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Ranges scored again from where the one before them really ended
    /// (a quoted line break fooled their start), one note each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// The sums over the ranges of a sharded input, for its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardTotals {
    pub format: InputFormatInfo,
    pub columns: Vec<String>,
    pub output_columns: Vec<String>,
    pub rows: Rows,
    pub labelled_rows: u64,
    pub metrics: Option<Evaluation>,
}

/// What every manifest of one job says, scored or failed.
pub struct JobFacts<'a> {
    pub object: &'a ObjectRef,
    pub input_uri: String,
    /// The input's size, when it could be read at all.
    pub size: Option<u64>,
    pub manifest_uri: String,
    pub model: &'a Model,
    pub started_at: SystemTime,
    /// Reading, scoring and writing the outputs.
    pub score_ms: u64,
    /// When a job execution scored the input.
    pub execution: Option<ExecutionInfo>,
    /// How the input's model was chosen, when it was routed.
    pub chosen_by: Option<ChosenBy>,
}

/// How an input's model was chosen: the reference and what named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenBy {
    /// As named: `penguins@staging`, `scl-flight-delay:sha256:...`.
    pub reference: String,
    /// `metadata` (the input's x-goog-meta-model), `prefix P` (MODEL_ROUTES)
    /// or `default` (MODEL).
    pub route: String,
}

/// What a fit on upload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitInfo {
    /// Where the spec came from: a spec object's URI, or the model version
    /// whose spec was reused.
    pub spec: String,
    /// The new version's artifact in the registry.
    pub artifact_uri: String,
    /// Whether this fit created the version (false: identical bytes were
    /// already there, from an earlier fit of the same data and spec).
    pub new_version: bool,
    pub rows_read: u64,
    pub training_rows: u64,
    pub holdout_rows: u64,
    pub rows_skipped: u64,
    /// The new version on the held-out rows.
    pub holdout: Option<Evaluation>,
    /// Challenger (this fit) and champion (@production when the fit
    /// started) on the same held-out rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<Champion>,
    /// The aliases decided for the new version, in order (`staging`, then
    /// `production` when promoted), and why.
    pub promote_to: Vec<String>,
    pub decision: String,
    pub fit_ms: u64,
}

/// The champion a fit was measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Champion {
    pub version: String,
    pub rows: u64,
    pub challenger_roc_auc: Option<f64>,
    pub champion_roc_auc: Option<f64>,
    /// Held-out rows the champion could not score (left out of both).
    pub champion_rejected: u64,
}

impl Manifest {
    /// The commit record of a scored input.
    pub fn scored(
        facts: JobFacts<'_>,
        summary: &Summary,
        predictions: OutputObject,
        errors: Option<OutputObject>,
    ) -> Manifest {
        let mut manifest = Manifest::base(facts, Status::Scored);
        manifest.input.format = Some(InputFormatInfo::from(&summary.format));
        manifest.input.columns = summary.columns.clone();
        manifest.outputs = Outputs {
            predictions: Some(predictions),
            shards: Vec::new(),
            errors,
            columns: summary.output_columns.clone(),
            ..Outputs::default()
        };
        manifest.rows = Rows {
            input: summary.rows_in,
            scored: summary.rows_scored,
            rejected: summary.rows_rejected,
            blank_lines: summary.blank_lines,
        };
        manifest.labelled_rows = summary.labelled_rows;
        manifest.metrics = summary.metrics.clone();
        manifest.ignored_values = summary.ignored_values.clone();
        manifest
    }

    /// The commit record of a training file: `facts.model` is the version
    /// fitted.
    pub fn fitted(facts: JobFacts<'_>, fit: FitInfo, curves: Vec<OutputObject>) -> Manifest {
        let mut manifest = Manifest::base(facts, Status::Fitted);
        manifest.outputs.curves = curves;
        manifest.rows = Rows {
            input: fit.rows_read,
            scored: fit.training_rows + fit.holdout_rows,
            rejected: fit.rows_skipped,
            blank_lines: 0,
        };
        manifest.labelled_rows = fit.holdout_rows;
        manifest.metrics = fit.holdout.clone();
        manifest.fit = Some(fit);
        manifest
    }

    /// The commit record of an input scored in ranges by the tasks of a job
    /// execution: `shards` are the predictions objects in input order, each
    /// with the header line.
    pub fn sharded(
        facts: JobFacts<'_>,
        totals: ShardTotals,
        shards: Vec<OutputObject>,
        errors: Option<OutputObject>,
    ) -> Manifest {
        let mut manifest = Manifest::base(facts, Status::Scored);
        manifest.input.format = Some(totals.format);
        manifest.input.columns = totals.columns;
        manifest.outputs = Outputs {
            predictions: None,
            shards,
            errors,
            columns: totals.output_columns,
            ..Outputs::default()
        };
        manifest.rows = totals.rows;
        manifest.labelled_rows = totals.labelled_rows;
        manifest.metrics = totals.metrics;
        manifest
    }

    /// The commit record of an input that could not be scored: `report` is
    /// the errors object that says why.
    pub fn failed(facts: JobFacts<'_>, failure: String, report: OutputObject) -> Manifest {
        let mut manifest = Manifest::base(facts, Status::Failed);
        manifest.failure = Some(failure);
        manifest.outputs.errors = Some(report);
        manifest
    }

    fn base(facts: JobFacts<'_>, status: Status) -> Manifest {
        let model = facts.model;
        Manifest {
            manifest_version: 1,
            manifest_uri: facts.manifest_uri,
            status,
            input: InputInfo {
                uri: facts.input_uri,
                bucket: facts.object.bucket.as_str().to_owned(),
                name: facts.object.name.as_str().to_owned(),
                generation: facts.object.generation.to_string(),
                size: facts.size.unwrap_or_default(),
                format: None,
                columns: Vec::new(),
            },
            outputs: Outputs::default(),
            rows: Rows::default(),
            model: ModelInfo {
                name: model.name().to_owned(),
                version: model.version().to_owned(),
                target: model.target().to_owned(),
                threshold: model.threshold(),
                chosen_by: facts.chosen_by,
            },
            labelled_rows: 0,
            metrics: None,
            ignored_values: Default::default(),
            failure: None,
            fit: None,
            execution: facts.execution,
            timings: Timings {
                started_at: humantime::format_rfc3339_millis(facts.started_at).to_string(),
                finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                score_ms: facts.score_ms,
                total_ms: facts.started_at.elapsed().map_or(0, |d| d.as_millis() as u64),
            },
        }
    }

    /// Where this manifest is; for manifests written before the field
    /// existed, derived from its outputs (they sit beside it).
    pub fn uri(&self) -> String {
        if !self.manifest_uri.is_empty() {
            return self.manifest_uri.clone();
        }
        self.outputs
            .predictions
            .as_ref()
            .or(self.outputs.shards.first())
            .or(self.outputs.errors.as_ref())
            .map(|o| {
                let dir = o.uri.rsplit_once('/').map_or(o.uri.as_str(), |(d, _)| d);
                format!("{dir}/manifest.json")
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    pub uri: String,
    pub bucket: String,
    pub name: String,
    /// As a string: local generations exceed JSON's exact integers.
    pub generation: String,
    pub size: u64,
    pub format: Option<InputFormatInfo>,
    pub columns: Vec<String>,
}

/// [`InputFormat`] as stored (owned, deserialisable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFormatInfo {
    /// `csv`, `jsonl` or `parquet` (csv in manifests written before it was
    /// recorded).
    #[serde(default = "csv_kind")]
    pub kind: String,
    pub compression: String,
    pub encoding: String,
    pub byte_order_mark: bool,
    pub delimiter: String,
}

fn csv_kind() -> String {
    "csv".to_owned()
}

impl From<&InputFormat> for InputFormatInfo {
    fn from(f: &InputFormat) -> Self {
        InputFormatInfo {
            kind: f.kind.to_owned(),
            compression: f.compression.to_owned(),
            encoding: f.encoding.to_owned(),
            byte_order_mark: f.byte_order_mark,
            delimiter: f.delimiter.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Outputs {
    /// The predictions object of an input scored in one piece.
    pub predictions: Option<OutputObject>,
    /// The predictions objects of an input scored in ranges, in input
    /// order, each with the header line (concatenated without their repeated
    /// headers, they are what `predictions` would have held).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<OutputObject>,
    pub errors: Option<OutputObject>,
    /// The extra columns appended to every scored row.
    pub columns: Vec<String>,
    /// The predictions' format (csv for manifests written before it was
    /// recorded).
    #[serde(default)]
    pub format: crate::score::OutputFormat,
    /// CSV predictions' delimiter (the input's unless OUTPUT_DELIMITER
    /// said otherwise); empty for other formats.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub delimiter: String,
    /// The ROC, precision-recall and calibration curves of the labelled
    /// rows (SVG) and their points (`curves.json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curves: Vec<OutputObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputObject {
    pub name: String,
    pub uri: String,
    pub size: u64,
    /// CRC32C of the content, 8 hex digits.
    pub crc32c: String,
    pub generation: String,
}

impl OutputObject {
    /// A stored object, named by `uri`.
    pub fn new(meta: &ObjectMeta, uri: String) -> OutputObject {
        OutputObject {
            name: meta.name.clone(),
            uri,
            size: meta.size,
            crc32c: meta.crc32c.map(|c| format!("{c:08x}")).unwrap_or_default(),
            generation: meta.generation.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rows {
    #[serde(rename = "in")]
    pub input: u64,
    pub scored: u64,
    pub rejected: u64,
    pub blank_lines: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub target: String,
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_by: Option<ChosenBy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub started_at: String,
    pub finished_at: String,
    /// Reading, scoring and writing the predictions.
    pub score_ms: u64,
    /// Everything, lease and commit included.
    pub total_ms: u64,
}
