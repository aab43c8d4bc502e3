//! The HTTP service: [`Application::build`] binds the listener (port 0 in
//! tests), loads the model in the background and serves the routes, one file
//! each: [`push`] (Pub/Sub push, `POST /`), [`predict`] (`POST /predict`),
//! [`health`] (`GET /health`, `GET /ready`), [`metrics`] (`GET /metrics`) and
//! [`openapi`] (`GET /openapi.json`).

pub mod health;
pub mod metrics;
pub mod openapi;
pub mod predict;
pub mod push;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::future::IntoFuture;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

use crate::auth::{ApiKeys, PushAuth};
use crate::config::{Backend, ModelSource, Settings};
use crate::event::BucketName;
use crate::job::JobRunner;
use crate::manifest::MODEL_PREFIX;
use crate::model::Model;
use crate::model::fit::{self, FitSpec};
use crate::score::ScoreOptions;
use crate::storage::gcs::{GcsOptions, GcsStore};
use crate::storage::local::LocalStore;
use crate::storage::{Location, ObjectStore, StorageError, WriteOptions, read_all, write_bytes};
use crate::telemetry::Metrics;

/// Largest model artifact or training file loaded at start.
const MAX_MODEL_BYTES: usize = 64 << 20;
const MAX_TRAINING_BYTES: usize = 1 << 30;

/// Shared by every handler.
pub struct AppState {
    pub input_bucket: BucketName,
    /// Set once the model is loaded (`/ready` answers 200 from then on).
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
        self.jobs.get().map(|j| &j.model)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("cannot load the model ({location}): {message}")]
    Model { location: String, message: String },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    loader: tokio::task::JoinHandle<Result<(), StartError>>,
    shutdown_grace: Duration,
}

/// The input and output buckets.
pub type Buckets = (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>);

/// The two buckets of a configuration.
pub async fn open_buckets(settings: &Settings) -> Result<Buckets, StartError> {
    Ok((
        open_bucket(settings, &settings.input_bucket).await?,
        open_bucket(settings, &settings.output_bucket).await?,
    ))
}

/// One bucket of a configuration, on its backend.
pub async fn open_bucket(settings: &Settings, bucket: &BucketName) -> Result<Arc<dyn ObjectStore>, StartError> {
    let fail = |message: String| StartError::Bucket {
        bucket: bucket.to_string(),
        message,
    };
    match &settings.backend {
        Backend::Local { dir } => LocalStore::new(bucket.as_str(), dir.join(bucket.as_str()))
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| fail(e.to_string())),
        Backend::Gcs { emulator } => GcsStore::new(bucket.as_str(), emulator.as_deref(), settings.gcs.clone())
            .await
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| fail(e.to_string())),
    }
}

