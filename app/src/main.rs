//! The `scorer` command line. Everything of substance lives in the library;
//! this file parses arguments, wires the pieces and turns errors into exit
//! codes and messages.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use scorer::config::{Backend, ServeArgs, Settings};
use scorer::model::Model;
use scorer::model::fit::{self, FitSpec, Split};
use scorer::notifier::{self, NotifierConfig};
use scorer::score::{self, CsvRejects, ScoreError, ScoreOptions};
use scorer::server::Application;
use scorer::storage::local::LocalStore;
use scorer::telemetry::{self, LogFormat};

// glibc's malloc keeps freed arenas of the scoring threads and the resident
// size creeps up over hours of jobs (measured in the soak test, see
// docs/RELIABILITY.md); mimalloc returns memory and stays flat.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Event-driven batch scorer: CSV in a bucket -> Pub/Sub push -> predictions
/// in another bucket. Also scores files locally and answers online
/// predictions over HTTP.
#[derive(Parser)]
#[command(name = "scorer", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a logistic regression from a CSV and write its JSON artifact.
    Train(TrainArgs),
    /// Score a CSV (or .csv.gz) file: predictions, plus an errors file when
    /// rows are rejected.
    Score(ScoreArgs),
    /// Run the HTTP service: Pub/Sub push endpoint, online predictions,
    /// health, metrics. With --local DIR, the whole pipeline on this machine.
    Serve(Box<ServeArgs>),
    /// Run the local pipeline end to end on the shipped data and model, print
    /// where the outputs are and a summary.
    Demo(DemoArgs),
    /// List input CSV objects whose current generation has no committed
    /// manifest; with --publish, send their OBJECT_FINALIZE notifications
    /// again so they are scored through the normal path (also backfills a
    /// bucket that held files before the service existed).
    Reconcile(ReconcileArgs),
    /// Pull dead-lettered notifications, republish them to the main topic and
    /// acknowledge each only after its publish succeeded.
    Redrive(RedriveArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Args)]
struct ReconcileArgs {
    /// The bucket whose objects should have been scored.
    #[arg(long, env = "INPUT_BUCKET")]
    input_bucket: String,
    /// Where their manifests should be.
    #[arg(long, env = "OUTPUT_BUCKET")]
    output_bucket: String,
    /// Only objects updated since: an RFC 3339 time (2026-11-01T00:00:00Z)
    /// or a duration back from now (24h, 7d).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Publish each object's OBJECT_FINALIZE notification to this topic
    /// (projects/P/topics/T, or T with --project).
    #[arg(long, value_name = "TOPIC")]
    publish: Option<String>,
    /// Project for short topic names.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Use a Cloud Storage emulator at HOST:PORT, anonymously.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT")]
    storage_emulator_host: Option<String>,
}

