//! `scorer shard`: one task of a job execution scoring a large input (the
//! Cloud Run job's command; `serve`'s local pool runs it the same way).
//!
//! Exit status 0 when the task's work is done (its range recorded, the
//! input committed, or nothing left for it); 1 when it failed and should be
//! retried, or failed on its last attempt after writing the input's failure
//! report.

use std::sync::Arc;

use super::failed::{Exit, Failed};
use scorer::config::shard::{ShardArgs, ShardSettings};
use scorer::job::JobRunner;
use scorer::job::shard::TaskOutcome;
use scorer::manifest::Status;
use scorer::model::Model;
use scorer::score::ScoreOptions;
use scorer::startup::load_model;
use scorer::storage::{self, Missing, ObjectStore};
use scorer::telemetry::{self, LogFormat, Metrics};

pub async fn shard(args: ShardArgs) -> Result<Exit, Failed> {
    telemetry::init(
        args.log_format
            .unwrap_or_else(|| LogFormat::detect(args.cloud_run_job.is_some())),
        "info",
    );
    super::serve::log_panics();
    let settings = ShardSettings::from_args(&args).map_err(|e| Failed::new(Exit::Usage, e))?;
    let task = settings.task.clone();
    let object = settings.object.clone();
    let open = |bucket: String| {
        let settings = &settings;
        async move {
            let store = storage::open(&settings.backend, &bucket, Missing::Refuse).await?;
            Ok::<Arc<dyn ObjectStore>, storage::StorageError>(match &settings.test_faults {
                Some(plan) => storage::faults::FaultyStore::wrap(store, plan.clone()),
                None => store,
            })
        }
    };
    // Without the output bucket there is nowhere to report anything: a
    // misconfigured job fails here, visibly, on every attempt.
    let input = open(object.bucket.to_string()).await?;
    let output = open(settings.output_bucket.to_string()).await?;
    // Cloud Run stops a task with SIGTERM (its timeout, a cancelled
    // execution) and kills it 10 s later: the task abandons its uploads and,
    // on its last attempt, still writes the input's report in that time.
    let stop = scorer::shutdown::on_signal();
    let (execution, index, count, attempt) = (task.execution.as_str(), task.index, task.count, task.attempt);
    let input_uri = input.uri(object.name.as_str());
    let generation = object.generation.get();
    let options = ScoreOptions {
        chunk_bytes: settings.chunk_bytes,
        ..ScoreOptions::default()
    };
    let follow_ups = Arc::new(
        scorer::startup::follow_ups(&settings.outputs, settings.retry_budget())
            .await
            .map_err(|e| Failed::new(Exit::Failure, e))?,
    );
    let runner = |model: Model| {
        let mut runner = JobRunner::for_task(
            input.clone(),
            output.clone(),
            Arc::new(model),
            options.clone(),
            settings.lease_ttl,
            &task,
            Arc::new(Metrics::default()),
            stop.clone(),
        );
        runner.outputs = settings.outputs.clone();
        runner.follow_ups = follow_ups.clone();
        runner
    };
    let (runner, result) = match task_model(&settings, output.clone()).await {
        Ok(model) => {
            let mut runner = runner(model);
            runner.chosen_by = settings.chosen_by.clone();
            let result = runner.run_task(&object, &task).await.map_err(|e| e.to_string());
            (runner, result)
        }
        // Reported by a runner holding the built-in model (what it names in
        // the report); the reason says which model could not be used.
        Err(e) => (
            runner(Model::default_model().map_err(|m| Failed::new(Exit::Failure, m))?),
            Err(e),
        ),
    };
    let result = result.map_err(|e| match stop.is_cancelled() {
        true => format!("stopped by a signal (the task's timeout, or the execution was cancelled): {e}"),
        false => e,
    });
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) if task.is_last_attempt() => {
            tracing::error!(input_uri, generation, execution, task = index, attempt, error = %e, "task failed on its last attempt; reporting the input as failed");
            match runner.fail_task(&object, &task, &e).await {
                Ok(outcome) => log(&input_uri, generation, execution, index, count, attempt, &outcome),
                Err(report) => {
                    tracing::error!(input_uri, generation, error = %report, "the failure report could not be written");
                }
            }
            return Err(Failed::new(
                Exit::Failure,
                anyhow::anyhow!("task {index} of {count}: {e}"),
            ));
        }
        Err(e) => {
            tracing::warn!(input_uri, generation, execution, task = index, attempt, error = %e, "task failed; it will be retried");
            return Err(Failed::new(
                Exit::Failure,
                anyhow::anyhow!("task {index} of {count}: {e}"),
            ));
        }
    };
    log(&input_uri, generation, execution, index, count, attempt, &outcome);
    Ok(Exit::Ok)
}

