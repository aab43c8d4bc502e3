//! What every Google client of ours shares: retries that are bounded and
//! logged (an operator sees what is being waited for), and anonymous
//! credentials for the emulators.

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
pub fn credentials(emulator: bool) -> Result<Credentials, String> {
    if emulator {
        return Ok(credentials::anonymous::Builder::new().build());
    }
    credentials::Builder::default()
        .build()
        .map_err(|e| format!("no Google credentials (Application Default Credentials): {e}"))
}
