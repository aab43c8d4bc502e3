//! One input object generation to exactly one complete set of outputs.
//!
//! The sequence (see `docs/EXACTLY-ONCE.md`):
//!
//! 1. a committed manifest means the work is done: `Duplicate` (checked
//!    before anything else, so finished work is acknowledged whatever the
//!    load);
//! 2. take the lease, or answer `InProgress` while another live job holds it;
//! 3. stream the input through the engine into create-only uploads of the
//!    predictions and (if any row is rejected) errors objects, each ending
//!    with an explicit end marker;
//! 4. verify what storage stored against what was written, and write the
//!    manifest, create-only, as the commit point. A file that cannot be
//!    scored (or whose generation is gone) gets a failure report and a
//!    `failed` manifest instead.
//!
//! A crash anywhere before 4 leaves no manifest, and an upload without its
//! end marker is never finalised, so no reader ever sees a partial object or
//! a manifest without its outputs; the redelivery starts over. Outputs are
//! deterministic, so two racing writers produce identical objects, and an
//! existing object is adopted only when its bytes are identical.
//!
//! An input larger than `INLINE_MAX_BYTES` is not scored inside its push
//! request: [`dispatch`] starts a job execution whose tasks each score a
//! byte range of it ([`shard`]), and the task that finds every range scored
//! commits the manifest, with the same create-only rules.
//!
//! Rooms: [`deliveries`] (concurrent deliveries of one input join one job;
//! job slots), `run` (the sequence), `commit` (verification, reports and the
//! manifest), `summary` (the one log entry per delivery), [`dispatch`] (the
//! push side of a large input), [`shard`] (a task's side: its range, its
//! record, and the commit of the whole), [`fit`] (a training file becomes a
//! model version), `curves` (the pictures of labelled rows beside a
//! manifest), [`after_commit`] (what follows a commit: a fit's aliases, the
//! BigQuery load, the results message).

pub mod after_commit;
mod commit;
mod curves;
pub mod deliveries;
pub mod dispatch;
pub mod fit;
mod run;
pub mod shard;
mod summary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Pushes;
use crate::event::ObjectEvent;
use crate::format::Format;
use crate::lease::HeldElsewhere;
use crate::manifest::{ExecutionInfo, Manifest, Status};
use crate::model::Model;
use crate::score::ScoreOptions;
use crate::storage::{ObjectStore, StorageError};
use crate::telemetry::Metrics;

pub use deliveries::Handled;
pub use dispatch::{Dispatched, Sharding};

/// How a job ended, for the push status code and the summary log.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Committed now (`Status::Scored` or a reported `Status::Failed`).
    Committed(Box<Manifest>),
    /// Already committed earlier.
    Duplicate(Box<Manifest>),
    /// Another live job holds the lease.
    InProgress(HeldElsewhere),
    /// Too large to score here: a job execution scores it (started now or
    /// by an earlier delivery).
    Dispatched(Dispatched),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Committed(m) if m.status == Status::Scored => "scored",
            Outcome::Committed(m) if m.status == Status::Fitted => "fitted",
            Outcome::Committed(_) => "failed",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::InProgress(_) => "in_progress",
            Outcome::Dispatched(_) => "dispatched",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Worth a retry: storage trouble, or this instance is shutting down.
    #[error("{0}")]
    Transient(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        if e.is_transient() || matches!(e, StorageError::Abandoned(_)) {
            JobError::Transient(e.to_string())
        } else {
            JobError::Internal(e.to_string())
        }
    }
}

impl From<crate::registry::RegistryError> for JobError {
    /// Storage trouble as storage says; a busy alias is worth a retry;
    /// anything else is internal (callers that can commit a failure for
    /// it match those cases first).
    fn from(e: crate::registry::RegistryError) -> Self {
        match e {
            crate::registry::RegistryError::Storage(s) => s.into(),
            e if e.is_transient() => JobError::Transient(e.to_string()),
            e => JobError::Internal(e.to_string()),
        }
    }
}

/// Everything a job needs, shared by all jobs of the process.
pub struct JobRunner {
    pub input: Arc<dyn ObjectStore>,
    pub output: Arc<dyn ObjectStore>,
    /// The model this runner scores with: the start-up model in the
    /// process-wide runner, the routed version in a job's own
    /// (`JobRunner::with_model`), the dispatched version in a task's.
    pub model: Arc<Model>,
    /// How the model was chosen (a job's runner only).
    pub chosen_by: Option<crate::manifest::ChosenBy>,
    /// The registry and its routes; `None` in a task, whose model is fixed
    /// by its dispatch.
    pub models: Option<Arc<crate::registry::routes::Models>>,
    /// The registry settings: fit on upload, promotion.
    pub training: crate::config::ModelSettings,
    pub options: ScoreOptions,
    /// The predictions' format (and provenance), BigQuery, the results topic.
    pub outputs: crate::config::OutputSettings,
    /// The BigQuery load and the results message after each commit.
    pub follow_ups: Arc<after_commit::FollowUps>,
    pub lease_ttl: Duration,
    /// Larger inputs are not scored inside a push request.
    pub inline_max_bytes: u64,
    /// Where larger inputs go; without it they get a failure report.
    pub sharding: Option<Sharding>,
    /// In a job's task: the execution, named in the manifest.
    pub execution: Option<ExecutionInfo>,
    /// Names this process in leases; unique per process.
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: running jobs abandon cleanly.
    pub shutdown: CancellationToken,
    /// Jobs running in this process, by input generation: a second delivery
    /// of the same notification waits for the first instead of competing.
    running: Mutex<HashMap<deliveries::Key, deliveries::Finished>>,
}

