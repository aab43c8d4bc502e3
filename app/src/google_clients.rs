//! What every Google client of ours shares: retries that are bounded and
//! logged (an operator sees what is being waited for), anonymous credentials
//! for the emulators, and missing credentials said at once, not retried.

use std::time::Duration;

use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_gax::error::Error;
use google_cloud_gax::retry_policy::RetryPolicy;
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_gax::throttle_result::ThrottleResult;

/// Logs every retry `P` decides to make, at WARNING, naming what is being
/// waited for; defers every decision to `P`.
#[derive(Debug)]
pub struct LoggedRetries<P> {
    pub policy: P,
    /// What the requests are for, e.g. "Cloud Storage" or "Pub/Sub topic T".
    pub what: String,
}

impl<P: RetryPolicy> RetryPolicy for LoggedRetries<P> {
    fn on_error(&self, state: &RetryState, error: Error) -> RetryResult {
        let result = self.policy.on_error(state, error);
        if let RetryResult::Continue(e) = &result {
            tracing::warn!(attempt = state.attempt_count, error = %e, "{} request failed; retrying", self.what);
        }
        result
    }

    fn on_throttle(&self, state: &RetryState, error: Error) -> ThrottleResult {
        self.policy.on_throttle(state, error)
    }

    fn remaining_time(&self, state: &RetryState) -> Option<Duration> {
        self.policy.remaining_time(state)
    }
}

/// Anonymous credentials for an emulator, Application Default Credentials
/// otherwise.
///
/// With no credentials file (neither `GOOGLE_APPLICATION_CREDENTIALS` nor
/// gcloud's well-known file) Google's library falls back to the metadata
/// server, and off Google Cloud that fallback fails only when a token is
/// fetched, as a *transient* error: an operator tool would retry for its
/// whole budget and then say "temporarily unavailable ... future attempts may
/// succeed", which they never will. So a machine with no credentials file and
/// no metadata server is told at once, with what to do.
pub fn credentials(emulator: bool) -> Result<Credentials, String> {
    if emulator {
        return Ok(credentials::anonymous::Builder::new().build());
    }
    if !credentials_file_present() && !metadata_server_present() {
        return Err(NO_CREDENTIALS.to_owned());
    }
    credentials::Builder::default()
        .build()
        .map_err(|e| format!("no Google credentials (Application Default Credentials): {e}"))
}

/// What a machine without Application Default Credentials is told.
pub const NO_CREDENTIALS: &str = "no Google credentials: Application Default Credentials are not set up on this \
     machine (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud credentials file, no metadata server); run \
     `gcloud auth application-default login`, or set STORAGE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST to use an emulator";

/// Whether a credentials file is named or in gcloud's well-known place (the
/// library's own lookup, AIP-4110/4113); an unreadable one is the library's
/// to report.
fn credentials_file_present() -> bool {
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        return true;
    }
    let well_known = if cfg!(windows) {
        std::env::var_os("APPDATA").map(|d| std::path::PathBuf::from(d).join("gcloud"))
    } else {
        std::env::var_os("HOME").map(|d| std::path::PathBuf::from(d).join(".config/gcloud"))
    };
    well_known.is_some_and(|d| d.join("application_default_credentials.json").exists())
}

/// Whether the metadata server the library would fall back to can exist
/// here: `GCE_METADATA_HOST` is set, or `metadata.google.internal` resolves
/// (it does on Compute Engine, GKE and Cloud Run, and nowhere else). A name
/// lookup, not a request: it answers in milliseconds either way.
fn metadata_server_present() -> bool {
    use std::net::ToSocketAddrs;
    std::env::var_os("GCE_METADATA_HOST").is_some()
        || ("metadata.google.internal", 80)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.next().is_some())
}