/// The model the task scores with: the job's, which must be the one the
/// input was dispatched for (every range of one input is scored by one
/// model).
async fn task_model(settings: &ShardSettings, output: std::sync::Arc<dyn ObjectStore>) -> Result<Model, String> {
    if let (Some(name), Some(version)) = (&settings.model_name, &settings.model_version) {
        return scorer::registry::Registry::new(output)
            .load(name, version)
            .await
            .map_err(|e| format!("the dispatched model {name} {version} cannot be loaded from the registry: {e}"));
    }
    let (model, _) = load_model(&settings.model, &settings.backend)
        .await
        .map_err(|e| format!("the job's model cannot be loaded: {e}"))?;
    match &settings.model_version {
        Some(expected) if expected != model.version() => Err(format!(
            "the task's model is {} but the input was dispatched for {expected}: give the job the service's MODEL_URI",
            model.version()
        )),
        _ => Ok(model),
    }
}

/// The task's one summary entry; the task that commits also writes the
/// input's job summary.
fn log(input_uri: &str, generation: i64, execution: &str, index: u32, count: u32, attempt: u32, outcome: &TaskOutcome) {
    match outcome {
        TaskOutcome::Committed(m) if m.status == Status::Scored => tracing::info!(
            outcome = "scored",
            input_uri,
            generation,
            execution,
            tasks = count,
            fallback = m.execution.as_ref().and_then(|e| e.fallback.clone()),
            rows_in = m.rows.input,
            rows_scored = m.rows.scored,
            rows_rejected = m.rows.rejected,
            model_version = m.model.version,
            manifest = m.uri(),
            peak_rss_mib = peak_rss_mib(),
            "job summary"
        ),
        TaskOutcome::Committed(m) => tracing::warn!(
            outcome = "failed",
            input_uri,
            generation,
            execution,
            tasks = count,
            failure = m.failure,
            manifest = m.uri(),
            peak_rss_mib = peak_rss_mib(),
            "job summary"
        ),
        TaskOutcome::Duplicate(m) => tracing::info!(
            outcome = "duplicate",
            input_uri,
            generation,
            execution,
            task = index,
            attempt,
            manifest = m.uri(),
            peak_rss_mib = peak_rss_mib(),
            "task summary"
        ),
        TaskOutcome::RangeDone { rows } => tracing::info!(
            outcome = "range_scored",
            rows = *rows,
            input_uri,
            generation,
            execution,
            task = index,
            attempt,
            peak_rss_mib = peak_rss_mib(),
            "task summary"
        ),
        TaskOutcome::Idle => tracing::info!(
            outcome = "idle",
            input_uri,
            generation,
            execution,
            task = index,
            peak_rss_mib = peak_rss_mib(),
            "task summary"
        ),
    }
}

/// This process's peak resident memory in MiB, for sizing the job's tasks
/// (`memory` in Terraform): what the summary entries report.
fn peak_rss_mib() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage only writes the struct it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    // SAFETY: initialised by the successful call above.
    ok.then(|| u64::try_from(unsafe { usage.assume_init() }.ru_maxrss).unwrap_or(0) / 1024)
}
