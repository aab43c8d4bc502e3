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
//! writes of small objects are atomic. One listing finds the newest number.

mod records;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use records::LeaseRecord;
use records::{Created, create, latest, now_ms, record};

use crate::layout::OutputNames;
use crate::storage::{ObjectStore, StorageError};

/// Another live job holds the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldElsewhere {
    pub holder: String,
    pub expires_in: Duration,
}

/// What [`acquire`] got.
pub enum Acquired {
    Held(Held),
    HeldElsewhere(HeldElsewhere),
}

/// A lease we hold, renewed in the background. It ends with
/// [`Held::release`], or, however the job ends (an error, a panic, a
/// cancelled task), when it is dropped: the renewer stops at once and a
/// release is sent if a runtime is still there to send it.
pub struct Held {
    store: Arc<dyn ObjectStore>,
    names: OutputNames,
    holder: String,
    next: Arc<tokio::sync::Mutex<u32>>,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// Cancelled when another instance took the lease over (or the renewer
    /// died, which leaves the lease to lapse).
    lost: CancellationToken,
}

/// The newest lease record of an input generation, if any: who holds it
/// and until when, or that it was released (for `scorer status`).
pub async fn current(store: &dyn ObjectStore, names: &OutputNames) -> Result<Option<LeaseRecord>, StorageError> {
    Ok(records::latest(store, names).await?.1)
}

/// Tries to take the lease for `names` as `holder`. A live lease in
/// `holder`'s own name is taken again (holder names are unique per process,
/// and the caller runs one job per input at a time).
pub async fn acquire(
    store: Arc<dyn ObjectStore>,
    names: &OutputNames,
    holder: &str,
    ttl: Duration,
) -> Result<Acquired, StorageError> {
    let (next, current) = latest(store.as_ref(), names).await?;
    if let Some(current) = current
        && current.is_live()
        && current.holder != holder
    {
        return Ok(Acquired::HeldElsewhere(HeldElsewhere {
            expires_in: Duration::from_millis(current.expires_at_ms.saturating_sub(now_ms())),
            holder: current.holder,
        }));
    }
    match create(store.as_ref(), names, next, &record(holder, ttl, false)).await? {
        Created::Ours => {}
        Created::Theirs(winner) => {
            // Lost the race for this number: whoever won holds it (even a
            // release of ours still on its way: retry later).
            return Ok(Acquired::HeldElsewhere(HeldElsewhere {
                holder: winner.holder,
                expires_in: ttl,
            }));
        }
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
    Ok(Acquired::Held(Held {
        store,
        names: names.clone(),
        holder: holder.to_owned(),
        next,
        stop,
        renewer: Some(renewer),
        lost,
    }))
}

impl Held {
    /// Cancelled if another instance took the lease over while we worked.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and records that the work is done or abandoned, so
    /// another instance need not wait for the expiry.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        release(
            self.store.clone(),
            self.names.clone(),
            self.holder.clone(),
            self.next.clone(),
        )
        .await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Released already, or dropped on a path that skipped `release`.
        let Some(renewer) = self.renewer.take() else { return };
        self.stop.cancel();
        renewer.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(release(
                self.store.clone(),
                self.names.clone(),
                self.holder.clone(),
                self.next.clone(),
            ));
        }
    }
}

/// Best effort: an unreleased lease simply expires. A number taken by a
/// record of our own (a renewal whose request was still on its way when the
/// renewer stopped) is passed over; one taken by another holder means the
/// lease is theirs now, and there is nothing to release.
async fn release(store: Arc<dyn ObjectStore>, names: OutputNames, holder: String, next: Arc<tokio::sync::Mutex<u32>>) {
    let mut next = next.lock().await;
    for _ in 0..3 {
        match create(store.as_ref(), &names, *next, &record(&holder, Duration::ZERO, true)).await {
            Ok(Created::Ours) => {
                *next += 1;
                return;
            }
            Ok(Created::Theirs(other)) if other.holder == holder => *next += 1,
            _ => return,
        }
    }
}

/// Cancels `lost` if the renewer ends by panicking: a lease nobody renews
/// lapses, and the job must not go on as if it held it.
struct LostOnPanic(CancellationToken);

