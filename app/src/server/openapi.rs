//! `GET /openapi.json`: the API description, generated from the handlers.
//! `docs/openapi.json` is the checked-in copy; a test fails when it is stale
//! (regenerate with `scorer openapi > docs/openapi.json`).

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scorer",
        description = "Event-driven batch scorer and online predictions for the SCL flight-delay model (or any scorer-logreg/1 artifact)."
    ),
    paths(
        super::push::handle,
        super::status::handle,
        super::predict::handle,
        super::health::health,
        super::health::ready,
        super::metrics::handle,
    ),
    components(schemas(
        super::predict::PredictRequest,
        super::predict::PredictResponse,
        super::predict::ErrorResponse,
        super::push::PushReply,
        super::status::StatusSchema,
        super::health::Health,
        super::health::Readiness,
        super::predict::ContributionSchema,
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

pub async fn handle() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
