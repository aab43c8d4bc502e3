//! Configuration of `scorer shard`, one task of a job execution: the input
//! and the task come from the environment Cloud Run (or the local pool)
//! sets, the rest as for the service.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, ModelSource, err};
use crate::dispatch::{INPUT_GENERATION, INPUT_URI, MODEL_CHOSEN_BY, MODEL_NAME, MODEL_VERSION, TASK_ENV, Task};
use crate::event::{BucketName, Generation, ObjectName, ObjectRef};
use crate::storage::{Backend, Location};

/// `scorer shard`: normally all from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct ShardArgs {
    /// Buckets are directories under DIR (the local pool of `serve
    /// --local`).
    #[arg(long, env = "SCORER_LOCAL_DIR", value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// The input, gs://BUCKET/NAME.
    #[arg(long, env = INPUT_URI, value_name = "URI")]
    pub input_uri: String,
    /// The input's generation.
    #[arg(long, env = INPUT_GENERATION)]
    pub input_generation: String,
    /// Bucket of the outputs.
    #[arg(long, env = "OUTPUT_BUCKET")]
    pub output_bucket: String,
    /// Model artifact (gs:// or a path); the built-in model when unset.
    #[arg(long = "model", env = "MODEL_URI", value_name = "URI")]
    pub model_uri: Option<String>,
    /// The model version the dispatching service runs: a task whose model
    /// differs refuses to score (one input, one model).
    #[arg(long, env = MODEL_VERSION)]
    pub model_version: Option<String>,
    /// The model's name: with MODEL_VERSION, the task reads that exact
    /// version from the registry in the output bucket (what the service
    /// dispatches), and MODEL_URI is not used.
    #[arg(long, env = MODEL_NAME)]
    pub model_name: Option<String>,
    /// Set by the dispatching service: how it chose the model (JSON), named
    /// in the manifest the tasks commit.
    #[arg(long, env = MODEL_CHOSEN_BY, hide = true)]
    pub model_chosen_by: Option<String>,
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT")]
    pub storage_emulator_host: Option<String>,
    #[arg(long, env = TASK_ENV.index, default_value_t = 0)]
    pub task_index: u32,
    #[arg(long, env = TASK_ENV.count, default_value_t = 1)]
    pub task_count: u32,
    #[arg(long, env = TASK_ENV.attempt, default_value_t = 0)]
    pub task_attempt: u32,
    #[arg(long, env = TASK_ENV.execution, default_value = "manual")]
    pub execution: String,
    /// The job's retries per task: the last attempt reports a failure.
    #[arg(long, env = "SHARD_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    #[arg(long, env = "LEASE_TTL_SECONDS", default_value_t = 120)]
    pub lease_ttl_seconds: u64,
    #[arg(long, env = "CHUNK_MIB", default_value_t = 8)]
    pub chunk_mib: usize,
    #[command(flatten)]
    pub outputs: super::OutputArgs,
    #[arg(long, env = "STORAGE_RETRY_SECONDS", default_value_t = 60)]
    pub storage_retry_seconds: u64,
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::telemetry::LogFormat>,
    /// Set by Cloud Run in a job's tasks.
    #[arg(long, env = "CLOUD_RUN_JOB", hide = true)]
    pub cloud_run_job: Option<String>,
    /// Test-only: `INDEX:ATTEMPT:STAGE:ACTION[;...]` injects a storage
    /// fault (as SCORER_TEST_FAULTS) into that attempt of that task.
    #[arg(long, env = "SCORER_TEST_TASK_FAULTS", hide = true)]
    pub test_faults: Option<String>,
}

/// A task's validated settings.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub backend: Backend,
    pub object: ObjectRef,
    pub output_bucket: BucketName,
    pub model: ModelSource,
    pub model_version: Option<String>,
    pub model_name: Option<String>,
    /// How the dispatching service chose the model.
    pub chosen_by: Option<crate::manifest::ChosenBy>,
    pub task: Task,
    pub lease_ttl: Duration,
    pub chunk_bytes: usize,
    pub outputs: super::OutputSettings,
    pub on_cloud_run: bool,
    pub test_faults: Option<crate::storage::faults::FaultPlan>,
}

impl ShardSettings {
    /// How long one storage (or Pub/Sub) call keeps retrying.
    pub fn retry_budget(&self) -> Duration {
        match &self.backend {
            Backend::Gcs { options, .. } => options.retry_budget,
            Backend::Local { .. } => Duration::from_secs(60),
        }
    }

