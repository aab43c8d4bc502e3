//! `scorer reconcile`: which input objects have no committed outputs, and
//! which outputs no manifest names.
//!
//! Unscored inputs come from notifications that were lost (uploaded before
//! the subscription existed), dead-lettered and expired, or a bucket that
//! held files before the service. Only objects created inside the window are
//! considered (their generation's creation: a metadata change does not
//! bring an old input back): by default the outputs' retention
//! (`OUTPUT_RETENTION_DAYS`),
//! since older inputs had their outputs deleted on purpose and re-scoring
//! them would redo years of work with today's model. Orphans are complete
//! objects under an output prefix that no manifest names (a crash between
//! an upload and the commit); they are reported, never touched. One odd
//! object is a reported problem, never the end of the scan. An input whose
//! job execution started less than `DISPATCH_STALE_SECONDS` ago is reported
//! as dispatched, not unscored; a stale one is both.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use futures::StreamExt;
use serde::Serialize;

use super::OperatorError;
use crate::event::{Generation, ObjectName};
use crate::layout::{OutputFile, OutputNames};
use crate::manifest::Manifest;
use crate::storage::{ObjectMeta, ObjectStore, StorageError, read_all};

/// Concurrent manifest lookups.
const LOOKUPS: usize = 16;
/// Publishes in flight at once: the publisher batches what is in flight.
const PUBLISHES_IN_FLIGHT: usize = 100;

/// One input object generation with no committed outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unscored {
    pub uri: String,
    pub name: String,
    pub generation: String,
    pub size: u64,
    pub updated: Option<String>,
}

/// An input handed to a job execution that has not committed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispatched {
    pub uri: String,
    pub generation: String,
    pub execution: String,
    pub started_at: String,
    /// Started longer ago than an execution may run: counted as unscored
    /// too (a redelivery dispatches it again).
    pub stale: bool,
}

/// An output object that no manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub uri: String,
    pub size: u64,
    pub updated: Option<String>,
    /// Why it counts as an orphan.
    pub why: String,
}

/// An object the scan could not judge, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub uri: String,
    pub problem: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Objects created before this were not considered (RFC 3339).
    pub window_start: Option<String>,
    pub unscored: Vec<Unscored>,
    /// Inputs with a started execution and no manifest yet.
    pub dispatched: Vec<Dispatched>,
    pub orphans: Vec<Orphan>,
    pub problems: Vec<Problem>,
    /// The unscored objects, as listed (for publishing).
    #[serde(skip)]
    pub objects: Vec<ObjectMeta>,
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

fn in_window(object: &ObjectMeta, since: Option<SystemTime>) -> bool {
    match (since, object.created.or(object.updated)) {
        (Some(since), Some(created)) => created >= since,
        _ => true,
    }
}

/// What turns an input object into a push: it decides which objects
/// should have outputs at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Cloud Storage notifies every object.
    CloudStorage,
    /// The local notifier (`serve --local`) ignores hidden and temporary
    /// files: they never get outputs, so reporting them would be a finding
    /// no run can clear.
    LocalNotifier,
}

impl Trigger {
    fn notifies(self, name: &str) -> bool {
        match self {
            Trigger::CloudStorage => true,
            Trigger::LocalNotifier => crate::notifier::is_candidate(std::path::Path::new(name)),
        }
    }
}

/// Whether an input object name is one the service scores.
fn is_input(name: &str) -> bool {
    crate::format::Format::for_object(name).is_some()
}

/// Scans both buckets. Storage trouble (unreachable, refused) is an error;
/// a single object that cannot be judged is a [`Problem`] in the report.
/// An input without a manifest whose execution started less than
/// `dispatch_stale` ago is reported as dispatched, not unscored: it is being
/// scored.
pub async fn scan(
    input: &dyn ObjectStore,
    output: &dyn ObjectStore,
    since: Option<SystemTime>,
    trigger: Trigger,
    dispatch_stale: std::time::Duration,
    prefix: &str,
) -> Result<Report, OperatorError> {
    let mut report = Report {
        window_start: rfc3339(since),
        ..Report::default()
    };
    let candidates: Vec<ObjectMeta> = input
        .list(prefix)
        .await?
        .into_iter()
        .filter(|o| is_input(&o.name) && trigger.notifies(&o.name) && in_window(o, since))
        .collect();
    let checked = futures::stream::iter(candidates)
        .map(|object| async move {
            let verdict = match (ObjectName::parse(&object.name), Generation::new(object.generation)) {
                (Ok(name), Some(generation)) => {
                    let names = OutputNames::new(&name, generation);
                    match output.stat(&names.manifest()).await {
                        Ok(Some(_)) => Ok(Ok(None)),
                        Ok(None) => crate::job::dispatch::latest_dispatch(output, &names)
                            .await
                            .map(|(_, started)| Ok(Some(started))),
                        Err(e) => Err(e),
                    }
                }
                (Err(e), _) => Ok(Err(e)),
                (_, None) => Ok(Err(format!(
                    "generation {} is not a positive number",
                    object.generation
                ))),
            };
            (object, verdict)
        })
        .buffered(LOOKUPS)
        .collect::<Vec<_>>()
        .await;
    for (object, verdict) in checked {
        match verdict? {
            Ok(None) => {}
            // No manifest: dispatched recently (being scored), or unscored.
            Ok(Some(started)) => {
                let stale = started.as_ref().is_none_or(|s| s.is_stale(dispatch_stale));
                if let Some(started) = started {
                    report.dispatched.push(Dispatched {
                        uri: input.uri(&object.name),
                        generation: object.generation.to_string(),
                        execution: started.execution,
                        started_at: started.started_at,
                        stale,
                    });
                }
                if stale {
                    report.unscored.push(Unscored {
                        uri: input.uri(&object.name),
                        name: object.name.clone(),
                        generation: object.generation.to_string(),
                        size: object.size,
                        updated: rfc3339(object.updated),
                    });
                    report.objects.push(object);
                }
            }
            Err(problem) => report.problems.push(Problem {
                uri: input.uri(&object.name),
                problem,
            }),
        }
    }
    orphans(output, since, prefix, &mut report).await?;
    Ok(report)
}