impl Application {
    /// Binds the listener and starts loading the model; serving starts with
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let (input, output) = open_buckets(&settings).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.listen,
                source,
            })?;
        let metrics = Arc::new(Metrics::default());
        let state = Arc::new(AppState {
            input_bucket: settings.input_bucket.clone(),
            jobs: OnceLock::new(),
            job_slots: Arc::new(Semaphore::new(settings.max_concurrent_jobs)),
            push_auth: settings.push_auth.clone().map(PushAuth::new),
            api_keys: settings.predict_api_keys.as_deref().and_then(ApiKeys::parse),
            predict_max_rows: settings.predict_max_rows,
            max_body_bytes: settings.max_body_bytes,
            metrics: metrics.clone(),
            project: settings.project.clone(),
            started: Instant::now(),
        });
        let loader = {
            let state = state.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                let model = load_model(&settings.model, output.as_ref()).await?;
                tracing::info!(model = model.name(), model_version = model.version(), "model ready");
                let options = ScoreOptions {
                    chunk_bytes: settings.chunk_bytes,
                    ..ScoreOptions::default()
                };
                let runner = JobRunner::new(input, output, Arc::new(model), options, settings.lease_ttl, metrics);
                let _ = state.jobs.set(Arc::new(runner));
                Ok(())
            })
        };
        let router = router(state.clone(), settings.max_body_bytes, settings.body_timeout);
        Ok(Application {
            listener,
            router,
            state,
            loader,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` is cancelled; then stops taking requests,
    /// gives in-flight jobs the grace period, abandons the rest cleanly (no
    /// partial output; Pub/Sub redelivers) and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Application {
            listener,
            router,
            state,
            loader,
            shutdown_grace,
        } = self;
        let addr = listener.local_addr().map_err(StartError::Serve)?;
        tracing::info!(%addr, "listening");
        let grace = {
            let shutdown = shutdown.clone();
            let state = state.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!(grace_s = shutdown_grace.as_secs_f64(), "shutting down: no new work");
                tokio::time::sleep(shutdown_grace).await;
                if let Some(jobs) = state.jobs.get() {
                    jobs.shutdown.cancel();
                }
            })
        };
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        let mut serve = std::pin::pin!(serve);
        let mut loader = Some(loader);
        let result = loop {
            let loading = async {
                match loader.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                served = &mut serve => break served.map_err(StartError::Serve),
                loaded = loading => {
                    loader = None;
                    match loaded {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(StartError::Model { location: "model loader".into(), message: e.to_string() }),
                    }
                }
            }
        };
        grace.abort();
        result
    }
}

/// The routes and the layers they share.
pub fn router(state: Arc<AppState>, max_body_bytes: usize, body_timeout: Duration) -> Router {
    Router::new()
        .route("/", post(push::handle))
        .route("/predict", post(predict::handle))
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
    span.in_scope(|| {
        tracing::info!(http_request = %http_request, route, status, "{method} {uri} {status}");
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

/// Loads or fits the model as configured.
pub async fn load_model(source: &ModelSource, output: &dyn ObjectStore) -> Result<Model, StartError> {
    let fail = |location: &dyn std::fmt::Display, message: String| StartError::Model {
        location: location.to_string(),
        message,
    };
    match source {
        ModelSource::Builtin => Model::default_model().map_err(|e| fail(&"built-in data/model.json", e.to_string())),
        ModelSource::Load(location) => {
            let named = format!("MODEL_URI={location}");
            let bytes = read_location(location, MAX_MODEL_BYTES)
                .await
                .map_err(|m| fail(&named, m))?;
            Model::from_json(&bytes).map_err(|e| fail(&named, e.to_string()))
        }
        ModelSource::Fit(data_location) => {
            let named = format!("TRAINING_DATA_URI={data_location}");
            let location = &named;
            let data = read_location(data_location, MAX_TRAINING_BYTES)
                .await
                .map_err(|m| fail(location, m))?;
            let base = Model::default_model().map_err(|e| fail(&"built-in model", e.to_string()))?;
            let spec = FitSpec::like(base.artifact());
            let name = match data_location {
                Location::Gcs { name, .. } => name.rsplit('/').next().unwrap_or(name).to_owned(),
                Location::Local(path) => path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let fitted = tokio::task::spawn_blocking(move || fit::fit(&data, &name, &spec))
                .await
                .map_err(|e| fail(location, e.to_string()))?
                .map_err(|e| fail(location, e.to_string()))?;
            // Keep the fitted artifact next to the outputs: every manifest names
            // its version, and this makes that version retrievable.
            let object = format!("{MODEL_PREFIX}{}.json", fitted.model.version().replace(':', "-"));
            match write_bytes(
                output,
                &object,
                fitted.json.clone(),
                WriteOptions::create_only("application/json"),
            )
            .await
            {
                Ok(_) | Err(StorageError::AlreadyExists(_)) => {
                    tracing::info!(artifact = %output.uri(&object), "fitted model written");
                }
                Err(e) => return Err(fail(&output.uri(&object), e.to_string())),
            }
            Ok(fitted.model)
        }
    }
}

async fn read_location(location: &Location, limit: usize) -> Result<Vec<u8>, String> {
    match location {
        Location::Local(path) => tokio::fs::read(path).await.map_err(|e| e.to_string()),
        Location::Gcs { bucket, name } => {
            let emulator = std::env::var("STORAGE_EMULATOR_HOST").ok().map(|h| {
                if h.starts_with("http") {
                    h
                } else {
                    format!("http://{h}")
                }
            });
            let store = GcsStore::new(bucket, emulator.as_deref(), GcsOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            read_all(&store, name, limit)
                .await
                .map(|(_, b)| b)
                .map_err(|e| e.to_string())
        }
    }
}