    pub fn from_args(args: &ShardArgs) -> Result<ShardSettings, ConfigError> {
        let (bucket, name) = match Location::parse(&args.input_uri) {
            Ok(Location::Gcs { bucket, name }) => (bucket, name),
            _ => {
                return Err(err(
                    "INPUT_URI",
                    format!("{:?} is not gs://BUCKET/NAME", args.input_uri),
                ));
            }
        };
        let object = ObjectRef {
            bucket: BucketName::parse(&bucket).map_err(|m| err("INPUT_URI", m))?,
            name: ObjectName::parse(&name).map_err(|m| err("INPUT_URI", m))?,
            generation: Generation::parse(&args.input_generation).map_err(|m| err("INPUT_GENERATION", m))?,
        };
        let output_bucket = BucketName::parse(args.output_bucket.trim_start_matches("gs://").trim_end_matches('/'))
            .map_err(|m| err("OUTPUT_BUCKET", m))?;
        if args.task_count == 0 || args.task_index >= args.task_count {
            return Err(err(
                "CLOUD_RUN_TASK_INDEX",
                format!("task {} of {} does not exist", args.task_index, args.task_count),
            ));
        }
        let backend = match &args.local {
            Some(dir) => Backend::Local { dir: dir.clone() },
            None => Backend::Gcs {
                emulator: args
                    .storage_emulator_host
                    .as_deref()
                    .map(crate::storage::emulator_url)
                    .transpose()
                    .map_err(|m| err("STORAGE_EMULATOR_HOST", m))?,
                options: crate::storage::gcs::GcsOptions {
                    retry_budget: Duration::from_secs(args.storage_retry_seconds.max(1)),
                    ..Default::default()
                },
            },
        };
        let model = match args.model_uri.as_deref().filter(|u| !u.is_empty()) {
            Some(uri) => ModelSource::Load(Location::parse(uri).map_err(|m| err("MODEL_URI", m))?),
            None => ModelSource::Builtin,
        };
        // Only a label for the manifest: one that cannot be read is said
        // and left out, never a reason for a task (and its input) to fail.
        let chosen_by = match args.model_chosen_by.as_deref().filter(|j| !j.is_empty()) {
            Some(json) => match serde_json::from_str(json) {
                Ok(chosen_by) => Some(chosen_by),
                Err(e) => {
                    tracing::warn!(setting = MODEL_CHOSEN_BY, error = %e, "not what the service dispatches; the manifest will not say how the model was chosen");
                    None
                }
            },
            None => None,
        };
        let on_cloud_run = args.cloud_run_job.as_deref().is_some_and(|j| !j.is_empty());
        let test_faults = match &args.test_faults {
            Some(_) if on_cloud_run => {
                return Err(err(
                    "SCORER_TEST_TASK_FAULTS",
                    "is a test-only setting and is refused on Cloud Run",
                ));
            }
            Some(spec) => task_faults(spec, args.task_index, args.task_attempt)?,
            None => None,
        };
        Ok(ShardSettings {
            backend,
            object,
            output_bucket,
            model,
            model_version: args.model_version.clone().filter(|v| !v.is_empty()),
            model_name: args.model_name.clone().filter(|v| !v.is_empty()),
            chosen_by,
            task: Task {
                index: args.task_index,
                count: args.task_count,
                attempt: args.task_attempt,
                max_retries: args.max_retries,
                execution: args.execution.clone(),
            },
            lease_ttl: Duration::from_secs(args.lease_ttl_seconds.max(3)),
            chunk_bytes: args.chunk_mib.clamp(1, 1024) << 20,
            outputs: super::OutputSettings::from_args(&args.outputs)?,
            on_cloud_run,
            test_faults,
        })
    }
}

/// The faults of `spec` meant for this task's attempt.
fn task_faults(spec: &str, index: u32, attempt: u32) -> Result<Option<crate::storage::faults::FaultPlan>, ConfigError> {
    let mine: Vec<&str> = spec
        .split(';')
        .filter_map(|item| {
            let mut parts = item.trim().splitn(3, ':');
            let (i, a, rest) = (parts.next()?, parts.next()?, parts.next()?);
            (i.parse() == Ok(index) && a.parse() == Ok(attempt)).then_some(rest)
        })
        .collect();
    if mine.is_empty() {
        return Ok(None);
    }
    crate::storage::faults::FaultPlan::parse(&mine.join(","))
        .map(Some)
        .map_err(|m| err("SCORER_TEST_TASK_FAULTS", m))
}