/// Output objects under `<input name>/<generation>/` (or the hashed prefix)
/// that their directory's manifest does not name.
async fn orphans(
    output: &dyn ObjectStore,
    since: Option<SystemTime>,
    prefix: &str,
    report: &mut Report,
) -> Result<(), OperatorError> {
    // Output sets by their prefix; the layout says which names are outputs.
    let mut sets: BTreeMap<String, (OutputNames, Vec<ObjectMeta>)> = BTreeMap::new();
    // Outputs of inputs under `prefix` start with it (inputs whose names
    // are hashed are looked at only without a prefix).
    for object in output.list(prefix).await? {
        let Some((names, file)) = OutputNames::parse_output(&object.name) else {
            continue;
        };
        if in_window(&object, since) || file == OutputFile::Manifest {
            sets.entry(names.prefix().to_owned())
                .or_insert_with(|| (names, Vec::new()))
                .1
                .push(object);
        }
    }
    for (names, objects) in sets.into_values() {
        let manifest_name = names.manifest();
        // Only a directory with an output inside the window can hold an
        // orphan to report: others cost no manifest read.
        if !objects.iter().any(|o| o.name != manifest_name && in_window(o, since)) {
            continue;
        }
        let has_manifest = objects.iter().any(|o| o.name == manifest_name);
        let named: BTreeSet<String> = if has_manifest {
            match read_all(output, &manifest_name, 16 << 20).await {
                Ok((_, bytes)) => match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(m) => [m.outputs.predictions, m.outputs.errors]
                        .into_iter()
                        .flatten()
                        .chain(m.outputs.shards)
                        .map(|o| o.name)
                        .collect(),
                    Err(e) => {
                        report.problems.push(Problem {
                            uri: output.uri(&manifest_name),
                            problem: format!("unreadable manifest: {e}"),
                        });
                        continue;
                    }
                },
                Err(StorageError::NotFound(_)) => BTreeSet::new(),
                Err(e) => return Err(e.into()),
            }
        } else {
            BTreeSet::new()
        };
        for object in objects {
            if object.name == manifest_name || named.contains(&object.name) || !in_window(&object, since) {
                continue;
            }
            let why = if has_manifest {
                "the manifest beside it names other objects (left by an earlier, crashed attempt)"
            } else {
                "no manifest beside it (a crashed attempt, or a job still running)"
            };
            report.orphans.push(Orphan {
                uri: output.uri(&object.name),
                size: object.size,
                updated: rfc3339(object.updated),
                why: why.to_owned(),
            });
        }
    }
    Ok(())
}

/// What publishing the unscored objects' notifications did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    pub topic: String,
    pub message_ids: Vec<String>,
    pub failed: Vec<Problem>,
}

/// Publishes the OBJECT_FINALIZE notification Cloud Storage would have sent
/// for each object, many in flight at once (the publisher sends them to
/// Pub/Sub in batches), carrying on past a failure (each is reported);
/// `sent` is called as each publish ends, for a progress bar. The service
/// treats them like any other notification: a file committed in the
/// meantime is a duplicate.
pub async fn publish(
    publisher: &google_cloud_pubsub::client::Publisher,
    topic: &str,
    input: &dyn ObjectStore,
    objects: &[ObjectMeta],
    sent: &(dyn Fn() + Sync),
) -> Published {
    use google_cloud_pubsub::model::Message;
    let bucket = input.bucket().to_owned();
    let tick = sent;
    let results = futures::stream::iter(objects)
        .map(|object| {
            let bucket = bucket.clone();
            async move {
                let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                let (data, attributes) =
                    crate::event::notification::Notification::finalize(&bucket, &object.name, object.generation)
                        .size(object.size)
                        .time(&now)
                        .config("reconcile")
                        .message();
                let sent = publisher
                    .publish(Message::new().set_data(data).set_attributes(attributes))
                    .await;
                tick();
                (object, sent)
            }
        })
        .buffered(PUBLISHES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let mut published = Published {
        topic: topic.to_owned(),
        ..Published::default()
    };
    for (object, sent) in results {
        match sent {
            Ok(id) => published.message_ids.push(id),
            Err(e) => published.failed.push(Problem {
                uri: input.uri(&object.name),
                problem: format!("publishing to {topic}: {e}"),
            }),
        }
    }
    published
}
