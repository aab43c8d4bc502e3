//! The HTTP service's routes, one module each: [`push`] (Pub/Sub pushes
//! and Eventarc CloudEvents, `POST /`), [`predict`] (`POST /predict`),
//! [`status`] (`GET /status`: where one input stands), [`health`]
//! (`GET /health`, `GET /ready`), [`metrics`] (`GET /metrics`)
//! and [`openapi`] (`GET /openapi.json`); the [`router`] that serves those the instance's
//! role asks for, and the middleware they share. Start-up (buckets, the
//! model, the listener) is `crate::startup`'s.

pub mod health;
pub mod metrics;
pub mod openapi;
pub mod predict;
pub mod push;
pub mod status;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

use crate::auth::{ApiKeys, PushAuth};
use crate::config::ServiceRole;
use crate::job::JobRunner;
use crate::model::Model;
use crate::telemetry::Metrics;

/// Shared by every handler.
pub struct AppState {
    pub role: ServiceRole,
    /// Set once the model is loaded (`/ready` answers 200 from then on).
    pub model: OnceLock<Arc<Model>>,
    /// The registry and its routes: `/predict?model=` and the default.
    pub models: OnceLock<Arc<crate::registry::routes::Models>>,
    /// The push route's jobs, set with the model when the role serves pushes.
    pub jobs: OnceLock<Arc<JobRunner>>,
    pub job_slots: Arc<Semaphore>,
    pub push_auth: Option<PushAuth>,
    pub api_keys: Option<ApiKeys>,
    pub predict_max_rows: usize,
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub project: Option<String>,
    pub started: Instant,
}

impl AppState {
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.model.get()
    }
}

/// The routes the instance's role serves, and the layers they share.
pub fn router(state: Arc<AppState>, max_body_bytes: usize, body_timeout: Duration) -> Router {
    let mut routes = Router::new();
    if state.role.serves_pushes() {
        routes = routes
            .route("/", post(push::handle))
            .route("/status", get(status::handle));
    }
    if state.role.serves_predictions() {
        routes = routes.route("/predict", post(predict::handle));
    }
    routes
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::handle))
        .route("/openapi.json", get(openapi::handle))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every response by route and status. Pushes, the requests that
/// matter one by one, also get a span carrying the Cloud Trace context (so
/// every log line of the job groups under the request in Logs Explorer) and
/// an access log line with `httpRequest`; the rest are left to Cloud Run's
/// own request logs, which cost this process nothing.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    if route != "/" {
        let response = next.run(request).await;
        state.metrics.record_response(&route, response.status().as_u16());
        return response;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let user_agent = header(&request, "user-agent");
    let trace = request
        .headers()
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| crate::telemetry::cloud_trace(h, state.project.as_deref()));
    let span = match &trace {
        Some((trace, Some(span_id))) => tracing::info_span!("request", trace = %trace, span_id = %span_id),
        Some((trace, None)) => tracing::info_span!("request", trace = %trace),
        None => tracing::info_span!("request"),
    };
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.metrics.record_response(&route, status);
    let http_request = serde_json::json!({
        "requestMethod": method.as_str(),
        "requestUrl": uri.to_string(),
        "status": status,
        "latency": format!("{:.6}s", started.elapsed().as_secs_f64()),
        "userAgent": user_agent,
    });
    // Recorded as text, embedded by the JSON layer as Cloud Logging's
    // `httpRequest` object.
    let http_request = http_request.to_string();
    span.in_scope(|| {
        tracing::info!(
            http_request = http_request.as_str(),
            route,
            status,
            "{method} {uri} {status}"
        );
    });
    response
}

/// Reads a request body within the size limit and the body time limit:
/// 413 past the size, 408 for a sender too slow, 400 for a broken stream.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, Response> {
    use axum::body::HttpBody as _;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    // A declared length over the limit is refused before reading a byte.
    if body.size_hint().lower() > limit as u64 {
        let detail = format!("the body is larger than {limit} bytes");
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({ "detail": detail })),
        )
            .into_response());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut status = StatusCode::BAD_REQUEST;
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    status = StatusCode::PAYLOAD_TOO_LARGE;
                } else if s.is::<tower_http::timeout::TimeoutError>() {
                    status = StatusCode::REQUEST_TIMEOUT;
                }
                source = s.source();
            }
            let detail = match status {
                StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {limit} bytes"),
                StatusCode::REQUEST_TIMEOUT => "the body did not arrive in time".to_owned(),
                _ => format!("the body could not be read: {e}"),
            };
            Err((status, axum::Json(serde_json::json!({ "detail": detail }))).into_response())
        }
    }
}

fn header(request: &Request, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
