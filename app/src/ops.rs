//! Operator tools for what Pub/Sub gave up on.
//!
//! - [`find_unprocessed`] and [`publish_finalize`] (`scorer reconcile`): input
//!   CSV objects whose generation has no committed manifest, and the same
//!   OBJECT_FINALIZE notification Cloud Storage would send for each, so they
//!   are scored through the normal path. Also how a bucket that held files
//!   before the service existed is backfilled.
//! - [`redrive`] (`scorer redrive`): dead-lettered notifications pulled from
//!   their subscription, republished to the main topic, and acknowledged only
//!   once the publish succeeded.
//!
//! Both talk to Pub/Sub through Google's `google-cloud-pubsub` crate; with
//! `PUBSUB_EMULATOR_HOST` set they talk to the emulator, anonymously.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, Subscriber};
use google_cloud_pubsub::model::Message;
use serde::Serialize;

use crate::event::{ObjectName, finalize_message};
use crate::manifest::OutputNames;
use crate::storage::{ObjectMeta, ObjectStore, StorageError};

/// Attributes Pub/Sub adds when it dead-letters a message; not part of the
/// original notification, so not republished.
const DEAD_LETTER_PREFIX: &str = "CloudPubSubDeadLetter";

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("Pub/Sub: {0}")]
    PubSub(String),
    #[error("{0}")]
    Usage(String),
}

/// A Pub/Sub resource name, from a full name or a short one plus a project.
pub fn resource_name(kind: &str, name: &str, project: Option<&str>) -> Result<String, OpsError> {
    if name.starts_with("projects/") {
        return Ok(name.to_owned());
    }
    match project.filter(|p| !p.is_empty()) {
        Some(project) => Ok(format!("projects/{project}/{kind}/{name}")),
        None => Err(OpsError::Usage(format!(
            "{name:?} is a short {kind} name: give projects/PROJECT/{kind}/{name}, or --project (GOOGLE_CLOUD_PROJECT)"
        ))),
    }
}

/// `PUBSUB_EMULATOR_HOST` as an endpoint URL (the crate needs `http://` to
/// speak plaintext gRPC to the emulator).
fn emulator_endpoint() -> Option<String> {
    std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.starts_with("http") {
                h
            } else {
                format!("http://{h}")
            }
        })
}

/// A publisher for `topic` whose publishes give up after `time_limit`
/// instead of the crate's default ten minutes.
pub async fn publisher(topic: &str, time_limit: Duration) -> Result<Publisher, OpsError> {
    let mut builder = Publisher::builder(topic).with_retry_policy(Aip194Strict.with_time_limit(time_limit));
    if let Some(endpoint) = emulator_endpoint() {
        builder = builder
            .with_endpoint(endpoint)
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
    }
    builder
        .build()
        .await
        .map_err(|e| OpsError::PubSub(format!("publisher for {topic}: {e}")))
}

async fn subscriber() -> Result<Subscriber, OpsError> {
    let mut builder = Subscriber::builder();
    if let Some(endpoint) = emulator_endpoint() {
        builder = builder
            .with_endpoint(endpoint)
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
    }
    builder
        .build()
        .await
        .map_err(|e| OpsError::PubSub(format!("subscriber: {e}")))
}

/// One input object generation with no committed outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unprocessed {
    pub uri: String,
    pub name: String,
    pub generation: String,
    pub size: u64,
    pub updated: Option<String>,
}

