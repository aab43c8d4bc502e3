//! The bucket flags the operator commands (`reconcile`, `status`) share:
//! a bucket argument read as `serve` reads it, and the backend chosen by
//! `--local DIR` or `STORAGE_EMULATOR_HOST`.

use std::path::Path;
use std::time::Duration;

use super::failed::Failed;
use scorer::event::BucketName;
use scorer::storage::Backend;
use scorer::storage::gcs::GcsOptions;

/// A bucket argument, read as `serve` reads it (`gs://` and a trailing `/`
/// allowed); `local_default` when the flag is absent and `--local` given.
pub fn bucket(value: Option<&str>, flag: &str, local_default: Option<&str>) -> Result<BucketName, Failed> {
    let text = value
        .or(local_default)
        .ok_or_else(|| Failed::usage(format!("{flag} is required (or --local DIR)")))?;
    BucketName::parse(text.trim_start_matches("gs://").trim_end_matches('/'))
        .map_err(|m| Failed::usage(format!("{flag}: {m}")))
}

/// Directories under `local`, or Cloud Storage (an emulator when one is
/// named), each storage call retrying for `retry_seconds`.
pub fn backend(local: Option<&Path>, emulator: Option<&str>, retry_seconds: u64) -> Result<Backend, Failed> {
    Ok(match local {
        Some(dir) => Backend::Local { dir: dir.to_path_buf() },
        None => Backend::Gcs {
            emulator: emulator
                .map(scorer::storage::emulator_url)
                .transpose()
                .map_err(|m| Failed::usage(format!("STORAGE_EMULATOR_HOST {m}")))?,
            options: GcsOptions {
                retry_budget: Duration::from_secs(retry_seconds.max(1)),
                ..GcsOptions::default()
            },
        },
    })
}
