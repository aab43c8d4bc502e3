//! The cloud path for real: the Cloud Storage backend against fake-gcs-server,
//! and the whole chain `gsutil cp` -> Cloud Storage notification -> Google's
//! Pub/Sub emulator -> push -> `scorer serve` -> outputs read with `gsutil cat`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Server, data};
use crate::support::{FakeGcs, FakeGcsOptions, Notifications, PubSubEmulator, PushSubscription, gsutil_cat, gsutil_cp};
use scorer::storage::gcs::{GcsOptions, GcsStore};
use scorer::storage::{BodyPart, ObjectStore, StorageError, WriteBody, WriteOptions, read_all, write_bytes};

fn quick_retries() -> GcsOptions {
    GcsOptions {
        retry_budget: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

/// A deterministic body of `len` bytes in 64 KiB pieces, with the end
/// marker when `complete`.
fn body_of_len(len: usize, complete: bool) -> (Vec<u8>, WriteBody) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut pieces: Vec<Result<BodyPart, StorageError>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(BodyPart::Data(Bytes::copy_from_slice(c))))
        .collect();
    if complete {
        pieces.push(Ok(BodyPart::End));
    }
    (bytes, Box::pin(futures::stream::iter(pieces)))
}

#[tokio::test]
async fn the_storage_backend_streams_both_ways_and_creates_only_once() {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("bkt").await;
    let store = GcsStore::new("bkt", Some(&fake.endpoint), quick_retries())
        .await
        .unwrap();

    // Larger than the 8 MiB resumable threshold and buffer: a resumable upload
    // of a stream of unknown size, then a streamed download.
    let (expected, body) = body_of_len(20 << 20, true);
    let meta = store
        .write("big/object.csv", body, WriteOptions::create_only("text/csv"))
        .await
        .unwrap();
    assert_eq!(meta.size, expected.len() as u64);
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(&expected)));
    let (read_meta, mut stream) = store.read("big/object.csv", Some(meta.generation)).await.unwrap();
    assert_eq!(read_meta.generation, meta.generation);
    let mut got = Vec::with_capacity(expected.len());
    let mut pieces = 0;
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.unwrap());
        pieces += 1;
    }
    assert!(got == expected, "download differs from upload");
    assert!(pieces > 1, "the download arrives in pieces");

    // Small objects go up in one request, where the emulator honours
    // ifGenerationMatch=0: the second create-only write is refused.
    write_bytes(
        &store,
        "small.json",
        b"{}".to_vec(),
        WriteOptions::create_only("application/json"),
    )
    .await
    .unwrap();
    let again = write_bytes(
        &store,
        "small.json",
        b"[]".to_vec(),
        WriteOptions::create_only("application/json"),
    )
    .await;
    assert!(matches!(again, Err(StorageError::AlreadyExists(_))), "{again:?}");
    assert_eq!(read_all(&store, "small.json", 100).await.unwrap().1, b"{}");

    // A body that fails, or stops without its end marker (its writer gave
    // up), abandons the upload: nothing appears, small (one request) or
    // large (a resumable session left unfinalised).
    let failing: WriteBody = Box::pin(futures::stream::iter(vec![
        Ok(BodyPart::Data(Bytes::from_static(b"partial"))),
        Err(StorageError::Abandoned("test".into())),
    ]));
    let (_, small_unfinished) = body_of_len(100, false);
    let (_, large_unfinished) = body_of_len(12 << 20, false);
    for (name, body) in [
        ("never.csv", failing),
        ("never-small.csv", small_unfinished),
        ("never-large.csv", large_unfinished),
    ] {
        let err = store
            .write(name, body, WriteOptions::create_only("text/csv"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Abandoned(_)), "{name}: {err}");
        assert!(store.stat(name).await.unwrap().is_none(), "{name} was committed");
    }

    let stat = store.stat("big/object.csv").await.unwrap().unwrap();
    assert_eq!((stat.size, stat.generation), (meta.size, meta.generation));
    assert_eq!(stat.crc32c, meta.crc32c);
    assert!(store.stat("nope").await.unwrap().is_none());
    let names: Vec<String> = store.list("").await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["big/object.csv", "small.json"]);
    assert!(matches!(
        store.read("nope", None).await.err(),
        Some(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store.read("small.json", Some(1)).await.err(),
        Some(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_unreachable_storage_is_transient_and_retries_are_bounded() {
    // Nothing listens on this loopback address.
    let store = GcsStore::new("bkt", Some("http://127.255.254.253"), quick_retries())
        .await
        .unwrap();
    let started = Instant::now();
    let err = store.read("x.csv", None).await.err().unwrap();
    assert!(err.is_transient(), "{err}");
    let err = store.stat("x.csv").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "retries must stay within their budget"
    );
}

pub struct Chain {
    pub pubsub: PubSubEmulator,
    pub fake: FakeGcs,
    pub server: Server,
}

pub const PROJECT: &str = "scorer-test";

/// Everything as in the cloud: buckets on fake-gcs-server publishing
/// notifications to the Pub/Sub emulator, a push subscription to the service
/// (started with `env` besides).
pub async fn chain(env: &[(&str, &str)]) -> Chain {
    let pubsub = PubSubEmulator::start().await;
    pubsub.create_event_topics(PROJECT).await;
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: Some(
            Notifications::new(&pubsub, PROJECT, "gcs-events")
                .bucket("in-bucket")
                .events(&["finalize", "delete"]),
        ),
    })
    .await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let mut all = vec![
        ("STORAGE_EMULATOR_HOST", fake.endpoint.as_str()),
        ("INPUT_BUCKET", "in-bucket"),
        ("OUTPUT_BUCKET", "out-bucket"),
        ("STORAGE_RETRY_SECONDS", "5"),
        // For a results topic, when a test sets one.
        ("PUBSUB_EMULATOR_HOST", pubsub.host.as_str()),
    ];
    all.extend_from_slice(env);
    let server = Server::start(&[], &all);
    server.ready().await;
    let push = PushSubscription::new(&server.url("/"))
        .ack_deadline(Duration::from_secs(60))
        .backoff(Duration::from_secs(1), Duration::from_secs(5))
        .dead_letter("gcs-events-dead", 5);
    pubsub
        .create_push_subscription(PROJECT, "scorer-push", "gcs-events", &push)
        .await;
    Chain { pubsub, fake, server }
}

/// The manifest of `name`'s current generation, once committed.
pub async fn manifest_of(fake: &FakeGcs, name: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(meta) = fake.object_metadata("in-bucket", name).await {
            let generation = meta["generation"].as_str().unwrap_or_default().to_owned();
            if let Some(bytes) = fake
                .get_object("out-bucket", &format!("{name}/{generation}/manifest.json"))
                .await
            {
                return serde_json::from_slice(&bytes).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no manifest for {name} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_whole_chain_from_gsutil_cp_to_predictions() {
    let c = chain(&[]).await;
    let dir = tempfile::tempdir().unwrap();

    let started = Instant::now();
    gsutil_cp(&c.fake, &data("scl_flights_2017.csv"), "gs://in-bucket/2017/scl.csv").await;
    let uploaded = started.elapsed();
    let manifest = manifest_of(&c.fake, "2017/scl.csv", Duration::from_secs(120)).await;
    let total = started.elapsed();
    println!(
        "chain for the 68,206-row SCL file: {:.2} s from `gsutil cp` to the manifest ({:.2} s of it the gsutil upload)",
        total.as_secs_f64(),
        uploaded.as_secs_f64()
    );
    assert_eq!(manifest["status"], "scored");
    assert_eq!(manifest["rows"]["scored"], 68206);
    assert_eq!(manifest["input"]["uri"], "gs://in-bucket/2017/scl.csv");
    let size = std::fs::metadata(data("scl_flights_2017.csv")).unwrap().len();
    assert_eq!(
        manifest["input"]["size"], size,
        "the input's size, even from an emulator that omits it"
    );
    let accuracy = manifest["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.59..0.62).contains(&accuracy), "{accuracy}");
    let predictions_uri = manifest["outputs"]["predictions"]["uri"].as_str().unwrap();
    let predictions = gsutil_cat(&c.fake, predictions_uri).await;
    assert_eq!(predictions.iter().filter(|b| **b == b'\n').count(), 68207);
    assert!(predictions.starts_with(b"split,OPERA,TIPOVUELO,MES,atraso_15,probability,prediction\n"));
    assert_eq!(
        format!("{:08x}", crc32c::crc32c(&predictions)),
        manifest["outputs"]["predictions"]["crc32c"]
    );
    assert!(manifest["outputs"]["errors"].is_null());

    // A bad file is acknowledged and reported in the output bucket.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "OPERA,MES\nGrupo LATAM,3\n").unwrap();
    gsutil_cp(&c.fake, &bad, "gs://in-bucket/bad.csv").await;
    let manifest = manifest_of(&c.fake, "bad.csv", Duration::from_secs(60)).await;
    assert_eq!(manifest["status"], "failed");
    let errors = gsutil_cat(&c.fake, manifest["outputs"]["errors"]["uri"].as_str().unwrap()).await;
    assert!(String::from_utf8_lossy(&errors).contains("missing required column TIPOVUELO"));

    // A non-CSV object and a deletion are acknowledged as not work.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a csv").unwrap();
    gsutil_cp(&c.fake, &notes, "gs://in-bucket/notes.txt").await;
    assert!(c.fake.delete_object("in-bucket", "bad.csv").await);
    let ignored = c
        .server
        .logs_matching(2, |l| l["message"] == "job summary" && l["outcome"] == "ignored")
        .await;
    let reasons: Vec<&str> = ignored.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("not a .csv")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("OBJECT_DELETE")), "{reasons:?}");
    let outputs: Vec<String> = c
        .fake
        .list("out-bucket", "notes.txt")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(outputs.is_empty(), "{outputs:?}");

    // Nothing was dead-lettered.
    assert!(c.pubsub.pull(PROJECT, "gcs-events-dead-pull", 10).await.is_empty());
    // One summary per scored or failed file.
    let summaries = c
        .server
        .logs_matching(2, |l| {
            l["message"] == "job summary" && (l["outcome"] == "scored" || l["outcome"] == "failed")
        })
        .await;
    assert_eq!(summaries.len(), 2, "{summaries:?}");
}

#[tokio::test]
async fn twenty_concurrent_deliveries_to_cloud_storage_make_one_output_set() {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let bytes = std::fs::read(data("scl_flights_2017.csv")).unwrap();
    let generation = fake.put_object("in-bucket", "f.csv", &bytes).await;
    let server = Server::start(
        &[],
        &[
            ("STORAGE_EMULATOR_HOST", fake.endpoint.as_str()),
            ("INPUT_BUCKET", "in-bucket"),
            ("OUTPUT_BUCKET", "out-bucket"),
        ],
    );
    server.ready().await;
    let envelope = scorer::event::notification::Notification::finalize("in-bucket", "f.csv", generation)
        .size(bytes.len() as u64)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("7", "projects/p/subscriptions/s");
    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..20).map(|_| {
        let request = client.post(server.url("/")).json(&envelope);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(
        answers.iter().filter(|(_, b)| b["outcome"] == "scored").count(),
        1,
        "{answers:?}"
    );
    let objects: Vec<String> = fake
        .list("out-bucket", "f.csv/")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // The file holds its labels: its curves are outputs too.
    let hex = scorer::model::Model::default_model().unwrap().version()["sha256:".len()..].to_owned();
    assert_eq!(
        objects,
        [
            format!("f.csv/{generation}/curves/{hex}/calibration.svg"),
            format!("f.csv/{generation}/curves/{hex}/curves.json"),
            format!("f.csv/{generation}/curves/{hex}/precision_recall.svg"),
            format!("f.csv/{generation}/curves/{hex}/roc.svg"),
            format!("f.csv/{generation}/manifest.json"),
            format!("f.csv/{generation}/predictions.csv")
        ]
    );
    // A re-upload is a new generation with fresh outputs.
    let second = fake.put_object("in-bucket", "f.csv", &bytes).await;
    assert_ne!(second, generation);
    let envelope = scorer::event::notification::Notification::finalize("in-bucket", "f.csv", second)
        .size(bytes.len() as u64)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("8", "projects/p/subscriptions/s");
    let r = client.post(server.url("/")).json(&envelope).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = fake
        .get_object("out-bucket", &format!("f.csv/{generation}/predictions.csv"))
        .await
        .unwrap();
    let again = fake
        .get_object("out-bucket", &format!("f.csv/{second}/predictions.csv"))
        .await
        .unwrap();
    assert!(first == again, "the same input scores byte-identically");
    let _ = json!({});
}
