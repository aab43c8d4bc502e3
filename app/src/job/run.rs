//! The job sequence: lease, read, score, upload, verify, commit.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::{JobError, JobRunner, Outcome};
use crate::event::ObjectRef;
use crate::layout::OutputNames;
use crate::lease::{self, Acquired, HeldElsewhere};
use crate::manifest::{JobFacts, Manifest, OutputObject};
use crate::registry::RegistryError;
use crate::registry::routes::RouteSource;
use crate::score::{self, CsvRejects, FileRejection, RejectSink as _, RejectedRow, ScoreError};
use crate::storage::blocking::{ObjectRanges, StreamReader, Upload};
use crate::storage::{ObjectMeta, StorageError, WriteOptions};

/// Why an input got a failure report instead of predictions.
pub(super) enum Failure {
    /// The file as a whole cannot be scored.
    Rejected(FileRejection),
    /// The input generation no longer exists (deleted or replaced), or its
    /// name cannot be read here.
    Gone(String),
    /// Too large to score inside a push request, and no job to dispatch
    /// it to.
    TooLarge { size: u64, limit: u64 },
    /// Job executions were started for it and none finished it.
    Unfinished { executions: u32, last: String },
    /// A task of the job execution failed on its last allowed attempt.
    Task(String),
    /// The model the input asks for (by metadata, route or default) does
    /// not exist, or a training file cannot be fitted.
    Model(String),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Rejected(r) => r.to_string(),
            Failure::Gone(why) => why.clone(),
            Failure::TooLarge { size, limit } => format!(
                "the input is {size} bytes, more than INLINE_MAX_BYTES ({limit} bytes), the most one push \
                 request can score within its deadline, and no job is configured for larger inputs \
                 (SHARD_JOB, docs/SHARDING.md); split the file, or raise INLINE_MAX_BYTES together \
                 with the push service's CPU and request timeout (docs/OPERATIONS.md)"
            ),
            Failure::Unfinished { executions, last } => format!(
                "{executions} job executions were started for this input and none finished it (the last: \
                 {last}); see the job's logs"
            ),
            Failure::Task(why) => format!("a task of the job execution failed on its last attempt: {why}"),
            Failure::Model(why) => why.clone(),
        }
    }

    fn column(&self) -> String {
        match self {
            Failure::Rejected(FileRejection::MissingColumns { missing, .. }) => missing.join(" "),
            Failure::Rejected(FileRejection::DuplicateColumn(c)) => c.clone(),
            _ => String::new(),
        }
    }
}

/// How much of a large input's start decides whether it can be cut into
/// ranges and where its header ends (the engine decides the encoding from
/// as much); the push side and every task read as much, so they agree.
pub(super) const HEAD_BYTES: usize = 64 * 1024;

/// The first `limit` bytes of a stream (fewer if it is shorter).
pub(super) async fn head_of(mut stream: crate::storage::ByteStream, limit: usize) -> Result<Vec<u8>, JobError> {
    use futures::StreamExt as _;
    let mut head = Vec::with_capacity(limit);
    while head.len() < limit {
        match stream.next().await {
            Some(piece) => head.extend_from_slice(&piece?),
            None => break,
        }
    }
    head.truncate(limit);
    Ok(head)
}

/// An I/O error met while the input was read: the input vanishing
/// mid-read is its failure; any other storage error is storage's (a
/// retry); an error from no storage call is taken as transient.
pub(super) fn read_failure(e: &std::io::Error) -> Result<Failure, JobError> {
    match StorageError::find(e) {
        Some(StorageError::NotFound(what)) => {
            Ok(Failure::Gone(format!("the input vanished while it was read: {what}")))
        }
        Some(storage) => Err(storage.clone().into()),
        None => Err(JobError::Transient(e.to_string())),
    }
}

