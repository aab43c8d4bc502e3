//! `scorer reconcile`: inputs without committed outputs, and orphans.

use std::fmt::Write;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::buckets::{self, bucket};
use super::ending::{self, Stream};
use super::failed::{Exit, Failed};
use super::redrive::pubsub;
use scorer::operator::pubsub::resource_name;
use scorer::operator::reconcile::{self, Trigger};
use scorer::storage::Missing;

#[derive(Args)]
pub struct ReconcileArgs {
    /// The bucket whose objects should have been scored ("input" with
    /// --local).
    #[arg(long, env = "INPUT_BUCKET")]
    input_bucket: Option<String>,
    /// Where their manifests should be ("output" with --local).
    #[arg(long, env = "OUTPUT_BUCKET")]
    output_bucket: Option<String>,
    /// Local buckets: DIR/input and DIR/output, as `serve --local DIR`.
    #[arg(long, value_name = "DIR", conflicts_with = "storage_emulator_host")]
    local: Option<PathBuf>,
    /// Only objects updated since: an RFC 3339 time (2026-11-01T00:00:00Z)
    /// or a duration back from now (24h, 7d). Default: the outputs'
    /// retention window (--retention-days).
    #[arg(long, value_name = "WHEN", conflicts_with = "all")]
    since: Option<String>,
    /// Days outputs are kept before the bucket's lifecycle rule deletes
    /// them (Terraform's output_retention_days): older inputs lost their
    /// outputs on purpose and are not reported. 0 = outputs are kept forever.
    #[arg(long, env = "OUTPUT_RETENTION_DAYS", default_value_t = 90, value_name = "DAYS")]
    retention_days: u64,
    /// Consider every object, whatever its age.
    #[arg(long)]
    all: bool,
    /// Publish each unscored object's OBJECT_FINALIZE notification to this
    /// topic (projects/P/topics/T, or T with --project).
    #[arg(long, value_name = "TOPIC")]
    publish: Option<String>,
    /// With --publish: list what would be published, publish nothing (and
    /// reach no Pub/Sub).
    #[arg(long, requires = "publish")]
    dry_run: bool,
    /// Only input objects whose names start with this (and their outputs).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    prefix: String,
    /// Project for short topic names.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Use a Cloud Storage emulator at HOST:PORT, anonymously.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT")]
    storage_emulator_host: Option<String>,
    /// Use a Pub/Sub emulator at HOST:PORT, anonymously.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST", value_name = "HOST:PORT")]
    pubsub_emulator_host: Option<String>,
    /// How long one storage or Pub/Sub call keeps retrying before the
    /// command fails.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    retry_seconds: u64,
    /// An input handed to a job execution is reported as dispatched, not
    /// unscored, for this long after its execution started (the service's
    /// setting of the same name).
    #[arg(
        long,
        env = "DISPATCH_STALE_SECONDS",
        default_value_t = 21600,
        value_name = "SECONDS"
    )]
    dispatch_stale_seconds: u64,
}

fn parse_since(text: &str) -> Result<SystemTime, Failed> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        Failed::usage(format!(
            "--since {text:?}: neither an RFC 3339 time nor a duration like 24h"
        ))
    })?;
    Ok(SystemTime::now() - ago)
}

