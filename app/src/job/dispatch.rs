//! The push side of a large input: instead of scoring it inside the push
//! request, start a job execution that scores it in parallel tasks, exactly
//! once per input generation.
//!
//! Under the input's lease (so two deliveries never both start one):
//!
//! 1. a dispatch record `dispatch-N.json` is written create-only: an
//!    execution is being asked for;
//! 2. the dispatcher starts the execution;
//! 3. `dispatch-N.started.json` records its name, create-only.
//!
//! A redelivery that finds a started dispatch answers `dispatched` and
//! starts nothing, for as long as that execution may still be running (the
//! dispatcher knows, or `DISPATCH_STALE_SECONDS` have not passed since it
//! started). A dispatch that never started (a crash between 1 and 3, a
//! refused request) is started by the next delivery; one whose execution
//! ended without a manifest (its tasks killed beyond their retries) is
//! dispatched again as `N+1`, at most [`MAX_DISPATCHES`] times, then the input
//! gets a failure report. `reconcile --publish` is what redelivers such
//! inputs.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::run::Failure;
use super::{JobError, JobRunner, Outcome};
use crate::dispatch::{Dispatch, DispatchError, Dispatcher};
use crate::event::ObjectRef;
use crate::layout::OutputNames;
use crate::score::input;
use crate::score::shard::splittable;
use crate::storage::{ObjectMeta, ObjectStore, StorageError, read_all};

/// Executions started for one input before it gets a failure report (also
/// in `terraform/cloud_run_job.tf`'s check of the `_shards/` lifecycle).
pub const MAX_DISPATCHES: u32 = 3;

/// How large inputs are dispatched.
#[derive(Clone)]
pub struct Sharding {
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Bytes per task: the task count is the input's size over this.
    pub shard_bytes: u64,
    /// Most tasks in one execution (Cloud Run allows 10,000).
    pub max_tasks: u32,
    /// A started execution not known to be over is presumed running this
    /// long (at least the job's task timeout times its attempts).
    pub stale_after: Duration,
    /// Executions started for one input before it gets a failure report.
    pub max_dispatches: u32,
}

/// A dispatched input, as the push answer and the summary log tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub execution: String,
    pub tasks: u32,
    /// Started by this delivery (not found started by an earlier one).
    pub now: bool,
}

/// `dispatch-N.json`: an execution is being asked for.
#[derive(Debug, Serialize, Deserialize)]
struct DispatchRecord {
    input_uri: String,
    generation: String,
    size: u64,
    tasks: u32,
    /// The model every execution of this input scores with (absent from
    /// records written before the registry: the service's model then).
    #[serde(default)]
    model_name: String,
    model_version: String,
    /// How the first dispatch chose that model (absent from records
    /// written before routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chosen_by: Option<crate::manifest::ChosenBy>,
    requested_at: String,
    instance: String,
}

/// `dispatch-N.started.json`: it was started.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartedRecord {
    pub execution: String,
    pub tasks: u32,
    pub started_at: String,
    pub dispatcher: String,
}

const RECORD_LIMIT: usize = 1 << 20;

impl StartedRecord {
    /// Started longer than `stale_after` ago (or at a time that cannot be
    /// read): its execution may no longer be running. The one rule the push
    /// side and `reconcile` share.
    pub fn is_stale(&self, stale_after: Duration) -> bool {
        humantime::parse_rfc3339_weak(&self.started_at)
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age >= stale_after)
    }
}

impl Sharding {
    /// Tasks for an input of `size` bytes whose first bytes are `head`: one
    /// per `shard_bytes`, within `max_tasks`; one when the input cannot be
    /// cut into byte ranges (gzip, UTF-16, not text).
    pub fn tasks_for(&self, size: u64, head: &[u8]) -> u32 {
        let text = match input::decode(Cursor::new(head)) {
            Ok(input::Decoded::Text(_, text)) => text,
            _ => return 1,
        };
        if !splittable(&text) {
            return 1;
        }
        let tasks = size.div_ceil(self.shard_bytes.max(1));
        u32::try_from(tasks).unwrap_or(u32::MAX).clamp(1, self.max_tasks.max(1))
    }
}

