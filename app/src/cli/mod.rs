//! The command line: one module per command, how a command ends in
//! [`failed`]. Everything of substance lives in the library.

mod buckets;
mod ending;
pub mod failed;
mod files;
mod model;
mod reconcile;
mod redrive;
mod score;
mod serve;
mod shard;
mod status;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use failed::{Exit, Failed};
use scorer::config::ServeArgs;
use scorer::telemetry::{self, LogFormat};

/// Event-driven batch scorer: CSV in a bucket -> Pub/Sub push -> predictions
/// in another bucket. Also scores files locally and answers online
/// predictions over HTTP.
///
/// Exit status: 0 ok, 1 internal or I/O failure, 2 bad flags or arguments,
/// 3 input that cannot be scored, 4 too many rejected rows, 5 reconcile
/// found unscored objects.
#[derive(Parser)]
#[command(name = "scorer", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a logistic regression from a CSV and write its JSON artifact.
    Train(train::TrainArgs),
    /// Score a CSV or JSON Lines file (gzip or not): predictions, plus an errors file when
    /// rows are rejected.
    Score(score::ScoreArgs),
    /// Run the HTTP service: Pub/Sub push endpoint, online predictions,
    /// health, metrics. With --local DIR, the whole pipeline on this machine.
    Serve(Box<ServeArgs>),
    /// Run the local pipeline end to end on the shipped data and model, print
    /// where the outputs are and a summary.
    Demo(serve::DemoArgs),
    /// Score one task's byte range of a large input, as a task of a Cloud
    /// Run job execution (the job's command): the input and the task come
    /// from the environment (INPUT_URI, INPUT_GENERATION,
    /// CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_COUNT, ...). The task that
    /// finds every range scored commits the input's manifest.
    Shard(Box<scorer::config::shard::ShardArgs>),
    /// List input CSV objects whose current generation has no committed
    /// manifest (exit status 5 when there are any), and outputs no manifest
    /// names; with --publish, send their OBJECT_FINALIZE notifications again
    /// so they are scored through the normal path (also backfills a bucket
    /// that held files before the service existed).
    Reconcile(Box<reconcile::ReconcileArgs>),
    /// Pull dead-lettered notifications, republish them to the main topic and
    /// acknowledge each only after its publish succeeded.
    Redrive(redrive::RedriveArgs),
    /// Where one input file stands: scored or failed (with its outputs), in
    /// progress (who holds its lease, until when), dispatched to a job
    /// execution, or waiting; read from the output bucket's records.
    Status(Box<status::StatusArgs>),
    /// The model registry in the output bucket: list, show, publish,
    /// promote and roll back versions and aliases.
    Model(Box<model::ModelArgs>),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

/// Parses the arguments, runs the command, and turns its end into an exit
/// status and, on failure, one message on stderr.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => {
            ending::on_signals_remove_temporaries();
            train::train(args)
        }
        Command::Score(args) => {
            ending::on_signals_remove_temporaries();
            score::score_file(args)
        }
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve::serve(*args))),
        Command::Shard(args) => runtime().and_then(|rt| rt.block_on(shard::shard(*args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(serve::demo(args))),
        Command::Reconcile(args) => {
            operator_logs();
            runtime().and_then(|rt| rt.block_on(reconcile::reconcile(*args)))
        }
        Command::Status(args) => {
            operator_logs();
            runtime().and_then(|rt| rt.block_on(status::status(*args)))
        }
        Command::Model(args) => {
            operator_logs();
            runtime().and_then(|rt| rt.block_on(model::model(*args)))
        }
        Command::Redrive(args) => {
            operator_logs();
            runtime().and_then(|rt| rt.block_on(redrive::redrive(args)))
        }
        Command::Openapi => {
            ending::say(ending::Stream::Stdout, &scorer::server::openapi::document()).map(|()| Exit::Ok)
        }
    };
    match result {
        Ok(exit) => exit.into(),
        Err(failed) if ending::ReaderGone::is(&failed) => ending::die_of_sigpipe(),
        Err(failed) => {
            let message = render(&failed.error);
            if !message.is_empty() {
                // Ignored if it fails: there is nowhere left to say it.
                let _ = writeln!(std::io::stderr(), "error: {message}");
            }
            failed.exit.into()
        }
    }
}

/// An error and its causes on one line, each cause once: error types that
/// both print and chain their source would otherwise say it twice.
pub fn render(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Operator tools log warnings (each retry, with what it waits for) so that
/// a slow or unreachable service is never silent.
fn operator_logs() {
    telemetry::init(LogFormat::detect(false), "warn");
}

fn runtime() -> Result<tokio::runtime::Runtime, Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::new(Exit::Failure, anyhow::anyhow!("starting the async runtime: {e}")))
}
