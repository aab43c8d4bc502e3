//! Verifying what storage stored, writing reports, and the commit.
//!
//! One rule everywhere: an object that already exists under a name we meant
//! to create is ours only if its bytes are identical (same size and CRC32C)
//! to what we wrote; otherwise it belongs to someone else (an orphan of a
//! crashed attempt, a racing writer) and we take the next free name. The
//! manifest is the exception that proves it: it is the commit point, and an
//! existing manifest with other bytes means another job committed first.

use super::{JobError, JobRunner, Outcome};
use crate::layout::OutputNames;
use crate::manifest::Manifest;
use crate::storage::blocking::FinishedUpload;
use crate::storage::{ObjectMeta, StorageError, WriteOptions, read_all, write_bytes};

/// Largest manifest read back.
const MANIFEST_LIMIT: usize = 16 << 20;
/// Numbered names tried before giving up.
pub(super) const MAX_ATTEMPT_NUMBER: u32 = 1000;

impl JobRunner {
    /// The committed manifest of an input generation, if there is one.
    pub(super) async fn find_manifest(&self, names: &OutputNames) -> Result<Option<Manifest>, JobError> {
        self.read_json(&names.manifest(), MANIFEST_LIMIT).await
    }

    /// A JSON object of the output bucket (a manifest, a record), if it is
    /// there; one that does not parse is an internal error.
    pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Option<T>, JobError> {
        match read_all(self.output.as_ref(), name, limit).await {
            Ok((_, bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| JobError::Internal(format!("unreadable {name}: {e}"))),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The first number `n` whose `name(n)` is free: lower ones are held by
    /// orphans of crashed attempts.
    pub(super) async fn free_number(&self, name: impl Fn(u32) -> String) -> Result<u32, JobError> {
        for n in 1..MAX_ATTEMPT_NUMBER {
            if self.output.stat(&name(n)).await?.is_none() {
                return Ok(n);
            }
        }
        Err(JobError::Internal(format!(
            "no free output name after {MAX_ATTEMPT_NUMBER} attempts ({})",
            name(1)
        )))
    }

    /// `name` as stored, if it holds exactly `size` bytes with `crc32c`.
    pub(super) async fn identical(&self, name: &str, size: u64, crc32c: u32) -> Result<Option<ObjectMeta>, JobError> {
        Ok(self
            .output
            .checksum(name)
            .await?
            .filter(|there| there.size == size && there.crc32c == Some(crc32c)))
    }

    /// The stored object of a finished upload. What storage says it stored
    /// must be what was written: a manifest never commits a truncated or
    /// altered object. A create-only conflict is fine when the object there
    /// is byte-identical (a racing job with the same deterministic output, or
    /// this upload's own answer lost); otherwise this attempt fails and the
    /// next one writes the next free name.
    pub(super) async fn verify_upload(&self, upload: FinishedUpload) -> Result<ObjectMeta, JobError> {
        let FinishedUpload {
            name,
            crc32c,
            size,
            stored,
        } = upload;
        match stored
            .await
            .map_err(|e| JobError::Internal(format!("upload task: {e}")))?
        {
            Ok(meta) if meta.size != size || meta.crc32c.is_some_and(|c| c != crc32c) => {
                Err(JobError::Transient(format!(
                    "{} was stored as {} bytes (CRC32C {:?}) but {size} bytes (CRC32C {crc32c:08x}) were written",
                    self.output.uri(&name),
                    meta.size,
                    meta.crc32c.map(|c| format!("{c:08x}"))
                )))
            }
            Ok(mut meta) => {
                meta.crc32c.get_or_insert(crc32c);
                Ok(meta)
            }
            Err(StorageError::AlreadyExists(_)) => match self.identical(&name, size, crc32c).await? {
                Some(there) => Ok(there),
                None => Err(JobError::Transient(format!(
                    "{} exists with other content; the next attempt writes the next free name",
                    self.output.uri(&name)
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a small report create-only under the first name `name(n)`,
    /// from `from` up, that is free or already holds exactly these bytes.
    pub(super) async fn put_report(
        &self,
        name: impl Fn(u32) -> String,
        from: u32,
        bytes: Vec<u8>,
    ) -> Result<ObjectMeta, JobError> {
        let size = bytes.len() as u64;
        let crc32c = crc32c::crc32c(&bytes);
        for n in from..MAX_ATTEMPT_NUMBER {
            let target = name(n);
            match write_bytes(
                self.output.as_ref(),
                &target,
                bytes.clone(),
                WriteOptions::create_only("text/csv"),
            )
            .await
            {
                Ok(mut meta) => {
                    meta.crc32c.get_or_insert(crc32c);
                    return Ok(meta);
                }
                Err(StorageError::AlreadyExists(_)) => {
                    if let Some(there) = self.identical(&target, size, crc32c).await? {
                        return Ok(there);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(JobError::Internal(format!(
            "no free name for the report after {MAX_ATTEMPT_NUMBER} attempts ({})",
            name(from)
        )))
    }

    /// Writes the manifest, create-only: the commit point.
    pub(super) async fn commit(&self, names: &OutputNames, manifest: Manifest) -> Result<Outcome, JobError> {
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::Internal(e.to_string()))?;
        match write_bytes(
            self.output.as_ref(),
            &names.manifest(),
            bytes.clone(),
            WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) => Ok(Outcome::Committed(Box::new(manifest))),
            Err(StorageError::AlreadyExists(_)) => {
                // Either another job committed first, or this write went
                // through and only its answer was lost (the retry then hit
                // the precondition): byte-identical content says which.
                let (_, existing) = read_all(self.output.as_ref(), &names.manifest(), MANIFEST_LIMIT).await?;
                if existing == bytes {
                    return Ok(Outcome::Committed(Box::new(manifest)));
                }
                match serde_json::from_slice(&existing) {
                    Ok(other) => Ok(Outcome::Duplicate(Box::new(other))),
                    Err(e) => Err(JobError::Internal(format!(
                        "unreadable manifest {}: {e}",
                        names.manifest()
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::{Generation, ObjectName};
    use crate::model::Model;
    use crate::score::ScoreOptions;
    use crate::storage::ObjectStore;
    use crate::storage::local::LocalStore;
    use crate::telemetry::Metrics;

    fn runner(dir: &std::path::Path) -> JobRunner {
        let input: Arc<dyn ObjectStore> = Arc::new(LocalStore::new("in", dir.join("in")).unwrap());
        let output: Arc<dyn ObjectStore> = Arc::new(LocalStore::new("out", dir.join("out")).unwrap());
        let pushes = crate::config::Pushes {
            input_bucket: crate::event::BucketName::parse("in-b").unwrap(),
            max_concurrent_jobs: 1,
            lease_ttl: Duration::from_secs(60),
            auth: None,
            inline_max_bytes: 1 << 30,
            sharding: None,
        };
        JobRunner::new(
            input,
            output,
            Arc::new(Model::default_model().unwrap()),
            ScoreOptions::default(),
            &pushes,
            Arc::new(Metrics::default()),
            "test",
        )
    }

    /// An existing report is adopted only when its bytes are ours: anything
    /// else there (an orphan, a racing writer's other content) sends the
    /// report to the next free name.
    #[tokio::test]
    async fn a_report_adopts_only_an_identical_object() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        let names = OutputNames::new(&ObjectName::parse("a.csv").unwrap(), Generation::new(3).unwrap());
        let report = b"line,row,column,value,reason\n1,0,,,the file was not scored: x\n".to_vec();
        let options = WriteOptions::create_only("text/csv");
        write_bytes(
            runner.output.as_ref(),
            &names.errors(1),
            b"a prefix of something".to_vec(),
            options,
        )
        .await
        .unwrap();
        let stored = runner.put_report(|n| names.errors(n), 1, report.clone()).await.unwrap();
        assert_eq!(stored.name, names.errors(2));
        let (_, bytes) = read_all(runner.output.as_ref(), &names.errors(2), 1 << 20)
            .await
            .unwrap();
        assert_eq!(bytes, report);
        // The same report again (a retry whose answer was lost): adopted.
        let again = runner.put_report(|n| names.errors(n), 2, report.clone()).await.unwrap();
        assert_eq!(again.name, names.errors(2));
        assert_eq!(again.crc32c, Some(crc32c::crc32c(&report)));
        let listed = runner.output.list("").await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
    }
}
