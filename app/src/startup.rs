//! Start-up, apart from serving: settings in, a bound listener out, with
//! the buckets opened through [`storage::open`] and the model loading (or
//! fitting) in the background, so tests start the real application on port
//! 0 and `/ready` tells when it can work.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{ApiKeys, PushAuth};
use crate::config::{ModelSource, Settings, ShardTarget, ShardingSettings};
use crate::dispatch::Dispatcher;
use crate::dispatch::cloud_run::CloudRunDispatcher;
use crate::dispatch::local::LocalPool;
use crate::job::{JobRunner, Sharding};
use crate::layout::MODEL_PREFIX;
use crate::model::Model;
use crate::model::fit::{self, FitSpec};
use crate::registry::routes::{Models, Routes};
use crate::registry::{DEFAULT_ALIAS, ModelRef, Registry, RegistryError};
use crate::score::ScoreOptions;
use crate::server::{AppState, router};
use crate::storage::{self, Location, ObjectStore, read_all};
use crate::telemetry::Metrics;

/// The dispatcher for inputs over `INLINE_MAX_BYTES`, and its limits.
async fn sharding_of(
    settings: &Settings,
    sharding: &ShardingSettings,
    shutdown: CancellationToken,
) -> Result<Sharding, StartError> {
    // Each execution is told the exact model version its input was
    // dispatched for (MODEL_NAME, MODEL_VERSION), which every task reads
    // from the registry in the output bucket.
    // What every task shares with this service, whoever runs it: the
    // output bucket, the model, the retries that decide the last attempt.
    let mut shared = vec![
        ("OUTPUT_BUCKET".to_owned(), settings.output_bucket.to_string()),
        ("CHUNK_MIB".to_owned(), (settings.chunk_bytes >> 20).max(1).to_string()),
        (
            "LEASE_TTL_SECONDS".to_owned(),
            settings
                .pushes
                .as_ref()
                .map_or(120, |p| p.lease_ttl.as_secs())
                .to_string(),
        ),
        ("SHARD_MAX_RETRIES".to_owned(), sharding.max_retries.to_string()),
    ];
    // The ranges of one input are written in the service's format.
    shared.extend(settings.outputs.env());
    if let storage::Backend::Gcs { options, .. } = &settings.backend {
        shared.push((
            "STORAGE_RETRY_SECONDS".to_owned(),
            options.retry_budget.as_secs().max(1).to_string(),
        ));
    }
    let dispatcher: Arc<dyn Dispatcher> = match &sharding.target {
        ShardTarget::CloudRun { job, endpoint } => Arc::new(
            CloudRunDispatcher::new(job, endpoint.as_deref(), shared)
                .await
                .map_err(|e| StartError::Dispatcher(e.to_string()))?,
        ),
        ShardTarget::Local { parallelism } => {
            let exe = std::env::current_exe().map_err(|e| StartError::Dispatcher(format!("the scorer binary: {e}")))?;
            let mut env = shared;
            match &settings.backend {
                storage::Backend::Local { dir } => env.push(("SCORER_LOCAL_DIR".to_owned(), dir.display().to_string())),
                storage::Backend::Gcs {
                    emulator: Some(emulator),
                    ..
                } => env.push(("STORAGE_EMULATOR_HOST".to_owned(), emulator.clone())),
                storage::Backend::Gcs { emulator: None, .. } => {}
            }
            Arc::new(LocalPool::new(exe, env, *parallelism, sharding.max_retries, shutdown))
        }
    };
    Ok(Sharding {
        dispatcher,
        shard_bytes: sharding.shard_bytes,
        max_tasks: sharding.max_tasks,
        stale_after: sharding.stale_after,
        max_dispatches: crate::job::dispatch::MAX_DISPATCHES,
    })
}

/// Largest model artifact or training file loaded at start.
const MAX_MODEL_BYTES: usize = 64 << 20;
const MAX_TRAINING_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("cannot start job executions: {0}")]
    Dispatcher(String),
    #[error("cannot load the model ({location}): {message}")]
    Model { location: String, message: String },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot set up {what}: {message}")]
    FollowUp { what: &'static str, message: String },
}

