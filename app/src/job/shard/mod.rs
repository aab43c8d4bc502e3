//! A task's side of a large input: score one byte range, record it, and
//! commit the whole once every range is in.
//!
//! Task `i` of `N` reads the input's first bytes (its header and text
//! format), then its range through a ranged read, and scores it with the
//! engine's range reader (`score::shard`): records that start in
//! `[size*i/N, size*(i+1)/N)`, the first range right after the header. Its
//! predictions go to `predictions-0000i-of-0000N.csv` (with the header), its
//! rejected rows to a JSON-lines object under `_shards/`, both create-only
//! and verified like every output. Then a create-only shard record states
//! the range it really scored (start, end, line ends in it), its row counts,
//! its metrics' raw sums and its objects.
//!
//! The task that then finds all `N` records checks that they chain: range 0
//! starts right after the header, each real end is the next real start, the
//! last ends with the object. Only a chain that holds commits: an
//! `errors.csv` with lines and rows global to the input (each range's shifted
//! by the line ends and rows before it), and the manifest listing the shards
//! in order, create-only, the commit point as always. Several tasks may get
//! there at once: their outputs are identical and the first manifest wins.
//! A chain that does not hold (a quoted line break fooled a speculative
//! start) is repaired before it commits: each range that did not start
//! where the one before it ended is scored again from there (`chain`).
//!
//! A range scored by another model version is scored again the same way.
//! Should the chain still not hold, the input is scored whole under its
//! lease (`execution.fallback` in the manifest).
//!
//! Rooms: this file holds the task's run (what it came to, its last-attempt
//! report; `Task` itself is [`crate::dispatch::Task`]); `range` scores one
//! range and records it; `chain` checks, repairs and commits the ranges.
//!
//! A task whose record exists has nothing left to score (an earlier attempt
//! did it) and goes straight to the commit check; outputs an attempt left
//! without a record are adopted only when byte-identical, as always.

use std::io;
use std::time::{Duration, SystemTime};

mod chain;
mod range;

pub use crate::dispatch::Task;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::run::{Failure, HEAD_BYTES, head_of};
use super::{JobError, JobRunner, Outcome};
use crate::event::ObjectRef;
use crate::manifest::{ExecutionInfo, InputFormatInfo, Manifest, OutputObject, Rows};
use crate::model::EvaluationBuilder;
use crate::score::shard;
use crate::score::{FileRejection, input};
use crate::storage::StorageError;

/// The bytes one scoring pass covers: from `from` (a known record start,
/// or an offset to find the next record start after) through the record in
/// progress at `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    from: u64,
    limit: u64,
    known_start: bool,
    /// The whole input's size.
    size: u64,
}

impl Span {
    /// Task `index` of `count`'s nominal share of a `size`-byte input.
    fn of_task(task: &Task, size: u64, header_len: u64) -> Span {
        let (count, index) = (u64::from(task.count), u64::from(task.index));
        let first = index == 0;
        Span {
            from: if first { header_len } else { size * index / count },
            limit: if index + 1 == count {
                u64::MAX
            } else {
                size * (index + 1) / count
            },
            known_start: first,
            size,
        }
    }
}

/// What one task's run came to.
#[derive(Debug)]
pub enum TaskOutcome {
    /// This task committed the input's manifest (scored or failed).
    Committed(Box<Manifest>),
    /// Another task, attempt or execution committed it.
    Duplicate(Box<Manifest>),
    /// This task's range is scored and recorded; other ranges are still due.
    RangeDone { rows: u64 },
    /// Nothing for this task: the input cannot be cut into ranges and task 0
    /// scores it whole.
    Idle,
}

/// A task's account of its range, written create-only once its objects
/// are verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: u32,
    pub count: u32,
    pub execution: String,
    pub attempt: u32,
    pub size: u64,
    pub header_len: u64,
    /// The range really scored: `[start, end)`, and the line ends in it.
    pub start: u64,
    pub end: u64,
    pub newlines: u64,
    pub rows: Rows,
    pub labelled_rows: u64,
    pub evaluation: EvaluationBuilder,
    pub format: InputFormatInfo,
    pub columns: Vec<String>,
    pub output_columns: Vec<String>,
    pub model_version: String,
    pub predictions: OutputObject,
    pub rejects: Option<OutputObject>,
    pub seconds: f64,
}

const RECORD_LIMIT: usize = 16 << 20;

