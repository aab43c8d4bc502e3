//! One range of a large input: scored through a ranged read into its
//! predictions shard and a JSON-lines rejects object, then recorded
//! create-only.

use std::io::{self, Write};
use std::time::{Instant, SystemTime};

use tokio::runtime::Handle;

use super::{RECORD_LIMIT, ShardRecord, Span, Task};
use crate::event::ObjectRef;
use crate::job::{JobError, JobRunner};
use crate::layout::OutputNames;
use crate::manifest::{InputFormatInfo, OutputObject, Rows};
use crate::score::shard::{self, RangeReader};
use crate::score::{self, FileRejection, RejectSink, RejectedRow, ScoreError, input};
use crate::storage::blocking::{StreamReader, Upload};
use crate::storage::{StorageError, WriteOptions, read_all};

impl JobRunner {
    /// Scores task's range into its predictions shard and rejects object;
    /// the record of what it did, or why the whole file cannot be scored.
    pub(super) async fn score_my_range(
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
            // Only the first range knows how many rows precede its own.
            let options = self.options_for(object, SystemTime::now(), task.index == 0);
            let (model, output) = (self.model.clone(), self.output.clone());
            let header = header.to_vec();
            let handle = Handle::current();
            let cancel = self.shutdown.child_token();
            tokio::task::spawn_blocking(move || {
                let jsonl = WriteOptions::create_only("application/x-ndjson");
                let kind = WriteOptions::create_only(options.output.format.content_type());
                let mut predictions = Upload::start(&handle, output.clone(), predictions_name, kind, cancel.clone());
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

    pub(super) async fn put_shard_record(&self, names: &OutputNames, record: &ShardRecord) -> Result<(), JobError> {
        self.put_shard_record_at(&names.shard_record(record.index, record.count), record)
            .await
            .map(drop)
    }

    /// Writes `record` create-only at `name`; the record that stands there
    /// (another attempt's, if it recorded the range first: its objects
    /// stand, and ours are left unlisted).
    pub(super) async fn put_shard_record_at(&self, name: &str, record: &ShardRecord) -> Result<ShardRecord, JobError> {
        match self.put_record(name, record).await? {
            true => Ok(record.clone()),
            false => self.read_record(name).await,
        }
    }

    pub(super) async fn read_record(&self, name: &str) -> Result<ShardRecord, JobError> {
        let (_, bytes) = read_all(self.output.as_ref(), name, RECORD_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| JobError::Internal(format!("unreadable shard record {name}: {e}")))
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