#[derive(Args)]
struct RedriveArgs {
    /// The dead-letter subscription (projects/P/subscriptions/S, or S with
    /// --project).
    #[arg(long, value_name = "SUBSCRIPTION")]
    subscription: String,
    /// The main notification topic to republish to.
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// Handle at most this many messages.
    #[arg(long, value_name = "N")]
    max: Option<usize>,
    /// Show what would be republished; publish and acknowledge nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stop once no message arrived for this many seconds.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Project for short names.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Training data (CSV with a header line).
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// The 0/1 label column.
    #[arg(long, value_name = "COL")]
    target: String,
    /// Categorical feature columns (one-hot encoded), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    categorical: Vec<String>,
    /// Numeric feature columns (standardised), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "C,D")]
    numeric: Vec<String>,
    /// Column that says which rows train; all other rows are held out.
    #[arg(long, value_name = "COL", conflicts_with = "test_fraction")]
    split_column: Option<String>,
    /// Value of --split-column that marks training rows.
    #[arg(long, default_value = "train", requires = "split_column")]
    train_value: String,
    /// Without --split-column: hold out this fraction of rows (0 = none).
    #[arg(long, default_value_t = 0.33)]
    test_fraction: f64,
    /// Seed of the deterministic hold-out choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Weight classes inversely to their frequency (scikit-learn's
    /// class_weight='balanced').
    #[arg(long)]
    balanced: bool,
    /// Inverse L2 regularisation strength (scikit-learn's C).
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Probability from which the prediction is 1.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Name recorded in the artifact.
    #[arg(long, default_value = "model")]
    name: String,
    /// Where to write the artifact.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
struct ScoreArgs {
    /// Input CSV or .csv.gz; `-` reads standard input.
    input: PathBuf,
    /// Model artifact (default: the shipped data/model.json, built in).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Where to write the predictions CSV (written atomically).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Where to write rejected rows (default: OUT with .errors.csv); only
    /// created when a row is rejected.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Add an `explanation` column with this many top contributions per row.
    #[arg(long, default_value_t = 0, value_name = "N")]
    explain: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Target chunk size in MiB (memory in flight is a few chunks).
    #[arg(long, default_value_t = 8)]
    chunk_mib: usize,
}

#[derive(Args)]
struct DemoArgs {
    /// Directory for the buckets (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Score(args) => score_file(args),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve(*args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo(args))),
        Command::Reconcile(args) => runtime().and_then(|rt| rt.block_on(reconcile(args))),
        Command::Redrive(args) => runtime().and_then(|rt| rt.block_on(redrive(args))),
        Command::Openapi => {
            print!("{}", scorer::server::openapi::document());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let data = std::fs::read(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let split = match args.split_column {
        Some(column) => Split::Column {
            column,
            train_value: args.train_value,
        },
        None if args.test_fraction > 0.0 => Split::Fraction {
            test_fraction: args.test_fraction,
            seed: args.seed,
        },
        None => Split::None,
    };
    let spec = FitSpec {
        name: args.name,
        target: args.target,
        categorical: args.categorical,
        numeric: args.numeric,
        split,
        balanced: args.balanced,
        c: args.c,
        threshold: args.threshold,
        max_iterations: 1000,
    };
    let data_name = args
        .data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fitted = fit::fit(&data, &data_name, &spec)?;
    write_atomically(&args.out, &fitted.json)?;
    let a = fitted.model.artifact();
    println!(
        "fitted {} on {} rows ({} positive, {} skipped) in {} L-BFGS iterations",
        a.name, a.training.rows, a.training.positives, a.training.rows_skipped, a.training.iterations
    );
    println!("wrote {} (version {})", args.out.display(), fitted.model.version());
    match &a.training.holdout {
        Some(m) => {
            println!("held-out metrics:\n{}", m.render());
            if is_challenge_setup(&spec) {
                let (acc, rec) = (m.accuracy, m.recall[1]);
                let ok = (acc - 0.6036).abs() <= 0.01 && (rec - 0.64).abs() <= 0.01;
                println!(
                    "parity with the challenge's scikit-learn model (accuracy 0.6036, class-1 recall 0.64): \
                     accuracy {acc:.4} ({:+.4}), recall {rec:.4} ({:+.4}): {}",
                    acc - 0.6036,
                    rec - 0.64,
                    if ok { "within 0.01" } else { "OUTSIDE 0.01" }
                );
            }
        }
        None => println!("no held-out rows: no metrics"),
    }
    Ok(ExitCode::SUCCESS)
}

fn is_challenge_setup(spec: &FitSpec) -> bool {
    spec.target == "atraso_15"
        && spec.categorical == ["OPERA", "TIPOVUELO", "MES"]
        && spec.numeric.is_empty()
        && spec.balanced
        && matches!(&spec.split, Split::Column { column, train_value } if column == "split" && train_value == "train")
}

fn score_file(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let model = match &args.model {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
            Model::from_json(&bytes).with_context(|| format!("model {}", path.display()))?
        }
        None => Model::default_model()?,
    };
    let options = ScoreOptions {
        chunk_bytes: args.chunk_mib.clamp(1, 1024) << 20,
        explain: args.explain,
        ..ScoreOptions::default()
    };
    let errors_path = args.errors.clone().unwrap_or_else(|| sibling(&args.out, "errors.csv"));
    let input: Box<dyn Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if io::stderr().is_terminal() && size > 16 << 20 {
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Box::new(bar.wrap_read(file))
        } else {
            Box::new(file)
        }
    };
    let out_tmp = temp_beside(&args.out);
    let errors_tmp = temp_beside(&errors_path);
    let result = (|| -> Result<_, ScoreError> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&out_tmp).map_err(ScoreError::Write)?);
        let mut rejects = CsvRejects::new(|| File::create(&errors_tmp).map(|f| BufWriter::with_capacity(1 << 16, f)));
        let summary = score::score(input, &model, &mut out, &mut rejects, &options)?;
        out.into_inner()
            .map_err(|e| ScoreError::Write(e.into_error()))?
            .sync_all()
            .map_err(ScoreError::Write)?;
        let wrote_errors = rejects.finish().map_err(ScoreError::Write)?.is_some();
        Ok((summary, wrote_errors))
    })();
    match result {
        Ok((summary, wrote_errors)) => {
            std::fs::rename(&out_tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
            if wrote_errors {
                std::fs::rename(&errors_tmp, &errors_path)
                    .with_context(|| format!("writing {}", errors_path.display()))?;
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                let rate = summary.rows_in as f64 / summary.seconds.max(1e-9);
                println!(
                    "{} rows: {} scored, {} rejected in {:.2} s ({:.0} rows/s); model {} {}",
                    summary.rows_in,
                    summary.rows_scored,
                    summary.rows_rejected,
                    summary.seconds,
                    rate,
                    model.name(),
                    model.version()
                );
                println!("predictions: {}", args.out.display());
                if wrote_errors {
                    println!("rejected rows: {}", errors_path.display());
                }
                if let Some(m) = &summary.metrics {
                    println!(
                        "against {} ({} labelled rows):\n{}",
                        model.target(),
                        summary.labelled_rows,
                        m.render()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&out_tmp);
            let _ = std::fs::remove_file(&errors_tmp);
            match e {
                ScoreError::Rejected(rejection) => {
                    eprintln!("error: {} was not scored: {rejection}", args.input.display());
                    Ok(ExitCode::from(2))
                }
                other => Err(other.into()),
            }
        }
    }
}

/// `dir/name.csv` -> `dir/name.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    path.with_file_name(format!("{stem}.{suffix}"))
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{:08x}.tmp", rand::random::<u32>()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_beside(path);
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format.unwrap_or_else(LogFormat::detect));
    let settings = Settings::from_args(&args)?;
    let stop = scorer::shutdown::on_signal();
    let app = Application::build(settings.clone()).await?;
    let addr = app.local_addr();
    let notifier = match &settings.backend {
        Backend::Local { dir } => {
            let input = LocalStore::new(settings.input_bucket.as_str(), dir.join(settings.input_bucket.as_str()))?;
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
        Backend::Gcs { .. } => None,
    };
    let result = app.run_until_stopped(stop.clone()).await;
    stop.cancel();
    if let Some(n) = notifier {
        let _ = n.await;
    }
    result?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::detect());
    }
    let result = scorer::demo::run(args.dir, Duration::from_secs(args.timeout)).await?;
    print!("{}", scorer::demo::render(&result));
    if result.manifests.is_empty() {
        bail!("the demo produced no outputs");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_since(text: &str) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?}: neither an RFC 3339 time nor a duration like 24h"))?;
    Ok(std::time::SystemTime::now() - ago)
}