impl JobRunner {
    /// A runner for one task of `execution`: no job slots, no dispatch, no
    /// inline limit. `shutdown` is the task's stop signal: cancelled, the
    /// task abandons its uploads as an inline job does.
    #[allow(clippy::too_many_arguments)]
    pub fn for_task(
        input: std::sync::Arc<dyn crate::storage::ObjectStore>,
        output: std::sync::Arc<dyn crate::storage::ObjectStore>,
        model: std::sync::Arc<crate::model::Model>,
        options: crate::score::ScoreOptions,
        lease_ttl: Duration,
        task: &Task,
        metrics: std::sync::Arc<crate::telemetry::Metrics>,
        shutdown: CancellationToken,
    ) -> JobRunner {
        JobRunner {
            input,
            output,
            model,
            chosen_by: None,
            models: None,
            training: Default::default(),
            options,
            outputs: Default::default(),
            follow_ups: Default::default(),
            lease_ttl,
            inline_max_bytes: u64::MAX,
            sharding: None,
            execution: Some(ExecutionInfo {
                name: task.execution.clone(),
                tasks: task.count,
                fallback: None,
                repaired: Vec::new(),
            }),
            instance: format!("{}-task{}-attempt{}", task.execution, task.index, task.attempt),
            metrics,
            shutdown,
            running: Default::default(),
        }
    }

    /// The same runner, noting in its manifests why the input was scored
    /// whole.
    fn scoring_whole(&self, why: &str) -> JobRunner {
        self.with_execution(self.execution.clone().map(|e| ExecutionInfo {
            fallback: Some(why.to_owned()),
            ..e
        }))
    }

    /// The same task runner, its manifests naming `execution` as given
    /// (with a fallback or the repairs noted).
    fn with_execution(&self, execution: Option<ExecutionInfo>) -> JobRunner {
        JobRunner {
            inline_max_bytes: u64::MAX,
            sharding: None,
            execution,
            ..self.sibling()
        }
    }

    /// Runs one task of the execution scoring `object`.
    pub async fn run_task(&self, object: &ObjectRef, task: &Task) -> Result<TaskOutcome, JobError> {
        let outcome = self.run_task_once(object, task).await?;
        self.task_follow_ups(object, &outcome, task.is_last_attempt()).await?;
        Ok(outcome)
    }

    /// What follows the commit, from a task that committed it or found it
    /// committed (it mends a committer that died after its commit). A
    /// failure fails the task, to be retried (the push side has long since
    /// answered `dispatched`: nothing else would retry it), except on its
    /// last attempt, where it is said at ERROR and left.
    async fn task_follow_ups(&self, object: &ObjectRef, outcome: &TaskOutcome, last: bool) -> Result<(), JobError> {
        let (TaskOutcome::Committed(manifest) | TaskOutcome::Duplicate(manifest)) = outcome else {
            return Ok(());
        };
        match self.after_commit(&self.names(object), manifest).await {
            Ok(()) => Ok(()),
            Err(e) if !last => Err(JobError::Transient(format!(
                "committed, but what follows the commit failed: {e}"
            ))),
            Err(e) => {
                tracing::error!(error = %e, "what follows the commit failed on the task's last attempt");
                Ok(())
            }
        }
    }

    async fn run_task_once(&self, object: &ObjectRef, task: &Task) -> Result<TaskOutcome, JobError> {
        let names = self.names(object);
        if let Some(manifest) = self.find_manifest(&names).await? {
            return Ok(TaskOutcome::Duplicate(Box::new(manifest)));
        }
        if task.count <= 1 {
            return self.whole(object, None).await;
        }
        // Rows this attempt scored, for its summary (none when an earlier
        // attempt recorded the range).
        let mut scored = 0;
        if self
            .output
            .stat(&names.shard_record(task.index, task.count))
            .await?
            .is_none()
        {
            let started_at = SystemTime::now();
            let (meta, stream) = match self
                .input
                .read(object.name.as_str(), Some(object.generation.get()))
                .await
            {
                Ok(opened) => opened,
                Err(StorageError::NotFound(what)) => {
                    let failure = Failure::Gone(format!("the input no longer exists: {what} (deleted or replaced)"));
                    return self.committed(self.report_failure(object, &names, None, failure, started_at).await);
                }
                Err(e) => return Err(e.into()),
            };
            let head = head_of(stream, HEAD_BYTES).await?;
            let text = match input::decode(io::Cursor::new(&head)) {
                Ok(input::Decoded::Text(_, text)) => text,
                Ok(input::Decoded::NotText(not_text)) => {
                    let failure = Failure::Rejected(FileRejection::NotText(not_text));
                    return self.committed(
                        self.report_failure(object, &names, Some(&meta), failure, started_at)
                            .await,
                    );
                }
                Err(e) => return Err(JobError::Transient(format!("reading the input's start: {e}"))),
            };
            let header_len = shard::header_len(&head);
            let (Some(header_len), true) = (header_len, shard::splittable(&text)) else {
                // Compressed, UTF-16, or a header longer than the bytes
                // read: one task scores it whole.
                return if task.index == 0 {
                    self.whole(
                        object,
                        Some("the input cannot be cut into byte ranges (compressed, UTF-16, or a very long header)"),
                    )
                    .await
                } else {
                    Ok(TaskOutcome::Idle)
                };
            };
            let span = Span::of_task(task, meta.size, header_len as u64);
            let record = self
                .score_my_range(object, &names, task, span, &head[..header_len], text)
                .await?;
            match record {
                Ok(record) => {
                    scored = record.rows.scored;
                    self.put_shard_record(&names, &record).await?
                }
                Err(rejection) => {
                    // The whole file cannot be scored (every task finds the
                    // same): report it; the first report commits.
                    let failure = Failure::Rejected(rejection);
                    return self.committed(
                        self.report_failure(object, &names, Some(&meta), failure, started_at)
                            .await,
                    );
                }
            }
        }
        match self.commit_if_complete(object, &names, task).await? {
            TaskOutcome::RangeDone { .. } => Ok(TaskOutcome::RangeDone { rows: scored }),
            other => Ok(other),
        }
    }

