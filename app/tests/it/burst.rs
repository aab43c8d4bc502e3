//! A burst of files on two instances, configured as Terraform configures the
//! push service, with the stand-ins this test needs for what does not run
//! here:
//!
//! - **Cloud Run's request routing** ([`Front`]): at most `concurrency`
//!   requests in flight per instance; a request beyond that waits for a free
//!   one (Cloud Run holds it while it scales out; here the two instances are
//!   `max_instances`), never refused by the front.
//! - **Pub/Sub's push** ([`push_all`]): up to 64 pushes outstanding at once
//!   (Pub/Sub's own push flow control starts in that region and grows with
//!   success; the emulator, which pushes two at a time, cannot show a
//!   burst), each failed push retried with the subscription's exponential
//!   backoff, and moved to the dead letters after `max_delivery_attempts`.
//!   Terraform's backoff (10 s to 600 s) is scaled down 100 times so the test
//!   takes seconds; the attempts (50) are not.
//!
//! Storage is fake-gcs-server, for real. The test runs the burst twice: as
//! the service was configured before (request concurrency 16, 2 job slots:
//! every push beyond the slots answered 429) and as it is now (request
//! concurrency = job slots = 2), and reports the 429s of each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::harness::Server;
use crate::support::{FakeGcs, FakeGcsOptions};
use scorer::event::notification::Notification;

const FILES: usize = 300;
const SLOTS: &str = "2";
const MAX_DELIVERY_ATTEMPTS: u32 = 50;
/// Terraform's retry policy (10 s .. 600 s), scaled down 100 times.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(6);
const OUTSTANDING: usize = 64;

/// Cloud Run's router in front of a fixed set of instances.
struct Front {
    instances: Vec<(String, Arc<Semaphore>)>,
    /// Any instance freed a slot: a waiting request may go.
    freed: tokio::sync::Notify,
    http: reqwest::Client,
    statuses: std::sync::Mutex<BTreeMap<u16, u32>>,
}