async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    use scorer::storage::gcs::{GcsOptions, GcsStore};
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::detect());
    }
    let emulator = args.storage_emulator_host.as_deref().map(|h| {
        if h.starts_with("http") {
            h.to_owned()
        } else {
            format!("http://{h}")
        }
    });
    let input = GcsStore::new(&args.input_bucket, emulator.as_deref(), GcsOptions::default()).await?;
    let output = GcsStore::new(&args.output_bucket, emulator.as_deref(), GcsOptions::default()).await?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let found = scorer::ops::find_unprocessed(&input, &output, since).await?;
    let topic = args
        .publish
        .as_deref()
        .map(|t| scorer::ops::resource_name("topics", t, args.project.as_deref()))
        .transpose()?;
    let mut published = Vec::new();
    if let Some(topic) = &topic {
        let publisher = scorer::ops::publisher(topic, Duration::from_secs(60)).await?;
        for (object, _) in &found {
            published.push(scorer::ops::publish_finalize(&publisher, &args.input_bucket, object).await?);
        }
    }
    let rows: Vec<&scorer::ops::Unprocessed> = found.iter().map(|(_, row)| row).collect();
    if args.json {
        let report = serde_json::json!({
            "unprocessed": rows,
            "published_to": topic,
            "message_ids": published,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if rows.is_empty() {
            println!(
                "every CSV object in gs://{} has a committed manifest",
                args.input_bucket
            );
        } else {
            println!("{:<60} {:>20} {:>12}  updated", "object", "generation", "bytes");
            for row in &rows {
                println!(
                    "{:<60} {:>20} {:>12}  {}",
                    row.uri,
                    row.generation,
                    row.size,
                    row.updated.as_deref().unwrap_or("")
                );
            }
        }
        if let Some(topic) = &topic {
            println!("published {} notification(s) to {topic}", published.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn redrive(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::detect());
    }
    let subscription = scorer::ops::resource_name("subscriptions", &args.subscription, args.project.as_deref())?;
    let topic = scorer::ops::resource_name("topics", &args.topic, args.project.as_deref())?;
    let report = scorer::ops::redrive(
        &subscription,
        &topic,
        args.max,
        args.dry_run,
        Duration::from_secs(args.idle_seconds.max(1)),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if report.dry_run {
            "would republish"
        } else {
            "republished"
        };
        for r in &report.republished {
            println!(
                "{verb} {} ({} deliveries){}",
                r.object.as_deref().unwrap_or(&r.dead_letter_id),
                r.delivery_count.as_deref().unwrap_or("?"),
                r.new_id
                    .as_deref()
                    .map(|id| format!(" as message {id}"))
                    .unwrap_or_default()
            );
        }
        for r in &report.failed {
            println!(
                "FAILED {}: {} (left in {subscription})",
                r.object.as_deref().unwrap_or(&r.dead_letter_id),
                r.error.as_deref().unwrap_or("?")
            );
        }
        println!("{} {verb}, {} failed", report.republished.len(), report.failed.len());
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
