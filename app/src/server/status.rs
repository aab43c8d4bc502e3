//! `GET /status?object=NAME[&generation=G]`: where one input object of the
//! push service's input bucket stands, as `scorer status` prints it with
//! `--json` (served on the push role, behind the same Cloud Run IAM).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::event::{Generation, ObjectName};
use crate::operator::OperatorError;
use crate::operator::status;

/// Which input.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatusQuery {
    /// The object's name in the input bucket.
    pub object: String,
    /// Which generation (default: its current one).
    pub generation: Option<i64>,
}

/// One input generation's status (the JSON of `scorer status --json`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StatusSchema {
    /// scored | failed | in_progress | dispatched | waiting
    state: String,
    input_uri: String,
    generation: String,
    /// Whether that generation is still the object's current one.
    current: bool,
    /// failed: why.
    reason: Option<String>,
    /// in_progress: who holds the lease, and until when.
    holder: Option<String>,
    lease_expires_at: Option<String>,
    /// dispatched: the job execution, when it started, whether longer ago
    /// than an execution may run.
    execution: Option<String>,
    started_at: Option<String>,
    stale: Option<bool>,
    manifest_uri: Option<String>,
    /// The committed manifest, whole.
    #[schema(value_type = Option<Object>)]
    manifest: Option<String>,
}

#[utoipa::path(get, path = "/status", operation_id = "status", tag = "push", params(StatusQuery), responses(
    (status = 200, description = "Where the input stands", body = StatusSchema),
    (status = 400, description = "Not an object name or generation"),
    (status = 404, description = "No such object (and no generation given)"),
    (status = 503, description = "Storage trouble, or the model still loading"),
))]
pub async fn handle(State(state): State<Arc<AppState>>, Query(query): Query<StatusQuery>) -> Response {
    let Some(jobs) = state.jobs.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the service is still starting").into_response();
    };
    let name = match ObjectName::parse(&query.object) {
        Ok(name) => name,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("object: {e}")).into_response(),
    };
    let generation = match query.generation.map(|g| Generation::new(g).ok_or(g)).transpose() {
        Ok(g) => g,
        Err(g) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("generation {g} is not a positive number"),
            )
                .into_response();
        }
    };
    let stale = jobs
        .sharding
        .as_ref()
        .map_or(Duration::from_secs(21_600), |s| s.stale_after);
    match status::status(jobs.input.as_ref(), jobs.output.as_ref(), &name, generation, stale).await {
        Ok(report) => Json(report).into_response(),
        Err(OperatorError::Usage(message)) => (StatusCode::NOT_FOUND, message).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
