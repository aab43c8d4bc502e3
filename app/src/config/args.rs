//! The flags of `scorer serve`, each with the environment variable Cloud Run
//! sets it by, and their value enums. Kept apart from the validation in
//! [`super`] because clap's derive is long and says only what is accepted;
//! what the values must satisfy together is `Settings::from_args`'s.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::auth::{GOOGLE_JWKS_URL, KEYS_MAX_STALE, KEYS_TTL};

/// Every knob of the service. Each flag also reads the environment variable
/// named next to it; the README's configuration table mirrors this.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Run everything on this machine: DIR/input and DIR/output are the
    /// buckets, and a local notifier turns each complete new file in
    /// DIR/input into the push request Cloud Storage + Pub/Sub would send.
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// What this instance serves: `all`, `push` (POST /: the Pub/Sub push
    /// of storage events, a service sized by job slots) or `predict` (POST
    /// /predict: online predictions, a service sized for many small
    /// requests). In the cloud they are two services of one image.
    #[arg(long = "role", env = "SERVICE_ROLE", value_enum, default_value = "all")]
    pub role: ServiceRole,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. Default: 127.0.0.1 with --local (this machine
    /// only), 0.0.0.0 otherwise (Cloud Run).
    #[arg(long, env = "HOST")]
    pub host: Option<IpAddr>,
    /// Bucket whose OBJECT_FINALIZE events are work (others are ignored).
    /// Required in the cloud; "input" with --local.
    #[arg(long, env = "INPUT_BUCKET")]
    pub input_bucket: Option<String>,
    /// Bucket for predictions, errors and manifests; must differ from the
    /// input bucket. Required in the cloud; "output" with --local.
    #[arg(long, env = "OUTPUT_BUCKET")]
    pub output_bucket: Option<String>,
    /// Model artifact to load: gs://BUCKET/OBJECT or a local path.
    /// Default: the artifact shipped in data/model.json (built in).
    #[arg(long = "model", env = "MODEL_URI", value_name = "URI")]
    pub model_uri: Option<String>,
    /// Fit the model at start from this CSV (gs:// or path) instead of
    /// loading one, with the shipped model's feature spec and settings. The
    /// fitted artifact is written to OUTPUT_BUCKET under _models/.
    #[arg(
        long = "training-data",
        env = "TRAINING_DATA_URI",
        value_name = "URI",
        conflicts_with = "model_uri"
    )]
    pub training_data_uri: Option<String>,
    /// Talk to a Cloud Storage emulator at this address (host:port or URL),
    /// anonymously.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT")]
    pub storage_emulator_host: Option<String>,
    /// Jobs run at once by this instance. Set the push service's request
    /// concurrency to the same number (Terraform does), so Cloud Run queues
    /// and scales out instead of the service refusing; a push beyond it
    /// still answers 429.
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 2)]
    pub max_concurrent_jobs: usize,
    /// An input larger than this is not scored inside its push request (it
    /// would not finish within a safe share of the request deadline): it is
    /// dispatched to SHARD_JOB, or without one gets a committed failure
    /// report naming the limit.
    #[arg(long, env = "INLINE_MAX_BYTES", default_value_t = DEFAULT_INLINE_MAX_BYTES, value_name = "BYTES")]
    pub inline_max_bytes: u64,
    /// Where inputs over INLINE_MAX_BYTES are scored in parallel tasks:
    /// `projects/P/locations/L/jobs/J` (a Cloud Run job running `scorer
    /// shard`), or `local` (`scorer shard` processes on this machine; the
    /// default with --local).
    #[arg(long, env = "SHARD_JOB", value_name = "JOB")]
    pub shard_job: Option<String>,
    /// Bytes of input per task: an input gets size / SHARD_BYTES tasks.
    #[arg(long, env = "SHARD_BYTES", default_value_t = 1 << 30, value_name = "BYTES")]
    pub shard_bytes: u64,
    /// Most tasks in one execution (Cloud Run allows 10,000).
    #[arg(long, env = "MAX_TASKS", default_value_t = 100)]
    pub max_tasks: u32,
    /// Retries of a failed task (the job's max retries; its last attempt
    /// writes the input's failure report).
    #[arg(long, env = "SHARD_MAX_RETRIES", default_value_t = 3)]
    pub shard_max_retries: u32,
    /// Tasks run at once by SHARD_JOB=local. Default: the cores of this
    /// machine.
    #[arg(long, env = "SHARD_PARALLELISM")]
    pub shard_parallelism: Option<usize>,
    /// A started execution is presumed still running this long; a delivery
    /// after that, with no manifest, dispatches the input again (at least
    /// the job's task timeout times its attempts).
    #[arg(long, env = "DISPATCH_STALE_SECONDS", default_value_t = 6 * 3600)]
    pub dispatch_stale_seconds: u64,
    /// The Cloud Run Admin API's address (tests: a local stand-in, reached
    /// anonymously).
    #[arg(long, env = "RUN_API_ENDPOINT", hide = true)]
    pub run_api_endpoint: Option<String>,
    /// Expected audience of push OIDC tokens. When set, every push must carry
    /// a valid Google-signed token for it (401 otherwise).
    #[arg(long, env = "PUSH_AUDIENCE")]
    pub push_audience: Option<String>,
    /// Service account email push tokens must belong to (with PUSH_AUDIENCE).
    #[arg(long, env = "PUSH_SERVICE_ACCOUNT", value_name = "EMAIL")]
    pub push_service_account: Option<String>,
    /// `off` serves pushes without checking a token, and says so in a
    /// warning at every start. On Cloud Run the service refuses to start
    /// without PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT unless this is `off`.
    #[arg(long, env = "PUSH_AUTH", value_enum, value_name = "MODE")]
    pub push_auth: Option<PushAuthMode>,
    /// Where Google's token signing keys are published.
    #[arg(long, env = "PUSH_JWKS_URL", default_value = GOOGLE_JWKS_URL, value_name = "URL")]
    pub push_jwks_url: String,
    /// Least seconds between two fetches of the signing keys caused by an
    /// unknown key id (a flood of made-up key ids cannot hammer Google).
    #[arg(long, env = "PUSH_JWKS_REFRESH_FLOOR_SECONDS", default_value_t = 30)]
    pub push_jwks_refresh_floor_seconds: u64,
    /// Seconds fetched signing keys are used before a refresh is due.
    #[arg(long, env = "PUSH_JWKS_TTL_SECONDS", default_value_t = KEYS_TTL.as_secs())]
    pub push_jwks_ttl_seconds: u64,
    /// Seconds cached signing keys keep verifying tokens while refreshes
    /// fail; after that, pushes answer 503 until the keys can be fetched.
    #[arg(long, env = "PUSH_JWKS_MAX_STALE_SECONDS", default_value_t = KEYS_MAX_STALE.as_secs())]
    pub push_jwks_max_stale_seconds: u64,
    /// Comma-separated API keys for POST /predict (header X-API-Key). Off
    /// when unset: Cloud Run IAM is the first line.
    #[arg(long, env = "PREDICT_API_KEYS", hide_env_values = true, value_name = "KEYS")]
    pub predict_api_keys: Option<String>,
    /// Most flights (rows) in one /predict request; more answer 413.
    #[arg(long, env = "PREDICT_MAX_ROWS", default_value_t = 10_000)]
    pub predict_max_rows: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body (slow senders get 408).
    #[arg(long, env = "BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub body_timeout_seconds: u64,
    /// A job holds its input's lease this long without renewing it; a job
    /// whose instance died is taken over after this.
    #[arg(long, env = "LEASE_TTL_SECONDS", default_value_t = 120)]
    pub lease_ttl_seconds: u64,
    /// After SIGTERM, in-flight jobs get this long to finish before they are
    /// abandoned (Cloud Run allows 10 s).
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 8)]
    pub shutdown_grace_seconds: u64,
    /// Project for naming traces in logs (logging.googleapis.com/trace).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Log format; default json on Cloud Run or when not a terminal.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::telemetry::LogFormat>,
    /// Target size of the chunks the engine parses at once, in MiB.
    #[arg(long, env = "CHUNK_MIB", default_value_t = 8)]
    pub chunk_mib: usize,
    #[command(flatten)]
    pub outputs: super::OutputArgs,
    #[command(flatten)]
    pub models: super::ModelArgs,
    /// How long one storage operation keeps retrying transient failures
    /// (429, 5xx, timeouts, cut connections) before the job answers 503.
    #[arg(long, env = "STORAGE_RETRY_SECONDS", default_value_t = 60)]
    pub storage_retry_seconds: u64,
    /// With --local: seconds a new file's size and time must stay unchanged
    /// before it counts as complete (renamed-in files count at once).
    #[arg(long, env = "SETTLE_SECONDS", default_value_t = 1.0)]
    pub settle_seconds: f64,
    /// Set by Cloud Run: the service's name (its presence means "on Cloud
    /// Run").
    #[arg(long, env = "K_SERVICE", hide = true)]
    pub k_service: Option<String>,
    /// Set by Cloud Run: the revision, which names this process in leases.
    #[arg(long, env = "K_REVISION", hide = true)]
    pub k_revision: Option<String>,
    /// Test-only fault injection at the storage seam (the exit-path tests):
    /// never honoured on Cloud Run.
    #[arg(long, env = "SCORER_TEST_FAULTS", hide = true)]
    pub test_faults: Option<String>,
}

/// The largest input scored inside a push request by default, 1 GiB: in
/// half the 600 s deadline that asks for 3.6 MB/s end to end, below even
/// the rate measured through fake-gcs-server (4.3 MB/s, a floor) and far
/// below the engine's own (86 MB/s per vCPU); larger inputs go to the
/// shard job (docs/DEPLOY.md, "Size admission").
pub const DEFAULT_INLINE_MAX_BYTES: u64 = 1 << 30;

/// What an instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceRole {
    /// Pushes and online predictions (local use, tests).
    All,
    /// Pub/Sub pushes only.
    Push,
    /// Online predictions only.
    Predict,
}

impl ServiceRole {
    pub fn serves_pushes(self) -> bool {
        matches!(self, ServiceRole::All | ServiceRole::Push)
    }

    pub fn serves_predictions(self) -> bool {
        matches!(self, ServiceRole::All | ServiceRole::Predict)
    }
}

/// Whether pushes must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushAuthMode {
    /// Serve pushes without a token check (never the default).
    Off,
}