impl Front {
    async fn start(instances: &[&Server], concurrency: usize) -> (Arc<Front>, String) {
        let front = Arc::new(Front {
            instances: instances
                .iter()
                .map(|s| (s.url("/"), Arc::new(Semaphore::new(concurrency))))
                .collect(),
            freed: tokio::sync::Notify::new(),
            http: reqwest::Client::new(),
            statuses: std::sync::Mutex::new(BTreeMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(route).with_state(front.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (front, url)
    }
}

async fn route(State(front): State<Arc<Front>>, request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    // The first instance with a free request slot; else wait for one.
    let (url, permit) = loop {
        let notified = front.freed.notified();
        if let Some(found) = front
            .instances
            .iter()
            .find_map(|(url, slots)| slots.clone().try_acquire_owned().ok().map(|p| (url.clone(), p)))
        {
            break found;
        }
        notified.await;
    };
    let answer = front
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    drop(permit);
    front.freed.notify_waiters();
    let status = answer.as_ref().map_or(502, |a| a.status().as_u16());
    *front.statuses.lock().unwrap().entry(status).or_default() += 1;
    match answer {
        Ok(a) => Response::builder()
            .status(a.status())
            .body(Body::from(a.bytes().await.unwrap_or_default()))
            .unwrap_or_else(|_| (axum::http::StatusCode::BAD_GATEWAY, "").into_response()),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// What the Pub/Sub stand-in saw.
#[derive(Debug, Default)]
struct Pushed {
    attempts: AtomicU32,
    dead_letters: AtomicUsize,
}

/// Pushes every envelope until it is acknowledged, as a push subscription
/// does, with up to `OUTSTANDING` pushes at once.
async fn push_all(endpoint: &str, envelopes: Vec<serde_json::Value>) -> Arc<Pushed> {
    let pushed = Arc::new(Pushed::default());
    let outstanding = Arc::new(Semaphore::new(OUTSTANDING));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for envelope in envelopes {
        let (pushed, outstanding, http, endpoint) =
            (pushed.clone(), outstanding.clone(), http.clone(), endpoint.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            for _ in 0..MAX_DELIVERY_ATTEMPTS {
                let permit = outstanding.acquire().await.unwrap();
                pushed.attempts.fetch_add(1, Ordering::SeqCst);
                let status = http
                    .post(&endpoint)
                    .json(&envelope)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                drop(permit);
                if status.is_ok_and(|s| (200..300).contains(&s)) {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            pushed.dead_letters.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    pushed
}

/// One burst: `FILES` files on two instances whose front lets
/// `concurrency` requests in at once. Returns the statuses the instances
/// answered, and checks every file ended with one committed output set.
async fn burst(concurrency: usize) -> (BTreeMap<u16, u32>, u32, usize, Duration) {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let mut envelopes = Vec::new();
    for i in 0..FILES {
        let mut csv = String::from("OPERA,TIPOVUELO,MES\n");
        for r in 0..200 {
            csv.push_str(&format!(
                "Grupo LATAM,{},{}\n",
                if (i + r) % 2 == 0 { "I" } else { "N" },
                r % 12 + 1
            ));
        }
        let name = format!("burst/{i:03}.csv");
        let generation = fake.put_object("in-bucket", &name, csv.as_bytes()).await;
        envelopes.push(
            Notification::finalize("in-bucket", &name, generation)
                .size(csv.len() as u64)
                .push_envelope(&format!("m{i}"), "projects/p/subscriptions/scorer-push"),
        );
    }
    let env = [
        ("STORAGE_EMULATOR_HOST", fake.endpoint.as_str()),
        ("INPUT_BUCKET", "in-bucket"),
        ("OUTPUT_BUCKET", "out-bucket"),
        ("MAX_CONCURRENT_JOBS", SLOTS),
    ];
    let a = Server::start(&[], &env);
    let b = Server::start(&[], &env);
    a.ready().await;
    b.ready().await;
    let (front, url) = Front::start(&[&a, &b], concurrency).await;
    let started = Instant::now();
    let pushed = push_all(&url, envelopes).await;
    let took = started.elapsed();
    let manifests = fake
        .list("out-bucket", "burst/")
        .await
        .into_iter()
        .filter(|(n, _)| n.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, FILES, "every file scored, once");
    let statuses = front.statuses.lock().unwrap().clone();
    (
        statuses,
        pushed.attempts.load(Ordering::SeqCst),
        pushed.dead_letters.load(Ordering::SeqCst),
        took,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_files_is_queued_by_cloud_run_not_refused_by_the_service() {
    // Request concurrency = job slots = 2 (terraform/cloud_run.tf).
    let (statuses, attempts, dead, took) = burst(2).await;
    println!(
        "burst of {FILES} files on 2 instances, concurrency = slots = 2: {statuses:?} in {attempts} pushes, {dead} dead letters, {took:.1?}"
    );
    assert_eq!(dead, 0, "no dead letter");
    assert_eq!(statuses.get(&429), None, "the service refused pushes: {statuses:?}");
    assert_eq!(attempts as usize, FILES, "one push per file");
}

/// The same burst as the service was configured before (request concurrency
/// 16, 2 job slots) and as it is now, side by side: a measurement of two
/// minutes, run by `bench/burst.sh` (not by `./test.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute measurement: bench/burst.sh runs it"]
async fn burst_before_and_after() {
    let (before, before_attempts, before_dead, before_took) = burst(16).await;
    let (after, after_attempts, after_dead, after_took) = burst(2).await;
    println!(
        "burst of {FILES} files on 2 instances: before (concurrency 16, 2 slots) {before:?} in {before_attempts} pushes, \
         {before_dead} dead letters, {before_took:.1?}; now (concurrency = slots = 2) {after:?} in {after_attempts} pushes, \
         {after_dead} dead letters, {after_took:.1?}"
    );
    assert!(
        before.get(&429).copied().unwrap_or(0) > 0,
        "the old configuration should have refused pushes: {before:?}"
    );
    assert_eq!((after.get(&429), after_dead), (None, 0));
}
