//! Dispatch: starting a job execution that scores one large input in
//! parallel tasks, outside any push request.
//!
//! The job (`job::run`, under the input's lease) decides that an input is
//! too large to score inline, and `job::dispatch` asks a [`Dispatcher`] for
//! an execution of `tasks` tasks; each task is
//! a `scorer shard` process that finds its input, its index and the task
//! count in its environment, as Cloud Run sets them
//! ([`TASK_ENV`]). Two dispatchers fit:
//!
//! - [`cloud_run`]: Cloud Run Jobs (`RunJob` with per-execution overrides),
//!   in the cloud;
//! - [`local`]: a pool of local `scorer shard` processes with the same
//!   environment, for `serve --local`, the demo and the tests.
//!
//! Whatever runs the tasks, the exactly-once promise rests on the bucket:
//! create-only shard records and outputs, and the manifest written last by
//! whichever task finds every range scored (`job::shard`).

pub mod cloud_run;
pub mod local;

use async_trait::async_trait;

/// The variables Cloud Run sets in every task of a job execution, which
/// `scorer shard` reads and the local pool sets the same way.
pub const TASK_ENV: TaskEnv = TaskEnv {
    index: "CLOUD_RUN_TASK_INDEX",
    count: "CLOUD_RUN_TASK_COUNT",
    attempt: "CLOUD_RUN_TASK_ATTEMPT",
    execution: "CLOUD_RUN_EXECUTION",
};

/// The names of the task variables.
pub struct TaskEnv {
    pub index: &'static str,
    pub count: &'static str,
    pub attempt: &'static str,
    pub execution: &'static str,
}

/// The variables the dispatcher adds to a task's environment: which input
/// (`gs://BUCKET/NAME`; with the local pool BUCKET is a directory of its
/// `--local DIR`), which generation, and the model version the push service
/// runs, which the tasks must run too.
pub const INPUT_URI: &str = "INPUT_URI";
pub const INPUT_GENERATION: &str = "INPUT_GENERATION";
pub const MODEL_VERSION: &str = "MODEL_VERSION";
/// The dispatched model's name (its version is in the registry).
pub const MODEL_NAME: &str = "MODEL_NAME";
/// How the push service chose that model for the input (JSON of the
/// manifest's `model.chosen_by`), for the manifest the tasks commit.
pub const MODEL_CHOSEN_BY: &str = "MODEL_CHOSEN_BY";

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

/// One execution to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub tasks: u32,
    pub model_name: String,
    pub model_version: String,
    pub chosen_by: Option<crate::manifest::ChosenBy>,
}

impl Dispatch {
    /// What every task of the execution is told.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (INPUT_URI.to_owned(), format!("gs://{}/{}", self.bucket, self.name)),
            (INPUT_GENERATION.to_owned(), self.generation.to_string()),
            (MODEL_NAME.to_owned(), self.model_name.clone()),
            (MODEL_VERSION.to_owned(), self.model_version.clone()),
        ];
        if let Some(json) = self.chosen_by.as_ref().and_then(|c| serde_json::to_string(c).ok()) {
            env.push((MODEL_CHOSEN_BY.to_owned(), json));
        }
        env
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    /// Worth a retry (the push is answered 503 and redelivered).
    #[error("starting the job failed: {0}")]
    Transient(String),
    #[error("starting the job failed: {0}")]
    Permanent(String),
}

/// Starts executions.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Starts an execution of `dispatch.tasks` tasks; returns its name.
    /// Returns once the execution is accepted, not when it ends.
    async fn start(&self, dispatch: &Dispatch) -> Result<String, DispatchError>;

    /// Whether `execution` may still be running: `Some(false)` when this
    /// dispatcher knows it is over (its processes are gone; Cloud Run set
    /// its completion time), `None` when it cannot tell (then the
    /// dispatch's age decides).
    async fn running(&self, execution: &str) -> Option<bool> {
        let _ = execution;
        None
    }

    /// For logs: where executions go.
    fn describe(&self) -> String;
}