/// Aborts a helper task when the job that needs it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl JobRunner {
    /// The sequence for one input generation (the module doc of `job`).
    pub(super) async fn sequence(&self, object: &ObjectRef) -> Result<Outcome, JobError> {
        let names = self.names(object);
        let held = match lease::acquire(self.output.clone(), &names, &self.instance, self.lease_ttl).await? {
            Acquired::Held(held) => held,
            Acquired::HeldElsewhere(elsewhere) => return Ok(Outcome::InProgress(elsewhere)),
        };
        // The lease may have been free because the previous holder just
        // committed: look again now that we hold it. (An early return drops
        // `held`, which stops renewing and releases it.)
        if let Some(manifest) = self.find_manifest(&names).await? {
            held.release().await;
            return Ok(Outcome::Duplicate(Box::new(manifest)));
        }
        let cancel = self.shutdown.child_token();
        // Losing the lease cancels the job; the watcher goes with the job,
        // however it ends.
        let _watcher = {
            let lost = held.lost();
            let cancel = cancel.clone();
            AbortOnDrop(tokio::spawn(async move {
                lost.cancelled().await;
                cancel.cancel();
            }))
        };
        let result = if self.is_training(object.name.as_str()) {
            self.fit_and_commit(object, &names, cancel).await
        } else {
            match self.for_input(object).await {
                Ok(Ok(job)) => job.score_and_commit(object, &names, cancel).await,
                Ok(Err(failure)) => {
                    self.report_failure(object, &names, None, failure, SystemTime::now())
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let result = match result {
            Err(_) if held.lost().is_cancelled() => Ok(Outcome::InProgress(HeldElsewhere {
                holder: "another instance (took the lease over)".into(),
                expires_in: self.lease_ttl,
            })),
            Err(_) if self.shutdown.is_cancelled() => Err(JobError::Transient(
                "the instance is shutting down; the job was abandoned".into(),
            )),
            other => other,
        };
        held.release().await;
        result
    }

    /// A runner for this input's job: its model, routed (metadata, prefix,
    /// default) and resolved to one exact version now, for the whole file.
    /// A model that does not exist is the input's failure, committed with
    /// the models there are; storage trouble is a retry.
    async fn for_input(&self, object: &ObjectRef) -> Result<Result<JobRunner, Failure>, JobError> {
        // A task's runner has no registry routes: its model, and how the
        // dispatching service chose it, came with the execution.
        let Some(models) = &self.models else {
            return Ok(Ok(self.with_model(self.model.clone(), self.chosen_by.clone())));
        };
        let metadata = match self.input.stat(object.name.as_str()).await {
            Ok(Some(meta)) => meta.metadata,
            // Gone: scoring finds that out and reports it.
            Ok(None) | Err(StorageError::NotFound(_) | StorageError::InvalidName { .. }) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        let route = match models.routes.route(object.name.as_str(), &metadata) {
            Ok(route) => route,
            Err(e) => return Ok(Err(Failure::Model(e.to_string()))),
        };
        let chosen_by = crate::manifest::ChosenBy {
            reference: route.model.to_string(),
            route: match &route.source {
                RouteSource::Metadata => "metadata".to_owned(),
                RouteSource::Prefix { prefix } => format!("prefix {prefix}"),
                RouteSource::Default => "default".to_owned(),
            },
        };
        match models.get(&route.model).await {
            Ok(model) => Ok(Ok(self.with_model(model, Some(chosen_by)))),
            Err(e @ (RegistryError::Unknown(_) | RegistryError::Invalid(_) | RegistryError::BadArtifact { .. })) => {
                Ok(Err(Failure::Model(format!(
                    "the input's model {} (chosen by {}) cannot be used: {e}",
                    chosen_by.reference, chosen_by.route
                ))))
            }
            Err(e) if e.is_transient() => Err(JobError::Transient(format!("reading the model registry: {e}"))),
            Err(e) => Err(JobError::Internal(format!("reading the model registry: {e}"))),
        }
    }

    fn facts<'a>(&'a self, object: &'a ObjectRef, names: &OutputNames, size: Option<u64>) -> JobFacts<'a> {
        JobFacts {
            object,
            input_uri: self.input.uri(object.name.as_str()),
            size,
            manifest_uri: self.output.uri(&names.manifest()),
            model: &self.model,
            started_at: SystemTime::now(),
            score_ms: 0,
            execution: self.execution.clone(),
            chosen_by: self.chosen_by.clone(),
        }
    }

    async fn score_and_commit(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        cancel: CancellationToken,
    ) -> Result<Outcome, JobError> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let (meta, stream) = match self.open_input(object).await? {
            Ok(opened) => opened,
            Err(failure) => return self.report_failure(object, names, None, failure, started_at).await,
        };
        if meta.size > self.inline_max_bytes {
            if let Some(sharding) = &self.sharding {
                let head = head_of(stream, HEAD_BYTES).await?;
                return self.dispatch(sharding, object, names, &meta, &head, started_at).await;
            }
            drop(stream);
            let failure = Failure::TooLarge {
                size: meta.size,
                limit: self.inline_max_bytes,
            };
            return self
                .report_failure(object, names, Some(&meta), failure, started_at)
                .await;
        }
        let predictions_name = names.predictions(self.free_number(|n| names.predictions(n)).await?);
        let errors_name = names.errors(self.free_number(|n| names.errors(n)).await?);

        let engine = {
            let model = self.model.clone();
            let options = self.options_for(object, started_at, true);
            let handle = Handle::current();
            let output = self.output.clone();
            let parquet = match crate::format::Format::for_object(object.name.as_str()) {
                Some(crate::format::Format::Parquet) => Some(ObjectRanges {
                    store: self.input.clone(),
                    name: object.name.as_str().to_owned(),
                    generation: object.generation.get(),
                    // Some emulators leave the size out of a read's answer.
                    size: match meta.size {
                        0 => self.input.stat(object.name.as_str()).await?.map_or(0, |m| m.size),
                        size => size,
                    },
                    handle: handle.clone(),
                    cancel: cancel.clone(),
                }),
                _ => None,
            };
            tokio::task::spawn_blocking(move || {
                let csv = WriteOptions::create_only("text/csv");
                let kind = WriteOptions::create_only(options.output.format.content_type());
                let mut predictions = Upload::start(&handle, output.clone(), predictions_name, kind, cancel.clone());
                let mut rejects = CsvRejects::new(|| {
                    Ok(Upload::start(
                        &handle,
                        output.clone(),
                        errors_name.clone(),
                        csv,
                        cancel.clone(),
                    ))
                });
                // On any error the uploads are dropped unfinished: their
                // bodies end without the end marker and nothing is stored.
                let summary = match parquet {
                    // Parquet is read by ranges (its footer first), not as
                    // a stream.
                    Some(ranges) => {
                        drop(stream);
                        score::parquet_in::score(Arc::new(ranges), &model, &mut predictions, &mut rejects, &options)?
                    }
                    None => {
                        let reader = StreamReader::new(stream, handle.clone(), cancel.clone());
                        score::score(reader, &model, &mut predictions, &mut rejects, &options)?
                    }
                };
                let predictions = predictions.finish().map_err(ScoreError::Write)?;
                let errors = match rejects.finish().map_err(ScoreError::Write)? {
                    Some(upload) => Some(upload.finish().map_err(ScoreError::Write)?),
                    None => None,
                };
                Ok::<_, ScoreError>((summary, predictions, errors))
            })
        };
        let engine_result = engine
            .await
            .map_err(|e| JobError::Internal(format!("scoring thread: {e}")))?;
        match engine_result {
            Ok((summary, predictions, errors)) => {
                let predictions = self.verify_upload(predictions).await?;
                let errors = match errors {
                    Some(upload) => Some(self.verify_upload(upload).await?),
                    None => None,
                };
                let facts = JobFacts {
                    started_at,
                    score_ms: started.elapsed().as_millis() as u64,
                    ..self.facts(object, names, Some(meta.size))
                };
                let curves = match super::curves::scoring_curves(&self.model, &summary.evaluation, &facts.input_uri) {
                    Some(curves) => self.put_curves(names, self.model.version(), &curves).await?,
                    None => Vec::new(),
                };
                let mut manifest = Manifest::scored(
                    facts,
                    &summary,
                    self.output_object(&predictions),
                    errors.as_ref().map(|e| self.output_object(e)),
                );
                manifest.outputs.curves = curves;
                self.stamp_outputs(&mut manifest);
                self.commit(names, manifest).await
            }
            Err(ScoreError::Rejected(rejection)) => {
                self.report_failure(object, names, Some(&meta), Failure::Rejected(rejection), started_at)
                    .await
            }
            Err(ScoreError::Read(e)) | Err(ScoreError::Write(e)) => {
                let failure = read_failure(&e)?;
                self.report_failure(object, names, Some(&meta), failure, started_at)
                    .await
            }
            Err(ScoreError::Engine(e)) => Err(JobError::Internal(e.to_string())),
        }
    }

    /// Opens the input generation a job reads (scoring or fitting); one
    /// that no longer exists, or whose name cannot be read here, is the
    /// input's failure.
    pub(super) async fn open_input(
        &self,
        object: &ObjectRef,
    ) -> Result<Result<(ObjectMeta, crate::storage::ByteStream), Failure>, JobError> {
        match self
            .input
            .read(object.name.as_str(), Some(object.generation.get()))
            .await
        {
            Ok(opened) => Ok(Ok(opened)),
            Err(StorageError::NotFound(what)) => Ok(Err(Failure::Gone(format!(
                "the input no longer exists: {what} (deleted or replaced)"
            )))),
            Err(e @ StorageError::InvalidName { .. }) => Ok(Err(Failure::Gone(e.to_string()))),
            Err(e) => Err(e.into()),
        }
    }

    fn output_object(&self, meta: &ObjectMeta) -> OutputObject {
        OutputObject::new(meta, self.output.uri(&meta.name))
    }

    /// Reports an input that cannot be scored: an errors object with the
    /// reason, and a `failed` manifest.
    pub(super) async fn report_failure(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        meta: Option<&ObjectMeta>,
        failure: Failure,
        started_at: SystemTime,
    ) -> Result<Outcome, JobError> {
        let mut report = CsvRejects::new(|| Ok(Vec::new()));
        report
            .reject(&RejectedRow {
                line: 1,
                row: 0,
                column: failure.column(),
                value: String::new(),
                reason: format!("the file was not scored: {}", failure.reason()),
            })
            .map_err(|e| JobError::Internal(e.to_string()))?;
        let bytes = report
            .finish()
            .map_err(|e| JobError::Internal(e.to_string()))?
            .unwrap_or_default();
        let from = self.free_number(|n| names.errors(n)).await?;
        let stored = self.put_report(|n| names.errors(n), from, bytes).await?;
        let facts = JobFacts {
            started_at,
            ..self.facts(object, names, meta.map(|m| m.size))
        };
        let manifest = Manifest::failed(facts, failure.reason(), self.output_object(&stored));
        self.commit(names, manifest).await
    }
}
