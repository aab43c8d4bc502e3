//! Configuration of `scorer serve`: environment variables (Cloud Run's way)
//! with the same knobs as flags for local use (`args`), parsed once at start
//! into [`Settings`], whose values are all valid. A bad setting stops the
//! start with one message naming it.

mod args;
mod dispatch;
pub mod models;
pub mod output;
pub mod shard;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use args::{DEFAULT_INLINE_MAX_BYTES, PushAuthMode, ServeArgs, ServiceRole};
pub use dispatch::{ShardTarget, ShardingSettings};
pub use models::{ModelArgs, ModelSettings, Promote};
pub use output::{BigQuerySettings, OutputArgs, OutputSettings};

use crate::auth::PushAuthConfig;
use crate::event::BucketName;
pub use crate::storage::Backend;
use crate::storage::Location;

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
    /// The predictions' format, BigQuery and the results topic.
    pub outputs: OutputSettings,
    /// The registry's routes and refresh, fit on upload.
    pub models: ModelSettings,
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
    /// Where larger inputs go; `None`: they get a failure report.
    pub sharding: Option<ShardingSettings>,
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
        let sharding = ShardingSettings::from_args(args)?;
        let pushes = input_bucket.map(|input_bucket| Pushes {
            input_bucket,
            max_concurrent_jobs: args.max_concurrent_jobs,
            lease_ttl: Duration::from_secs(args.lease_ttl_seconds),
            auth: push_auth,
            inline_max_bytes: args.inline_max_bytes,
            sharding,
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
            outputs: OutputSettings::from_args(&args.outputs)?,
            models: ModelSettings::from_args(&args.models)?,
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
    /// --local DIR` would use with nothing else set, except a 5 s shutdown
    /// grace and a 0.2 s settle time (the demo's settings).
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
                sharding: Some(ShardingSettings {
                    target: ShardTarget::Local {
                        parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
                    },
                    shard_bytes: 1 << 30,
                    max_tasks: 100,
                    max_retries: 3,
                    stale_after: Duration::from_secs(6 * 3600),
                }),
            }),
            predict_api_keys: None,
            predict_max_rows: 10_000,
            max_body_bytes: 2 << 20,
            body_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            project: None,
            chunk_bytes: 8 << 20,
            outputs: OutputSettings::default(),
            models: ModelSettings::default(),
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
