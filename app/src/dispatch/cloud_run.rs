//! Executions on Cloud Run Jobs: the job (its image, `scorer shard`
//! command, task timeout, retries and parallelism) is made by Terraform;
//! each execution overrides its task count and adds the input to the
//! environment.

use async_trait::async_trait;
use scorer_cloud::CloudError;
use scorer_cloud::run_jobs::{CloudRunJob, ExecutionOverrides};

use super::{Dispatch, DispatchError, Dispatcher};

pub struct CloudRunDispatcher {
    job: CloudRunJob,
    /// `MODEL_URI` for the tasks when the service's model is not the one the
    /// job is configured with (a model fitted at start).
    model_uri: Option<String>,
}

impl CloudRunDispatcher {
    /// `job` is `projects/P/locations/L/jobs/J`; `endpoint` replaces Google's
    /// (anonymously: a stand-in of the API in tests).
    pub async fn new(
        job: &str,
        endpoint: Option<&str>,
        model_uri: Option<String>,
    ) -> Result<CloudRunDispatcher, DispatchError> {
        let job = CloudRunJob::new(job, endpoint).await.map_err(from_cloud)?;
        Ok(CloudRunDispatcher { job, model_uri })
    }
}

fn from_cloud(e: CloudError) -> DispatchError {
    match e {
        CloudError::Transient(m) => DispatchError::Transient(m),
        CloudError::Permanent(m) => DispatchError::Permanent(m),
    }
}

#[async_trait]
impl Dispatcher for CloudRunDispatcher {
    async fn start(&self, dispatch: &Dispatch) -> Result<String, DispatchError> {
        let mut env = dispatch.env();
        if let Some(uri) = &self.model_uri {
            env.push(("MODEL_URI".to_owned(), uri.clone()));
        }
        let overrides = ExecutionOverrides {
            env,
            task_count: dispatch.tasks,
            task_timeout: None,
        };
        self.job.run(&overrides).await.map_err(from_cloud)
    }

    fn describe(&self) -> String {
        format!("Cloud Run job {}", self.job.name())
    }
}
