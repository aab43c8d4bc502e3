//! Leases: who is scoring an input generation, until when.
//!
//! A redelivery that arrives while another instance is still scoring must
//! not start a second full scoring, and a job whose instance died must be
//! taken over. The service may only create objects (never replace or delete:
//! its role on the output bucket is read + create), so a lease is a numbered
//! series of small create-only objects: `000001.json`, `000002.json`, ...
//! The highest number is the current state. Taking over an expired lease,
//! renewing one and releasing one all mean creating the next number; two
//! instances racing for the same number get one winner, because create-only
//! writes of small objects are atomic.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::manifest::OutputNames;
use crate::storage::{ObjectStore, StorageError, WriteOptions, read_all, write_bytes};

/// The content of one lease object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    /// Milliseconds since the epoch.
    pub expires_at_ms: u64,
    pub released: bool,
}

/// Someone else holds the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Busy {
    pub holder: String,
    pub expires_in: Duration,
}

/// A lease we hold. Renewed in the background until [`Held::finish`].
pub struct Held {
    store: Arc<dyn ObjectStore>,
    names: OutputNames,
    holder: String,
    next: Arc<tokio::sync::Mutex<u32>>,
    stop: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
    /// Cancelled when another instance took the lease over.
    lost: CancellationToken,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Tries to take the lease for `names` as `holder`.
///
/// `ours_is_stale` says whether a live lease in our own name may be taken
/// over (the caller knows no job of ours is running for it).
pub async fn acquire(
    store: Arc<dyn ObjectStore>,
    names: &OutputNames,
    holder: &str,
    ttl: Duration,
) -> Result<Result<Held, Busy>, StorageError> {
    let (next, current) = latest(store.as_ref(), names).await?;
    if let Some(current) = current
        && !current.released
        && current.expires_at_ms > now_ms()
        && current.holder != holder
    {
        return Ok(Err(Busy {
            holder: current.holder,
            expires_in: Duration::from_millis(current.expires_at_ms - now_ms()),
        }));
    }
    let record = LeaseRecord {
        holder: holder.to_owned(),
        expires_at_ms: now_ms() + ttl.as_millis() as u64,
        released: false,
    };
    match create(store.as_ref(), names, next, &record).await {
        Ok(()) => {}
        Err(StorageError::AlreadyExists(_)) => {
            // Lost the race for this number: whoever won holds it.
            let winner = read(store.as_ref(), names, next)
                .await?
                .map(|r| r.holder)
                .unwrap_or_default();
            return Ok(Err(Busy {
                holder: winner,
                expires_in: ttl,
            }));
        }
        Err(e) => return Err(e),
    }
    let next = Arc::new(tokio::sync::Mutex::new(next + 1));
    let stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let renewer = tokio::spawn(renew(
        store.clone(),
        names.clone(),
        holder.to_owned(),
        ttl,
        next.clone(),
        stop.clone(),
        lost.clone(),
    ));
    Ok(Ok(Held {
        store,
        names: names.clone(),
        holder: holder.to_owned(),
        next,
        stop,
        renewer,
        lost,
    }))
}

impl Held {
    /// Cancelled if another instance took the lease over while we worked.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing. With `release`, records that the work is done or
    /// abandoned so another instance need not wait for the expiry.
    pub async fn finish(self, release: bool) {
        self.stop.cancel();
        let _ = self.renewer.await;
        if release {
            let mut next = self.next.lock().await;
            let record = LeaseRecord {
                holder: self.holder.clone(),
                expires_at_ms: now_ms(),
                released: true,
            };
            // Best effort: an unreleased lease simply expires.
            if create(self.store.as_ref(), &self.names, *next, &record).await.is_ok() {
                *next += 1;
            }
        }
    }
}

async fn renew(
    store: Arc<dyn ObjectStore>,
    names: OutputNames,
    holder: String,
    ttl: Duration,
    next: Arc<tokio::sync::Mutex<u32>>,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let period = ttl / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let mut seq = next.lock().await;
        let record = LeaseRecord {
            holder: holder.clone(),
            expires_at_ms: now_ms() + ttl.as_millis() as u64,
            released: false,
        };
        match create(store.as_ref(), &names, *seq, &record).await {
            Ok(()) => *seq += 1,
            Err(StorageError::AlreadyExists(_)) => {
                tracing::warn!(lease = %names.lease(*seq), "lease taken over by another instance; abandoning the job");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; will retry"),
        }
    }
}

/// The first free lease number and the latest record, probing upward (the
/// service has no list right it relies on for this, and there are few).
async fn latest(store: &dyn ObjectStore, names: &OutputNames) -> Result<(u32, Option<LeaseRecord>), StorageError> {
    let mut seq = 1;
    let mut current = None;
    while let Some(record) = read(store, names, seq).await? {
        current = Some(record);
        seq += 1;
    }
    Ok((seq, current))
}

async fn read(store: &dyn ObjectStore, names: &OutputNames, seq: u32) -> Result<Option<LeaseRecord>, StorageError> {
    match read_all(store, &names.lease(seq), 64 * 1024).await {
        Ok((_, bytes)) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or(LeaseRecord {
            // An unreadable lease counts as expired and released.
            holder: String::new(),
            expires_at_ms: 0,
            released: true,
        }))),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates lease record `seq`. If it already exists with exactly this
/// content, the write went through and only its answer was lost: success.
async fn create(
    store: &dyn ObjectStore,
    names: &OutputNames,
    seq: u32,
    record: &LeaseRecord,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(record).map_err(|e| StorageError::Permanent(e.to_string()))?;
    let options = WriteOptions::create_only("application/json");
    match write_bytes(store, &names.lease(seq), bytes.clone(), options).await {
        Ok(_) => Ok(()),
        Err(StorageError::AlreadyExists(name)) => match read_all(store, &names.lease(seq), 64 * 1024).await {
            Ok((_, there)) if there == bytes => Ok(()),
            _ => Err(StorageError::AlreadyExists(name)),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
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
    async fn a_live_lease_keeps_others_out_and_a_released_one_lets_them_in() {
        let (_d, store, names) = setup();
        let ttl = Duration::from_secs(60);
        let a = acquire(store.clone(), &names, "a", ttl).await.unwrap().unwrap();
        let busy = acquire(store.clone(), &names, "b", ttl).await.unwrap().err().unwrap();
        assert_eq!(busy.holder, "a");
        a.finish(true).await;
        let b = acquire(store.clone(), &names, "b", ttl).await.unwrap();
        assert!(b.is_ok());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_by_creating_the_next_number() {
        let (_d, store, names) = setup();
        let a = acquire(store.clone(), &names, "a", Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        a.stop.cancel();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = acquire(store.clone(), &names, "b", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(store.stat(&names.lease(2)).await.unwrap().is_some());
        b.finish(false).await;
    }

    #[tokio::test]
    async fn renewal_notices_a_takeover() {
        let (_d, store, names) = setup();
        let a = acquire(store.clone(), &names, "a", Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        // Another instance grabs the next number before a's renewal does.
        create(
            store.as_ref(),
            &names,
            2,
            &LeaseRecord {
                holder: "b".into(),
                expires_at_ms: now_ms() + 60_000,
                released: false,
            },
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), a.lost().cancelled())
            .await
            .unwrap();
    }
}
