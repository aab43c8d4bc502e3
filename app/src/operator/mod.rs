//! Operator tools for what the normal path missed, run by people (or a
//! scheduler), never by the service:
//!
//! - [`reconcile`] (`scorer reconcile`): input objects whose generation has
//!   no committed manifest, within the outputs' retention window, with the
//!   OBJECT_FINALIZE notification Cloud Storage would send for each; also
//!   orphans (complete outputs no manifest names, left by crashes).
//! - [`redrive`] (`scorer redrive`): dead-lettered notifications pulled,
//!   republished to the main topic, each acknowledged only once its publish
//!   succeeded.
//!
//! They fail loudly: an unreachable, unauthorised or misnamed bucket, topic
//! or subscription is an error (exit 1), never "nothing to do", and every
//! retry is logged with what it waits for.

pub mod pubsub;
pub mod reconcile;
pub mod redrive;
pub mod status;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("Pub/Sub: {0}")]
    PubSub(String),
    #[error("{0}")]
    Usage(String),
}
