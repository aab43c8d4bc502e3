//! The lease's record format and its numbering: what one create-only lease
//! object holds, how the newest is found, and how creating number `seq`
//! tells a write of ours whose answer was lost from someone else's. Apart
//! from the lifecycle in [`super`] (take, renew, release) because these are
//! the storage rules every step of it relies on, and the only part that
//! touches object names and bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::layout::OutputNames;
use crate::storage::{ObjectStore, StorageError, WriteOptions, read_all, write_bytes};

/// The content of one lease object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    /// Milliseconds since the epoch.
    pub expires_at_ms: u64,
    pub released: bool,
}

impl LeaseRecord {
    /// Held: not released, and not yet expired.
    pub fn is_live(&self) -> bool {
        !self.released && self.expires_at_ms > now_ms()
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn record(holder: &str, ttl: Duration, released: bool) -> LeaseRecord {
    LeaseRecord {
        holder: holder.to_owned(),
        expires_at_ms: if released {
            now_ms()
        } else {
            now_ms().saturating_add(ttl.as_millis() as u64)
        },
        released,
    }
}

/// The next free lease number and the latest record, from one listing of
/// the input generation's lease records and one read.
pub(super) async fn latest(
    store: &dyn ObjectStore,
    names: &OutputNames,
) -> Result<(u32, Option<LeaseRecord>), StorageError> {
    let prefix = names.lease_prefix();
    let newest = store
        .list(prefix)
        .await?
        .iter()
        .filter_map(|o| o.name.strip_prefix(prefix)?.strip_suffix(".json")?.parse::<u32>().ok())
        .max();
    let Some(newest) = newest else {
        return Ok((1, None));
    };
    // Anything at or above the newest listed number is newer still.
    let mut seq = newest;
    let mut current = None;
    while let Some(record) = read(store, names, seq).await? {
        current = Some(record);
        seq += 1;
    }
    Ok((seq, current))
}

async fn read(store: &dyn ObjectStore, names: &OutputNames, seq: u32) -> Result<Option<LeaseRecord>, StorageError> {
    match read_all(store, &names.lease(seq), 64 * 1024).await {
        Ok((_, bytes)) => Ok(Some(parse_record(&bytes))),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A lease record; an unreadable one counts as expired and released.
fn parse_record(bytes: &[u8]) -> LeaseRecord {
    serde_json::from_slice(bytes).unwrap_or(LeaseRecord {
        holder: String::new(),
        expires_at_ms: 0,
        released: true,
    })
}

/// Who a create-only lease record belongs to.
pub(super) enum Created {
    Ours,
    Theirs(LeaseRecord),
}

/// Creates lease record `seq`. If it already exists with exactly these
/// bytes, this write went through and only its answer was lost: it is ours.
/// Anything else there is someone else's record, or one of our own other
/// writes (the caller tells those apart by the holder).
pub(super) async fn create(
    store: &dyn ObjectStore,
    names: &OutputNames,
    seq: u32,
    record: &LeaseRecord,
) -> Result<Created, StorageError> {
    let bytes = serde_json::to_vec(record).map_err(|e| StorageError::Permanent(e.to_string()))?;
    let options = WriteOptions::create_only("application/json");
    match write_bytes(store, &names.lease(seq), bytes.clone(), options).await {
        Ok(_) => Ok(Created::Ours),
        Err(StorageError::AlreadyExists(name)) => match read_all(store, &names.lease(seq), 64 * 1024).await {
            Ok((_, there)) if there == bytes => Ok(Created::Ours),
            Ok((_, there)) => Ok(Created::Theirs(parse_record(&there))),
            // Created and gone again: only a lifecycle rule deletes leases.
            Err(StorageError::NotFound(_)) => Err(StorageError::Transient(format!("{name} vanished after a conflict"))),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Generation, ObjectName};
    use crate::storage::local::LocalStore;

    fn setup() -> (tempfile::TempDir, Arc<dyn ObjectStore>, OutputNames) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new("out", dir.path()).unwrap());
        let names = OutputNames::new(&ObjectName::parse("a.csv").unwrap(), Generation::new(1).unwrap());
        (dir, store, names)
    }

    #[tokio::test]
    async fn the_newest_record_is_found_from_a_listing() {
        let (_d, store, names) = setup();
        for seq in 1..=7 {
            let r = record(&format!("h{seq}"), Duration::ZERO, true);
            create(store.as_ref(), &names, seq, &r).await.unwrap();
        }
        let (next, current) = latest(store.as_ref(), &names).await.unwrap();
        assert_eq!(next, 8);
        assert_eq!(current.unwrap().holder, "h7");
    }
}
