//! Executions on Cloud Run Jobs: the job (its image, `scorer shard`
//! command, task timeout, retries and parallelism) is made by Terraform
//! (`terraform/cloud_run_job.tf`); each execution overrides its task count
//! and gives the tasks the input and the service's own settings (output
//! bucket, model, retries), so a job template that drifted from the service
//! cannot send outputs elsewhere.

use async_trait::async_trait;
use scorer_cloud::CloudError;
use scorer_cloud::run_jobs::{CloudRunJob, ExecutionOverrides};

use super::{Dispatch, DispatchError, Dispatcher};

pub struct CloudRunDispatcher {
    job: CloudRunJob,
    /// What every task is told besides its input: the service's settings
    /// the tasks must share.
    env: Vec<(String, String)>,
}

impl CloudRunDispatcher {
    /// `job` is `projects/P/locations/L/jobs/J`; `endpoint` replaces Google's
    /// (anonymously: a stand-in of the API in tests).
    pub async fn new(
        job: &str,
        endpoint: Option<&str>,
        env: Vec<(String, String)>,
    ) -> Result<CloudRunDispatcher, DispatchError> {
        let job = CloudRunJob::new(job, endpoint).await.map_err(from_cloud)?;
        Ok(CloudRunDispatcher { job, env })
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
        env.extend(self.env.iter().cloned());
        let overrides = ExecutionOverrides {
            env,
            task_count: dispatch.tasks,
            task_timeout: None,
        };
        self.job.run(&overrides).await.map_err(from_cloud)
    }

    async fn running(&self, execution: &str) -> Option<bool> {
        match self.job.execution(execution).await {
            Ok(state) => Some(!state.over),
            Err(e) => {
                tracing::warn!(execution, error = %e, "cannot read the execution's state; its age decides");
                None
            }
        }
    }

    fn describe(&self) -> String {
        format!("Cloud Run job {}", self.job.name())
    }
}