/// The clients of what follows a commit: the BigQuery load jobs and the
/// results topic's publisher, when configured.
pub async fn follow_ups(
    outputs: &crate::config::OutputSettings,
    retry_budget: Duration,
) -> Result<crate::job::after_commit::FollowUps, StartError> {
    use crate::job::after_commit::{BigQueryTarget, FollowUps, ResultsTopic};
    let bigquery = match &outputs.bigquery {
        Some(settings) => Some(BigQueryTarget {
            settings: settings.clone(),
            loads: scorer_cloud::bigquery::BigQueryLoads::new(settings.endpoint.as_deref())
                .await
                .map_err(|e| StartError::FollowUp {
                    what: "BIGQUERY_TABLE",
                    message: e.to_string(),
                })?,
        }),
        None => None,
    };
    let results = match &outputs.results_topic {
        Some(topic) => {
            let fail = |message: String| StartError::FollowUp {
                what: "RESULTS_TOPIC",
                message,
            };
            let target = crate::operator::pubsub::PubSubTarget {
                emulator: outputs
                    .pubsub_emulator_host
                    .as_deref()
                    .map(storage::emulator_url)
                    .transpose()
                    .map_err(fail)?,
                retry_budget,
            };
            let publisher = target.publisher(topic).await.map_err(|e| fail(e.to_string()))?;
            Some(ResultsTopic {
                topic: topic.clone(),
                publisher,
            })
        }
        None => None,
    };
    Ok(FollowUps { bigquery, results })
}

/// The service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    loader: tokio::task::JoinHandle<Result<(), StartError>>,
    shutdown_grace: Duration,
}

/// Opens one bucket of a configuration, on its backend.
async fn open_bucket(settings: &Settings, bucket: &str) -> Result<Arc<dyn ObjectStore>, StartError> {
    // The service's own buckets: a local one is created on first start.
    let store = storage::open(&settings.backend, bucket, storage::Missing::Create)
        .await
        .map_err(|e| StartError::Bucket {
            bucket: bucket.to_owned(),
            message: e.to_string(),
        })?;
    Ok(match &settings.test_faults {
        Some(plan) => storage::faults::FaultyStore::wrap(store, plan.clone()),
        None => store,
    })
}

