//! `POST /`: deliveries of Cloud Storage object events, in either of the
//! two forms a trigger posts: the Pub/Sub push envelope of a Cloud Storage
//! notification, or the CloudEvent of an Eventarc trigger (binary content
//! mode; the structured mode is read too). The headers tell them apart: a
//! `ce-specversion` or `ce-type` header, or a `Content-Type` of
//! `application/cloudevents+json`, is a CloudEvent; anything else is read as
//! the envelope. Both become one `ObjectEvent` and take the same path
//! (authentication first, then the job under its lease).
//!
//! The status code is the retry protocol (docs/EXACTLY-ONCE.md has the table):
//! 2xx = done (scored, reported failure, duplicate, ignored, dispatched to
//! the shard job), 429 = back
//! off (over MAX_CONCURRENT_JOBS, or the job runs elsewhere), 503 = transient
//! trouble, 400 = malformed envelope or CloudEvent (logged loudly; the
//! trigger's dead-letter policy ends it), 401 = bad or missing push token,
//! 500 = the job panicked (caught, logged with the input; retried).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::auth::AuthError;
use crate::event::cloudevent::{self, OtherEvent, Parsed};
use crate::event::{self, ObjectEvent};
use crate::job::{Handled, JobError, Outcome};
use crate::manifest::Status;

