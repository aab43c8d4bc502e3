//! Executions as local processes: `scorer shard` run once per task with the
//! environment Cloud Run would give it, at most `parallelism` at a time, each
//! retried up to `max_retries` times when it fails, as Cloud Run retries a
//! task. `serve --local`, the demo and the tests shard through this, so
//! sharding runs the same code with no cloud.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Dispatch, DispatchError, Dispatcher, TASK_ENV};

pub struct LocalPool {
    /// The `scorer` binary.
    exe: PathBuf,
    /// What every task needs besides its input and index: buckets, model,
    /// settings.
    env: Vec<(String, String)>,
    parallelism: usize,
    max_retries: u32,
    /// Executions whose tasks are still running.
    running: Arc<Mutex<HashSet<String>>>,
    /// Cancelled at shutdown: running tasks are killed, as an instance's
    /// would be; a later delivery dispatches again.
    shutdown: CancellationToken,
}

impl LocalPool {
    pub fn new(
        exe: PathBuf,
        env: Vec<(String, String)>,
        parallelism: usize,
        max_retries: u32,
        shutdown: CancellationToken,
    ) -> LocalPool {
        LocalPool {
            exe,
            env,
            parallelism: parallelism.max(1),
            max_retries,
            running: Arc::default(),
            shutdown,
        }
    }
}

#[async_trait]
impl Dispatcher for LocalPool {
    async fn start(&self, dispatch: &Dispatch) -> Result<String, DispatchError> {
        let execution = format!("local-{:016x}", rand::random::<u64>());
        if let Ok(mut running) = self.running.lock() {
            running.insert(execution.clone());
        }
        let slots = Arc::new(Semaphore::new(self.parallelism));
        let (exe, max_retries, shutdown) = (self.exe.clone(), self.max_retries, self.shutdown.clone());
        let mut env = self.env.clone();
        env.extend(dispatch.env());
        env.push((TASK_ENV.count.to_owned(), dispatch.tasks.to_string()));
        env.push((TASK_ENV.execution.to_owned(), execution.clone()));
        let (running, name, tasks) = (self.running.clone(), execution.clone(), dispatch.tasks);
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            let all = async {
                for index in 0..tasks {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (exe, env, name) = (exe.clone(), env.clone(), name.clone());
                    set.spawn(async move {
                        let _slot = slot;
                        run_task(&exe, &env, &name, index, max_retries).await;
                    });
                }
                while set.join_next().await.is_some() {}
            };
            tokio::select! {
                () = all => {}
                // Dropping the tasks kills their processes.
                () = shutdown.cancelled() => {}
            }
            if let Ok(mut running) = running.lock() {
                running.remove(&name);
            }
        });
        Ok(execution)
    }

    async fn running(&self, execution: &str) -> Option<bool> {
        self.running.lock().ok().map(|running| running.contains(execution))
    }

    fn describe(&self) -> String {
        format!(
            "local pool of {} `scorer shard` processes ({})",
            self.parallelism,
            self.exe.display()
        )
    }
}

/// What a task inherits from this process: the system's basics, logging,
/// and the tests' fault injection for tasks.
const INHERITED: [&str; 8] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LOG_FORMAT",
    "SCORER_TEST_TASK_FAULTS",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// One task, attempt after attempt, until one exits 0 or the retries are
/// spent (its last attempt has written the input's failure report).
async fn run_task(exe: &std::path::Path, env: &[(String, String)], execution: &str, index: u32, max_retries: u32) {
    for attempt in 0..=max_retries {
        // A task sees what a Cloud Run task would: the job's settings and
        // the execution's, not whatever this server was started with.
        let inherited = INHERITED
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (*name, value)));
        let status = tokio::process::Command::new(exe)
            .arg("shard")
            .env_clear()
            .envs(inherited)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(TASK_ENV.index, index.to_string())
            .env(TASK_ENV.attempt, attempt.to_string())
            .kill_on_drop(true)
            .status()
            .await;
        match status {
            Ok(s) if s.success() => return,
            Ok(s) => tracing::warn!(execution, task = index, attempt, status = %s, "shard task failed"),
            Err(e) => tracing::warn!(execution, task = index, attempt, error = %e, "shard task could not start"),
        }
    }
    tracing::error!(
        execution,
        task = index,
        max_retries,
        "shard task failed on its last attempt"
    );
}