impl Application {
    /// Opens the buckets, binds the listener and starts loading the model;
    /// serving starts with [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        let output = open_bucket(&settings, settings.output_bucket.as_str()).await?;
        let input = match &settings.pushes {
            Some(pushes) => Some(open_bucket(&settings, pushes.input_bucket.as_str()).await?),
            None => None,
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.listen,
                source,
            })?;
        let metrics = Arc::new(Metrics::default());
        let pushes = settings.pushes.as_ref();
        let state = Arc::new(AppState {
            role: settings.role,
            model: OnceLock::new(),
            models: OnceLock::new(),
            jobs: OnceLock::new(),
            job_slots: Arc::new(Semaphore::new(pushes.map_or(1, |p| p.max_concurrent_jobs))),
            push_auth: pushes.and_then(|p| p.auth.clone()).map(PushAuth::new),
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
                let (model, artifact) = load_model(&settings.model, &settings.backend).await?;
                let model = Arc::new(model);
                let models = Arc::new(registry_of(&settings, output.clone(), model.clone(), &artifact).await?);
                tracing::info!(
                    model = model.name(),
                    model_version = model.version(),
                    default_model = %models.routes.default,
                    "model ready"
                );
                let _ = state.models.set(models.clone());
                if let (Some(pushes), Some(input)) = (&settings.pushes, input) {
                    let options = ScoreOptions {
                        chunk_bytes: settings.chunk_bytes,
                        ..ScoreOptions::default()
                    };
                    let mut runner = JobRunner::new(
                        input,
                        output,
                        model.clone(),
                        options,
                        pushes,
                        metrics,
                        &settings.revision,
                    );
                    runner.outputs = settings.outputs.clone();
                    runner.models = Some(models.clone());
                    runner.training = settings.models.clone();
                    let retry_budget = match &settings.backend {
                        storage::Backend::Gcs { options, .. } => options.retry_budget,
                        storage::Backend::Local { .. } => Duration::from_secs(60),
                    };
                    runner.follow_ups = Arc::new(follow_ups(&settings.outputs, retry_budget).await?);
                    if let Some(sharding) = &pushes.sharding {
                        let sharding = sharding_of(&settings, sharding, runner.shutdown.clone()).await?;
                        tracing::info!(
                            dispatcher = sharding.dispatcher.describe(),
                            inline_max_bytes = pushes.inline_max_bytes,
                            "inputs over INLINE_MAX_BYTES are dispatched to job executions"
                        );
                        runner.sharding = Some(sharding);
                    }
                    let _ = state.jobs.set(Arc::new(runner));
                }
                let _ = state.model.set(model);
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

/// Loads or fits the start-up model as configured, with its artifact's
/// bytes (which the registry stores as they are: the version is their hash).
pub async fn load_model(source: &ModelSource, backend: &storage::Backend) -> Result<(Model, Vec<u8>), StartError> {
    let fail = |location: &dyn std::fmt::Display, message: String| StartError::Model {
        location: location.to_string(),
        message,
    };
    match source {
        ModelSource::Builtin => {
            let bytes = crate::model::DEFAULT_ARTIFACT.to_vec();
            let model = Model::from_json(&bytes).map_err(|e| fail(&"built-in data/model.json", e.to_string()))?;
            Ok((model, bytes))
        }
        ModelSource::Load(location) => {
            let named = format!("MODEL_URI={location}");
            let bytes = read_location(backend, location, MAX_MODEL_BYTES)
                .await
                .map_err(|m| fail(&named, m))?;
            let model = Model::from_json(&bytes).map_err(|e| fail(&named, e.to_string()))?;
            Ok((model, bytes))
        }
        ModelSource::Fit(data_location) => {
            let named = format!("TRAINING_DATA_URI={data_location}");
            let location = &named;
            let data = read_location(backend, data_location, MAX_TRAINING_BYTES)
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
            let fitted = tokio::task::spawn_blocking(move || fit::fit(&data[..], &name, &spec))
                .await
                .map_err(|e| fail(location, e.to_string()))?
                .map_err(|e| fail(location, e.to_string()))?;
            Ok((fitted.model, fitted.json))
        }
    }
}

/// The registry, with the start-up model stored as a version of its name
/// and `@production` seeded with it on the first start; the default route
/// is `MODEL`, else that alias. The start-up model stays the answer for its
/// `@production` while the registry cannot be read or written (a predict
/// service that may only read it, a first start racing another), so the
/// service always has a model.
async fn registry_of(
    settings: &Settings,
    output: Arc<dyn ObjectStore>,
    model: Arc<Model>,
    artifact: &[u8],
) -> Result<Models, StartError> {
    let registry = Registry::new(output);
    let default = settings
        .models
        .default
        .clone()
        .unwrap_or_else(|| ModelRef::alias(model.name(), DEFAULT_ALIAS));
    match registry.publish(artifact).await {
        Ok((_, created)) => {
            let object = crate::layout::model_version(model.name(), model.version());
            if created {
                tracing::info!(
                    artifact = registry.uri(&object),
                    "start-up model stored in the registry"
                );
            }
            match registry
                .seed(model.name(), model.version(), DEFAULT_ALIAS, &settings.revision)
                .await
            {
                Ok(alias) if alias.changed => {
                    tracing::info!(
                        model = model.name(),
                        version = alias.to,
                        "@production created for the start-up model"
                    )
                }
                Ok(alias) if alias.to != model.version() => tracing::warn!(
                    model = model.name(),
                    production = alias.to,
                    start_up = model.version(),
                    "the start-up model is not {}@production: the registry decides which version serves \
                     (`scorer model promote {} {} --alias production` to serve it)",
                    model.name(),
                    model.name(),
                    model.version()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot seed @production of the start-up model"),
            }
        }
        // The push service must store it: the tasks of a large input read
        // the version they are dispatched for from the registry.
        Err(e) if settings.pushes.is_some() => {
            return Err(StartError::Model {
                location: registry.uri(MODEL_PREFIX),
                message: format!("the start-up model cannot be stored in the registry: {e}"),
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "the start-up model cannot be stored in the registry; it serves from memory")
        }
    }
    let routes = Routes {
        default,
        prefixes: settings.models.routes.clone(),
    };
    let mut models = Models::new(registry, routes, settings.models.refresh);
    models.remember_start_up(model);
    // A MODEL that names nothing would turn every file it routes into a
    // failure report: refused at start, as any bad setting is. A route may
    // name a model a fit on upload is yet to make: said, not refused.
    let fail = |message: String| StartError::Model {
        location: format!("MODEL={}", models.routes.default),
        message,
    };
    for reference in std::iter::once(&models.routes.default).chain(models.routes.prefixes.iter().map(|(_, r)| r)) {
        match models.get(reference).await {
            Ok(_) => {}
            Err(e @ (RegistryError::Unknown(_) | RegistryError::Invalid(_) | RegistryError::BadArtifact { .. })) => {
                if settings.models.default.is_some() && reference == &models.routes.default {
                    return Err(fail(format!("{reference}: {e}")));
                }
                tracing::warn!(model = %reference, error = %e, "MODEL_ROUTES names a model the registry does not hold (yet): its inputs fail until it does");
            }
            Err(e) => tracing::warn!(model = %reference, error = %e, "the model cannot be read now; jobs will retry"),
        }
    }
    Ok(models)
}

async fn read_location(backend: &storage::Backend, location: &Location, limit: usize) -> Result<Vec<u8>, String> {
    match location {
        Location::Local(path) => tokio::fs::read(path).await.map_err(|e| e.to_string()),
        Location::Gcs { bucket, name } => {
            // A gs:// model with local buckets is still read from Cloud Storage.
            let backend = match backend {
                gcs @ storage::Backend::Gcs { .. } => gcs.clone(),
                storage::Backend::Local { .. } => storage::Backend::Gcs {
                    emulator: None,
                    options: Default::default(),
                },
            };
            let store = storage::open(&backend, bucket, storage::Missing::Refuse)
                .await
                .map_err(|e| e.to_string())?;
            read_all(store.as_ref(), name, limit)
                .await
                .map(|(_, b)| b)
                .map_err(|e| e.to_string())
        }
    }
}