/// What the push endpoint answers (useful to people reading logs and tests;
/// Pub/Sub only looks at the status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushReply {
    /// scored | failed | duplicate | ignored | dispatched | in_progress | busy | retry | error | rejected | unauthorized
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
    params(
        ("ce-specversion" = Option<String>, Header, description = "CloudEvent in the binary content mode (as Eventarc posts it): `1.0`. This header or `ce-type` makes the request a CloudEvent; without either (and without an `application/cloudevents+json` body) the body is read as a Pub/Sub push envelope."),
        ("ce-type" = Option<String>, Header, description = "CloudEvent type. `google.cloud.storage.object.v1.finalized` is work; other `google.cloud.storage.object.v1.*` types and any other type are acknowledged as ignored."),
        ("ce-id" = Option<String>, Header, description = "CloudEvent id: the delivery id in the logs (`message_id`)."),
        ("ce-source" = Option<String>, Header, description = "`//storage.googleapis.com/projects/_/buckets/BUCKET`; must agree with the body's `bucket`."),
        ("ce-subject" = Option<String>, Header, description = "`objects/NAME` (as is, or percent-encoded); must agree with the body's `name`."),
        ("ce-time" = Option<String>, Header, description = "Event time (RFC 3339)."),
        ("ce-bucket" = Option<String>, Header, description = "Eventarc's extension attribute: the bucket; must agree with the body's `bucket`."),
    ),
    request_body(
        description = "A Cloud Storage object event, in one of three forms. `application/json` without `ce-*` headers: the Pub/Sub push envelope of an OBJECT_FINALIZE notification (`payloadFormat=JSON_API_V1`). `application/json` with the `ce-*` headers: a CloudEvent in the binary content mode, as an Eventarc trigger posts it; the body is the Cloud Storage object resource (`bucket`, `name`, `generation` required; `generation` and `size` as strings or numbers). `application/cloudevents+json`: the same CloudEvent in the structured content mode, the attributes as members and the object resource as `data` (or `data_base64`).",
        content(
            ("application/json", examples(
                ("pubsub" = (summary = "Pub/Sub push envelope", value = json!({
                    "message": {
                        "attributes": {"bucketId": "in-bucket", "eventType": "OBJECT_FINALIZE", "objectGeneration": "1700000000000000", "objectId": "flights.csv", "payloadFormat": "JSON_API_V1"},
                        "data": "eyJidWNrZXQiOiJpbi1idWNrZXQiLCJuYW1lIjoiZmxpZ2h0cy5jc3YiLCJnZW5lcmF0aW9uIjoiMTcwMDAwMDAwMDAwMDAwMCIsInNpemUiOiIxMjM0In0=",
                        "messageId": "1234567890",
                        "publishTime": "2026-01-01T00:00:00Z"
                    },
                    "subscription": "projects/PROJECT/subscriptions/scorer-push"
                }))),
                ("cloudevent-binary" = (summary = "Eventarc CloudEvent, binary content mode: the body, with the ce-* headers", value = json!({
                    "kind": "storage#object",
                    "id": "in-bucket/flights.csv/1700000000000000",
                    "name": "flights.csv",
                    "bucket": "in-bucket",
                    "generation": "1700000000000000",
                    "metageneration": "1",
                    "contentType": "text/csv",
                    "size": "1234",
                    "timeCreated": "2026-01-01T00:00:00.000Z",
                    "updated": "2026-01-01T00:00:00.000Z"
                }))),
            )),
            ("application/cloudevents+json", example = json!({
                "specversion": "1.0",
                "id": "1234567890",
                "source": "//storage.googleapis.com/projects/_/buckets/in-bucket",
                "type": "google.cloud.storage.object.v1.finalized",
                "subject": "objects/flights.csv",
                "time": "2026-01-01T00:00:00.000Z",
                "datacontenttype": "application/json",
                "data": {"kind": "storage#object", "name": "flights.csv", "bucket": "in-bucket", "generation": "1700000000000000", "size": "1234"}
            })),
        ),
    ),
    responses(
        (status = 200, description = "Done: scored, reported failure, duplicate, ignored (not work: another bucket, event type or format; a CloudEvent of another type), or dispatched to a job execution (a large input)", body = PushReply),
        (status = 400, description = "Malformed envelope or CloudEvent (the detail names what is missing or disagrees)", body = PushReply),
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
    let preview = || String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let header_pairs = || headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes()));
    let event = if let Some(mode) = cloudevent::content_mode(header_pairs()) {
        match cloudevent::parse(header_pairs(), &body) {
            Ok(Parsed::Object(event)) => event,
            Ok(Parsed::Other(other)) => return not_an_object_event(&state, &other),
            Err(e) => {
                let ce = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
                tracing::error!(
                    error = %e,
                    mode = ?mode,
                    ce_id = ce("ce-id"),
                    ce_type = ce("ce-type"),
                    ce_source = ce("ce-source"),
                    ce_subject = ce("ce-subject"),
                    body_bytes = body.len(),
                    body_preview = %preview(),
                    "malformed CloudEvent"
                );
                return reply(StatusCode::BAD_REQUEST, "rejected", Some(e.to_string()), None);
            }
        }
    } else {
        match event::pubsub::parse(&body) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, body_bytes = body.len(), body_preview = %preview(), "malformed push envelope");
                return reply(StatusCode::BAD_REQUEST, "rejected", Some(e.to_string()), None);
            }
        }
    };
    work(&state, event).await
}

/// A CloudEvent that is not about a storage object (the trigger's filter
/// lets more through than it should): acknowledged, as any event that is
/// not work, and logged as ignored.
fn not_an_object_event(state: &AppState, other: &OtherEvent) -> Response {
    let reason = format!(
        "{} CloudEvents are not Cloud Storage object events: not work",
        other.event_type
    );
    tracing::info!(
        outcome = "ignored",
        event_type = %other.event_type,
        source = %other.source,
        message_id = %other.id,
        trigger = "cloudevent",
        reason = %reason,
        "job summary"
    );
    state.metrics.record_job("ignored", std::time::Duration::ZERO);
    reply(StatusCode::OK, "ignored", Some(reason), None)
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
            trigger = event.delivery.trigger.kind(),
            reason = %reason,
            "job summary"
        );
        state.metrics.record_job("ignored", std::time::Duration::ZERO);
        return reply(StatusCode::OK, "ignored", Some(reason), None);
    }
    tracing::info!(
        message_id = %event.delivery.id,
        trigger = event.delivery.trigger.kind(),
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
            let outcome = match m.status {
                Status::Scored => "scored",
                Status::Fitted => "fitted",
                Status::Failed => "failed",
            };
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
