//! `scorer status`: where one input file stands.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::buckets;
use super::ending::{self, Stream};
use super::failed::{Exit, Failed};
use scorer::event::{BucketName, Generation, ObjectName};
use scorer::operator::status::{self, State};
use scorer::storage::Missing;

#[derive(Args)]
pub struct StatusArgs {
    /// The input object, gs://BUCKET/NAME (with --local, BUCKET is a
    /// directory under DIR, as `serve --local DIR` reads them).
    #[arg(value_name = "gs://BUCKET/NAME")]
    uri: String,
    /// Which generation (default: the object's current one).
    #[arg(long)]
    generation: Option<i64>,
    /// Where its outputs are ("output" with --local).
    #[arg(long, env = "OUTPUT_BUCKET")]
    output_bucket: Option<String>,
    /// Local buckets under DIR, as `serve --local DIR`.
    #[arg(long, value_name = "DIR", conflicts_with = "storage_emulator_host")]
    local: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Use a Cloud Storage emulator at HOST:PORT, anonymously.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT")]
    storage_emulator_host: Option<String>,
    /// How long one storage call keeps retrying before the command fails.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    retry_seconds: u64,
    /// A job execution started longer ago than this is reported stale (the
    /// service's setting of the same name).
    #[arg(
        long,
        env = "DISPATCH_STALE_SECONDS",
        default_value_t = 21600,
        value_name = "SECONDS"
    )]
    dispatch_stale_seconds: u64,
}

pub async fn status(args: StatusArgs) -> Result<Exit, Failed> {
    let (bucket, name) = args
        .uri
        .strip_prefix("gs://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| Failed::usage(format!("{:?} is not gs://BUCKET/NAME", args.uri)))?;
    let input_bucket = BucketName::parse(bucket).map_err(|e| Failed::usage(format!("{}: {e}", args.uri)))?;
    let name = ObjectName::parse(name).map_err(|e| Failed::usage(format!("{}: {e}", args.uri)))?;
    let generation = args
        .generation
        .map(|g| Generation::new(g).ok_or_else(|| Failed::usage(format!("--generation {g} is not a positive number"))))
        .transpose()?;
    let local_default = args.local.as_ref().map(|_| "output");
    let output_bucket = buckets::bucket(args.output_bucket.as_deref(), "--output-bucket", local_default)?;
    let backend = buckets::backend(
        args.local.as_deref(),
        args.storage_emulator_host.as_deref(),
        args.retry_seconds,
    )?;
    // Buckets that should exist: a typo is an error, never "waiting".
    let input = scorer::storage::open(&backend, input_bucket.as_str(), Missing::Refuse).await?;
    let output = scorer::storage::open(&backend, output_bucket.as_str(), Missing::Refuse).await?;
    let stale = Duration::from_secs(args.dispatch_stale_seconds);
    let report = status::status(input.as_ref(), output.as_ref(), &name, generation, stale).await?;
    let mut text = String::new();
    if args.json {
        writeln!(text, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let old = if report.current {
            ""
        } else {
            " (no longer the current generation)"
        };
        writeln!(text, "{} generation {}{old}", report.input_uri, report.generation)?;
        match &report.state {
            State::Scored => writeln!(text, "  scored")?,
            State::Fitted {
                model,
                version,
                decision,
            } => writeln!(text, "  fitted {model} {version}: {decision}")?,
            State::Failed { reason } => writeln!(text, "  failed: {reason}")?,
            State::InProgress {
                holder,
                lease_expires_at,
            } => writeln!(text, "  in progress: {holder} holds the lease until {lease_expires_at}")?,
            State::Dispatched {
                execution,
                started_at,
                stale,
            } => {
                let note = if *stale {
                    " (longer ago than an execution may run: a redelivery dispatches it again)"
                } else {
                    ""
                };
                writeln!(text, "  dispatched: {execution}, started {started_at}{note}")?
            }
            State::Waiting => writeln!(
                text,
                "  waiting: no manifest, no live lease, no dispatch (not started yet, or its notification was lost: `scorer reconcile --publish` redelivers)"
            )?,
        }
        if let Some(m) = &report.manifest {
            writeln!(
                text,
                "  rows: {} in, {} scored, {} rejected; model {} {}",
                m.rows.input, m.rows.scored, m.rows.rejected, m.model.name, m.model.version
            )?;
            for object in m
                .outputs
                .predictions
                .iter()
                .chain(&m.outputs.shards)
                .chain(&m.outputs.errors)
            {
                writeln!(text, "  {}", object.uri)?;
            }
        }
        if let Some(uri) = &report.manifest_uri {
            writeln!(text, "  manifest {uri}")?;
        }
    }
    ending::say(Stream::Stdout, &text)?;
    Ok(Exit::Ok)
}
