//! scorer-cloud: the scorer's calls to Google Cloud control-plane APIs, a
//! small client type over Google's official generated clients.
//!
//! # Layout
//!
//! - [`bigquery`]: start a BigQuery load job (files in Cloud Storage
//!   appended to a table), exactly once per caller-chosen job id.
//! - [`run_jobs`]: start an execution of a Cloud Run job with per-execution
//!   overrides, and read an execution's state (the scorer's shard job).
//!
//! A client is made with an optional endpoint: set, its calls go there
//! anonymously (a local stand-in of the API in tests); unset, to Google
//! with Application Default Credentials.

pub mod bigquery;
pub mod run_jobs;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// Worth retrying later: unavailable, throttled, timed out, cut off.
    #[error("{0} (temporary)")]
    Transient(String),
    /// Retrying will not help: refused, not found, not allowed, malformed.
    #[error("{0}")]
    Permanent(String),
}

impl CloudError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient(_))
    }

    /// Sorts a client error: HTTP 408, 429, 5xx and transport failures are
    /// transient, the rest permanent.
    pub(crate) fn classify(what: &str, e: &google_cloud_gax::error::Error) -> CloudError {
        let text = format!("{what}: {e}");
        match e.http_status_code() {
            Some(408 | 429 | 500..=599) => CloudError::Transient(text),
            Some(_) => CloudError::Permanent(text),
            None if e.is_io() || e.is_timeout() || e.is_connect() || e.is_transport() || e.is_exhausted() => {
                CloudError::Transient(text)
            }
            None if e.is_authentication() => CloudError::Permanent(format!(
                "{text} (no usable Google credentials: on Cloud Run, the service account; elsewhere `gcloud auth application-default login`)"
            )),
            None => match e.status().map(|s| s.code) {
                Some(
                    google_cloud_gax::error::rpc::Code::Unavailable
                    | google_cloud_gax::error::rpc::Code::ResourceExhausted
                    | google_cloud_gax::error::rpc::Code::DeadlineExceeded
                    | google_cloud_gax::error::rpc::Code::Internal,
                ) => CloudError::Transient(text),
                _ => CloudError::Permanent(text),
            },
        }
    }
}
