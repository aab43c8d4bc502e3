//! scorer: an event-driven batch scorer.
//!
//! A CSV (or JSON Lines) file lands in a Cloud Storage bucket, Cloud Storage notifies Pub/Sub,
//! Pub/Sub pushes to this service, and every row leaves scored by a logistic
//! regression into an output bucket: exactly one complete set of outputs per
//! input object generation. The same binary runs the whole pipeline locally
//! (directories as buckets, a local notifier in place of Pub/Sub) and answers
//! online predictions over HTTP.
//!
//! # Layout
//!
//! Data flows one way: push -> event -> job -> read -> score -> write ->
//! manifest (-> BigQuery load, results message). Four crates:
//!
//! - `scorer-events` (re-exported as [`event`]): the push envelope, the
//!   Eventarc CloudEvent and the storage notification, parsed into types
//!   that can only hold valid values.
//! - `scorer-engine` (re-exported as [`score`], [`model`], [`format`](mod@format)): the
//!   polars engine (byte stream in, predictions and rejected rows out, in
//!   bounded memory) and the model (artifact, fit, evaluation). No I/O
//!   beyond the streams it is given.
//! - `scorer-cloud` (used by [`dispatch::cloud_run`] and
//!   [`job::after_commit`]): the Cloud Run Admin API client (start an
//!   execution, read its state) and BigQuery load jobs.
//! - `scorer` (this crate): the service and the command line (`cli/`,
//!   beside `main.rs`). Its rooms, in the order data meets them:
//!
//! - [`server`]: the HTTP service ([`startup::Application`] binds the
//!   listener) and one module per route: push (Pub/Sub or Eventarc),
//!   online predictions, health, metrics, OpenAPI.
//! - [`auth`]: Google OIDC tokens on pushes; API keys on `/predict`.
//! - [`job`]: one input generation to exactly one committed output set
//!   (deliveries, the run, the commit, the summary log entry); for an input
//!   too large to score in a push request, the dispatch of a job execution
//!   and each task's range ([`job::shard`]); after a commit, the BigQuery
//!   load and the results message ([`job::after_commit`]).
//! - [`dispatch`]: starting job executions: Cloud Run Jobs, or a pool of
//!   local `scorer shard` processes.
//! - [`registry`]: the models in the output bucket (versions, aliases
//!   moved by compare-and-swap) and which one scores an input (metadata,
//!   `MODEL_ROUTES`, `MODEL`); [`job::fit`] fits a training file instead of
//!   scoring it.
//! - [`lease`]: who is scoring an input, so redeliveries do not rescore.
//! - [`layout`]: every object name in the output bucket.
//! - [`manifest`]: the commit record.
//! - [`storage`]: the bucket seam with the [`storage::local`] and
//!   [`storage::gcs`] backends, [`storage::blocking`] between them and
//!   the engine's threads, and [`storage::faults`] (test-only fault
//!   injection).
//! - [`notifier`]: the local stand-in for Cloud Storage + Pub/Sub.
//! - [`operator`]: operator tools: reconcile what has no outputs, redrive
//!   dead letters.
//! - [`config`]: environment and flags, parsed into settings (the
//!   outputs' format, BigQuery and results topic in [`config::output`]);
//!   [`startup`]: settings to a bound listener, a loading model and the
//!   dispatcher for large inputs.
//! - [`telemetry`]: Cloud Logging JSON logs and Prometheus metrics;
//!   [`google_clients`]: what our Google clients share (bounded, logged
//!   retries; credentials: anonymous for the emulators, missing ones said
//!   at once).
//! - [`shutdown`]: SIGTERM to a cancellation token.
//! - [`exit`]: the command line's exit statuses; [`demo`]: the whole local
//!   pipeline on the shipped data.
//!
//! # Where to change what
//!
//! - Output naming: [`layout`] builds every name; three readers parse
//!   numbered names back (lease records in `lease::records`, dispatch
//!   records in [`job::dispatch`], shard records in `job::shard::chain`),
//!   the test-only faults match names in [`storage::faults`], and the
//!   `_leases/`, `_shards/`, `_models/` prefixes recur in `terraform/`.
//! - A storage backend: a new room under [`storage`] implementing
//!   [`storage::ObjectStore`] and a [`storage::Backend`] case in
//!   [`storage::open`]; then the places that match on `Backend` or
//!   `storage::Location`: `config` (`Settings::from_args`, `config::shard`),
//!   [`startup`], [`dispatch`] (the task environment), and the `serve` and
//!   `reconcile` commands.
//! - A trigger: a parser beside `scorer_events::pubsub` and
//!   `scorer_events::cloudevent` (Eventarc) that yields an
//!   [`event::ObjectEvent`], an `event::Trigger` variant (its arms in
//!   `is_finalize` and `kind`), a way for [`server::push`] to tell its
//!   requests apart (and its OpenAPI annotations, `docs/openapi.json`
//!   regenerated); the job side is unchanged.
//! - An input format: a [`format::Format`] case (`Format::for_object`),
//!   its detection in the engine's `score::input` (JSON Lines: a first
//!   `{`) and its reader beside `score::jsonl`, branching in
//!   `score::pipeline::score`; a format read by ranges rather than as a
//!   stream (Parquet, `score::parquet_in`) branches in `job::run` (by
//!   name) and the `score` command (by bytes); `score::shard::splittable`
//!   says whether it can be cut into ranges (only CSV can).
//! - An output format: an [`score::OutputFormat`] case, a sink in the
//!   engine's `score::output`, its extension and content type there (the
//!   layout and the uploads use them), its BigQuery source format in
//!   [`job::after_commit`].
//! - A setting of `serve`: `config::args` (flag and env), `config`
//!   (`Settings` and `from_args`), its consumer in [`startup`] or the
//!   route's state; if tasks need it, the shared task environment in
//!   [`startup`] and `config::shard`; a row in `docs/CONFIGURATION.md` (a
//!   test checks it) and the env in `terraform/cloud_run.tf`.
//! - A CLI subcommand: `cli/<name>.rs` and its `Command` variant in
//!   `cli/mod.rs`, the logic in a library room named here, a row in
//!   `docs/CLI.md`; a new exit status in [`exit`] and the README's table.
//!
//! Words: a *job* is one input generation's work in this process; the
//! *shard job* is the Cloud Run job (`SHARD_JOB`), whose *execution* runs
//! *tasks* (`scorer shard`), each scoring a *range* into a *shard*
//! (`predictions-0000i-of-N.csv`). *Records* are small create-only JSON
//! objects (lease, dispatch, shard), except in the engine's
//! `score::records` (CSV records).

pub mod auth;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod exit;
pub mod google_clients;
pub mod job;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod notifier;
pub mod operator;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod storage;
pub mod telemetry;

pub use scorer_engine::{format, model, score};
pub use scorer_events as event;
