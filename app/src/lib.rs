//! scorer: an event-driven batch scorer.
//!
//! A CSV lands in a Cloud Storage bucket, Cloud Storage notifies Pub/Sub,
//! Pub/Sub pushes to this service, and every row leaves scored by a logistic
//! regression into an output bucket: exactly one complete set of outputs per
//! input object generation. The same binary runs the whole pipeline locally
//! (directories as buckets, a local notifier in place of Pub/Sub) and answers
//! online predictions over HTTP.
//!
//! # Layout
//!
//! Data flows one way: push -> event -> job -> read -> score -> write ->
//! manifest.
//!
//! - [`server`]: the HTTP service ([`server::Application`]) and one module per
//!   route: Pub/Sub push, online predictions, health, metrics, OpenAPI.
//! - [`auth`]: Google OIDC tokens on pushes; API keys on `/predict`.
//! - [`event`]: the push envelope and storage notification, parsed into types
//!   that can only hold valid values.
//! - [`job`]: one input generation to exactly one committed output set.
//! - [`lease`]: who is scoring an input, so redeliveries do not rescore.
//! - [`storage`]: the bucket seam, with [`storage::local`] and
//!   [`storage::gcs`] backends and the [`storage::blocking`] to the engine.
//! - [`score`]: the polars engine: byte stream in, predictions and rejected
//!   rows out, in bounded memory.
//! - [`model`]: the artifact, fitting with smartcore, metrics.
//! - [`manifest`]: output names and the manifest, the commit record.
//! - [`notifier`]: the local stand-in for Cloud Storage + Pub/Sub.
//! - [`ops`]: operator tools: reconcile what has no outputs, redrive dead
//!   letters.
//! - [`config`]: environment and flags, validated into settings.
//! - [`telemetry`]: Cloud Logging JSON logs and Prometheus metrics.
//! - [`shutdown`]: SIGTERM to a cancellation token.
//! - [`demo`]: the whole local pipeline on the shipped data, end to end.

pub mod auth;
pub mod config;
pub mod demo;
pub mod exit;
pub mod google;
pub mod job;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod notifier;
pub mod operator;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod storage;
pub mod telemetry;

pub use scorer_engine::{format, model, score};
pub use scorer_events as event;
