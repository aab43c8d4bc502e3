//! The ranges of a large input, once all are recorded: checked to chain,
//! repaired where a quoted line break fooled a start, and committed with one
//! `errors.csv` whose lines and rows are global to the input.

use std::io::{self, BufRead, BufReader};
use std::time::SystemTime;

use tokio::runtime::Handle;

use super::{ShardRecord, Span, Task, TaskOutcome};
use crate::event::ObjectRef;
use crate::job::run::{Failure, HEAD_BYTES, head_of};
use crate::job::{JobError, JobRunner};
use crate::layout::OutputNames;
use crate::manifest::{ExecutionInfo, JobFacts, Manifest, OutputObject, Rows, ShardTotals};
use crate::model::EvaluationBuilder;
use crate::score::shard;
use crate::score::{self, CsvRejects, FileRejection, RejectSink, RejectedRow, input};
use crate::storage::WriteOptions;
use crate::storage::blocking::{StreamReader, Upload};

impl JobRunner {
    /// Commits the input if every range is recorded and they chain.
    pub(super) async fn commit_if_complete(
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
        let head = head_of(stream, HEAD_BYTES).await?;
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
        self.with_execution(self.execution.clone().map(|e| ExecutionInfo { repaired, ..e }))
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
            chosen_by: self.chosen_by.clone(),
        };
        // Drawn by whichever task commits; deterministic, so a racing
        // committer adopts the same pictures.
        let curves = match crate::job::curves::scoring_curves(&self.model, &evaluation, &facts.input_uri) {
            Some(curves) => self.put_curves(names, self.model.version(), &curves).await?,
            None => Vec::new(),
        };
        let mut manifest = Manifest::sharded(facts, totals, shards, errors);
        manifest.outputs.curves = curves;
        self.stamp_outputs(&mut manifest);
        self.committed(self.commit(names, manifest).await)
    }

    /// `errors.csv` from the ranges' rejects, in input order, with lines and
    /// rows counted from the start of the input; streamed, never held whole.
    ///
    /// Two tasks can find every range recorded at once and both merge. The
    /// merge is deterministic, so its name is too: a first pass counts the
    /// bytes and their CRC32C, an identical object already stored under any
    /// number is adopted, and only then is the first free number written (a
    /// racer writing that name at the same moment meets a create-only
    /// conflict with identical bytes, which `verify_upload` adopts). Taking
    /// the first free number blindly would leave the loser's copy, under the
    /// next number, beside the winner's manifest.
    async fn global_errors(&self, names: &OutputNames, records: &[ShardRecord]) -> Result<OutputObject, JobError> {
        let counted = self
            .merge_rejects(records, |_| Ok(Counted::default()))
            .await?
            .ok_or_else(|| JobError::Internal("the ranges' rejects objects hold no row".into()))?;
        // Numbers are taken in order and never freed: nothing identical
        // lies above the first free one. One read per number, so an object
        // finished between two reads of the same name cannot be skipped.
        let mut free = None;
        for n in 1..crate::job::commit::MAX_ATTEMPT_NUMBER {
            let name = names.errors(n);
            match self.output.checksum(&name).await? {
                None => {
                    free = Some(name);
                    break;
                }
                Some(there) if there.size == counted.size && there.crc32c == Some(counted.crc32c) => {
                    return Ok(OutputObject::new(&there, self.output.uri(&name)));
                }
                Some(_) => {}
            }
        }
        let errors_name = free.ok_or_else(|| {
            JobError::Internal(format!(
                "every numbered name of {} is taken by other content",
                names.errors(1)
            ))
        })?;
        let output = self.output.clone();
        let target = errors_name.clone();
        let written = async {
            let upload = self
                .merge_rejects(records, move |(handle, cancel)| {
                    Ok(Upload::start(
                        &handle,
                        output.clone(),
                        target.clone(),
                        WriteOptions::create_only("text/csv"),
                        cancel,
                    ))
                })
                .await?
                .ok_or_else(|| JobError::Internal("the ranges' rejects objects hold no row".into()))?;
            let upload = tokio::task::spawn_blocking(move || upload.finish())
                .await
                .map_err(|e| JobError::Internal(format!("errors thread: {e}")))?
                .map_err(|e| JobError::Transient(e.to_string()))?;
            self.verify_upload(upload).await
        }
        .await;
        let stored = match written {
            Ok(stored) => stored,
            // A store may stop reading the body as soon as a create-only
            // precondition fails, and the writer then sees only that the
            // upload stopped: the racer's identical object is still the
            // answer.
            Err(e) => match self.identical(&errors_name, counted.size, counted.crc32c).await? {
                Some(there) => there,
                None => return Err(e),
            },
        };
        Ok(OutputObject::new(&stored, self.output.uri(&errors_name)))
    }

    /// The ranges' rejects, renumbered from the start of the input, written
    /// as CSV to what `open` opens (once, at the first row); `None` when
    /// no range rejected a row.
    async fn merge_rejects<W, F>(&self, records: &[ShardRecord], open: F) -> Result<Option<W>, JobError>
    where
        W: io::Write + Send + 'static,
        F: Fn((Handle, tokio_util::sync::CancellationToken)) -> io::Result<W> + Send + Sync + 'static,
    {
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
        let (handle, cancel) = (Handle::current(), self.shutdown.child_token());
        tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let mut sink = CsvRejects::new(|| open((handle.clone(), cancel.clone())));
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
            sink.finish().map_err(|e| JobError::Transient(e.to_string()))
        })
        .await
        .map_err(|e| JobError::Internal(format!("errors thread: {e}")))?
    }
}

/// The size and CRC32C of what is written to it, and nothing else.
#[derive(Default)]
struct Counted {
    size: u64,
    crc32c: u32,
}

impl io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc32c = crc32c::crc32c_append(self.crc32c, buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
