//! Test-only fault injection at the storage seam, for the exit-path tests.
//!
//! `SCORER_TEST_FAULTS=STAGE:ACTION[,STAGE:ACTION...]` wraps both buckets so
//! that a job meets ACTION at STAGE, once per process:
//!
//! | stage | where |
//! |---|---|
//! | `download` | opening the input |
//! | `scoring` | mid-download, after the first piece reached the engine |
//! | `predictions-upload` | mid-upload of the predictions, after the first piece |
//! | `errors-upload` | mid-upload of the errors object, after the first piece |
//! | `manifest` | writing the manifest |
//!
//! Actions: `panic`, `fail` (a permanent storage error), `abort` (the
//! process dies on the spot, as a killed instance or task), `delay=DURATION`
//! (e.g. `delay=5s`: the operation stalls, so the test can act meanwhile;
//! mid-upload it is exactly "the upload is slower than the engine").
//! Every injection logs `test fault injected` at WARNING. The service refuses
//! this setting on Cloud Run.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{BodyPart, ByteStream, ObjectMeta, ObjectStore, StorageError, WriteBody, WriteOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Download,
    Scoring,
    PredictionsUpload,
    ErrorsUpload,
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Panic,
    Abort,
    Fail,
    Delay(Duration),
}

/// The faults still to inject, shared by both buckets.
#[derive(Debug, Clone)]
pub struct FaultPlan(Arc<Mutex<Vec<(Stage, Action)>>>);

impl PartialEq for FaultPlan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FaultPlan {
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut faults = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (stage, action) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?}: expected STAGE:ACTION"))?;
            let stage = match stage {
                "download" => Stage::Download,
                "scoring" => Stage::Scoring,
                "predictions-upload" => Stage::PredictionsUpload,
                "errors-upload" => Stage::ErrorsUpload,
                "manifest" => Stage::Manifest,
                other => {
                    return Err(format!(
                        "unknown stage {other:?} (download, scoring, predictions-upload, errors-upload, manifest)"
                    ));
                }
            };
            let action = match action {
                "panic" => Action::Panic,
                "abort" => Action::Abort,
                "fail" => Action::Fail,
                other => match other.strip_prefix("delay=") {
                    Some(d) => Action::Delay(humantime::parse_duration(d).map_err(|e| format!("{item:?}: {e}"))?),
                    None => return Err(format!("unknown action {other:?} (panic, fail, abort, delay=DURATION)")),
                },
            };
            faults.push((stage, action));
        }
        Ok(FaultPlan(Arc::new(Mutex::new(faults))))
    }

    /// The action due at `stage`, taken out of the plan (once per process).
    fn take(&self, stage: Stage) -> Option<Action> {
        let mut faults = self.0.lock().ok()?;
        let i = faults.iter().position(|(s, _)| *s == stage)?;
        Some(faults.remove(i).1)
    }

    /// Injects the action due at `stage`, if any: panics, fails, or stalls.
    async fn hit(&self, stage: Stage, name: &str) -> Result<(), StorageError> {
        let Some(action) = self.take(stage) else { return Ok(()) };
        tracing::warn!(stage = ?stage, action = ?action, object = name, "test fault injected");
        match action {
            Action::Panic => panic!("test fault: panic at {stage:?} on {name}"),
            Action::Abort => std::process::abort(),
            Action::Fail => Err(StorageError::Permanent(format!("test fault at {stage:?} on {name}"))),
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

/// A bucket whose operations meet the plan's faults.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan,
}

impl FaultyStore {
    pub fn wrap(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> Arc<dyn ObjectStore> {
        Arc::new(FaultyStore { inner, plan })
    }
}

fn upload_stage(name: &str) -> Option<Stage> {
    let file = name.rsplit('/').next().unwrap_or(name);
    if file.starts_with("predictions") {
        Some(Stage::PredictionsUpload)
    } else if file.starts_with("errors") {
        Some(Stage::ErrorsUpload)
    } else {
        None
    }
}

/// `stream` with the plan's `stage` fault injected after its first item.
fn after_first<T: Send + 'static>(
    stream: Pin<Box<dyn futures::Stream<Item = Result<T, StorageError>> + Send>>,
    plan: FaultPlan,
    stage: Stage,
    name: String,
) -> Pin<Box<dyn futures::Stream<Item = Result<T, StorageError>> + Send>> {
    Box::pin(
        futures::stream::unfold(
            (stream, 0u64, Some((plan, name))),
            move |(mut stream, seen, pending)| async move {
                let pending = match pending {
                    Some((plan, name)) if seen >= 1 => match plan.hit(stage, &name).await {
                        Ok(()) => None,
                        Err(e) => return Some((Err(e), (stream, seen + 1, None))),
                    },
                    other => other,
                };
                let item = stream.next().await?;
                Some((item, (stream, seen + 1, pending)))
            },
        )
        .fuse(),
    )
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    fn uri(&self, name: &str) -> String {
        self.inner.uri(name)
    }

    fn check_name(&self, name: &str) -> Result<(), StorageError> {
        self.inner.check_name(name)
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.inner.stat(name).await
    }

    async fn checksum(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.inner.checksum(name).await
    }

    async fn read_from(
        &self,
        name: &str,
        generation: Option<i64>,
        offset: u64,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        if generation.is_some() {
            // Only job reads name a generation: those are the downloads.
            self.plan.hit(Stage::Download, name).await?;
            let (meta, stream) = self.inner.read_from(name, generation, offset).await?;
            let stream = after_first::<Bytes>(stream, self.plan.clone(), Stage::Scoring, name.to_owned());
            return Ok((meta, stream));
        }
        self.inner.read_from(name, generation, offset).await
    }

    async fn write(&self, name: &str, body: WriteBody, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        let body = match upload_stage(name) {
            Some(stage) => after_first::<BodyPart>(body, self.plan.clone(), stage, name.to_owned()),
            None => body,
        };
        if name.ends_with("/manifest.json") {
            self.plan.hit(Stage::Manifest, name).await?;
        }
        self.inner.write(name, body, options).await
    }

    async fn write_small(&self, name: &str, bytes: Bytes, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        if upload_stage(name).is_some() {
            return self.write(name, super::body_of(bytes), options).await;
        }
        if name.ends_with("/manifest.json") {
            self.plan.hit(Stage::Manifest, name).await?;
        }
        self.inner.write_small(name, bytes, options).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_say_what_is_wrong() {
        let plan = FaultPlan::parse("manifest:panic, scoring:delay=2s,download:fail").unwrap();
        assert_eq!(plan.take(Stage::Scoring), Some(Action::Delay(Duration::from_secs(2))));
        assert_eq!(plan.take(Stage::Scoring), None, "each fault fires once");
        assert_eq!(plan.take(Stage::Manifest), Some(Action::Panic));
        assert!(FaultPlan::parse("upload:panic").unwrap_err().contains("unknown stage"));
        assert!(
            FaultPlan::parse("manifest:explode")
                .unwrap_err()
                .contains("unknown action")
        );
        assert!(FaultPlan::parse("manifest").unwrap_err().contains("STAGE:ACTION"));
    }
}
