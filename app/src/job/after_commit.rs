//! What follows a commit, for whoever is downstream: the BigQuery load of
//! the committed predictions, then one message on the results topic.
//!
//! Both happen after the manifest is written, so neither can delay or
//! undo a commit, and both are repeated by every later delivery of the same
//! input generation until they are recorded beside the manifest
//! (`bigquery.json`, `results.json`, create-only): a crash between the
//! commit and either is mended by Pub/Sub's redelivery, which finds the
//! manifest and comes here again.
//!
//! - The load job's id is derived from the input generation, and BigQuery
//!   refuses a second job with an id it has seen: however many deliveries
//!   get this far, the predictions are loaded once.
//! - The results message is published at least once (a crash after the
//!   publish and before its record publishes again); it carries the input
//!   generation, so consumers deduplicate on `(bucket, name, generation)`.
//!
//! A transient failure of either is the delivery's (it is retried); a
//! permanent one (no such table, no right to it) is recorded as the
//! outcome and logged at ERROR, since retrying cannot mend it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{JobError, JobRunner};
use crate::config::BigQuerySettings;
use crate::layout::OutputNames;
use crate::manifest::{Manifest, Status};
use crate::score::OutputFormat;

/// Largest follow-up record read back.
const RECORD_LIMIT: usize = 1 << 20;

/// The clients of what follows a commit, when configured.
#[derive(Default)]
pub struct FollowUps {
    pub bigquery: Option<BigQueryTarget>,
    pub results: Option<ResultsTopic>,
}

pub struct BigQueryTarget {
    pub settings: BigQuerySettings,
    pub loads: scorer_cloud::bigquery::BigQueryLoads,
}

pub struct ResultsTopic {
    /// `projects/P/topics/T`.
    pub topic: String,
    pub publisher: google_cloud_pubsub::client::Publisher,
}

/// `bigquery.json`: the load job of the committed predictions, or why
/// there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRecord {
    pub table: String,
    pub job_id: String,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub source_uris: Vec<String>,
    /// Set when BigQuery refused the job (it will not be retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `results.json`: the message that announced the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRecord {
    pub topic: String,
    /// Empty when the topic refused the message.
    pub message_id: String,
    /// Set when the topic refused the message (it will not be retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A publish error retrying cannot mend: the topic is not there, or this
/// account may not publish to it, or the message is refused.
fn is_permanent(e: &google_cloud_pubsub::error::PublishError) -> bool {
    use google_cloud_gax::error::rpc::Code;
    let google_cloud_pubsub::error::PublishError::Rpc(e) = e else {
        return false;
    };
    matches!(
        e.status().map(|s| s.code),
        Some(Code::NotFound | Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition)
    ) || matches!(e.http_status_code(), Some(400 | 403 | 404))
}

/// The message on the results topic.
#[derive(Debug, Serialize)]
pub struct ResultMessage<'a> {
    pub input_uri: &'a str,
    pub bucket: &'a str,
    pub name: &'a str,
    pub generation: &'a str,
    pub status: Status,
    pub rows_in: u64,
    pub rows_scored: u64,
    pub rows_rejected: u64,
    pub manifest_uri: String,
    pub predictions_uris: Vec<&'a str>,
    pub errors_uri: Option<&'a str>,
    pub output_format: OutputFormat,
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub failure: Option<&'a str>,
    pub bigquery: Option<&'a LoadRecord>,
}

/// The load job id of one input generation into one table: the same for
/// every delivery (two deployments loading the same inputs into two tables
/// get two ids). BigQuery allows letters, digits, `_` and `-`, up to 1,024
/// characters; table and name are hashed so any of them fits.
pub fn load_job_id(table: &str, bucket: &str, name: &str, generation: &str) -> String {
    let digest = Sha256::digest(format!("{table}\n{bucket}/{name}").as_bytes());
    format!("scorer_{}_{generation}", &hex::encode(digest)[..32])
}

impl JobRunner {
    /// `result`, once what follows a commit (if it is one) is done: a
    /// failure of that makes the delivery fail, to be retried, though the
    /// commit stands.
    pub(super) async fn followed(
        &self,
        object: &crate::event::ObjectRef,
        result: Result<super::Outcome, JobError>,
    ) -> Result<super::Outcome, JobError> {
        if let Ok(super::Outcome::Committed(manifest) | super::Outcome::Duplicate(manifest)) = &result
            && let Err(e) = self.after_commit(&self.names(object), manifest).await
        {
            tracing::warn!(
                input_uri = %manifest.input.uri,
                generation = %manifest.input.generation,
                error = %e,
                "committed, but what follows the commit failed; the delivery will be retried"
            );
            return Err(JobError::Transient(format!(
                "committed, but what follows the commit failed: {e}"
            )));
        }
        result
    }

    /// Loads and announces a committed input generation, unless already
    /// recorded as done.
    pub(super) async fn after_commit(&self, names: &OutputNames, manifest: &Manifest) -> Result<(), JobError> {
        // A fit's aliases move first: the results message then tells of a
        // version already promoted.
        self.promote_fit(names, manifest).await?;
        if self.follow_ups.bigquery.is_none() && self.follow_ups.results.is_none() {
            return Ok(());
        }
        // An instance going away leaves them to the redelivery.
        if self.shutdown.is_cancelled() {
            return Err(JobError::Transient("the instance is shutting down".into()));
        }
        let load = match &self.follow_ups.bigquery {
            Some(target) if manifest.status == Status::Scored => Some(self.load(target, names, manifest).await?),
            _ => None,
        };
        if let Some(results) = &self.follow_ups.results {
            self.announce(results, names, manifest, load.as_ref()).await?;
        }
        Ok(())
    }

