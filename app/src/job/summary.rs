//! The one summary log entry (and the metrics) of each delivery of an
//! input generation.
//!
//! Severity follows what an operator should do: `scored`, `duplicate`,
//! `dispatched` and `in_progress` are INFO; `failed` (a file that could not be scored, reported
//! in its manifest) and `retry` are WARNING; `error` is ERROR.

use std::time::Duration;

use super::{JobError, JobRunner, Outcome};
use crate::event::ObjectRef;

/// Logs the summary of one delivery and counts it.
pub(super) fn record(runner: &JobRunner, object: &ObjectRef, result: &Result<Outcome, JobError>, elapsed: Duration) {
    let label = match result {
        Ok(o) => o.label(),
        Err(JobError::Transient(_)) => "retry",
        Err(JobError::Internal(_)) => "error",
    };
    runner.metrics.record_job(label, elapsed);
    if let Ok(Outcome::Committed(m)) = result {
        runner.metrics.record_rows(m.rows.scored, m.rows.rejected);
    }
    let input_uri = runner.input.uri(object.name.as_str());
    let input_uri = input_uri.as_str();
    let duration_ms = elapsed.as_millis() as u64;
    let generation = object.generation.get();
    let model_version = runner.model.version();
    match result {
        Ok(Outcome::Committed(m)) if m.status == crate::manifest::Status::Scored => tracing::info!(
            outcome = label,
            input_uri,
            generation,
            rows_in = m.rows.input,
            rows_scored = m.rows.scored,
            rows_rejected = m.rows.rejected,
            model_version = m.model.version,
            accuracy = m.metrics.as_ref().map(|x| x.accuracy),
            predictions = m.outputs.predictions.as_ref().map(|p| p.uri.clone()),
            manifest = m.uri(),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Committed(m)) if m.status == crate::manifest::Status::Fitted => tracing::info!(
            outcome = label,
            input_uri,
            generation,
            model = m.model.name,
            model_version = m.model.version,
            decision = m.fit.as_ref().map(|f| f.decision.clone()),
            manifest = m.uri(),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Committed(m)) => tracing::warn!(
            outcome = label,
            input_uri,
            generation,
            model_version = m.model.version,
            failure = m.failure,
            errors = m.outputs.errors.as_ref().map(|p| p.uri.clone()),
            manifest = m.uri(),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Duplicate(m)) => tracing::info!(
            outcome = label,
            input_uri,
            generation,
            model_version = m.model.version,
            manifest = m.uri(),
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::Dispatched(d)) => tracing::info!(
            outcome = label,
            input_uri,
            generation,
            model_version,
            execution = d.execution,
            tasks = d.tasks,
            started_now = d.now,
            duration_ms,
            "job summary"
        ),
        Ok(Outcome::InProgress(elsewhere)) => tracing::info!(
            outcome = label,
            input_uri,
            generation,
            holder = elsewhere.holder,
            expires_in_s = elsewhere.expires_in.as_secs(),
            duration_ms,
            "job summary"
        ),
        Err(JobError::Transient(e)) => tracing::warn!(
            outcome = label,
            input_uri,
            generation,
            model_version,
            error = %e,
            duration_ms,
            "job summary"
        ),
        Err(JobError::Internal(e)) => tracing::error!(
            outcome = label,
            input_uri,
            generation,
            model_version,
            error = %e,
            duration_ms,
            "job summary"
        ),
    }
}
