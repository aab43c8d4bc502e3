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
//! start) is not committed: the input is scored whole by one task, under the
//! input's lease, and its manifest says why.
//!
//! A task whose record exists has nothing left to score (an earlier attempt
//! did it) and goes straight to the commit check; outputs an attempt left
//! without a record are adopted only when byte-identical, as always.

use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::run::{Failure, head_of};
use super::{JobError, JobRunner, Outcome};
use crate::event::ObjectRef;
use crate::layout::OutputNames;
use crate::manifest::{ExecutionInfo, InputFormatInfo, JobFacts, Manifest, OutputObject, Rows, ShardTotals};
use crate::model::EvaluationBuilder;
use crate::score::shard::{self, RangeReader};
use crate::score::{self, CsvRejects, FileRejection, RejectSink, RejectedRow, ScoreError, input};
use crate::storage::blocking::{StreamReader, Upload};
use crate::storage::{StorageError, WriteOptions, read_all, write_bytes};

/// Which task this is, as Cloud Run tells every task of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub index: u32,
    pub count: u32,
    pub attempt: u32,
    /// The job's retries per task: the attempt numbered this is the last.
    pub max_retries: u32,
    pub execution: String,
}

impl Task {
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_retries
    }
}

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

/// Most bytes read to find the header.
const HEAD_LIMIT: usize = 64 * 1024;
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
            options,
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
        JobRunner {
            input: self.input.clone(),
            output: self.output.clone(),
            model: self.model.clone(),
            options: self.options.clone(),
            lease_ttl: self.lease_ttl,
            inline_max_bytes: u64::MAX,
            sharding: None,
            execution: self.execution.clone().map(|e| ExecutionInfo {
                fallback: Some(why.to_owned()),
                ..e
            }),
            instance: self.instance.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            running: Default::default(),
        }
    }

    /// Runs one task of the execution scoring `object`.
    pub async fn run_task(&self, object: &ObjectRef, task: &Task) -> Result<TaskOutcome, JobError> {
        let names = OutputNames::new(&object.name, object.generation);
        if let Some(manifest) = self.find_manifest(&names).await? {
            return Ok(TaskOutcome::Duplicate(Box::new(manifest)));
        }
        if task.count <= 1 {
            return self.whole(object, None).await;
        }
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
            let head = head_of(stream, HEAD_LIMIT).await?;
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
                Ok(record) => self.put_shard_record(&names, &record).await?,
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
        self.commit_if_complete(object, &names, task).await
    }

    /// The report a task's last attempt leaves when it cannot finish: every
    /// dispatched input ends with a manifest. Not when the input is already
    /// committed, and not when this task's range is recorded: then what
    /// failed came after its part (the commit), and whichever task or
    /// execution finds every range recorded commits the scored input; a
    /// report now would turn finished work into a failure.
    pub async fn fail_task(&self, object: &ObjectRef, task: &Task, why: &str) -> Result<TaskOutcome, JobError> {
        let names = OutputNames::new(&object.name, object.generation);
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

    /// Scores task's range into its predictions shard and rejects object;
    /// the record of what it did, or why the whole file cannot be scored.
    async fn score_my_range(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        task: &Task,
        span: Span,
        header: &[u8],
        text: score::input::Partial,
    ) -> Result<Result<ShardRecord, FileRejection>, JobError> {
        let started = Instant::now();
        let Span {
            from,
            limit,
            known_start,
            size,
        } = span;
        let first = known_start;
        // One byte early, so that a record starting exactly at `from` is
        // found after the line end before it.
        let begin = if first { from } else { from.saturating_sub(1) };
        let (_, stream) = self
            .input
            .read_from(object.name.as_str(), Some(object.generation.get()), begin)
            .await?;
        let predictions_name = names.predictions_shard(
            task.index,
            task.count,
            self.free_number(|n| names.predictions_shard(task.index, task.count, n))
                .await?,
        );
        let rejects_name = names.shard_rejects(
            task.index,
            task.count,
            self.free_number(|n| names.shard_rejects(task.index, task.count, n))
                .await?,
        );
        let delimiter = input::sniff_delimiter(header);
        let engine = {
            let (model, options, output) = (self.model.clone(), self.options.clone(), self.output.clone());
            let header = header.to_vec();
            let handle = Handle::current();
            let cancel = self.shutdown.child_token();
            tokio::task::spawn_blocking(move || {
                let csv = WriteOptions::create_only("text/csv");
                let jsonl = WriteOptions::create_only("application/x-ndjson");
                let mut predictions = Upload::start(&handle, output.clone(), predictions_name, csv, cancel.clone());
                let mut rejects = JsonLinesRejects::new(|| {
                    Ok(Upload::start(
                        &handle,
                        output.clone(),
                        rejects_name.clone(),
                        jsonl,
                        cancel.clone(),
                    ))
                });
                let reader = StreamReader::new(stream, handle.clone(), cancel.clone());
                let mut range = RangeReader::new(reader, begin, first, limit, delimiter);
                let (summary, extent) = shard::score_range(
                    &header,
                    &mut range,
                    text,
                    &model,
                    &mut predictions,
                    &mut rejects,
                    &options,
                )?;
                let predictions = predictions.finish().map_err(ScoreError::Write)?;
                let rejects = match rejects.finish().map_err(ScoreError::Write)? {
                    Some(upload) => Some(upload.finish().map_err(ScoreError::Write)?),
                    None => None,
                };
                Ok::<_, ScoreError>((summary, extent, predictions, rejects))
            })
        };
        let (summary, extent, predictions, rejects) = match engine
            .await
            .map_err(|e| JobError::Internal(format!("scoring thread: {e}")))?
        {
            Ok(done) => done,
            Err(ScoreError::Rejected(rejection)) => return Ok(Err(rejection)),
            Err(ScoreError::Read(e)) | Err(ScoreError::Write(e)) => {
                return Err(match StorageError::find(&e) {
                    Some(storage) => storage.clone().into(),
                    None => JobError::Transient(e.to_string()),
                });
            }
            Err(ScoreError::Engine(e)) => return Err(JobError::Internal(e.to_string())),
        };
        let predictions = self.verify_upload(predictions).await?;
        let rejects = match rejects {
            Some(upload) => Some(self.verify_upload(upload).await?),
            None => None,
        };
        Ok(Ok(ShardRecord {
            index: task.index,
            count: task.count,
            execution: task.execution.clone(),
            attempt: task.attempt,
            size,
            header_len: header.len() as u64,
            start: extent.start,
            end: extent.end,
            newlines: extent.newlines,
            rows: Rows {
                input: summary.rows_in,
                scored: summary.rows_scored,
                rejected: summary.rows_rejected,
                blank_lines: summary.blank_lines,
            },
            labelled_rows: summary.labelled_rows,
            evaluation: summary.evaluation.clone(),
            format: InputFormatInfo::from(&summary.format),
            columns: summary.columns.clone(),
            output_columns: summary.output_columns.clone(),
            model_version: self.model.version().to_owned(),
            predictions: OutputObject::new(&predictions, self.output.uri(&predictions.name)),
            rejects: rejects.map(|r| OutputObject::new(&r, self.output.uri(&r.name))),
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    async fn put_shard_record(&self, names: &OutputNames, record: &ShardRecord) -> Result<(), JobError> {
        self.put_shard_record_at(&names.shard_record(record.index, record.count), record)
            .await
            .map(drop)
    }

    /// Writes `record` create-only at `name`; the record that stands there
    /// (another attempt's, if it recorded the range first: its objects
    /// stand, and ours are left unlisted).
    async fn put_shard_record_at(&self, name: &str, record: &ShardRecord) -> Result<ShardRecord, JobError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| JobError::Internal(e.to_string()))?;
        match write_bytes(
            self.output.as_ref(),
            name,
            bytes,
            WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) => Ok(record.clone()),
            Err(StorageError::AlreadyExists(_)) => self.read_record(name).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn read_record(&self, name: &str) -> Result<ShardRecord, JobError> {
        let (_, bytes) = read_all(self.output.as_ref(), name, RECORD_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| JobError::Internal(format!("unreadable shard record {name}: {e}")))
    }

    /// Commits the input if every range is recorded and they chain.
    async fn commit_if_complete(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        task: &Task,
    ) -> Result<TaskOutcome, JobError> {
        let prefix = names.shard_records_prefix(task.count);
        let listed = self.output.list(&prefix).await?;
        let present = listed
            .iter()
            .filter(|o| {
                o.name
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.len() == 10 && rest.ends_with(".json"))
            })
            .count();
        if present < task.count as usize {
            return Ok(TaskOutcome::RangeDone { rows: 0 });
        }
        let mut records = Vec::with_capacity(task.count as usize);
        for index in 0..task.count {
            records.push(self.read_record(&names.shard_record(index, task.count)).await?);
        }
        let (records, repaired) = match self.chain(object, names, task, records).await? {
            Ok(chain) => chain,
            Err(rejection) => {
                let failure = Failure::Rejected(rejection);
                return self.committed(
                    self.report_failure(object, names, None, failure, SystemTime::now())
                        .await,
                );
            }
        };
        if let Some(broken) = self.broken_link(&records) {
            // Cannot happen once repaired; scoring it whole is the answer
            // that needs no reasoning about ranges at all.
            tracing::warn!(
                input_uri = self.input.uri(object.name.as_str()),
                reason = broken,
                "the ranges do not chain; scoring the input whole in one task"
            );
            return self.whole(object, Some(&broken)).await;
        }
        let runner;
        let runner = if repaired.is_empty() {
            self
        } else {
            runner = self.with_repairs(repaired);
            &runner
        };
        runner.commit_shards(object, names, records).await
    }

    /// The records as a chain that holds: each range that does not start
    /// where the one before it really ended (a quoted line break fooled its
    /// speculative start) or was scored by another model is scored again
    /// from that end, which is a true record boundary (range 0 starts right
    /// after the header, and a range that starts on a boundary ends on one).
    /// A repair scores about one range, not the file; its record is
    /// create-only under a name keyed by its start, so racing repairers
    /// agree. Returns the chain and a note per repaired range.
    async fn chain(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        task: &Task,
        records: Vec<ShardRecord>,
    ) -> Result<Result<(Vec<ShardRecord>, Vec<String>), FileRejection>, JobError> {
        let model = self.model.version().to_owned();
        let mut chain: Vec<ShardRecord> = Vec::with_capacity(records.len());
        let mut notes = Vec::new();
        let mut head: Option<(Vec<u8>, score::input::Partial)> = None;
        for record in records {
            let expected = chain.last().map_or(record.header_len, |r| r.end);
            if record.start == expected && record.model_version == model {
                chain.push(record);
                continue;
            }
            let why = if record.model_version != model {
                format!("scored by model {}", record.model_version)
            } else {
                format!(
                    "started at byte {} instead of {expected}: a quoted line break fooled its boundary",
                    record.start
                )
            };
            if head.is_none() {
                head = Some(self.header_of(object).await?);
            }
            let Some((header, text)) = head.clone() else {
                continue;
            };
            let nominal = Span::of_task(
                &Task {
                    index: record.index,
                    ..task.clone()
                },
                record.size,
                record.header_len,
            );
            let span = Span {
                from: expected,
                known_start: true,
                ..nominal
            };
            let repairer = Task {
                index: record.index,
                ..task.clone()
            };
            let name = names.shard_repair(record.index, record.count, expected);
            let repaired = match self.output.stat(&name).await? {
                Some(_) => self.read_record(&name).await?,
                None => {
                    tracing::info!(
                        input_uri = self.input.uri(object.name.as_str()),
                        range = record.index,
                        from = expected,
                        why,
                        "re-scoring a range from where the one before it ended"
                    );
                    match self
                        .score_my_range(object, names, &repairer, span, &header, text)
                        .await?
                    {
                        Ok(fresh) => self.put_shard_record_at(&name, &fresh).await?,
                        Err(rejection) => return Ok(Err(rejection)),
                    }
                }
            };
            notes.push(format!(
                "range {} re-scored from byte {expected}: it {why}",
                record.index
            ));
            chain.push(repaired);
        }
        Ok(Ok((chain, notes)))
    }

    /// The input's header record and text format, read again from its start.
    async fn header_of(&self, object: &ObjectRef) -> Result<(Vec<u8>, score::input::Partial), JobError> {
        let (_, stream) = self
            .input
            .read(object.name.as_str(), Some(object.generation.get()))
            .await?;
        let head = head_of(stream, HEAD_LIMIT).await?;
        let text = match input::decode(io::Cursor::new(&head)) {
            Ok(input::Decoded::Text(_, text)) => text,
            _ => return Err(JobError::Internal("the input's start no longer decodes".into())),
        };
        let len =
            shard::header_len(&head).ok_or_else(|| JobError::Internal("the input's header no longer fits".into()))?;
        Ok((head[..len].to_vec(), text))
    }

    /// The same runner, noting in its manifests which ranges were repaired.
    fn with_repairs(&self, repaired: Vec<String>) -> JobRunner {
        let mut runner = self.scoring_whole("");
        runner.execution = self.execution.clone().map(|e| ExecutionInfo { repaired, ..e });
        runner
    }

    /// Why the ranges do not chain, if they do not.
    fn broken_link(&self, records: &[ShardRecord]) -> Option<String> {
        let model = self.model.version();
        if let Some(r) = records.iter().find(|r| r.model_version != model) {
            return Some(format!(
                "range {} was scored by model {}, not {model}",
                r.index, r.model_version
            ));
        }
        let first = records.first()?;
        if first.start != first.header_len {
            return Some(format!(
                "range 0 starts at byte {}, not after the header ({})",
                first.start, first.header_len
            ));
        }
        for pair in records.windows(2) {
            if pair[0].end != pair[1].start {
                return Some(format!(
                    "range {} ends at byte {} but range {} starts at byte {}: a quoted line break fooled a range boundary",
                    pair[0].index, pair[0].end, pair[1].index, pair[1].start
                ));
            }
        }
        let last = records.last()?;
        (last.end != last.size).then(|| {
            format!(
                "the last range ends at byte {}, not at the end ({})",
                last.end, last.size
            )
        })
    }

    /// Writes the global errors object and the manifest of a chain that holds.
    async fn commit_shards(
        &self,
        object: &ObjectRef,
        names: &OutputNames,
        records: Vec<ShardRecord>,
    ) -> Result<TaskOutcome, JobError> {
        let started_at = SystemTime::now();
        let mut rows = Rows::default();
        let mut evaluation = EvaluationBuilder::default();
        let mut labelled_rows = 0;
        for r in &records {
            rows.input += r.rows.input;
            rows.scored += r.rows.scored;
            rows.rejected += r.rows.rejected;
            rows.blank_lines += r.rows.blank_lines;
            labelled_rows += r.labelled_rows;
            evaluation.merge(&r.evaluation);
        }
        if rows.input == 0 {
            let failure = Failure::Rejected(FileRejection::HeaderOnly);
            return self.committed(self.report_failure(object, names, None, failure, started_at).await);
        }
        let errors = if records.iter().any(|r| r.rejects.is_some()) {
            Some(self.global_errors(names, &records).await?)
        } else {
            None
        };
        let first = &records[0];
        let totals = ShardTotals {
            format: first.format.clone(),
            columns: first.columns.clone(),
            output_columns: first.output_columns.clone(),
            rows,
            labelled_rows,
            metrics: evaluation.finish(),
        };
        let shards = records.iter().map(|r| r.predictions.clone()).collect();
        let facts = JobFacts {
            object,
            input_uri: self.input.uri(object.name.as_str()),
            size: Some(first.size),
            manifest_uri: self.output.uri(&names.manifest()),
            model: &self.model,
            started_at,
            score_ms: (records.iter().map(|r| r.seconds).fold(0.0, f64::max) * 1000.0) as u64,
            execution: self.execution.clone(),
        };
        let manifest = Manifest::sharded(facts, totals, shards, errors);
        self.committed(self.commit(names, manifest).await)
    }

    /// `errors.csv` from the ranges' rejects, in input order, with lines and
    /// rows counted from the start of the input; streamed, never held whole.
    async fn global_errors(&self, names: &OutputNames, records: &[ShardRecord]) -> Result<OutputObject, JobError> {
        let errors_name = names.errors(self.free_number(|n| names.errors(n)).await?);
        let mut sources = Vec::new();
        let (mut lines_before, mut rows_before) = (0u64, 0u64);
        for r in records {
            if let Some(rejects) = &r.rejects {
                let (_, stream) = self.output.read(&rejects.name, None).await?;
                sources.push((stream, lines_before, rows_before, rejects.name.clone()));
            }
            lines_before += r.newlines;
            rows_before += r.rows.input;
        }
        let (output, handle, cancel) = (self.output.clone(), Handle::current(), self.shutdown.child_token());
        let upload = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let csv = WriteOptions::create_only("text/csv");
            let mut sink = CsvRejects::new(|| {
                Ok(Upload::start(
                    &handle,
                    output.clone(),
                    errors_name.clone(),
                    csv,
                    cancel.clone(),
                ))
            });
            for (stream, lines_before, rows_before, name) in sources {
                let reader = BufReader::new(StreamReader::new(stream, handle.clone(), cancel.clone()));
                for line in reader.lines() {
                    let line = line.map_err(|e| JobError::Transient(format!("reading {name}: {e}")))?;
                    let mut row: RejectedRow = serde_json::from_str(&line)
                        .map_err(|e| JobError::Internal(format!("unreadable rejected row in {name}: {e}")))?;
                    row.line += lines_before;
                    row.row += rows_before;
                    sink.reject(&row).map_err(|e| JobError::Transient(e.to_string()))?;
                }
            }
            let upload = sink
                .finish()
                .map_err(|e| JobError::Transient(e.to_string()))?
                .ok_or_else(|| JobError::Internal("the ranges' rejects objects hold no row".into()))?;
            upload.finish().map_err(|e| JobError::Transient(e.to_string()))
        })
        .await
        .map_err(|e| JobError::Internal(format!("errors thread: {e}")))??;
        let stored = self.verify_upload(upload).await?;
        Ok(OutputObject::new(&stored, self.output.uri(&stored.name)))
    }
}

/// Rejected rows as JSON lines (a range's, before their lines are made
/// global); the writer is opened on the first row.
struct JsonLinesRejects<W: Write, F: FnMut() -> io::Result<W>> {
    open: F,
    writer: Option<io::BufWriter<W>>,
}

impl<W: Write, F: FnMut() -> io::Result<W>> JsonLinesRejects<W, F> {
    fn new(open: F) -> Self {
        JsonLinesRejects { open, writer: None }
    }

    fn finish(self) -> io::Result<Option<W>> {
        match self.writer {
            None => Ok(None),
            Some(w) => w.into_inner().map(Some).map_err(|e| e.into_error()),
        }
    }
}

impl<W: Write + Send, F: FnMut() -> io::Result<W> + Send> RejectSink for JsonLinesRejects<W, F> {
    fn reject(&mut self, row: &RejectedRow) -> io::Result<()> {
        if self.writer.is_none() {
            self.writer = Some(io::BufWriter::new((self.open)()?));
        }
        if let Some(w) = self.writer.as_mut() {
            serde_json::to_writer(&mut *w, row)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}
