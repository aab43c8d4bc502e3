//! `POST /`: Pub/Sub push deliveries of Cloud Storage notifications.
//!
//! The status code is the retry protocol (docs/EXACTLY-ONCE.md has the table):
//! 2xx = done (scored, reported failure, duplicate, ignored), 429 = back
//! off (over MAX_CONCURRENT_JOBS, or the job runs elsewhere), 503 = transient
//! trouble, 400 = malformed envelope (logged loudly; Pub/Sub's dead-letter
//! policy ends it), 401 = bad or missing push token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::auth::AuthError;
use crate::event::{self, ObjectEvent};
use crate::job::{Handled, JobError, Outcome};
use crate::manifest::Status;

/// What the push endpoint answers (useful to people reading logs and tests;
/// Pub/Sub only looks at the status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushReply {
    /// scored | failed | duplicate | ignored | in_progress | busy | retry | error | rejected | unauthorized
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

fn reply(status: StatusCode, outcome: &str, detail: Option<String>, manifest: Option<String>) -> Response {
    (
        status,
        Json(PushReply {
            outcome: outcome.to_owned(),
            detail,
            manifest,
        }),
    )
        .into_response()
}

/// Handles one push delivery.
#[utoipa::path(
    post,
    operation_id = "push",
    path = "/",
    tag = "push",
    request_body(content = String, description = "Pub/Sub push envelope of a Cloud Storage OBJECT_FINALIZE notification", content_type = "application/json"),
    responses(
        (status = 200, description = "Done: scored, reported failure, duplicate, ignored, or dispatched to a job execution (a large input)", body = PushReply),
        (status = 400, description = "Malformed envelope", body = PushReply),
        (status = 401, description = "Missing or invalid push token", body = PushReply),
        (status = 429, description = "Over capacity or in progress elsewhere: retry later", body = PushReply),
        (status = 503, description = "Transient trouble: retry later", body = PushReply),
    )
)]
pub async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    if let Some(auth) = &state.push_auth {
        match auth.verify_headers(&headers).await {
            Ok(_) => {}
            Err(AuthError::KeysUnavailable(e)) => {
                tracing::error!(error = %e, "push token could not be checked");
                return reply(StatusCode::SERVICE_UNAVAILABLE, "retry", Some(e), None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "push refused: unauthenticated");
                return reply(StatusCode::UNAUTHORIZED, "unauthorized", Some(e.to_string()), None);
            }
        }
    }
    let body = match super::read_body(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let event = match event::pubsub::parse(&body) {
        Ok(event) => event,
        Err(e) => {
            let preview = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            tracing::error!(error = %e, body_bytes = body.len(), body_preview = %preview, "malformed push envelope");
            return reply(StatusCode::BAD_REQUEST, "rejected", Some(e.to_string()), None);
        }
    };
    work(&state, event).await
}

/// What becomes of a storage event, whichever trigger delivered it: work
/// for a job, or acknowledged as ignored.
pub async fn work(state: &AppState, event: ObjectEvent) -> Response {
    let Some(jobs) = state.jobs.get().cloned() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "retry",
            Some("the model is still loading".into()),
            None,
        );
    };
    let object = &event.object;
    let input_uri = jobs.input.uri(object.name.as_str());
    if let Err(reason) = jobs.accept(&event) {
        tracing::info!(
            outcome = "ignored",
            input_uri,
            generation = object.generation.get(),
            event_type = %event.event_type,
            message_id = %event.delivery.id,
            reason = %reason,
            "job summary"
        );
        state.metrics.record_job("ignored", std::time::Duration::ZERO);
        return reply(StatusCode::OK, "ignored", Some(reason), None);
    }
    tracing::info!(
        message_id = %event.delivery.id,
        delivery_attempt = event.delivery.attempt,
        input_uri,
        generation = object.generation.get(),
        "push received"
    );
    respond(jobs.deliver(object, &state.job_slots).await)
}

/// The retry protocol: each way a delivery ends, as the status code Pub/Sub
/// (or any trigger) reads.
fn respond(handled: Handled) -> Response {
    match handled {
        Handled::NoFreeSlot => reply(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            Some("every job slot of this instance is taken; retry later".into()),
            None,
        ),
        Handled::Finished(Ok(Outcome::Committed(m))) => {
            let outcome = if m.status == Status::Scored { "scored" } else { "failed" };
            reply(StatusCode::OK, outcome, m.failure.clone(), Some(m.uri()))
        }
        Handled::Finished(Ok(Outcome::Duplicate(m))) => reply(StatusCode::OK, "duplicate", None, Some(m.uri())),
        Handled::Finished(Ok(Outcome::Dispatched(d))) => reply(
            StatusCode::OK,
            "dispatched",
            Some(format!(
                "too large to score in a push request: execution {} scores it in {} tasks{}",
                d.execution,
                d.tasks,
                if d.now { "" } else { " (started by an earlier delivery)" }
            )),
            None,
        ),
        Handled::Finished(Ok(Outcome::InProgress(elsewhere))) => reply(
            StatusCode::TOO_MANY_REQUESTS,
            "in_progress",
            Some(format!(
                "being scored by {} (lease expires in {} s)",
                elsewhere.holder,
                elsewhere.expires_in.as_secs()
            )),
            None,
        ),
        Handled::Finished(Err(JobError::Transient(e))) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, "retry", Some(e), None)
        }
        Handled::Finished(Err(JobError::Internal(e))) => {
            reply(StatusCode::INTERNAL_SERVER_ERROR, "error", Some(e), None)
        }
    }
}
