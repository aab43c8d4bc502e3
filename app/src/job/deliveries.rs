//! Deliveries: Pub/Sub may push the same notification several times, at the
//! same moment. Within a process the first delivery of an input generation
//! runs its job and later ones wait for that job's outcome; across processes
//! the lease does the same. Finished work is recognised before a job slot is
//! asked for, so a redelivery of a committed input is acknowledged whatever
//! the load.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use super::{JobError, JobRunner, Outcome, summary};
use crate::event::ObjectRef;

/// An input generation, as the key of a running job.
pub(super) type Key = (String, i64);

/// The outcome of a running job, once it is known.
pub(super) type Finished = watch::Receiver<Option<Result<Outcome, JobError>>>;

/// What became of one delivery.
#[derive(Debug)]
pub enum Handled {
    /// The job ran, or this delivery joined the same job already running,
    /// or found it committed.
    Finished(Result<Outcome, JobError>),
    /// Every job slot is taken: back off.
    NoFreeSlot,
}

/// Removes a job from the running map however its task ends.
struct Running {
    runner: Arc<JobRunner>,
    key: Key,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.runner.running.lock() {
            running.remove(&self.key);
        }
    }
}

impl JobRunner {
    /// Handles one delivery of `object`: acknowledges committed work at
    /// once, joins the job already running for it in this process, or starts
    /// one if a slot is free. The job runs in its own task, so it finishes
    /// and commits even if the delivery's request is abandoned.
    pub async fn deliver(self: &Arc<Self>, object: &ObjectRef, slots: &Arc<Semaphore>) -> Handled {
        let key: Key = (object.name.as_str().to_owned(), object.generation.get());
        let started = Instant::now();
        if !self.is_running(&key) {
            let names = self.names(object);
            let result = match self.find_manifest(&names).await {
                Ok(None) => None,
                Ok(Some(manifest)) => Some(Ok(Outcome::Duplicate(Box::new(manifest)))),
                Err(e) => Some(Err(e)),
            };
            if let Some(result) = result {
                summary::record(self, object, &result, started.elapsed());
                return Handled::Finished(self.followed(object, result).await);
            }
        }
        enum Role {
            Leader(tokio::task::JoinHandle<Result<Outcome, JobError>>),
            Follower(Finished),
            NoSlot,
        }
        let role = {
            let Ok(mut running) = self.running.lock() else {
                return Handled::Finished(Err(JobError::Internal("the running-jobs map is poisoned".into())));
            };
            match running.get(&key) {
                Some(finished) => Role::Follower(finished.clone()),
                None => {
                    match slots.clone().try_acquire_owned() {
                        Err(_) => Role::NoSlot,
                        Ok(permit) => {
                            let (tx, rx) = watch::channel(None);
                            running.insert(key.clone(), rx);
                            let runner = self.clone();
                            let object = object.clone();
                            // The job's logs belong to the request that started it
                            // (its trace groups them in Logs Explorer).
                            let job = async move {
                                let _permit = permit;
                                let _running = Running {
                                    runner: runner.clone(),
                                    key,
                                };
                                let result = runner.run(&object).await;
                                let _ = tx.send(Some(result.clone()));
                                result
                            };
                            Role::Leader(tokio::spawn(job.instrument(tracing::Span::current())))
                        }
                    }
                }
            }
        };
        match role {
            Role::NoSlot => self.no_free_slot(object, started).await,
            Role::Leader(task) => Handled::Finished(
                task.await
                    .unwrap_or_else(|e| Err(JobError::Internal(format!("job task: {e}")))),
            ),
            Role::Follower(mut finished) => {
                // The same notification is being handled here already: its
                // outcome is this delivery's too (a commit is, for this one,
                // a duplicate).
                let outcome = match finished.wait_for(Option::is_some).await {
                    Ok(value) => value.clone(),
                    Err(_) => None,
                };
                let result = match outcome {
                    Some(Ok(Outcome::Committed(m))) => Ok(Outcome::Duplicate(m)),
                    Some(other) => other,
                    None => Err(JobError::Internal("the running job stopped without a result".into())),
                };
                summary::record(self, object, &result, started.elapsed());
                Handled::Finished(result)
            }
        }
    }

    /// Every slot is taken. The job of this very input may have committed
    /// and left the running map since the first look: a committed input is
    /// still acknowledged.
    async fn no_free_slot(&self, object: &ObjectRef, started: Instant) -> Handled {
        let names = self.names(object);
        match self.find_manifest(&names).await {
            Ok(Some(manifest)) => {
                let result = Ok(Outcome::Duplicate(Box::new(manifest)));
                summary::record(self, object, &result, started.elapsed());
                Handled::Finished(self.followed(object, result).await)
            }
            _ => Handled::NoFreeSlot,
        }
    }

    fn is_running(&self, key: &Key) -> bool {
        self.running.lock().map(|r| r.contains_key(key)).unwrap_or(false)
    }

    /// Runs the job for one object generation and records its summary. A
    /// panic anywhere in it is caught here: logged with the input, answered
    /// as an internal error, and the lease and running entry are let go by
    /// their drop guards, so the input is never wedged.
    async fn run(&self, object: &ObjectRef) -> Result<Outcome, JobError> {
        let started = Instant::now();
        self.metrics.jobs_in_flight.inc();
        let result = AssertUnwindSafe(self.sequence(object))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned());
                Err(JobError::Internal(format!("the job panicked: {message}")))
            });
        self.metrics.jobs_in_flight.dec();
        // The summary says what the job did; what follows a commit is
        // logged on its own, and its failure only asks for a redelivery.
        summary::record(self, object, &result, started.elapsed());
        self.followed(object, result).await
    }
}