impl Drop for LostOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
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
    let _lost_on_panic = LostOnPanic(lost.clone());
    let period = ttl / 3;
    // A renewal that failed is retried with the very same record: if its
    // write went through and only the answer was lost, the retry finds
    // identical bytes there and knows it is ours.
    let mut pending: Option<(u32, LeaseRecord)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let mut seq = next.lock().await;
        if stop.is_cancelled() {
            return;
        }
        let renewal = match pending.take() {
            Some((at, record)) if at == *seq => record,
            _ => record(&holder, ttl, false),
        };
        match create(store.as_ref(), &names, *seq, &renewal).await {
            Ok(Created::Ours) => *seq += 1,
            Ok(Created::Theirs(other)) => {
                tracing::warn!(
                    lease = %names.lease(*seq),
                    holder = %other.holder,
                    "lease taken over by another instance; abandoning the job"
                );
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %names.lease(*seq), "lease renewal failed; will retry");
                pending = Some((*seq, renewal));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Generation, ObjectName};
    use crate::storage::local::LocalStore;
    use crate::storage::{ByteStream, ObjectMeta, WriteBody, WriteOptions};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn setup() -> (tempfile::TempDir, Arc<dyn ObjectStore>, OutputNames) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new("out", dir.path()).unwrap());
        let names = OutputNames::new(&ObjectName::parse("a.csv").unwrap(), Generation::new(1).unwrap());
        (dir, store, names)
    }

    fn held(acquired: Acquired) -> Held {
        match acquired {
            Acquired::Held(h) => h,
            Acquired::HeldElsewhere(e) => panic!("held by {}", e.holder),
        }
    }

    async fn records(store: &dyn ObjectStore, names: &OutputNames) -> usize {
        store.list(names.lease_prefix()).await.unwrap().len()
    }

    #[tokio::test]
    async fn a_live_lease_keeps_others_out_and_a_released_one_lets_them_in() {
        let (_d, store, names) = setup();
        let ttl = Duration::from_secs(60);
        let a = held(acquire(store.clone(), &names, "a", ttl).await.unwrap());
        let Acquired::HeldElsewhere(busy) = acquire(store.clone(), &names, "b", ttl).await.unwrap() else {
            panic!("b got a held lease")
        };
        assert_eq!(busy.holder, "a");
        a.release().await;
        held(acquire(store.clone(), &names, "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_by_creating_the_next_number() {
        let (_d, store, names) = setup();
        let a = held(
            acquire(store.clone(), &names, "a", Duration::from_millis(1))
                .await
                .unwrap(),
        );
        a.stop.cancel();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = held(
            acquire(store.clone(), &names, "b", Duration::from_secs(60))
                .await
                .unwrap(),
        );
        assert!(store.stat(&names.lease(2)).await.unwrap().is_some());
        b.release().await;
    }

    #[tokio::test]
    async fn renewal_notices_a_takeover() {
        let (_d, store, names) = setup();
        let a = held(
            acquire(store.clone(), &names, "a", Duration::from_millis(300))
                .await
                .unwrap(),
        );
        // Another instance grabs the next number before a's renewal does.
        let b = record("b", Duration::from_secs(60), false);
        assert!(matches!(
            create(store.as_ref(), &names, 2, &b).await.unwrap(),
            Created::Ours
        ));
        tokio::time::timeout(Duration::from_secs(5), a.lost().cancelled())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_lease_stops_renewing_and_is_released() {
        let (_d, store, names) = setup();
        let ttl = Duration::from_millis(150);
        let a = held(acquire(store.clone(), &names, "a", ttl).await.unwrap());
        tokio::time::sleep(ttl).await;
        // A job that ends by an error or a panic never calls release().
        drop(a);
        // The release is sent in the background; once it is there, nothing
        // more may be written.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let released = loop {
            let (_, current) = latest(store.as_ref(), &names).await.unwrap();
            if current.as_ref().is_some_and(|r| r.released) {
                break records(store.as_ref(), &names).await;
            }
            assert!(std::time::Instant::now() < deadline, "no release after the drop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(ttl * 3).await;
        assert_eq!(
            records(store.as_ref(), &names).await,
            released,
            "renewed after the drop"
        );
        held(
            acquire(store.clone(), &names, "b", Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }

    /// A store that performs one lease write but reports it as failed: the
    /// answer was lost on the way back.
    struct LosesOneAnswer {
        inner: Arc<dyn ObjectStore>,
        lose: String,
        lost: AtomicBool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for LosesOneAnswer {
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        fn uri(&self, name: &str) -> String {
            self.inner.uri(name)
        }
        async fn stat(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
            self.inner.stat(name).await
        }
        async fn read_from(
            &self,
            name: &str,
            generation: Option<i64>,
            offset: u64,
        ) -> Result<(ObjectMeta, ByteStream), StorageError> {
            self.inner.read_from(name, generation, offset).await
        }
        async fn write(&self, name: &str, body: WriteBody, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
            let written = self.inner.write(name, body, options).await;
            if name == self.lose && !self.lost.swap(true, Ordering::SeqCst) {
                return Err(StorageError::Transient("the answer was lost".into()));
            }
            written
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
            self.inner.list(prefix).await
        }
    }

    #[tokio::test]
    async fn a_renewal_whose_answer_was_lost_is_not_a_takeover() {
        let (_d, inner, names) = setup();
        let store: Arc<dyn ObjectStore> = Arc::new(LosesOneAnswer {
            inner,
            lose: names.lease(2),
            lost: AtomicBool::new(false),
        });
        let ttl = Duration::from_millis(150);
        let a = held(acquire(store.clone(), &names, "a", ttl).await.unwrap());
        // Record 2 is written with its answer lost; the next renewal finds it
        // in our name and carries on with record 3 and beyond.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while records(store.as_ref(), &names).await < 4 {
            assert!(!a.lost().is_cancelled(), "a lost answer was taken for a takeover");
            assert!(std::time::Instant::now() < deadline, "renewals stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!a.lost().is_cancelled());
        a.release().await;
    }

    /// A renewal of ours that lands after the renewer stopped holds the
    /// number the release meant to take: the release goes to the next one.
    #[tokio::test]
    async fn a_release_passes_over_a_late_renewal_of_its_own() {
        let (_d, store, names) = setup();
        let a = held(
            acquire(store.clone(), &names, "a", Duration::from_secs(60))
                .await
                .unwrap(),
        );
        let late = record("a", Duration::from_secs(60), false);
        assert!(matches!(
            create(store.as_ref(), &names, 2, &late).await.unwrap(),
            Created::Ours
        ));
        a.release().await;
        let (next, current) = latest(store.as_ref(), &names).await.unwrap();
        assert_eq!(next, 4);
        assert!(current.unwrap().released, "the lease was left live");
        held(
            acquire(store.clone(), &names, "b", Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
}
