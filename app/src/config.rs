//! Configuration of `scorer serve`: environment variables (Cloud Run's way)
//! with the same knobs as flags for local use, parsed once at start into
//! [`Settings`], whose values are all valid. A bad setting stops the start
//! with one message naming it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{GOOGLE_JWKS_URL, KEYS_MAX_STALE, KEYS_TTL, PushAuthConfig};
use crate::event::BucketName;
pub use crate::storage::Backend;
use crate::storage::Location;

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
    /// would not finish within a safe share of the request deadline); it
    /// gets a committed failure report naming the limit.
    #[arg(long, env = "INLINE_MAX_BYTES", default_value_t = DEFAULT_INLINE_MAX_BYTES, value_name = "BYTES")]
    pub inline_max_bytes: u64,
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

/// The largest input scored inside a push request by default, 4 GiB: at the
/// engine's measured rate (about 86 MB/s per vCPU, docs/OPERATIONS.md) a
/// job with one vCPU would take about 50 s, leaving the rest of the 600 s
/// deadline to Cloud Storage, whose streaming rate was not measured here.
pub const DEFAULT_INLINE_MAX_BYTES: u64 = 4 << 30;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Builtin,
    Load(Location),
    Fit(Location),
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub role: ServiceRole,
    pub backend: Backend,
    pub output_bucket: BucketName,
    pub model: ModelSource,
    /// What the push route needs; `None` when the instance only answers
    /// online predictions.
    pub pushes: Option<Pushes>,
    pub predict_api_keys: Option<String>,
    pub predict_max_rows: usize,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
    pub project: Option<String>,
    pub chunk_bytes: usize,
    pub settle: Duration,
    /// The Cloud Run service, when running on Cloud Run.
    pub cloud_run_service: Option<String>,
    /// Names this process in leases (Cloud Run's revision, or `local`).
    pub revision: String,
    /// Test-only storage faults (see `storage::faults`).
    pub test_faults: Option<crate::storage::faults::FaultPlan>,
    /// Said at every start (a setting that weakens the service).
    pub warnings: Vec<String>,
}

/// The settings of the push route.
#[derive(Debug, Clone)]
pub struct Pushes {
    /// Only this bucket's events are work.
    pub input_bucket: BucketName,
    pub max_concurrent_jobs: usize,
    pub lease_ttl: Duration,
    pub auth: Option<PushAuthConfig>,
    pub inline_max_bytes: u64,
}

/// A setting that stops the start.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn err(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

