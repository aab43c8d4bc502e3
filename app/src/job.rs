//! One input object generation to exactly one complete set of outputs.
//!
//! The sequence (see `docs/EXACTLY-ONCE.md`):
//!
//! 1. a committed manifest means the work is done: `Duplicate`;
//! 2. take the lease, or answer `InProgress` while another live job holds it;
//! 3. stream the input through the engine into create-only uploads of the
//!    predictions and (if any row is rejected) errors objects;
//! 4. write the manifest, create-only, as the commit point.
//!
//! A crash anywhere before 4 leaves no manifest, and uploads are atomic, so
//! no reader ever sees a partial predictions object or a manifest without
//! its predictions; the redelivery starts over. Outputs are deterministic,
//! so two racing writers produce identical objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::event::ObjectRef;
use crate::lease::{self, Busy};
use crate::manifest::{
    InputFormatInfo, InputInfo, Manifest, ModelInfo, OutputNames, OutputObject, Outputs, Rows, Status, Timings,
};
use crate::model::Model;
use crate::score::{self, CsvRejects, FileRejection, RejectedRow, ScoreError, ScoreOptions, Summary};
use crate::storage::bridge::{StreamReader, UploadWriter};
use crate::storage::{ObjectMeta, ObjectStore, StorageError, WriteOptions, read_all, write_bytes};
use crate::telemetry::Metrics;

/// An upload running beside the engine.
type Upload = tokio::task::JoinHandle<Result<ObjectMeta, StorageError>>;

