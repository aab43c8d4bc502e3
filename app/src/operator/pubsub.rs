//! Pub/Sub clients for the operator tools (Google's `google-cloud-pubsub`),
//! built one way: Application Default Credentials, or the emulator at
//! `PUBSUB_EMULATOR_HOST` anonymously (the crate does not read that variable
//! itself); bounded, logged retries.

use std::time::Duration;

use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};

use super::OperatorError;
use crate::google_clients::{LoggedRetries, credentials};

/// Where Pub/Sub is.
#[derive(Debug, Clone, Default)]
pub struct PubSubTarget {
    /// The emulator's URL (`http://host:port`: plaintext gRPC), if any.
    pub emulator: Option<String>,
    /// How long one call keeps retrying transient failures.
    pub retry_budget: Duration,
}

/// A Pub/Sub resource name, from a full name or a short one plus a project.
pub fn resource_name(kind: &str, name: &str, project: Option<&str>) -> Result<String, OperatorError> {
    if name.starts_with("projects/") {
        return Ok(name.to_owned());
    }
    match project.filter(|p| !p.is_empty()) {
        Some(project) => Ok(format!("projects/{project}/{kind}/{name}")),
        None => Err(OperatorError::Usage(format!(
            "{name:?} is a short {kind} name: give projects/PROJECT/{kind}/{name}, or --project (GOOGLE_CLOUD_PROJECT)"
        ))),
    }
}

impl PubSubTarget {
    fn retries(&self, what: String) -> LoggedRetries<impl google_cloud_gax::retry_policy::RetryPolicy + use<>> {
        LoggedRetries {
            policy: Aip194Strict.with_time_limit(self.retry_budget),
            what,
        }
    }

    fn creds(&self) -> Result<google_cloud_auth::credentials::Credentials, OperatorError> {
        credentials(self.emulator.is_some()).map_err(OperatorError::PubSub)
    }

    /// Checks that `topic` exists and can be reached with these credentials.
    pub async fn check_topic(&self, topic: &str) -> Result<(), OperatorError> {
        let mut builder = TopicAdmin::builder()
            .with_credentials(self.creds()?)
            .with_retry_policy(self.retries(format!("Pub/Sub topic {topic}")));
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let admin = builder
            .build()
            .await
            .map_err(|e| OperatorError::PubSub(format!("client for {topic}: {e}")))?;
        admin
            .get_topic()
            .set_topic(topic)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| OperatorError::PubSub(format!("cannot use topic {topic}: {e}")))
    }

    /// Checks that `subscription` exists and can be reached.
    pub async fn check_subscription(&self, subscription: &str) -> Result<(), OperatorError> {
        let mut builder = SubscriptionAdmin::builder()
            .with_credentials(self.creds()?)
            .with_retry_policy(self.retries(format!("Pub/Sub subscription {subscription}")));
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let admin = builder
            .build()
            .await
            .map_err(|e| OperatorError::PubSub(format!("client for {subscription}: {e}")))?;
        admin
            .get_subscription()
            .set_subscription(subscription)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| OperatorError::PubSub(format!("cannot use subscription {subscription}: {e}")))
    }

    /// A publisher for `topic` whose publishes give up after the retry
    /// budget instead of the crate's default ten minutes.
    pub async fn publisher(&self, topic: &str) -> Result<Publisher, OperatorError> {
        let mut builder = Publisher::builder(topic)
            .with_credentials(self.creds()?)
            .with_retry_policy(self.retries(format!("Pub/Sub publish to {topic}")));
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder
            .build()
            .await
            .map_err(|e| OperatorError::PubSub(format!("publisher for {topic}: {e}")))
    }

    pub async fn subscriber(&self) -> Result<Subscriber, OperatorError> {
        let mut builder = Subscriber::builder().with_credentials(self.creds()?);
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder
            .build()
            .await
            .map_err(|e| OperatorError::PubSub(format!("subscriber: {e}")))
    }
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