impl Settings {
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let local = args.local.is_some();
        let bucket = |value: &Option<String>, setting: &'static str, local_default: &str| {
            let text = match (value, local) {
                (Some(v), _) => v.clone(),
                (None, true) => local_default.to_owned(),
                (None, false) => return Err(err(setting, "is required (or use --local DIR)")),
            };
            BucketName::parse(text.trim_start_matches("gs://").trim_end_matches('/')).map_err(|m| err(setting, m))
        };
        let output_bucket = bucket(&args.output_bucket, "OUTPUT_BUCKET", "output")?;
        let input_bucket = if args.role.serves_pushes() {
            let input = bucket(&args.input_bucket, "INPUT_BUCKET", "input")?;
            if input == output_bucket {
                return Err(err(
                    "OUTPUT_BUCKET",
                    format!("must differ from INPUT_BUCKET ({input}), or outputs would be scored again"),
                ));
            }
            Some(input)
        } else {
            None
        };
        let backend = match &args.local {
            Some(dir) => {
                if args.storage_emulator_host.is_some() {
                    return Err(err("STORAGE_EMULATOR_HOST", "cannot be combined with --local"));
                }
                Backend::Local { dir: dir.clone() }
            }
            None => Backend::Gcs {
                emulator: args.storage_emulator_host.as_deref().map(emulator_url).transpose()?,
                options: crate::storage::gcs::GcsOptions {
                    retry_budget: Duration::from_secs(args.storage_retry_seconds.max(1)),
                    ..Default::default()
                },
            },
        };
        let model = match (&args.model_uri, &args.training_data_uri) {
            (Some(uri), _) => ModelSource::Load(Location::parse(uri).map_err(|m| err("MODEL_URI", m))?),
            (None, Some(uri)) => ModelSource::Fit(Location::parse(uri).map_err(|m| err("TRAINING_DATA_URI", m))?),
            (None, None) => ModelSource::Builtin,
        };
        if args.max_concurrent_jobs == 0 {
            return Err(err("MAX_CONCURRENT_JOBS", "must be at least 1"));
        }
        let cloud_run_service = args.k_service.clone().filter(|s| !s.is_empty());
        let on_cloud_run = cloud_run_service.is_some();
        let audience = args.push_audience.as_deref().map(str::trim).filter(|a| !a.is_empty());
        let account = args
            .push_service_account
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let mut warnings = Vec::new();
        let push_auth = match (args.push_auth, audience, account) {
            (Some(PushAuthMode::Off), _, _) => {
                warnings.push(
                    "PUSH_AUTH=off: pushes are accepted without a token check; anyone who can reach POST / can submit work"
                        .to_owned(),
                );
                None
            }
            (None, Some(audience), account) => {
                if on_cloud_run && account.is_none() {
                    return Err(err(
                        "PUSH_SERVICE_ACCOUNT",
                        "is required on Cloud Run with PUSH_AUDIENCE (else any Google-signed token for the audience passes); or set PUSH_AUTH=off",
                    ));
                }
                Some(PushAuthConfig {
                    audience: audience.to_owned(),
                    service_account: account.map(str::to_owned),
                    jwks_url: args.push_jwks_url.clone(),
                    // On Cloud Run its IAM check has verified the token
                    // before stripping the signature.
                    trust_stripped: on_cloud_run,
                    refresh_floor: Duration::from_secs(args.push_jwks_refresh_floor_seconds),
                    keys_ttl: Duration::from_secs(args.push_jwks_ttl_seconds.max(1)),
                    keys_max_stale: Duration::from_secs(
                        args.push_jwks_max_stale_seconds.max(args.push_jwks_ttl_seconds),
                    ),
                })
            }
            (None, None, Some(_)) => {
                return Err(err("PUSH_SERVICE_ACCOUNT", "needs PUSH_AUDIENCE as well"));
            }
            (None, None, None) if on_cloud_run && args.role.serves_pushes() => {
                return Err(err(
                    "PUSH_AUDIENCE",
                    "is required on Cloud Run (with PUSH_SERVICE_ACCOUNT), so that only Pub/Sub's push account can submit work; set PUSH_AUTH=off to run without push authentication",
                ));
            }
            (None, None, None) => None,
        };
        let test_faults = match &args.test_faults {
            Some(_) if on_cloud_run => {
                return Err(err(
                    "SCORER_TEST_FAULTS",
                    "is a test-only setting and is refused on Cloud Run",
                ));
            }
            Some(spec) => {
                let plan = crate::storage::faults::FaultPlan::parse(spec).map_err(|m| err("SCORER_TEST_FAULTS", m))?;
                warnings.push(format!(
                    "SCORER_TEST_FAULTS={spec}: storage faults will be injected (tests only)"
                ));
                Some(plan)
            }
            None => None,
        };
        if args.lease_ttl_seconds < 3 {
            return Err(err("LEASE_TTL_SECONDS", "must be at least 3"));
        }
        if !(1..=1024).contains(&args.chunk_mib) {
            return Err(err("CHUNK_MIB", "must be between 1 and 1024"));
        }
        if args.max_body_bytes < 1024 {
            return Err(err("MAX_BODY_BYTES", "must be at least 1024"));
        }
        if !(args.settle_seconds.is_finite() && args.settle_seconds >= 0.0) {
            return Err(err("SETTLE_SECONDS", "must be a non-negative number"));
        }
        if args.inline_max_bytes == 0 {
            return Err(err("INLINE_MAX_BYTES", "must be at least 1"));
        }
        let pushes = input_bucket.map(|input_bucket| Pushes {
            input_bucket,
            max_concurrent_jobs: args.max_concurrent_jobs,
            lease_ttl: Duration::from_secs(args.lease_ttl_seconds),
            auth: push_auth,
            inline_max_bytes: args.inline_max_bytes,
        });
        Ok(Settings {
            role: args.role,
            pushes,
            listen: SocketAddr::new(
                args.host.unwrap_or(if local {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }),
                args.port,
            ),
            backend,
            output_bucket,
            model,
            predict_api_keys: args.predict_api_keys.clone().filter(|k| !k.trim().is_empty()),
            predict_max_rows: args.predict_max_rows.max(1),
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_secs(args.body_timeout_seconds.max(1)),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            project: args.project.clone().filter(|p| !p.is_empty()),
            chunk_bytes: args.chunk_mib << 20,
            settle: Duration::from_secs_f64(args.settle_seconds),
            cloud_run_service,
            revision: args
                .k_revision
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "local".to_owned()),
            test_faults,
            warnings,
        })
    }
}