pub async fn reconcile(args: ReconcileArgs) -> Result<Exit, Failed> {
    let local_default = |name| args.local.as_ref().map(|_| name);
    let input_bucket = bucket(args.input_bucket.as_deref(), "--input-bucket", local_default("input"))?;
    let output_bucket = bucket(
        args.output_bucket.as_deref(),
        "--output-bucket",
        local_default("output"),
    )?;
    if input_bucket == output_bucket {
        return Err(Failed::usage("--output-bucket must differ from --input-bucket"));
    }
    let (backend, trigger) = match &args.local {
        Some(dir) => {
            if args.publish.is_some() {
                // Nothing listens to a Pub/Sub topic in local mode: the
                // local notifier watches the input directory instead.
                return Err(Failed::usage(format!(
                    "--publish cannot be used with --local: local mode has no Pub/Sub. To have \
                     `scorer serve --local {dir}` score the files listed, make its notifier see \
                     them again: `touch` each one (it is scored once settled), or move it out of \
                     {input} and back in",
                    dir = dir.display(),
                    input = dir.join("input").display(),
                )));
            }
            if !dir.is_dir() {
                return Err(Failed::new(
                    Exit::Failure,
                    anyhow::anyhow!("--local {}: no such directory", dir.display()),
                ));
            }
            (
                buckets::backend(Some(dir), None, args.retry_seconds)?,
                Trigger::LocalNotifier,
            )
        }
        None => (
            buckets::backend(None, args.storage_emulator_host.as_deref(), args.retry_seconds)?,
            Trigger::CloudStorage,
        ),
    };
    let since = match (&args.since, args.all, args.retention_days) {
        (Some(text), _, _) => Some(parse_since(text)?),
        (None, true, _) | (None, false, 0) => None,
        (None, false, days) => Some(SystemTime::now() - Duration::from_secs(days * 86_400)),
    };
    let topic = args
        .publish
        .as_deref()
        .map(|t| resource_name("topics", t, args.project.as_deref()))
        .transpose()
        .map_err(Failed::usage)?;
    // An operator tool reads buckets that should exist: creating a missing
    // one would turn a typo into "all clear".
    let input = scorer::storage::open(&backend, input_bucket.as_str(), Missing::Refuse).await?;
    let output = scorer::storage::open(&backend, output_bucket.as_str(), Missing::Refuse).await?;
    let stale = Duration::from_secs(args.dispatch_stale_seconds);
    let spinner = if std::io::stderr().is_terminal() {
        let spinner = indicatif::ProgressBar::new_spinner().with_message(format!("listing {}", input.uri("")));
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = reconcile::scan(input.as_ref(), output.as_ref(), since, trigger, stale, &args.prefix).await;
    spinner.finish_and_clear();
    let report = report?;
    let published = match &topic {
        Some(_) if args.dry_run => None,
        Some(topic) if !report.objects.is_empty() => {
            let target = pubsub(args.pubsub_emulator_host.as_deref(), args.retry_seconds)?;
            target.check_topic(topic).await?;
            let publisher = target.publisher(topic).await?;
            // A bar on a terminal only: a pipe or a log gets the summary.
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new(report.objects.len() as u64).with_style(
                    indicatif::ProgressStyle::with_template("publishing {bar:40} {pos}/{len} {per_sec} eta {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                )
            } else {
                indicatif::ProgressBar::hidden()
            };
            let tick = || bar.inc(1);
            let published = reconcile::publish(&publisher, topic, input.as_ref(), &report.objects, &tick).await;
            bar.finish_and_clear();
            Some(published)
        }
        _ => None,
    };
    // Said in one write: a reader that goes away is one quiet end.
    let mut text = String::new();
    if args.json {
        let out = serde_json::json!({
            "window_start": report.window_start,
            "unscored": report.unscored,
            "dispatched": report.dispatched,
            "orphans": report.orphans,
            "problems": report.problems,
            "published": published,
            "dry_run": args.dry_run,
        });
        writeln!(text, "{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        let window = report
            .window_start
            .as_deref()
            .map(|w| format!(" updated since {w}"))
            .unwrap_or_default();
        if report.unscored.is_empty() {
            writeln!(
                text,
                "every CSV object in {}{window} has a committed manifest",
                input.uri("")
            )?;
        } else {
            writeln!(
                text,
                "{} object(s){window} without a committed manifest:",
                report.unscored.len()
            )?;
            writeln!(text, "{:<60} {:>20} {:>12}  updated", "object", "generation", "bytes")?;
            for row in &report.unscored {
                writeln!(
                    text,
                    "{:<60} {:>20} {:>12}  {}",
                    row.uri,
                    row.generation,
                    row.size,
                    row.updated.as_deref().unwrap_or("")
                )?;
            }
        }
        for d in &report.dispatched {
            let state = if d.stale {
                "started long ago, no manifest (listed above: a redelivery dispatches it again)"
            } else {
                "being scored by a job execution"
            };
            writeln!(
                text,
                "dispatched: {} generation {}: {} ({}, started {})",
                d.uri, d.generation, state, d.execution, d.started_at
            )?;
        }
        for orphan in &report.orphans {
            writeln!(
                text,
                "orphan (left alone): {} ({} bytes): {}",
                orphan.uri, orphan.size, orphan.why
            )?;
        }
        for problem in &report.problems {
            writeln!(text, "could not judge {}: {}", problem.uri, problem.problem)?;
        }
        if let (true, Some(topic)) = (args.dry_run, &topic) {
            writeln!(
                text,
                "dry run: would publish {} notification(s) to {topic}, published none",
                report.objects.len()
            )?;
        }
        if let Some(p) = &published {
            writeln!(text, "published {} notification(s) to {}", p.message_ids.len(), p.topic)?;
            for failure in &p.failed {
                writeln!(text, "FAILED to publish for {}: {}", failure.uri, failure.problem)?;
            }
        }
    }
    ending::say(Stream::Stdout, &text)?;
    if published.as_ref().is_some_and(|p| !p.failed.is_empty()) {
        return Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!("some notifications could not be published (listed above)"),
        ));
    }
    Ok(if report.unscored.is_empty() {
        Exit::Ok
    } else {
        Exit::Unscored
    })
}