impl JobRunner {
    /// Writes a small JSON record (dispatch, shard) create-only. Returns
    /// whether this call created it: one already there stands (an earlier
    /// delivery or attempt got this far), and the caller reads it if it
    /// needs what it says.
    pub(crate) async fn put_record(&self, name: &str, record: &impl serde::Serialize) -> Result<bool, JobError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| JobError::Internal(e.to_string()))?;
        match crate::storage::write_bytes(
            self.output.as_ref(),
            name,
            bytes,
            crate::storage::WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The output names of an input generation, predictions in this
    /// service's format.
    pub fn names(&self, object: &crate::event::ObjectRef) -> crate::layout::OutputNames {
        crate::layout::OutputNames::new(&object.name, object.generation).with_format(self.outputs.format)
    }

    /// Notes in a scored manifest how its predictions are written.
    pub(crate) fn stamp_outputs(&self, manifest: &mut Manifest) {
        manifest.outputs.format = self.outputs.format;
        if self.outputs.format == crate::score::OutputFormat::Csv {
            manifest.outputs.delimiter = match self.outputs.delimiter {
                Some(d) => (d as char).to_string(),
                None => manifest
                    .input
                    .format
                    .as_ref()
                    .map(|f| f.delimiter.clone())
                    .unwrap_or_default(),
            };
        }
    }

    /// The engine's options for one file: its provenance, if asked for,
    /// names the model and when scoring started; `row_numbers` is false for
    /// a range that does not start the file.
    pub(crate) fn options_for(
        &self,
        object: &crate::event::ObjectRef,
        started_at: std::time::SystemTime,
        row_numbers: bool,
    ) -> ScoreOptions {
        let output = self.outputs.options(|| crate::score::Provenance {
            source_uri: self.input.uri(object.name.as_str()),
            source_generation: object.generation.get(),
            model_version: self.model.version().to_owned(),
            scored_at_micros: started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
            row_numbers,
        });
        ScoreOptions {
            output,
            ..self.options.clone()
        }
    }

    pub fn new(
        input: Arc<dyn ObjectStore>,
        output: Arc<dyn ObjectStore>,
        model: Arc<Model>,
        options: ScoreOptions,
        pushes: &Pushes,
        metrics: Arc<Metrics>,
        revision: &str,
    ) -> JobRunner {
        JobRunner {
            input,
            output,
            model,
            chosen_by: None,
            models: None,
            training: Default::default(),
            options,
            outputs: crate::config::OutputSettings::default(),
            follow_ups: Default::default(),
            lease_ttl: pushes.lease_ttl,
            inline_max_bytes: pushes.inline_max_bytes,
            sharding: None,
            execution: None,
            instance: format!("{revision}-{:016x}", rand::random::<u64>()),
            metrics,
            shutdown: CancellationToken::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a storage event is work: an OBJECT_FINALIZE of a CSV object
    /// in the input bucket. Anything else is acknowledged and logged as
    /// ignored, with the reason this returns.
    pub fn accept(&self, event: &ObjectEvent) -> Result<(), String> {
        if event.object.bucket.as_str() != self.input.bucket() {
            return Err(format!(
                "event for bucket {}, not the input bucket {}",
                event.object.bucket,
                self.input.bucket()
            ));
        }
        if !event.is_finalize() {
            return Err(format!("{} events are not work", event.event_type));
        }
        if Format::for_object(event.object.name.as_str()).is_none() {
            let name = event.object.name.as_str();
            if self.is_training(name) && name.ends_with(crate::job::fit::SPEC_NAME) {
                return Err(format!("{name} is a training spec, read by the fits of its folder"));
            }
            return Err(format!("{} is not a {} object", event.object.name, Format::ACCEPTED));
        }
        Ok(())
    }

    /// Whether an input is training data (under `TRAINING_PREFIX`).
    pub fn is_training(&self, name: &str) -> bool {
        self.training
            .training_prefix
            .as_deref()
            .is_some_and(|prefix| name.starts_with(prefix))
    }

    /// A runner for one job scoring with `model`, chosen as `chosen_by`
    /// says: the model, its version and its route go into everything the
    /// job writes, and the job never looks at another.
    pub(crate) fn with_model(&self, model: Arc<Model>, chosen_by: Option<crate::manifest::ChosenBy>) -> JobRunner {
        JobRunner {
            model,
            chosen_by,
            ..self.sibling()
        }
    }

    /// The same settings, with no jobs of its own: what the runners for
    /// one job or one task build on.
    fn sibling(&self) -> JobRunner {
        JobRunner {
            input: self.input.clone(),
            output: self.output.clone(),
            model: self.model.clone(),
            chosen_by: self.chosen_by.clone(),
            models: self.models.clone(),
            training: self.training.clone(),
            options: self.options.clone(),
            outputs: self.outputs.clone(),
            follow_ups: self.follow_ups.clone(),
            lease_ttl: self.lease_ttl,
            inline_max_bytes: self.inline_max_bytes,
            sharding: self.sharding.clone(),
            execution: self.execution.clone(),
            instance: self.instance.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            running: Default::default(),
        }
    }
}
