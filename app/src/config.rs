//! Configuration of `scorer serve`: environment variables (Cloud Run's way)
//! with the same knobs as flags for local use, parsed once at start into
//! [`Settings`], whose values are all valid. A bad setting stops the start
//! with one message naming it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{GOOGLE_JWKS_URL, PushAuthConfig};
use crate::event::BucketName;
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
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,
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
    /// Jobs run at once by this instance; pushes beyond it answer 429 so
    /// Pub/Sub backs off.
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 2)]
    pub max_concurrent_jobs: usize,
    /// Expected audience of push OIDC tokens. When set, every push must carry
    /// a valid Google-signed token for it (401 otherwise).
    #[arg(long, env = "PUSH_AUDIENCE")]
    pub push_audience: Option<String>,
    /// Service account email push tokens must belong to (with PUSH_AUDIENCE).
    #[arg(long, env = "PUSH_SERVICE_ACCOUNT", value_name = "EMAIL")]
    pub push_service_account: Option<String>,
    /// Where Google's token signing keys are published.
    #[arg(long, env = "PUSH_JWKS_URL", default_value = GOOGLE_JWKS_URL, value_name = "URL")]
    pub push_jwks_url: String,
    /// Least seconds between two fetches of the signing keys caused by an
    /// unknown key id (a flood of made-up key ids cannot hammer Google).
    #[arg(long, env = "PUSH_JWKS_REFRESH_FLOOR_SECONDS", default_value_t = 30)]
    pub push_jwks_refresh_floor_seconds: u64,
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
}

/// Where buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Buckets are DIR/<bucket>; the local notifier runs.
    Local { dir: PathBuf },
    /// Cloud Storage, or its emulator at `emulator` (an http URL).
    Gcs { emulator: Option<String> },
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
    pub backend: Backend,
    pub input_bucket: BucketName,
    pub output_bucket: BucketName,
    pub model: ModelSource,
    pub max_concurrent_jobs: usize,
    pub push_auth: Option<PushAuthConfig>,
    pub predict_api_keys: Option<String>,
    pub predict_max_rows: usize,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    pub project: Option<String>,
    pub chunk_bytes: usize,
    pub settle: Duration,
    /// Cloud Storage client settings (retry budget and backoff).
    pub gcs: crate::storage::gcs::GcsOptions,
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
        let input_bucket = bucket(&args.input_bucket, "INPUT_BUCKET", "input")?;
        let output_bucket = bucket(&args.output_bucket, "OUTPUT_BUCKET", "output")?;
        if input_bucket == output_bucket {
            return Err(err(
                "OUTPUT_BUCKET",
                format!("must differ from INPUT_BUCKET ({input_bucket}), or outputs would be scored again"),
            ));
        }
        let backend = match &args.local {
            Some(dir) => {
                if args.storage_emulator_host.is_some() {
                    return Err(err("STORAGE_EMULATOR_HOST", "cannot be combined with --local"));
                }
                Backend::Local { dir: dir.clone() }
            }
            None => Backend::Gcs {
                emulator: args.storage_emulator_host.as_deref().map(emulator_url).transpose()?,
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
        let push_auth = match (&args.push_audience, &args.push_service_account) {
            (Some(audience), sa) if !audience.trim().is_empty() => Some(PushAuthConfig {
                audience: audience.trim().to_owned(),
                service_account: sa.clone().filter(|s| !s.trim().is_empty()),
                jwks_url: args.push_jwks_url.clone(),
                // Cloud Run sets K_SERVICE; there, its IAM check has verified
                // the token before stripping the signature.
                trust_stripped: std::env::var_os("K_SERVICE").is_some(),
                refresh_floor: Duration::from_secs(args.push_jwks_refresh_floor_seconds),
            }),
            (_, Some(sa)) if !sa.trim().is_empty() => {
                return Err(err("PUSH_SERVICE_ACCOUNT", "needs PUSH_AUDIENCE as well"));
            }
            _ => None,
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
        Ok(Settings {
            listen: SocketAddr::new(args.host, args.port),
            backend,
            input_bucket,
            output_bucket,
            model,
            max_concurrent_jobs: args.max_concurrent_jobs,
            push_auth,
            predict_api_keys: args.predict_api_keys.clone().filter(|k| !k.trim().is_empty()),
            predict_max_rows: args.predict_max_rows.max(1),
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_secs(args.body_timeout_seconds.max(1)),
            lease_ttl: Duration::from_secs(args.lease_ttl_seconds),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            project: args.project.clone().filter(|p| !p.is_empty()),
            chunk_bytes: args.chunk_mib << 20,
            settle: Duration::from_secs_f64(args.settle_seconds),
            gcs: crate::storage::gcs::GcsOptions {
                retry_budget: Duration::from_secs(args.storage_retry_seconds.max(1)),
                ..Default::default()
            },
        })
    }
}

/// `STORAGE_EMULATOR_HOST` as tools set it (`host:port`) or as a URL.
fn emulator_url(value: &str) -> Result<String, ConfigError> {
    let value = value.trim().trim_end_matches('/');
    if value.is_empty() {
        return Err(err("STORAGE_EMULATOR_HOST", "is empty"));
    }
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.to_owned())
    } else {
        Ok(format!("http://{value}"))
    }
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
        assert_eq!(s.input_bucket.as_str(), "in-b");
        assert_eq!(s.backend, Backend::Gcs { emulator: None });
        assert_eq!(s.model, ModelSource::Builtin);
    }

    #[test]
    fn local_mode_has_defaults() {
        let s = settings(&["--local", "/tmp/x"]).unwrap();
        assert_eq!(s.input_bucket.as_str(), "input");
        assert_eq!(s.output_bucket.as_str(), "output");
        assert_eq!(s.max_concurrent_jobs, 2);
        assert!(s.push_auth.is_none());
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
        assert_eq!(
            s.backend,
            Backend::Gcs {
                emulator: Some("http://127.0.0.7:80".into())
            }
        );
    }
}
