//! `scorer status`: where one input object generation stands, read from
//! the records the service keeps for it (manifest, lease, dispatch), never
//! from logs: scored or failed (the manifest's summary and outputs), being
//! scored (the lease's holder and expiry), handed to a job execution (its
//! name and start), or waiting (nothing yet: a delivery has not started
//! it, or was lost; `reconcile --publish` redelivers).

use std::time::Duration;

use serde::Serialize;

use super::OperatorError;
use crate::event::{Generation, ObjectName};
use crate::job::dispatch::latest_dispatch;
use crate::layout::OutputNames;
use crate::lease;
use crate::manifest::{Manifest, Status};
use crate::storage::{ObjectStore, StorageError, read_all};

/// Where an input generation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    /// Committed: every row scored or rejected.
    Scored,
    /// Committed as a failure report.
    Failed { reason: String },
    /// A training file, committed as a fit: a new model version.
    Fitted {
        model: String,
        version: String,
        decision: String,
    },
    /// A job holds the lease.
    InProgress { holder: String, lease_expires_at: String },
    /// A job execution was started for it and has not committed.
    Dispatched {
        execution: String,
        started_at: String,
        /// Started longer ago than an execution may run.
        stale: bool,
    },
    /// No manifest, no live lease, no dispatch: not started, or lost.
    Waiting,
}

/// One input generation's status.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub input_uri: String,
    pub generation: String,
    /// Whether that generation is still the object's current one.
    pub current: bool,
    #[serde(flatten)]
    pub state: State,
    /// The committed manifest's URI and summary, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Box<Manifest>>,
}

/// The status of `name` at `generation` (its current generation when
/// `None`). An input that does not exist and has no outputs is an error.
pub async fn status(
    input: &dyn ObjectStore,
    output: &dyn ObjectStore,
    name: &ObjectName,
    generation: Option<Generation>,
    dispatch_stale: Duration,
) -> Result<FileStatus, OperatorError> {
    let meta = input.stat(name.as_str()).await?;
    let generation = match (generation, &meta) {
        (Some(g), _) => g,
        (None, Some(meta)) => Generation::new(meta.generation).ok_or_else(|| {
            OperatorError::Usage(format!(
                "{}: generation {} is not valid",
                name.as_str(),
                meta.generation
            ))
        })?,
        (None, None) => {
            return Err(OperatorError::Usage(format!(
                "{} does not exist: give --generation to ask about an earlier one",
                input.uri(name.as_str())
            )));
        }
    };
    let current = meta.as_ref().is_some_and(|m| m.generation == generation.get());
    let names = OutputNames::new(name, generation);
    let mut status = FileStatus {
        input_uri: input.uri(name.as_str()),
        generation: generation.get().to_string(),
        current,
        state: State::Waiting,
        manifest_uri: None,
        manifest: None,
    };
    match read_all(output, &names.manifest(), 16 << 20).await {
        Ok((_, bytes)) => {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                OperatorError::Storage(StorageError::Permanent(format!(
                    "{}: not a manifest: {e}",
                    output.uri(&names.manifest())
                )))
            })?;
            status.state = match manifest.status {
                Status::Scored => State::Scored,
                Status::Fitted => State::Fitted {
                    model: manifest.model.name.clone(),
                    version: manifest.model.version.clone(),
                    decision: manifest.fit.as_ref().map(|f| f.decision.clone()).unwrap_or_default(),
                },
                Status::Failed => State::Failed {
                    reason: manifest.failure.clone().unwrap_or_default(),
                },
            };
            status.manifest_uri = Some(output.uri(&names.manifest()));
            status.manifest = Some(Box::new(manifest));
            return Ok(status);
        }
        Err(StorageError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(lease) = lease::current(output, &names).await?
        && lease.is_live()
    {
        status.state = State::InProgress {
            holder: lease.holder,
            lease_expires_at: rfc3339_ms(lease.expires_at_ms),
        };
        return Ok(status);
    }
    if let (_, Some(started)) = latest_dispatch(output, &names).await? {
        status.state = State::Dispatched {
            stale: started.is_stale(dispatch_stale),
            execution: started.execution,
            started_at: started.started_at,
        };
    }
    Ok(status)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
