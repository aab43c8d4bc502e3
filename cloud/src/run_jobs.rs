//! Starting executions of a Cloud Run job (`RunJob` of the Cloud Run Admin
//! API v2), with overrides for one execution (environment variables, the
//! task count, the task timeout), and reading an execution's state
//! (`GetExecution`).
//!
//! The call returns as soon as Cloud Run accepted the execution (a
//! long-running operation whose metadata is the execution); it never waits
//! for the tasks, which run for as long as they need, independently of the
//! request that started them.

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_run_v2::client::{Executions, Jobs};
use google_cloud_run_v2::model::run_job_request::{Overrides, overrides::ContainerOverride};
use google_cloud_run_v2::model::{EnvVar, Execution};

use crate::CloudError;

/// One Cloud Run job, ready to start executions of.
#[derive(Clone, Debug)]
pub struct CloudRunJob {
    client: Jobs,
    executions: Executions,
    /// `projects/P/locations/L/jobs/J`.
    name: String,
}

/// What one execution should do differently from the job's template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionOverrides {
    /// Added to (or replacing) the container's environment.
    pub env: Vec<(String, String)>,
    pub task_count: u32,
    /// Each task's time limit; the job's own when `None`.
    pub task_timeout: Option<Duration>,
}

impl CloudRunJob {
    /// A client for job `name` (`projects/P/locations/L/jobs/J`); with
    /// `endpoint`, talking to that address anonymously instead of Google.
    pub async fn new(name: &str, endpoint: Option<&str>) -> Result<CloudRunJob, CloudError> {
        let mut builder = Jobs::builder();
        let mut executions = Executions::builder();
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
            executions = executions
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        let client = builder
            .build()
            .await
            .map_err(|e| CloudError::Permanent(format!("Cloud Run client: {e}")))?;
        let executions = executions
            .build()
            .await
            .map_err(|e| CloudError::Permanent(format!("Cloud Run client: {e}")))?;
        Ok(CloudRunJob {
            client,
            executions,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts one execution; returns its name
    /// (`projects/P/locations/L/jobs/J/executions/E`), or the operation's
    /// when Cloud Run did not say.
    pub async fn run(&self, overrides: &ExecutionOverrides) -> Result<String, CloudError> {
        let task_count = i32::try_from(overrides.task_count)
            .map_err(|_| CloudError::Permanent(format!("{} tasks is too many", overrides.task_count)))?;
        let mut request = Overrides::new()
            .set_container_overrides([ContainerOverride::new().set_env(
                overrides
                    .env
                    .iter()
                    .map(|(name, value)| EnvVar::new().set_name(name).set_value(value)),
            )])
            .set_task_count(task_count);
        if let Some(timeout) = overrides.task_timeout {
            let timeout = google_cloud_wkt::Duration::try_from(timeout)
                .map_err(|e| CloudError::Permanent(format!("task timeout {timeout:?}: {e}")))?;
            request = request.set_timeout(timeout);
        }
        let what = format!("starting an execution of {}", self.name);
        let operation = self
            .client
            .run_job()
            .set_name(&self.name)
            .set_overrides(request)
            .send()
            .await
            .map_err(|e| CloudError::classify(&what, &e))?;
        let execution = operation
            .metadata
            .as_ref()
            .and_then(|any| any.to_msg::<Execution>().ok())
            .map(|execution| execution.name)
            .filter(|name| !name.is_empty());
        Ok(execution.unwrap_or(operation.name))
    }
}

/// Where an execution stands, as Cloud Run reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionState {
    /// Cloud Run set its completion time: no task of it runs any more.
    pub over: bool,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl CloudRunJob {
    /// The state of `execution` (`projects/P/locations/L/jobs/J/executions/E`).
    pub async fn execution(&self, execution: &str) -> Result<ExecutionState, CloudError> {
        let what = format!("reading execution {execution}");
        let e = self
            .executions
            .get_execution()
            .set_name(execution)
            .send()
            .await
            .map_err(|e| CloudError::classify(&what, &e))?;
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        Ok(ExecutionState {
            over: e.completion_time.is_some(),
            succeeded: count(e.succeeded_count),
            failed: count(e.failed_count),
            cancelled: count(e.cancelled_count),
        })
    }
}
