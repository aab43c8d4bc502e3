//! `scorer serve` and `scorer demo`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::failed::{Exit, Failed};
use scorer::config::{Backend, ServeArgs, Settings};
use scorer::notifier::{self, NotifierConfig};
use scorer::startup::Application;
use scorer::storage::{self, Missing};
use scorer::telemetry::{self, LogFormat};

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the buckets (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub async fn serve(args: ServeArgs) -> Result<Exit, Failed> {
    telemetry::init(
        args.log_format
            .unwrap_or_else(|| LogFormat::detect(args.k_service.is_some())),
        "info",
    );
    log_panics();
    let settings = Settings::from_args(&args).map_err(|e| Failed::new(Exit::Usage, e))?;
    let stop = scorer::shutdown::on_signal();
    let app = Application::build(settings.clone()).await?;
    let addr = app.local_addr();
    let notifier = match (&settings.backend, &settings.pushes) {
        (Backend::Local { dir }, Some(pushes)) => {
            let bucket = pushes.input_bucket.as_str();
            let input = storage::open_local(dir, bucket, Missing::Create)?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                addr.ip().to_string()
            };
            let config = NotifierConfig {
                input,
                dead_letter_dir: dir.join("dead-letter"),
                endpoint: format!("http://{host}:{}/", addr.port()),
                settle: settings.settle,
            };
            Some(tokio::spawn(notifier::run(config, stop.clone())))
        }
        _ => None,
    };
    let result = app.run_until_stopped(stop.clone()).await;
    stop.cancel();
    if let Some(n) = notifier {
        let _ = n.await;
    }
    result?;
    tracing::info!("stopped");
    Ok(Exit::Ok)
}

/// A panic anywhere (a job, an upload task, a scoring thread) is logged as
/// an ERROR entry with where it happened, so Cloud Logging shows it; the
/// job that met it answers 500 or 503 and its input is retried.
pub(super) fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(panic = %message, location, "a thread panicked");
    }));
}

pub async fn demo(args: DemoArgs) -> Result<Exit, Failed> {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::detect(false), "info");
    }
    let result = scorer::demo::run(args.dir, Duration::from_secs(args.timeout)).await?;
    super::ending::say(super::ending::Stream::Stdout, &scorer::demo::render(&result))?;
    if result.manifests.is_empty() {
        return Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!("the demo produced no outputs"),
        ));
    }
    Ok(Exit::Ok)
}