    async fn load(
        &self,
        target: &BigQueryTarget,
        names: &OutputNames,
        manifest: &Manifest,
    ) -> Result<LoadRecord, JobError> {
        use scorer_cloud::bigquery::{LoadFormat, LoadRequest, TableRef};
        let record_name = names.bigquery_load();
        if let Some(record) = self.read_json::<LoadRecord>(&record_name, RECORD_LIMIT).await? {
            return Ok(record);
        }
        let table: TableRef = target
            .settings
            .table
            .parse()
            .map_err(|e| JobError::Internal(format!("BIGQUERY_TABLE: {e}")))?;
        let source_uris: Vec<String> = manifest
            .outputs
            .predictions
            .iter()
            .chain(&manifest.outputs.shards)
            .map(|o| o.uri.clone())
            .collect();
        let format = match manifest.outputs.format {
            OutputFormat::Parquet => LoadFormat::Parquet,
            OutputFormat::Jsonl => LoadFormat::JsonLines,
            OutputFormat::Csv => LoadFormat::Csv {
                skip_leading_rows: 1,
                field_delimiter: manifest.outputs.delimiter.chars().next().unwrap_or(','),
            },
        };
        let request = LoadRequest {
            job_id: load_job_id(
                &target.settings.table,
                &manifest.input.bucket,
                &manifest.input.name,
                &manifest.input.generation,
            ),
            location: target.settings.location.clone(),
            source_uris: source_uris.clone(),
            format,
            table: table.clone(),
        };
        let mut record = LoadRecord {
            table: target.settings.table.clone(),
            job_id: request.job_id.clone(),
            project: table.project.clone(),
            location: request.location.clone(),
            source_uris,
            error: None,
        };
        match target.loads.start(&request).await {
            Ok(job) => {
                tracing::info!(
                    bigquery_job = %job.job_id,
                    already_existed = job.already_existed,
                    table = %target.settings.table,
                    "BigQuery load job started"
                );
            }
            Err(e) if e.is_transient() => {
                return Err(JobError::Transient(format!("starting the BigQuery load: {e}")));
            }
            Err(e) => {
                tracing::error!(error = %e, table = %target.settings.table, "BigQuery refused the load job; it will not be retried");
                record.error = Some(e.to_string());
            }
        }
        if !self.put_record(&record_name, &record).await? {
            // Another delivery recorded it first: its record stands.
            if let Some(theirs) = self.read_json::<LoadRecord>(&record_name, RECORD_LIMIT).await? {
                return Ok(theirs);
            }
        }
        Ok(record)
    }

    async fn announce(
        &self,
        results: &ResultsTopic,
        names: &OutputNames,
        manifest: &Manifest,
        load: Option<&LoadRecord>,
    ) -> Result<(), JobError> {
        use google_cloud_pubsub::model::Message;
        let record_name = names.results_published();
        if self
            .read_json::<PublishedRecord>(&record_name, RECORD_LIMIT)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let message = ResultMessage {
            input_uri: &manifest.input.uri,
            bucket: &manifest.input.bucket,
            name: &manifest.input.name,
            generation: &manifest.input.generation,
            status: manifest.status,
            rows_in: manifest.rows.input,
            rows_scored: manifest.rows.scored,
            rows_rejected: manifest.rows.rejected,
            manifest_uri: manifest.uri(),
            predictions_uris: manifest
                .outputs
                .predictions
                .iter()
                .chain(&manifest.outputs.shards)
                .map(|o| o.uri.as_str())
                .collect(),
            errors_uri: manifest.outputs.errors.as_ref().map(|o| o.uri.as_str()),
            output_format: manifest.outputs.format,
            model_name: &manifest.model.name,
            model_version: &manifest.model.version,
            failure: manifest.failure.as_deref(),
            bigquery: load,
        };
        let data = serde_json::to_vec(&message).map_err(|e| JobError::Internal(e.to_string()))?;
        let status = match manifest.status {
            Status::Scored => "scored",
            Status::Failed => "failed",
            Status::Fitted => "fitted",
        };
        let attributes = [
            ("status", status),
            ("bucket", manifest.input.bucket.as_str()),
            ("name", manifest.input.name.as_str()),
            ("generation", manifest.input.generation.as_str()),
        ];
        let published = results
            .publisher
            .publish(Message::new().set_data(data).set_attributes(attributes))
            .await;
        let record = match published {
            Ok(message_id) => {
                tracing::info!(topic = %results.topic, message_id = %message_id, "results message published");
                PublishedRecord {
                    topic: results.topic.clone(),
                    message_id,
                    error: None,
                }
            }
            Err(e) if is_permanent(&e) => {
                // No such topic, no right to it: retrying cannot mend it.
                tracing::error!(topic = %results.topic, error = %e, "the results topic refused the message; it will not be retried");
                PublishedRecord {
                    topic: results.topic.clone(),
                    message_id: String::new(),
                    error: Some(e.to_string()),
                }
            }
            Err(e) => return Err(JobError::Transient(format!("publishing to {}: {e}", results.topic))),
        };
        self.put_record(&record_name, &record).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_job_ids_are_per_generation_and_valid() {
        let a = load_job_id("p.d.t", "in", "flights/2026-11.csv", "17");
        assert_eq!(a, load_job_id("p.d.t", "in", "flights/2026-11.csv", "17"));
        assert_ne!(a, load_job_id("p.d.t", "in", "flights/2026-11.csv", "18"));
        assert_ne!(a, load_job_id("p.d.t", "in2", "flights/2026-11.csv", "17"));
        assert_ne!(a, load_job_id("p.d.t2", "in", "flights/2026-11.csv", "17"));
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{a}"
        );
        assert!(a.len() <= 1024);
    }
}