/// Input CSV objects (updated at or after `since`) whose current generation
/// has no manifest in the output bucket.
pub async fn find_unprocessed(
    input: &dyn ObjectStore,
    output: &dyn ObjectStore,
    since: Option<SystemTime>,
) -> Result<Vec<(ObjectMeta, Unprocessed)>, OpsError> {
    let candidates: Vec<ObjectMeta> = input
        .list("")
        .await?
        .into_iter()
        .filter(|o| ObjectName::parse(&o.name).is_ok_and(|n| n.is_csv()))
        .filter(|o| match (since, o.updated) {
            (Some(since), Some(updated)) => updated >= since,
            _ => true,
        })
        .collect();
    let checked = futures::stream::iter(candidates)
        .map(|object| async move {
            let name = ObjectName::parse(&object.name).map_err(OpsError::Usage)?;
            let generation = crate::event::Generation::new(object.generation)
                .ok_or_else(|| OpsError::Usage(format!("{} has no generation", object.name)))?;
            let manifest = OutputNames::new(&name, generation).manifest();
            let committed = output.stat(&manifest).await?.is_some();
            Ok::<_, OpsError>((!committed).then_some(object))
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::new();
    for result in checked {
        if let Some(object) = result? {
            let row = Unprocessed {
                uri: input.uri(&object.name),
                name: object.name.clone(),
                generation: object.generation.to_string(),
                size: object.size,
                updated: object.updated.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            };
            out.push((object, row));
        }
    }
    Ok(out)
}

/// Publishes the OBJECT_FINALIZE notification Cloud Storage would have sent
/// for `object`. Returns the message id.
pub async fn publish_finalize(publisher: &Publisher, bucket: &str, object: &ObjectMeta) -> Result<String, OpsError> {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let (data, attributes) = finalize_message(bucket, &object.name, object.generation, object.size, &now, "reconcile");
    publisher
        .publish(Message::new().set_data(data).set_attributes(attributes))
        .await
        .map_err(|e| OpsError::PubSub(format!("publishing for {}: {e}", object.name)))
}

/// What `redrive` did with each message.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RedriveReport {
    pub republished: Vec<Redriven>,
    pub failed: Vec<Redriven>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redriven {
    pub dead_letter_id: String,
    pub object: Option<String>,
    pub delivery_count: Option<String>,
    pub new_id: Option<String>,
    pub error: Option<String>,
}

/// Pulls dead letters from `subscription` until it is idle for `idle` (or
/// `max` were handled), republishes each to `topic` with its original data
/// and attributes, and acknowledges it only after the publish succeeded. A
/// message that could not be republished is not acknowledged, so it stays in
/// the dead-letter subscription. With `dry_run`, nothing is published or
/// acknowledged.
pub async fn redrive(
    subscription: &str,
    topic: &str,
    max: Option<usize>,
    dry_run: bool,
    idle: Duration,
) -> Result<RedriveReport, OpsError> {
    let publisher = if dry_run {
        None
    } else {
        Some(publisher(topic, Duration::from_secs(60)).await?)
    };
    let client = subscriber().await?;
    let mut stream = client.subscribe(subscription).build();
    let mut report = RedriveReport {
        dry_run,
        ..RedriveReport::default()
    };
    loop {
        if max.is_some_and(|m| report.republished.len() + report.failed.len() >= m) {
            break;
        }
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                stream.shutdown_token().shutdown().await;
                return Err(OpsError::PubSub(format!("pulling {subscription}: {e}")));
            }
            Ok(Some(Ok(next))) => next,
        };
        let (message, handler) = next;
        let attributes: HashMap<String, String> = message
            .attributes
            .iter()
            .filter(|(k, _)| !k.starts_with(DEAD_LETTER_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut entry = Redriven {
            dead_letter_id: message.message_id.clone(),
            object: match (attributes.get("bucketId"), attributes.get("objectId")) {
                (Some(b), Some(o)) => Some(format!("gs://{b}/{o}")),
                _ => None,
            },
            delivery_count: message
                .attributes
                .get("CloudPubSubDeadLetterSourceDeliveryCount")
                .cloned(),
            new_id: None,
            error: None,
        };
        let Some(publisher) = &publisher else {
            // Dry run: leave it in the subscription.
            handler.nack();
            report.republished.push(entry);
            continue;
        };
        let republished = publisher
            .publish(Message::new().set_data(message.data.clone()).set_attributes(attributes))
            .await;
        match republished {
            Ok(id) => {
                handler.ack();
                entry.new_id = Some(id);
                report.republished.push(entry);
            }
            Err(e) => {
                handler.nack();
                entry.error = Some(e.to_string());
                report.failed.push(entry);
            }
        }
    }
    // Acknowledgements are sent in batches: flush them before returning.
    stream.shutdown_token().shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_need_a_project() {
        assert_eq!(resource_name("topics", "t", Some("p")).unwrap(), "projects/p/topics/t");
        assert_eq!(
            resource_name("topics", "projects/q/topics/t", None).unwrap(),
            "projects/q/topics/t"
        );
        assert!(resource_name("subscriptions", "s", None).is_err());
    }
}