impl Settings {
    /// The local mode's defaults for buckets under `dir`: what `scorer serve
    /// --local DIR` would use with nothing else set (the demo's settings).
    pub fn local(dir: PathBuf) -> Result<Settings, ConfigError> {
        let bucket = |name: &str, setting| BucketName::parse(name).map_err(|m| err(setting, m));
        Ok(Settings {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            role: ServiceRole::All,
            backend: Backend::Local { dir },
            output_bucket: bucket("output", "OUTPUT_BUCKET")?,
            model: ModelSource::Builtin,
            pushes: Some(Pushes {
                input_bucket: bucket("input", "INPUT_BUCKET")?,
                max_concurrent_jobs: 2,
                lease_ttl: Duration::from_secs(120),
                auth: None,
                inline_max_bytes: DEFAULT_INLINE_MAX_BYTES,
            }),
            predict_api_keys: None,
            predict_max_rows: 10_000,
            max_body_bytes: 2 << 20,
            body_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            project: None,
            chunk_bytes: 8 << 20,
            settle: Duration::from_millis(200),
            cloud_run_service: None,
            revision: "local".to_owned(),
            test_faults: None,
            warnings: Vec::new(),
        })
    }

    /// The Cloud Storage emulator in use, if any (for `gs://` model URIs).
    pub fn storage_emulator(&self) -> Option<&str> {
        match &self.backend {
            Backend::Gcs { emulator, .. } => emulator.as_deref(),
            Backend::Local { .. } => None,
        }
    }
}

