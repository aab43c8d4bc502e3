//! `GET /health` (liveness) and `GET /ready` (readiness: the model is
//! loaded). Cloud Run reserves paths ending in `z`, hence not `/healthz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always "OK".
    pub status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// "ready" or "loading".
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health", responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "OK" })
}

#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "health", responses(
    (status = 200, description = "The model is loaded", body = Readiness),
    (status = 503, description = "Still loading", body = Readiness),
))]
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    match state.model() {
        Some(model) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                model: Some(model.name().to_owned()),
                model_version: Some(model.version().to_owned()),
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "loading",
                model: None,
                model_version: None,
            }),
        ),
    }
}
