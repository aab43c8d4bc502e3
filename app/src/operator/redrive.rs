//! `scorer redrive`: dead-lettered notifications back to the main topic.
//!
//! Messages are pulled from the dead-letter subscription until it is idle
//! (or `max` were handled), republished with their original data and
//! attributes (without the `CloudPubSubDeadLetter*` ones Pub/Sub added), and
//! each is acknowledged only after its publish succeeded: a message that
//! could not be republished stays where it was.

use std::collections::HashMap;
use std::time::Duration;

use google_cloud_pubsub::model::Message;
use serde::Serialize;

use super::OperatorError;
use super::pubsub::PubSubTarget;

/// Attributes Pub/Sub adds when it dead-letters a message.
const DEAD_LETTER_PREFIX: &str = "CloudPubSubDeadLetter";

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

/// Redrives `subscription` into `topic`. The subscription and (unless
/// `dry_run`) the topic are checked first, so an unreachable, unauthorised or
/// misnamed one is an error rather than "nothing to redrive".
pub async fn redrive(
    target: &PubSubTarget,
    subscription: &str,
    topic: &str,
    max: Option<usize>,
    dry_run: bool,
    idle: Duration,
) -> Result<RedriveReport, OperatorError> {
    target.check_subscription(subscription).await?;
    let publisher = if dry_run {
        None
    } else {
        target.check_topic(topic).await?;
        Some(target.publisher(topic).await?)
    };
    let client = target.subscriber().await?;
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
                return Err(OperatorError::PubSub(format!("pulling {subscription}: {e}")));
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
