//! `scorer redrive`: dead-lettered notifications back to the main topic.

use std::fmt::Write;
use std::time::Duration;

use clap::Args;

use super::ending::{self, Stream};
use super::failed::{Exit, Failed};
use scorer::operator::pubsub::{PubSubTarget, resource_name};
use scorer::operator::redrive;

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

/// The Pub/Sub client settings of the operator tools, from their flags.
pub(super) fn pubsub(emulator: Option<&str>, retry_seconds: u64) -> Result<PubSubTarget, Failed> {
    Ok(PubSubTarget {
        emulator: emulator
            .filter(|h| !h.trim().is_empty())
            .map(scorer::storage::emulator_url)
            .transpose()
            .map_err(|m| Failed::usage(format!("PUBSUB_EMULATOR_HOST {m}")))?,
        retry_budget: Duration::from_secs(retry_seconds.max(1)),
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
    // Said in one write: a reader that goes away is one quiet end.
    let mut text = String::new();
    if args.json {
        writeln!(text, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let verb = if report.dry_run {
            "would republish"
        } else {
            "republished"
        };
        for r in &report.republished {
            writeln!(
                text,
                "{verb} {} ({} deliveries){}",
                r.object.as_deref().unwrap_or(&r.dead_letter_id),
                r.delivery_count.as_deref().unwrap_or("?"),
                r.new_id
                    .as_deref()
                    .map(|id| format!(" as message {id}"))
                    .unwrap_or_default()
            )?;
        }
        for r in &report.failed {
            writeln!(
                text,
                "FAILED {}: {} (left in {subscription})",
                r.object.as_deref().unwrap_or(&r.dead_letter_id),
                r.error.as_deref().unwrap_or("?")
            )?;
        }
        writeln!(
            text,
            "{} {verb}, {} failed",
            report.republished.len(),
            report.failed.len()
        )?;
    }
    ending::say(Stream::Stdout, &text)?;
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