/// `STORAGE_EMULATOR_HOST` as tools set it (`host:port`) or as a URL.
fn emulator_url(value: &str) -> Result<String, ConfigError> {
    crate::storage::emulator_url(value).map_err(|m| err("STORAGE_EMULATOR_HOST", m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("scorer").chain(args.iter().copied())).unwrap();
        Settings::from_args(&cli.serve)
    }

    #[test]
    fn cloud_mode_needs_both_buckets_and_they_must_differ() {
        let e = settings(&["--output-bucket", "out-b"]).unwrap_err();
        assert_eq!(e.setting, "INPUT_BUCKET");
        let e = settings(&["--input-bucket", "same-b", "--output-bucket", "same-b"]).unwrap_err();
        assert_eq!(e.setting, "OUTPUT_BUCKET");
        assert!(e.to_string().contains("must differ"), "{e}");
        let e = settings(&["--input-bucket", "Bad Name", "--output-bucket", "out-b"]).unwrap_err();
        assert_eq!(e.setting, "INPUT_BUCKET");
        let s = settings(&["--input-bucket", "gs://in-b", "--output-bucket", "out-b"]).unwrap();
        assert_eq!(s.pushes.as_ref().unwrap().input_bucket.as_str(), "in-b");
        assert!(
            matches!(s.backend, Backend::Gcs { emulator: None, .. }),
            "{:?}",
            s.backend
        );
        assert_eq!(s.model, ModelSource::Builtin);
    }

    #[test]
    fn local_mode_has_defaults() {
        let s = settings(&["--local", "/tmp/x"]).unwrap();
        let pushes = s.pushes.as_ref().unwrap();
        assert_eq!(pushes.input_bucket.as_str(), "input");
        assert_eq!(s.output_bucket.as_str(), "output");
        assert_eq!(pushes.max_concurrent_jobs, 2);
        assert!(pushes.auth.is_none());
        assert_eq!(s.listen.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn bad_values_name_their_setting() {
        let base = ["--local", "/tmp/x"];
        for (extra, setting) in [
            (vec!["--max-concurrent-jobs", "0"], "MAX_CONCURRENT_JOBS"),
            (vec!["--push-service-account", "a@b"], "PUSH_SERVICE_ACCOUNT"),
            (vec!["--model", "gs://bucket-only"], "MODEL_URI"),
            (vec!["--lease-ttl-seconds", "1"], "LEASE_TTL_SECONDS"),
        ] {
            let args: Vec<&str> = base.iter().copied().chain(extra).collect();
            assert_eq!(settings(&args).unwrap_err().setting, setting);
        }
    }

    #[test]
    fn on_cloud_run_push_auth_is_required_unless_explicitly_off() {
        let cloud = [
            "--input-bucket",
            "in-b",
            "--output-bucket",
            "out-b",
            "--k-service",
            "scorer",
        ];
        let e = settings(&cloud).unwrap_err();
        assert_eq!(e.setting, "PUSH_AUDIENCE");
        assert!(e.to_string().contains("PUSH_AUTH=off"), "{e}");
        let with_audience: Vec<&str> = cloud.iter().copied().chain(["--push-audience", "aud"]).collect();
        assert_eq!(settings(&with_audience).unwrap_err().setting, "PUSH_SERVICE_ACCOUNT");
        let both: Vec<&str> = with_audience
            .iter()
            .copied()
            .chain(["--push-service-account", "push@p.iam.gserviceaccount.com"])
            .collect();
        let s = settings(&both).unwrap();
        assert!(
            s.pushes
                .as_ref()
                .and_then(|p| p.auth.as_ref())
                .is_some_and(|a| a.trust_stripped)
        );
        assert!(s.warnings.is_empty());
        let off: Vec<&str> = cloud.iter().copied().chain(["--push-auth", "off"]).collect();
        let s = settings(&off).unwrap();
        assert!(s.pushes.as_ref().unwrap().auth.is_none());
        assert!(
            s.warnings.iter().any(|w| w.contains("PUSH_AUTH=off")),
            "{:?}",
            s.warnings
        );
        // Test faults are never honoured on Cloud Run.
        let faults: Vec<&str> = both
            .iter()
            .copied()
            .chain(["--test-faults", "manifest:panic"])
            .collect();
        assert_eq!(settings(&faults).unwrap_err().setting, "SCORER_TEST_FAULTS");
    }

    #[test]
    fn a_predict_instance_needs_no_input_bucket_nor_push_auth() {
        let s = settings(&[
            "--role",
            "predict",
            "--output-bucket",
            "out-b",
            "--k-service",
            "scorer-predict",
        ])
        .unwrap();
        assert!(s.pushes.is_none());
        assert!(s.role.serves_predictions() && !s.role.serves_pushes());
        let s = settings(&["--role", "push", "--local", "/tmp/x"]).unwrap();
        assert!(s.pushes.is_some() && !s.role.serves_predictions());
    }

    #[test]
    fn emulator_host_becomes_a_url() {
        let s = settings(&[
            "--input-bucket",
            "in-b",
            "--output-bucket",
            "out-b",
            "--storage-emulator-host",
            "127.0.0.7:80",
        ])
        .unwrap();
        assert!(
            matches!(&s.backend, Backend::Gcs { emulator: Some(e), .. } if e == "http://127.0.0.7:80"),
            "{:?}",
            s.backend
        );
    }
}
