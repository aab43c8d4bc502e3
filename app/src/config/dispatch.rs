//! How the push service hands inputs over `INLINE_MAX_BYTES` to a job
//! execution (`SHARD_JOB` and the settings that size it): the settings of
//! the dispatching side; `shard` holds those of the tasks themselves.

use std::time::Duration;

use super::{ConfigError, ServeArgs, err};

/// How inputs over `INLINE_MAX_BYTES` are scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardingSettings {
    pub target: ShardTarget,
    pub shard_bytes: u64,
    pub max_tasks: u32,
    pub max_retries: u32,
    pub stale_after: Duration,
}

/// What runs the tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardTarget {
    /// A Cloud Run job, `projects/P/locations/L/jobs/J`; `endpoint` replaces
    /// the Admin API's (tests).
    CloudRun { job: String, endpoint: Option<String> },
    /// `scorer shard` processes on this machine, this many at once.
    Local { parallelism: usize },
}

impl ShardingSettings {
    pub(super) fn from_args(args: &ServeArgs) -> Result<Option<ShardingSettings>, ConfigError> {
        let job = args.shard_job.as_deref().map(str::trim).filter(|j| !j.is_empty());
        let target = match job {
            None if args.local.is_none() => return Ok(None),
            Some("local") if args.k_service.as_deref().is_some_and(|s| !s.is_empty()) => {
                // A Cloud Run instance may be stopped at any moment between
                // requests and its CPU is throttled outside them: tasks
                // started as its child processes would die with it.
                return Err(err(
                    "SHARD_JOB",
                    "`local` runs tasks as processes of this instance, which Cloud Run stops at will: give the Cloud Run job's name, projects/PROJECT/locations/REGION/jobs/JOB",
                ));
            }
            None | Some("local") => ShardTarget::Local {
                parallelism: args
                    .shard_parallelism
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                    .max(1),
            },
            Some(job) => {
                let parts: Vec<&str> = job.split('/').collect();
                let well_formed = parts.len() == 6
                    && parts[0] == "projects"
                    && parts[2] == "locations"
                    && parts[4] == "jobs"
                    && [1, 3, 5].iter().all(|&i| !parts[i].is_empty());
                if !well_formed {
                    return Err(err(
                        "SHARD_JOB",
                        format!("{job:?} is not `local` nor a job name projects/PROJECT/locations/REGION/jobs/JOB"),
                    ));
                }
                ShardTarget::CloudRun {
                    job: job.to_owned(),
                    endpoint: args.run_api_endpoint.clone().filter(|e| !e.is_empty()),
                }
            }
        };
        if args.shard_bytes == 0 {
            return Err(err("SHARD_BYTES", "must be at least 1"));
        }
        if !(1..=10_000).contains(&args.max_tasks) {
            return Err(err("MAX_TASKS", "must be between 1 and 10000 (Cloud Run's limit)"));
        }
        Ok(Some(ShardingSettings {
            target,
            shard_bytes: args.shard_bytes,
            max_tasks: args.max_tasks,
            max_retries: args.shard_max_retries,
            stale_after: Duration::from_secs(args.dispatch_stale_seconds.max(1)),
        }))
    }
}
