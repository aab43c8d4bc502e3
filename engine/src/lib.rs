//! scorer-engine: the scoring engine and the model, with no async runtime,
//! HTTP or cloud client: a byte stream in, scored bytes and rejected rows
//! out, in bounded memory.
//!
//! # Layout
//!
//! - [`format`](mod@format): which objects are input, told from their name (the
//!   engine scores CSV only).
//! - [`score`]: the pipeline: decode ([`score::input`]), cut at record ends
//!   ([`score::chunker`], with the record rules it shares in
//!   [`score::records`]), plan and score each chunk with polars
//!   ([`score::plan`], [`score::logit`]), write the records with their
//!   scores in the format asked for, CSV, JSON Lines or Parquet
//!   ([`score::output`]), and the rejected rows ([`score::rejects`]),
//!   overlapped on three threads ([`score::pipeline`]); one byte range of
//!   a CSV scored alone, for the shard job's tasks ([`score::shard`]).
//!   JSON Lines input is read line by line instead (`score::jsonl`).
//! - [`model`]: the logistic regression: its JSON artifact
//!   ([`model::artifact`]), one row's logit ([`model::Model::logit`]), the
//!   fit with smartcore's L-BFGS ([`model::fit`]) from training data read
//!   like scoring input ([`model::training_data`]), and the evaluation of
//!   labelled predictions ([`model::evaluation`]).
//!
//! The batch engine and the online API compute the same logit: polars over a
//! chunk, [`model::Model::logit`] for one row, term by term the same maths
//! (a property test holds them to each other).

pub mod format;
pub mod model;
pub mod score;
