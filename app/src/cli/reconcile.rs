//! `scorer reconcile` and `scorer redrive`: the operator tools.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::exit::{Exit, Failed};
use scorer::event::BucketName;
use scorer::operator::pubsub::{PubSubTarget, resource_name};
use scorer::operator::{reconcile, redrive};
use scorer::storage::Backend;
use scorer::storage::gcs::GcsOptions;

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
}

#[derive(Args)]
pub struct RedriveArgs {
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
    /// Use a Pub/Sub emulator at HOST:PORT, anonymously.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST", value_name = "HOST:PORT")]
    pubsub_emulator_host: Option<String>,
    /// How long one Pub/Sub call keeps retrying before the command fails.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    retry_seconds: u64,
}

/// A bucket argument, read as `serve` reads it.
fn bucket(value: Option<&str>, flag: &str, local_default: Option<&str>) -> Result<BucketName, Failed> {
    let text = value
        .or(local_default)
        .ok_or_else(|| Failed::usage(format!("{flag} is required (or --local DIR)")))?;
    BucketName::parse(text.trim_start_matches("gs://").trim_end_matches('/'))
        .map_err(|m| Failed::usage(format!("{flag}: {m}")))
}

fn pubsub(emulator: Option<&str>, retry_seconds: u64) -> Result<PubSubTarget, Failed> {
    Ok(PubSubTarget {
        emulator: emulator
            .filter(|h| !h.trim().is_empty())
            .map(scorer::storage::emulator_url)
            .transpose()
            .map_err(|m| Failed::usage(format!("PUBSUB_EMULATOR_HOST {m}")))?,
        retry_budget: Duration::from_secs(retry_seconds.max(1)),
    })
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
    let backend = match &args.local {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Failed::usage(format!("--local {}: not a directory", dir.display())));
            }
            Backend::Local { dir: dir.clone() }
        }
        None => Backend::Gcs {
            emulator: args
                .storage_emulator_host
                .as_deref()
                .map(scorer::storage::emulator_url)
                .transpose()
                .map_err(|m| Failed::usage(format!("STORAGE_EMULATOR_HOST {m}")))?,
        },
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
    let gcs = GcsOptions {
        retry_budget: Duration::from_secs(args.retry_seconds.max(1)),
        ..GcsOptions::default()
    };
    let input = scorer::storage::open(&backend, input_bucket.as_str(), &gcs).await?;
    let output = scorer::storage::open(&backend, output_bucket.as_str(), &gcs).await?;
    let report = reconcile::scan(input.as_ref(), output.as_ref(), since).await?;
    let published = match &topic {
        Some(topic) if !report.objects.is_empty() => {
            let target = pubsub(args.pubsub_emulator_host.as_deref(), args.retry_seconds)?;
            target.check_topic(topic).await?;
            let publisher = target.publisher(topic).await?;
            Some(reconcile::publish(&publisher, topic, input.as_ref(), &report.objects).await)
        }
        _ => None,
    };
    if args.json {
        let out = serde_json::json!({
            "window_start": report.window_start,
            "unscored": report.unscored,
            "orphans": report.orphans,
            "problems": report.problems,
            "published": published,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let window = report
            .window_start
            .as_deref()
            .map(|w| format!(" updated since {w}"))
            .unwrap_or_default();
        if report.unscored.is_empty() {
            println!("every CSV object in {}{window} has a committed manifest", input.uri(""));
        } else {
            println!(
                "{} object(s){window} without a committed manifest:",
                report.unscored.len()
            );
            println!("{:<60} {:>20} {:>12}  updated", "object", "generation", "bytes");
            for row in &report.unscored {
                println!(
                    "{:<60} {:>20} {:>12}  {}",
                    row.uri,
                    row.generation,
                    row.size,
                    row.updated.as_deref().unwrap_or("")
                );
            }
        }
        for orphan in &report.orphans {
            println!(
                "orphan (left alone): {} ({} bytes): {}",
                orphan.uri, orphan.size, orphan.why
            );
        }
        for problem in &report.problems {
            println!("could not judge {}: {}", problem.uri, problem.problem);
        }
        if let Some(p) = &published {
            println!("published {} notification(s) to {}", p.message_ids.len(), p.topic);
            for failure in &p.failed {
                println!("FAILED to publish for {}: {}", failure.uri, failure.problem);
            }
        }
    }
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

pub async fn redrive(args: RedriveArgs) -> Result<Exit, Failed> {
    let subscription =
        resource_name("subscriptions", &args.subscription, args.project.as_deref()).map_err(Failed::usage)?;
    let topic = resource_name("topics", &args.topic, args.project.as_deref()).map_err(Failed::usage)?;
    let target = pubsub(args.pubsub_emulator_host.as_deref(), args.retry_seconds)?;
    let report = redrive::redrive(
        &target,
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
    if report.failed.is_empty() {
        Ok(Exit::Ok)
    } else {
        Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!(
                "{} message(s) could not be republished and stay in {subscription}",
                report.failed.len()
            ),
        ))
    }
}