impl JobRunner {
    /// Starts (or finds started) the execution that scores `object`, which
    /// is too large to score here. The caller holds the input's lease.
    pub(super) async fn dispatch(
        &self,
        sharding: &Sharding,
        object: &ObjectRef,
        names: &OutputNames,
        meta: &ObjectMeta,
        head: &[u8],
        started_at: SystemTime,
    ) -> Result<Outcome, JobError> {
        let (latest, started) = latest_dispatch(self.output.as_ref(), names).await?;
        let seq = match (latest, started) {
            (Some(seq), Some(started)) => {
                let live = match sharding.dispatcher.running(&started.execution).await {
                    Some(running) => running,
                    None => !started.is_stale(sharding.stale_after),
                };
                if live {
                    return Ok(Outcome::Dispatched(Dispatched {
                        execution: started.execution,
                        tasks: started.tasks,
                        now: false,
                    }));
                }
                if seq >= sharding.max_dispatches {
                    let failure = Failure::Unfinished {
                        executions: seq,
                        last: started.execution,
                    };
                    return self
                        .report_failure(object, names, Some(meta), failure, started_at)
                        .await;
                }
                tracing::warn!(
                    input_uri = self.input.uri(object.name.as_str()),
                    execution = started.execution,
                    started_at = started.started_at,
                    "the input's execution ended without committing it; dispatching again"
                );
                seq + 1
            }
            // Asked for but never started: start it now.
            (Some(seq), None) => seq,
            (None, _) => 1,
        };
        let tasks = sharding.tasks_for(meta.size, head);
        // One input, one model version: a later execution (the first one
        // died) scores with the version the first was dispatched for, even
        // if the alias that chose it has moved since.
        let (model_name, model_version, chosen_by) = match self
            .read_json::<DispatchRecord>(&names.dispatch(1), RECORD_LIMIT)
            .await?
        {
            Some(first) if !first.model_name.is_empty() => (first.model_name, first.model_version, first.chosen_by),
            _ => (
                self.model.name().to_owned(),
                self.model.version().to_owned(),
                self.chosen_by.clone(),
            ),
        };
        let record = DispatchRecord {
            input_uri: self.input.uri(object.name.as_str()),
            generation: object.generation.to_string(),
            size: meta.size,
            tasks,
            model_name: model_name.clone(),
            model_version: model_version.clone(),
            chosen_by: chosen_by.clone(),
            requested_at: now_rfc3339(),
            instance: self.instance.clone(),
        };
        self.put_record(&names.dispatch(seq), &record).await?;
        let dispatch = Dispatch {
            bucket: object.bucket.as_str().to_owned(),
            name: object.name.as_str().to_owned(),
            generation: object.generation.get(),
            tasks,
            model_name,
            model_version,
            chosen_by,
        };
        let execution = sharding.dispatcher.start(&dispatch).await.map_err(|e| match e {
            DispatchError::Transient(m) => JobError::Transient(format!("starting the job failed: {m}")),
            // A job that does not exist or may not be run: the deployment
            // needs fixing; the push is refused until then (and redriven).
            DispatchError::Permanent(m) => JobError::Internal(format!("starting the job failed: {m}")),
        })?;
        let started = StartedRecord {
            execution: execution.clone(),
            tasks,
            started_at: now_rfc3339(),
            dispatcher: sharding.dispatcher.describe(),
        };
        self.put_record(&names.dispatch_started(seq), &started).await?;
        tracing::info!(
            input_uri = self.input.uri(object.name.as_str()),
            generation = object.generation.get(),
            size = meta.size,
            tasks,
            execution,
            dispatch = seq,
            "input dispatched to a job execution"
        );
        Ok(Outcome::Dispatched(Dispatched {
            execution,
            tasks,
            now: true,
        }))
    }
}

/// The newest dispatch of an input (its number) and, if it was started,
/// what started: read by the push side before dispatching, and by
/// `reconcile` to tell a running execution from lost work.
pub async fn latest_dispatch(
    output: &dyn ObjectStore,
    names: &OutputNames,
) -> Result<(Option<u32>, Option<StartedRecord>), StorageError> {
    let prefix = names.dispatch_prefix();
    let latest = output
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| o.name.strip_prefix(&prefix)?.get(..6)?.parse::<u32>().ok())
        .max();
    let Some(seq) = latest else { return Ok((None, None)) };
    let started = match read_all(output, &names.dispatch_started(seq), RECORD_LIMIT).await {
        Ok((_, bytes)) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::Permanent(format!(
                "unreadable dispatch record {}: {e}",
                names.dispatch_started(seq)
            ))
        })?),
        Err(StorageError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    Ok((Some(seq), started))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    struct Never;

    #[async_trait]
    impl Dispatcher for Never {
        async fn start(&self, _: &Dispatch) -> Result<String, DispatchError> {
            Err(DispatchError::Permanent("not in this test".into()))
        }
        fn describe(&self) -> String {
            "none".into()
        }
    }

    fn sharding() -> Sharding {
        Sharding {
            dispatcher: Arc::new(Never),
            shard_bytes: 100,
            max_tasks: 8,
            stale_after: Duration::from_secs(60),
            max_dispatches: 3,
        }
    }

    #[test]
    fn tasks_follow_the_size_within_the_cap_and_only_for_splittable_text() {
        let s = sharding();
        assert_eq!(s.tasks_for(1, b"a,b\n"), 1);
        assert_eq!(s.tasks_for(100, b"a,b\n"), 1);
        assert_eq!(s.tasks_for(101, b"a,b\n"), 2);
        assert_eq!(s.tasks_for(10_000, b"a,b\n"), 8);
        // Windows-1252 text can be cut; gzip and UTF-16 cannot.
        assert_eq!(s.tasks_for(1_000, b"A\xd1O,b\n"), 8);
        assert_eq!(s.tasks_for(1_000, &[0x1f, 0x8b, 8, 0]), 1);
        assert_eq!(s.tasks_for(1_000, b"\xff\xfea\x00,\x00b\x00"), 1);
    }
}