/// How a job ended, for the push status code and the summary log.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Committed now (`Status::Scored` or a reported `Status::Failed`).
    Committed(Box<Manifest>),
    /// Already committed earlier.
    Duplicate(Box<Manifest>),
    /// Another job holds the lease.
    InProgress(Busy),
    /// That generation no longer exists (replaced or deleted).
    Gone(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Committed(m) if m.status == Status::Scored => "scored",
            Outcome::Committed(_) => "failed",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::InProgress(_) => "in_progress",
            Outcome::Gone(_) => "gone",
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

/// Everything a job needs, shared by all jobs of the process.
pub struct JobRunner {
    pub input: Arc<dyn ObjectStore>,
    pub output: Arc<dyn ObjectStore>,
    pub model: Arc<Model>,
    pub options: ScoreOptions,
    pub lease_ttl: Duration,
    /// Names this process in leases.
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: running jobs abandon cleanly.
    pub shutdown: CancellationToken,
    /// Jobs running in this process, by input generation: a second delivery
    /// of the same notification waits for the first instead of competing.
    active: Mutex<HashMap<(String, i64), Finished>>,
}

/// The result of a running job, once it is known.
type Finished = watch::Receiver<Option<Result<Outcome, JobError>>>;

/// What a delivery got.
#[derive(Debug)]
pub enum Delivered {
    /// The job ran (or this delivery waited for the same job to finish).
    Done(Result<Outcome, JobError>),
    /// Every job slot is taken: back off.
    Busy,
}

impl JobRunner {
    pub fn new(
        input: Arc<dyn ObjectStore>,
        output: Arc<dyn ObjectStore>,
        model: Arc<Model>,
        options: ScoreOptions,
        lease_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> JobRunner {
        JobRunner {
            input,
            output,
            model,
            options,
            lease_ttl,
            instance: format!(
                "{}-{:08x}",
                std::env::var("K_REVISION").unwrap_or_else(|_| "local".into()),
                rand::random::<u32>()
            ),
            metrics,
            shutdown: CancellationToken::new(),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one delivery of `object`: joins the job already running for it
    /// in this process, or starts one if a slot is free. The job runs in its
    /// own task, so it finishes and commits even if the delivery's request is
    /// abandoned.
    pub async fn deliver(self: &Arc<Self>, object: &ObjectRef, slots: &Arc<Semaphore>) -> Delivered {
        let key = (object.name.as_str().to_owned(), object.generation.get());
        enum Role {
            Leader(tokio::task::JoinHandle<Result<Outcome, JobError>>),
            Follower(Finished),
        }
        let role = {
            let Ok(mut active) = self.active.lock() else {
                return Delivered::Done(Err(JobError::Internal("active jobs poisoned".into())));
            };
            match active.get(&key) {
                Some(finished) => Role::Follower(finished.clone()),
                None => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        return Delivered::Busy;
                    };
                    let (tx, rx) = watch::channel(None);
                    active.insert(key.clone(), rx);
                    let runner = self.clone();
                    let object = object.clone();
                    Role::Leader(tokio::spawn(async move {
                        let _permit = permit;
                        let result = runner.run(&object).await;
                        let _ = tx.send(Some(result.clone()));
                        if let Ok(mut active) = runner.active.lock() {
                            active.remove(&key);
                        }
                        result
                    }))
                }
            }
        };
        let running = match role {
            Role::Leader(task) => {
                return Delivered::Done(
                    task.await
                        .unwrap_or_else(|e| Err(JobError::Internal(format!("job task: {e}")))),
                );
            }
            Role::Follower(finished) => finished,
        };
        // The same notification is being handled here already: its outcome
        // is this delivery's too (a commit is, for this one, a duplicate).
        let started = Instant::now();
        let mut running = running;
        let finished = match running.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        let result = match finished {
            Some(Ok(Outcome::Committed(m))) => Ok(Outcome::Duplicate(m)),
            Some(other) => other,
            None => Err(JobError::Internal("the running job stopped without a result".into())),
        };
        log_summary(
            &self.input.uri(object.name.as_str()),
            object,
            &result,
            started.elapsed(),
            self.model.version(),
        );
        result.map_or_else(|e| Delivered::Done(Err(e)), |o| Delivered::Done(Ok(o)))
    }

    /// Runs the job for one object generation and logs its one summary entry.
    async fn run(&self, object: &ObjectRef) -> Result<Outcome, JobError> {
        let started = Instant::now();
        self.metrics.jobs_in_flight.inc();
        let result = self.run_inner(object).await;
        self.metrics.jobs_in_flight.dec();
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(o) => o.label(),
            Err(JobError::Transient(_)) => "retry",
            Err(JobError::Internal(_)) => "error",
        };
        self.metrics.record_job(outcome, elapsed);
        if let Ok(Outcome::Committed(m)) = &result {
            self.metrics.record_rows(m.rows.scored, m.rows.rejected);
        }
        log_summary(
            &self.input.uri(object.name.as_str()),
            object,
            &result,
            elapsed,
            self.model.version(),
        );
        result
    }

    async fn run_inner(&self, object: &ObjectRef) -> Result<Outcome, JobError> {
        let names = OutputNames::new(&object.name, object.generation);
        if let Some(manifest) = self.committed(&names).await? {
            return Ok(Outcome::Duplicate(Box::new(manifest)));
        }
        let held = match lease::acquire(self.output.clone(), &names, &self.instance, self.lease_ttl).await? {
            Ok(held) => held,
            Err(busy) => return Ok(Outcome::InProgress(busy)),
        };
        // The lease may have been free because the previous holder just
        // committed: look again now that we hold it.
        if let Some(manifest) = self.committed(&names).await? {
            held.finish(true).await;
            return Ok(Outcome::Duplicate(Box::new(manifest)));
        }
        let cancel = self.shutdown.child_token();
        let lost = held.lost();
        let watcher = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                cancel.cancel();
            })
        };
        let result = self.score_and_commit(object, &names, cancel.clone()).await;
        watcher.abort();
        let result = match result {
            Err(_) if held.lost().is_cancelled() => Ok(Outcome::InProgress(Busy {
                holder: "another instance (took the lease over)".into(),
                expires_in: self.lease_ttl,
            })),
            Err(_) if self.shutdown.is_cancelled() => Err(JobError::Transient(
                "the instance is shutting down; the job was abandoned".into(),
            )),
            other => other,
        };
        held.finish(true).await;
        result
    }

    async fn committed(&self, names: &OutputNames) -> Result<Option<Manifest>, JobError> {
        match read_all(self.output.as_ref(), &names.manifest(), 16 << 20).await {
            Ok((_, bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| JobError::Internal(format!("unreadable manifest {}: {e}", names.manifest()))),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The first `stem(n)` name not taken by an orphan of a crashed attempt.
    async fn free_name(&self, name: impl Fn(u32) -> String) -> Result<String, JobError> {
        for n in 1..1000 {
            if self.output.stat(&name(n)).await?.is_none() {
                return Ok(name(n));
            }
        }
        Err(JobError::Internal("no free output name after 1000 attempts".into()))
    }

    async fn score_and_commit(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        cancel: CancellationToken,
    ) -> Result<Outcome, JobError> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let (meta, stream) = match self
            .input
            .read(object.name.as_str(), Some(object.generation.get()))
            .await
        {
            Ok(opened) => opened,
            Err(StorageError::NotFound(what)) => return Ok(Outcome::Gone(format!("{what} no longer exists"))),
            Err(e @ StorageError::InvalidName { .. }) => return Ok(Outcome::Gone(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let predictions_name = self.free_name(|n| names.predictions(n)).await?;
        let errors_name = self.free_name(|n| names.errors(n)).await?;

        let (predictions_writer, predictions_body) = UploadWriter::new(cancel.clone());
        let predictions_upload = {
            let output = self.output.clone();
            let name = predictions_name.clone();
            tokio::spawn(async move {
                output
                    .write(&name, predictions_body, WriteOptions::create_only("text/csv"))
                    .await
            })
        };
        let errors_upload: Arc<Mutex<Option<Upload>>> = Arc::new(Mutex::new(None));

        let engine = {
            let model = self.model.clone();
            let options = self.options.clone();
            let handle = Handle::current();
            let output = self.output.clone();
            let errors_name = errors_name.clone();
            let errors_upload = errors_upload.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || {
                let reader = StreamReader::new(stream, handle.clone(), cancel.clone());
                let mut predictions_writer = predictions_writer;
                let mut rejects = CsvRejects::new(|| {
                    let (writer, body) = UploadWriter::new(cancel.clone());
                    let output = output.clone();
                    let name = errors_name.clone();
                    let task = handle
                        .spawn(async move { output.write(&name, body, WriteOptions::create_only("text/csv")).await });
                    if let Ok(mut slot) = errors_upload.lock() {
                        *slot = Some(task);
                    }
                    Ok(writer)
                });
                let summary = score::score(reader, &model, &mut predictions_writer, &mut rejects, &options)?;
                let predictions = predictions_writer.finish().map_err(ScoreError::Write)?;
                let errors = match rejects.finish().map_err(ScoreError::Write)? {
                    Some(writer) => Some(writer.finish().map_err(ScoreError::Write)?),
                    None => None,
                };
                Ok::<_, ScoreError>((summary, predictions, errors))
            })
        };
        let engine_result = engine
            .await
            .map_err(|e| JobError::Internal(format!("scoring thread: {e}")))?;
        let errors_task = errors_upload.lock().ok().and_then(|mut slot| slot.take());

        match engine_result {
            Ok((summary, predictions_written, errors_written)) => {
                let predictions = self
                    .uploaded(&predictions_name, predictions_upload.await, predictions_written)
                    .await?;
                let errors = match (errors_task, errors_written) {
                    (Some(task), Some(written)) => Some(self.uploaded(&errors_name, task.await, written).await?),
                    _ => None,
                };
                let score_ms = started.elapsed().as_millis() as u64;
                let manifest = self.manifest_for(
                    object,
                    &meta,
                    Ok(&summary),
                    Some(&predictions),
                    errors.as_ref(),
                    started_at,
                    score_ms,
                );
                self.commit(names, manifest).await
            }
            Err(ScoreError::Rejected(rejection)) => {
                // Partial uploads were abandoned with their writers. Report the
                // file as failed: an errors object with the reason, and the
                // manifest.
                let _ = predictions_upload.await;
                if let Some(task) = errors_task {
                    let _ = task.await;
                }
                let errors = self.write_failure_report(&errors_name, &rejection).await?;
                let score_ms = started.elapsed().as_millis() as u64;
                let manifest = self.manifest_for(
                    object,
                    &meta,
                    Err(&rejection),
                    None,
                    Some(&errors),
                    started_at,
                    score_ms,
                );
                self.commit(names, manifest).await
            }
            Err(ScoreError::Read(e)) | Err(ScoreError::Write(e)) => {
                let _ = predictions_upload.await;
                match e.get_ref().and_then(|inner| inner.downcast_ref::<StorageError>()) {
                    Some(StorageError::NotFound(what)) => {
                        Ok(Outcome::Gone(format!("{what} vanished while it was read")))
                    }
                    Some(storage) => Err(storage.clone().into()),
                    None => Err(JobError::Transient(e.to_string())),
                }
            }
            Err(ScoreError::Engine(e)) => {
                let _ = predictions_upload.await;
                Err(JobError::Internal(e.to_string()))
            }
        }
    }

    async fn write_failure_report(&self, name: &str, rejection: &FileRejection) -> Result<ObjectMeta, JobError> {
        let mut rejects = CsvRejects::new(|| Ok(Vec::new()));
        use crate::score::RejectSink as _;
        rejects
            .reject(&RejectedRow {
                line: 1,
                row: 0,
                column: match rejection {
                    FileRejection::MissingColumns { missing, .. } => missing.join(" "),
                    FileRejection::DuplicateColumn(c) => c.clone(),
                    _ => String::new(),
                },
                value: String::new(),
                reason: format!("the file was not scored: {rejection}"),
            })
            .map_err(|e| JobError::Internal(e.to_string()))?;
        let bytes = rejects
            .finish()
            .map_err(|e| JobError::Internal(e.to_string()))?
            .unwrap_or_default();
        match write_bytes(
            self.output.as_ref(),
            name,
            bytes.clone(),
            WriteOptions::create_only("text/csv"),
        )
        .await
        {
            Ok(meta) => Ok(with_crc(meta, &bytes)),
            Err(StorageError::AlreadyExists(_)) => {
                // A racing writer reported the same failure.
                let meta = self
                    .output
                    .stat(name)
                    .await?
                    .ok_or_else(|| JobError::Transient(format!("{name} vanished")))?;
                Ok(with_crc(meta, &bytes))
            }
            Err(e) => Err(e.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn manifest_for(
        &self,
        object: &ObjectRef,
        meta: &ObjectMeta,
        result: Result<&Summary, &FileRejection>,
        predictions: Option<&ObjectMeta>,
        errors: Option<&ObjectMeta>,
        started_at: SystemTime,
        score_ms: u64,
    ) -> Manifest {
        let output_object = |m: &ObjectMeta| OutputObject {
            name: m.name.clone(),
            uri: self.output.uri(&m.name),
            size: m.size,
            crc32c: m.crc32c.map(|c| format!("{c:08x}")).unwrap_or_default(),
            generation: m.generation.to_string(),
        };
        let (summary, failure) = match result {
            Ok(s) => (Some(s), None),
            Err(r) => (None, Some(r.to_string())),
        };
        let model = &self.model;
        Manifest {
            manifest_version: 1,
            status: if failure.is_none() {
                Status::Scored
            } else {
                Status::Failed
            },
            input: InputInfo {
                uri: self.input.uri(object.name.as_str()),
                bucket: object.bucket.as_str().to_owned(),
                name: object.name.as_str().to_owned(),
                generation: object.generation.to_string(),
                size: meta.size,
                format: summary.map(|s| InputFormatInfo::from(&s.format)),
                columns: summary.map(|s| s.columns.clone()).unwrap_or_default(),
            },
            outputs: Outputs {
                predictions: predictions.map(output_object),
                errors: errors.map(output_object),
                columns: summary.map(|s| s.output_columns.clone()).unwrap_or_default(),
            },
            rows: summary
                .map(|s| Rows {
                    input: s.rows_in,
                    scored: s.rows_scored,
                    rejected: s.rows_rejected,
                    blank_lines: s.blank_lines,
                })
                .unwrap_or_default(),
            model: ModelInfo {
                name: model.name().to_owned(),
                version: model.version().to_owned(),
                target: model.target().to_owned(),
                threshold: model.threshold(),
            },
            labelled_rows: summary.map_or(0, |s| s.labelled_rows),
            metrics: summary.and_then(|s| s.metrics.clone()),
            failure,
            timings: Timings {
                started_at: humantime::format_rfc3339_millis(started_at).to_string(),
                finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                score_ms,
                total_ms: started_at.elapsed().map_or(0, |d| d.as_millis() as u64),
            },
        }
    }

    async fn commit(&self, names: &OutputNames, manifest: Manifest) -> Result<Outcome, JobError> {
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::Internal(e.to_string()))?;
        match write_bytes(
            self.output.as_ref(),
            &names.manifest(),
            bytes.clone(),
            WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) => Ok(Outcome::Committed(Box::new(manifest))),
            Err(StorageError::AlreadyExists(_)) => {
                // Either another job committed first, or this write went
                // through and only its answer was lost (the retry then hit
                // the precondition): byte-identical content says which.
                let (_, existing) = read_all(self.output.as_ref(), &names.manifest(), 16 << 20).await?;
                if existing == bytes {
                    return Ok(Outcome::Committed(Box::new(manifest)));
                }
                match serde_json::from_slice(&existing) {
                    Ok(other) => Ok(Outcome::Duplicate(Box::new(other))),
                    Err(e) => Err(JobError::Internal(format!(
                        "unreadable manifest {}: {e}",
                        names.manifest()
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl JobRunner {
    /// The result of an output upload. A create-only conflict is fine when
    /// the object there is exactly what this job wrote (a racing job with
    /// the same deterministic output, or this upload's own answer lost).
    async fn uploaded(
        &self,
        name: &str,
        joined: Result<Result<ObjectMeta, StorageError>, tokio::task::JoinError>,
        (crc32c, size): (u32, u64),
    ) -> Result<ObjectMeta, JobError> {
        match joined.map_err(|e| JobError::Internal(format!("upload task: {e}")))? {
            // What storage says it stored must be what was written: a
            // manifest never commits a truncated or altered object.
            Ok(meta) if meta.size != size || meta.crc32c.is_some_and(|c| c != crc32c) => {
                Err(JobError::Transient(format!(
                    "{} was stored as {} bytes (CRC32C {:?}) but {size} bytes (CRC32C {crc32c:08x}) were written",
                    self.output.uri(name),
                    meta.size,
                    meta.crc32c.map(|c| format!("{c:08x}"))
                )))
            }
            Ok(mut meta) => {
                meta.crc32c.get_or_insert(crc32c);
                Ok(meta)
            }
            Err(StorageError::AlreadyExists(_)) => match self.output.stat(name).await? {
                Some(there) if there.size == size && there.crc32c.is_none_or(|c| c == crc32c) => Ok(ObjectMeta {
                    crc32c: Some(crc32c),
                    ..there
                }),
                _ => Err(JobError::Transient(format!(
                    "{} exists with other content; the next attempt writes the next free name",
                    self.output.uri(name)
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }
}

fn with_crc(mut meta: ObjectMeta, bytes: &[u8]) -> ObjectMeta {
    meta.crc32c.get_or_insert(crc32c::crc32c(bytes));
    meta
}

/// The one summary log entry of a job.
fn log_summary(
    input_uri: &str,
    object: &ObjectRef,
    result: &Result<Outcome, JobError>,
    elapsed: Duration,
    model_version: &str,
) {
    let duration_ms = elapsed.as_millis() as u64;
    let generation = object.generation.get();
    match result {
        Ok(Outcome::Committed(m)) => tracing::info!(
            outcome = if m.status == Status::Scored { "scored" } else { "failed" },
            input_uri,
            generation,
            rows_in = m.rows.input,
            rows_scored = m.rows.scored,
            rows_rejected = m.rows.rejected,
            model_version = m.model.version,
            accuracy = m.metrics.as_ref().map(|x| x.accuracy),
            failure = m.failure,
            predictions = m.outputs.predictions.as_ref().map(|p| p.uri.clone()),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Duplicate(m)) => tracing::info!(
            outcome = "duplicate",
            input_uri,
            generation,
            model_version = m.model.version,
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::InProgress(busy)) => tracing::info!(
            outcome = "in_progress",
            input_uri,
            generation,
            holder = busy.holder,
            expires_in_s = busy.expires_in.as_secs(),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Gone(reason)) => tracing::warn!(
            outcome = "gone",
            input_uri,
            generation,
            reason,
            duration_ms,
            "job summary"
        ),
        Err(JobError::Transient(e)) => tracing::warn!(
            outcome = "retry",
            input_uri,
            generation,
            model_version,
            error = %e,
            duration_ms,
            "job summary"
        ),
        Err(JobError::Internal(e)) => tracing::error!(
            outcome = "error",
            input_uri,
            generation,
            model_version,
            error = %e,
            duration_ms,
            "job summary"
        ),
    }
}