    /// The report a task's last attempt leaves when it cannot finish: every
    /// dispatched input ends with a manifest. Not when the input is already
    /// committed, and not when this task's range is recorded: then what
    /// failed came after its part (the commit), and whichever task or
    /// execution finds every range recorded commits the scored input; a
    /// report now would turn finished work into a failure.
    pub async fn fail_task(&self, object: &ObjectRef, task: &Task, why: &str) -> Result<TaskOutcome, JobError> {
        let outcome = self.fail_task_once(object, task, why).await?;
        // Best effort: this is the last attempt; what cannot be done now
        // is left to a redelivery (and said).
        if let Err(e) = self.task_follow_ups(object, &outcome, true).await {
            tracing::error!(error = %e, "what follows the commit failed on the task's last attempt");
        }
        Ok(outcome)
    }

    async fn fail_task_once(&self, object: &ObjectRef, task: &Task, why: &str) -> Result<TaskOutcome, JobError> {
        let names = self.names(object);
        if let Some(manifest) = self.find_manifest(&names).await? {
            return Ok(TaskOutcome::Duplicate(Box::new(manifest)));
        }
        if task.count > 1
            && self
                .output
                .stat(&names.shard_record(task.index, task.count))
                .await?
                .is_some()
        {
            return Err(JobError::Transient(format!(
                "range {} is recorded; not reporting the input as failed ({why})",
                task.index
            )));
        }
        // The input's size and format for the report, when it can be read.
        let meta = self.input.stat(object.name.as_str()).await.ok().flatten();
        let meta = meta.filter(|m| m.generation == object.generation.get());
        let failure = Failure::Task(why.to_owned());
        self.committed(
            self.report_failure(object, &names, meta.as_ref(), failure, SystemTime::now())
                .await,
        )
    }

    fn committed(&self, result: Result<Outcome, JobError>) -> Result<TaskOutcome, JobError> {
        match result? {
            Outcome::Committed(m) => Ok(TaskOutcome::Committed(m)),
            Outcome::Duplicate(m) => Ok(TaskOutcome::Duplicate(m)),
            Outcome::InProgress(elsewhere) => Err(JobError::Transient(format!(
                "the input is being scored by {}",
                elsewhere.holder
            ))),
            Outcome::Dispatched(d) => Err(JobError::Internal(format!(
                "a task dispatched the input again ({})",
                d.execution
            ))),
        }
    }

    /// Scores the input whole, under its lease (the fallback, and inputs
    /// that cannot be cut). While another task holds the lease, waits: it
    /// may be the one scoring it, or a dead one whose lease will expire.
    async fn whole(&self, object: &ObjectRef, why: Option<&str>) -> Result<TaskOutcome, JobError> {
        let runner = why.map(|why| self.scoring_whole(why));
        let runner = runner.as_ref().unwrap_or(self);
        loop {
            match runner.sequence(object).await? {
                Outcome::InProgress(elsewhere) => {
                    tracing::info!(
                        holder = elsewhere.holder,
                        "another task is scoring the input whole; waiting"
                    );
                    tokio::time::sleep(
                        elsewhere
                            .expires_in
                            .min(self.lease_ttl / 2)
                            .max(Duration::from_millis(200)),
                    )
                    .await;
                }
                other => return self.committed(Ok(other)),
            }
        }
    }
}
