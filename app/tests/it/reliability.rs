//! Trying hard to break the promise: every CSV that lands gets exactly one
//! complete, correct set of outputs (or a report saying why not), whatever
//! storage, Pub/Sub, the instances or the uploader do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults::FaultProxy;
use crate::harness::{SCORER, Server};
use crate::support::{FakeGcs, FakeGcsOptions, Notifications, PubSubEmulator, PushSubscription};

const PROJECT: &str = "reliability";
const AIRLINES: [&str; 6] = [
    "Grupo LATAM",
    "Sky Airline",
    "Copa Air",
    "Avianca",
    "JetSmart SPA",
    "Iberia",
];

/// A deterministic raw-layout flights file of `rows` rows; every
/// `bad_every`-th row (if any) has a month the model does not know.
fn flights(rows: usize, seed: u64, bad_every: Option<usize>) -> Vec<u8> {
    let mut out = String::from(
        "Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES\n",
    );
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in 0..rows {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let month = if bad_every.is_some_and(|k| i % k == k - 1) {
            13
        } else {
            (x >> 33) % 12 + 1
        };
        let day = (x >> 40) % 28 + 1;
        let airline = AIRLINES[((x >> 20) % AIRLINES.len() as u64) as usize];
        let kind = if (x >> 50).is_multiple_of(2) { "I" } else { "N" };
        out.push_str(&format!(
            "2017-{month:02}-{day:02} 10:00:00,{v},SCEL,SAEZ,LAN,2017-{month:02}-{day:02} 10:05:00,{v},SCEL,SAEZ,LAN,{day},{month},2017,Lunes,{kind},{airline},Santiago,Buenos Aires\n",
            v = 100 + (x >> 45) % 900
        ));
    }
    out.into_bytes()
}

/// What a fault-free run produces for a file: the engine's own output.
#[derive(Clone, Debug)]
enum Expected {
    Scored {
        predictions: Vec<u8>,
        errors: Option<Vec<u8>>,
    },
    Failed,
}

fn expected(dir: &Path, name: &str, bytes: &[u8]) -> Expected {
    let input = dir.join(format!("{name}.in.csv"));
    std::fs::write(&input, bytes).unwrap();
    let out = dir.join(format!("{name}.out.csv"));
    let run = std::process::Command::new(SCORER)
        .args(["score", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    if run.status.code() == Some(3) {
        return Expected::Failed;
    }
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let errors = dir.join(format!("{name}.out.errors.csv"));
    Expected::Scored {
        predictions: std::fs::read(&out).unwrap(),
        errors: errors.exists().then(|| std::fs::read(&errors).unwrap()),
    }
}

/// The chain of the cloud, with the service's storage behind `proxy`.
struct Rig {
    pubsub: PubSubEmulator,
    fake: FakeGcs,
    proxy: FaultProxy,
}

async fn rig(fault_rate: f64) -> Rig {
    let pubsub = PubSubEmulator::start().await;
    pubsub.create_event_topics(PROJECT).await;
    let fake = FakeGcs::start(FakeGcsOptions {
        https: false,
        notifications: Some(Notifications::new(&pubsub, PROJECT, "gcs-events").bucket("in-bucket")),
    })
    .await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let proxy = FaultProxy::start(&fake.endpoint, fault_rate).await;
    Rig { pubsub, fake, proxy }
}

fn service_env<'a>(proxy: &'a FaultProxy, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("STORAGE_EMULATOR_HOST", proxy.endpoint.as_str()),
        ("INPUT_BUCKET", "in-bucket"),
        ("OUTPUT_BUCKET", "out-bucket"),
        ("STORAGE_RETRY_SECONDS", "20"),
        ("LEASE_TTL_SECONDS", "4"),
    ];
    env.extend_from_slice(extra);
    env
}

async fn subscribe(pubsub: &PubSubEmulator, endpoint: &str, max_attempts: u32) {
    subscribe_with_backoff(
        pubsub,
        endpoint,
        max_attempts,
        Duration::from_secs(1),
        Duration::from_secs(4),
    )
    .await;
}

async fn subscribe_with_backoff(
    pubsub: &PubSubEmulator,
    endpoint: &str,
    max_attempts: u32,
    min: Duration,
    max: Duration,
) {
    let push = PushSubscription::new(endpoint)
        .ack_deadline(Duration::from_secs(60))
        .backoff(min, max)
        .dead_letter("gcs-events-dead", max_attempts);
    pubsub
        .create_push_subscription(PROJECT, "scorer-push", "gcs-events", &push)
        .await;
}

/// Waits until every input has a manifest; checks each output set against
/// the fault-free expectation and that there is exactly one per generation.
async fn check_outputs(
    fake: &FakeGcs,
    inputs: &BTreeMap<String, (i64, Expected)>,
    timeout: Duration,
    server: Option<&Server>,
) {
    let missing = wait_for_manifests(fake, inputs, timeout).await;
    if !missing.is_empty() {
        if let Some(server) = server {
            for line in server.logs() {
                let text = line.to_string();
                if missing.iter().any(|m| text.contains(m.as_str())) {
                    eprintln!("{text}");
                }
            }
        }
        panic!("no manifest after {timeout:?} for {missing:?}");
    }
    let all: Vec<String> = fake.list("out-bucket", "").await.into_iter().map(|(n, _)| n).collect();
    for (name, (generation, expect)) in inputs {
        let prefix = format!("{name}/{generation}/");
        let manifests: Vec<&String> = all
            .iter()
            .filter(|n| n.starts_with(&prefix) && n.ends_with("manifest.json"))
            .collect();
        assert_eq!(manifests.len(), 1, "{name}: {manifests:?}");
        let manifest: Value =
            serde_json::from_slice(&fake.get_object("out-bucket", manifests[0]).await.unwrap()).unwrap();
        let object = |kind: &str| manifest["outputs"][kind]["name"].as_str().map(str::to_owned);
        match expect {
            Expected::Failed => assert_eq!(manifest["status"], "failed", "{name}: {manifest}"),
            Expected::Scored { predictions, errors } => {
                assert_eq!(manifest["status"], "scored", "{name}: {manifest}");
                let got = fake
                    .get_object("out-bucket", &object("predictions").unwrap())
                    .await
                    .unwrap();
                if got != *predictions {
                    let dump = std::env::temp_dir().join(format!("scorer-diff-{}", name.replace('/', "_")));
                    let _ = std::fs::write(dump.with_extension("got"), &got);
                    let _ = std::fs::write(dump.with_extension("want"), predictions);
                    panic!(
                        "{name}: predictions differ from a fault-free run (see {})",
                        dump.display()
                    );
                }
                match (errors, object("errors")) {
                    (Some(expected), Some(errors)) => {
                        let got = fake.get_object("out-bucket", &errors).await.unwrap();
                        assert!(got == *expected, "{name}: errors differ from a fault-free run");
                    }
                    (None, None) => {}
                    (e, o) => panic!("{name}: errors expected {}, manifest names {o:?}", e.is_some()),
                }
            }
        }
    }
}

/// Waits up to `timeout` for every input's manifest; returns the inputs
/// still without one.
async fn wait_for_manifests(
    fake: &FakeGcs,
    inputs: &BTreeMap<String, (i64, Expected)>,
    timeout: Duration,
) -> BTreeSet<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let committed: BTreeSet<String> = fake
            .list("out-bucket", "")
            .await
            .into_iter()
            .filter_map(|(n, _)| n.strip_suffix("/manifest.json").map(str::to_owned))
            .collect();
        let missing: BTreeSet<String> = inputs
            .iter()
            .filter(|(name, (generation, _))| !committed.contains(&format!("{name}/{generation}")))
            .map(|(name, _)| name.clone())
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads the test set straight to the emulator (the notifications go to
/// Pub/Sub); returns name -> (generation, expectation).
async fn upload(fake: &FakeGcs, files: Vec<(String, Vec<u8>)>, scratch: &Path) -> BTreeMap<String, (i64, Expected)> {
    let mut inputs = BTreeMap::new();
    for (name, bytes) in files {
        let expect = expected(scratch, &name.replace('/', "_"), &bytes);
        let generation = fake.put_object("in-bucket", &name, &bytes).await;
        inputs.insert(name, (generation, expect));
    }
    inputs
}

fn fifty_files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..50u64 {
        let bytes = match i % 10 {
            // Over the 8 MiB resumable threshold: chunked uploads and
            // downloads long enough to be cut.
            0 => flights(75_000, i, None),
            // Rejected rows: an errors object too.
            3 | 7 => flights(2_000 + i as usize * 10, i, Some(97)),
            // A file that fails as a whole.
            5 => b"OPERA,MES\nGrupo LATAM,3\n".to_vec(),
            _ => flights(500 + i as usize * 300, i, None),
        };
        files.push((format!("batch/{i:02}.csv"), bytes));
    }
    files
}

#[tokio::test]
async fn under_twenty_percent_storage_faults_fifty_files_each_get_exactly_one_correct_output_set() {
    let rig = rig(0.20).await;
    let server = Server::start(&[], &service_env(&rig.proxy, &[("MAX_CONCURRENT_JOBS", "4")]));
    server.ready().await;
    subscribe(&rig.pubsub, &server.url("/"), 100).await;
    let scratch = tempfile::tempdir().unwrap();
    let inputs = upload(&rig.fake, fifty_files(), scratch.path()).await;
    check_outputs(&rig.fake, &inputs, Duration::from_secs(300), Some(&server)).await;

    let injected = rig.proxy.injected();
    let total: u32 = injected.values().sum();
    let requests = rig.proxy.requests();
    println!("faults injected: {injected:?} in {requests} storage requests");
    assert!(total as f64 > requests as f64 * 0.10, "{injected:?} of {requests}");
    for kind in ["Unavailable", "TooManyRequests", "Slow", "CutDownload", "LostAnswer"] {
        assert!(
            injected.keys().any(|k| format!("{k:?}") == kind),
            "no {kind} injected: {injected:?}"
        );
    }
    // Retries are logged, and bounded: no hot loop.
    let retries = server
        .logs()
        .iter()
        .filter(|l| l["message"] == "Cloud Storage request failed; retrying")
        .count();
    println!("retries logged: {retries}");
    assert!(retries > 0, "retries must be logged");
    assert!(retries < requests as usize, "{retries} retries for {requests} requests");
    assert!(
        rig.pubsub.pull(PROJECT, "gcs-events-dead-pull", 10).await.is_empty(),
        "nothing dead-lettered"
    );
}

/// Lists the output bucket over and over while jobs run and die: a
/// predictions object must be complete from the moment it can be seen, and
/// a manifest's objects must exist when it does.
fn watch_outputs(
    fake_endpoint: String,
    expected: HashMap<String, Vec<u8>>,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut seen = BTreeSet::new();
        let (mut predictions_seen, mut manifests_seen) = (0, 0);
        let get = |name: String| {
            let http = http.clone();
            let url = format!(
                "{fake_endpoint}/storage/v1/b/out-bucket/o/{}?alt=media",
                crate::support::enc(&name)
            );
            async move {
                let r = http.get(url).send().await.ok()?;
                if r.status().is_success() {
                    r.bytes().await.ok().map(|b| b.to_vec())
                } else {
                    None
                }
            }
        };
        while !*stop.lock().unwrap() {
            let url = format!("{fake_endpoint}/storage/v1/b/out-bucket/o");
            let listing: Value = match http.get(&url).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            for item in listing["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap_or_default().to_owned();
                if name.starts_with("_leases/") || !seen.insert(name.clone()) {
                    continue;
                }
                let input = name.rsplitn(3, '/').nth(2).unwrap_or_default().to_owned();
                // An object no upload of ours made: fake-gcs-server
                // finalises an abandoned resumable session under its final
                // name, without the metadata the upload carried (Cloud
                // Storage never does; docs/RELIABILITY.md). The promise
                // readers rely on is the manifest's, checked below and in
                // check_outputs: it never names such an object.
                if name.contains("/predictions") && item["contentType"] != "text/csv" {
                    println!("{name}: finalised by the emulator from an abandoned session ({item})");
                    continue;
                }
                if name.contains("/predictions") {
                    let bytes = get(name.clone())
                        .await
                        .expect("a listed predictions object can be read");
                    assert!(
                        bytes == expected[&input],
                        "{name}: a reader saw a partial or wrong predictions object ({} bytes, expected {}; listing {item})",
                        bytes.len(),
                        expected[&input].len()
                    );
                    predictions_seen += 1;
                } else if name.ends_with("/manifest.json") {
                    let manifest: Value = serde_json::from_slice(&get(name.clone()).await.unwrap()).unwrap();
                    let predictions = manifest["outputs"]["predictions"]["name"].as_str().unwrap().to_owned();
                    let bytes = get(predictions.clone()).await;
                    assert!(bytes.is_some(), "{name} committed before its predictions {predictions}");
                    manifests_seen += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        (predictions_seen, manifests_seen)
    })
}

#[tokio::test]
async fn instances_killed_at_random_points_leave_exactly_one_complete_output_set() {
    let rig = rig(0.0).await;
    // A port of our own, fixed across restarts: the push endpoint stays put.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let env = service_env(&rig.proxy, &[("PORT", port.as_str()), ("MAX_CONCURRENT_JOBS", "2")]);
    let mut server = Server::start(&[], &env);
    server.ready().await;
    // Spaced retries, as Pub/Sub's exponential policy would space them: every
    // failed push (refused while an instance is down, 429 while a dead
    // instance's lease runs out) counts as a delivery attempt.
    subscribe_with_backoff(
        &rig.pubsub,
        &server.url("/"),
        100,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .await;

    // Slow storage answers stretch the jobs so the kills land inside them.
    rig.proxy.set_rate(0.5);
    let files: Vec<(String, Vec<u8>)> = (0..8u64)
        .map(|i| {
            (
                format!("crash/{i}.csv"),
                flights(60_000 + i as usize * 5_000, 100 + i, None),
            )
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let mut expected_predictions = HashMap::new();
    for (name, bytes) in &files {
        if let Expected::Scored { predictions, .. } = expected(scratch.path(), &name.replace('/', "_"), bytes) {
            expected_predictions.insert(name.clone(), predictions);
        }
    }
    let stop = Arc::new(Mutex::new(false));
    let watcher = watch_outputs(rig.fake.endpoint.clone(), expected_predictions, stop.clone());
    let inputs = upload(&rig.fake, files, scratch.path()).await;

    let mut kills = 0;
    let mut history: Vec<Value> = Vec::new();
    for i in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(400 + (i * 277) % 900)).await;
        history.extend(server.logs());
        server.kill();
        kills += 1;
        server = Server::start(&[], &env);
        server.ready().await;
    }
    rig.proxy.set_rate(0.0);
    // Pub/Sub redelivers what the dead instances never answered. The
    // emulator, unlike Pub/Sub, sometimes drops a push whose connection died
    // with the instance; the operator's backstop finds those.
    wait_for_manifests(&rig.fake, &inputs, Duration::from_secs(90)).await;
    // The logs first, then the listing: a summary is logged after its
    // commit, so every input the logs acknowledge is then in the listing.
    history.extend(server.logs());
    let missing = wait_for_manifests(&rig.fake, &inputs, Duration::ZERO).await;
    // Whatever is still missing was never acknowledged by the service: no
    // delivery of it ended in a 2xx outcome. (The emulator is what dropped it.)
    for line in &history {
        let acknowledged = ["scored", "failed", "duplicate"].contains(&line["outcome"].as_str().unwrap_or_default());
        if line["message"] == "job summary" && acknowledged {
            let input = line["input_uri"].as_str().unwrap_or_default();
            assert!(
                !missing.iter().any(|name| input == format!("gs://in-bucket/{name}")),
                "{input} was acknowledged ({}) without a committed manifest",
                line["outcome"]
            );
        }
    }
    let dead = rig.pubsub.pull(PROJECT, "gcs-events-dead-pull", 100).await.len();
    eprintln!("missing after 90 s: {missing:?}; dead-lettered: {dead}");
    let mut reconciled = 0;
    if !missing.is_empty() {
        let out = std::process::Command::new(SCORER)
            .args([
                "reconcile",
                "--input-bucket",
                "in-bucket",
                "--output-bucket",
                "out-bucket",
                "--json",
                "--publish",
            ])
            .arg(format!("projects/{PROJECT}/topics/gcs-events"))
            .env("STORAGE_EMULATOR_HOST", &rig.fake.endpoint)
            .env("PUBSUB_EMULATOR_HOST", &rig.pubsub.host)
            .output()
            .unwrap();
        // Exit 5: unscored objects were found (and published).
        assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        reconciled = report["unscored"].as_array().map_or(0, Vec::len);
        assert!(
            reconciled <= missing.len(),
            "reconcile finds only missing inputs: {report}"
        );
    }
    check_outputs(&rig.fake, &inputs, Duration::from_secs(120), Some(&server)).await;
    *stop.lock().unwrap() = true;
    let (predictions_seen, manifests_seen) = watcher.await.unwrap();
    let abandoned = history
        .iter()
        .filter(|l| l["message"] == "job summary" && l["outcome"] == "in_progress")
        .count();
    println!(
        "{kills} kills; {abandoned} deliveries met a dead instance's lease; {reconciled} files recovered by reconcile; \
         a reader saw {predictions_seen} predictions objects and {manifests_seen} manifests, all complete"
    );
    assert_eq!(manifests_seen, inputs.len());
    drop(server);
}

#[tokio::test]
async fn a_hundred_concurrent_deliveries_across_two_instances_make_one_output_set_each() {
    let rig = rig(0.0).await;
    let env = service_env(&rig.proxy, &[("MAX_CONCURRENT_JOBS", "2")]);
    let servers = [Server::start(&[], &env), Server::start(&[], &env)];
    for s in &servers {
        s.ready().await;
    }
    let scratch = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..10u64)
        .map(|i| (format!("multi/{i}.csv"), flights(20_000, 200 + i, None)))
        .collect();
    let sizes: HashMap<String, u64> = files.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect();
    let inputs = upload(&rig.fake, files, scratch.path()).await;

    let client = reqwest::Client::new();
    let deliveries: Vec<(String, usize)> = (0..100).map(|i| (format!("multi/{}.csv", i % 10), i % 2)).collect();
    let envelope = |name: &str| {
        scorer::event::notification::Notification::finalize("in-bucket", name, inputs[name].0)
            .size(sizes[name])
            .time("2026-01-01T00:00:00Z")
            .push_envelope("1", "projects/p/subscriptions/s")
    };
    let answers = futures::future::join_all(deliveries.iter().map(|(name, instance)| {
        let request = client.post(servers[*instance].url("/")).json(&envelope(name));
        async move {
            let r = request.send().await.unwrap();
            r.status().as_u16()
        }
    }))
    .await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for status in &answers {
        *by_status.entry(*status).or_default() += 1;
    }
    println!("100 concurrent deliveries: {by_status:?}");
    assert!(by_status.keys().all(|s| *s == 200 || *s == 429), "{by_status:?}");
    assert!(
        by_status.contains_key(&429),
        "jobs past MAX_CONCURRENT_JOBS must answer 429: {by_status:?}"
    );
    // As Pub/Sub would: deliver again until every file is acknowledged.
    for (name, _) in inputs.iter() {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = client
                .post(servers[0].url("/"))
                .json(&envelope(name))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert_eq!(r.status(), 429);
            assert!(Instant::now() < deadline, "{name} never acknowledged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    check_outputs(&rig.fake, &inputs, Duration::from_secs(60), Some(&servers[0])).await;
    for s in &servers {
        let peak = s.peak_rss_kib();
        println!("instance peak RSS: {} MiB", peak / 1024);
        assert!(peak < 700 * 1024, "peak RSS {peak} KiB");
    }
}

#[tokio::test]
async fn what_pubsub_gave_up_on_is_redriven_and_reconcile_finds_nothing_left() {
    let rig = rig(0.0).await;
    // Files that landed before anyone listened: Pub/Sub dropped their
    // notifications (no subscription yet). Only reconcile can find them.
    let scratch = tempfile::tempdir().unwrap();
    let early = upload(
        &rig.fake,
        vec![("early/a.csv".into(), flights(1_000, 1, None))],
        scratch.path(),
    )
    .await;

    let server = Server::start(&[], &service_env(&rig.proxy, &[("STORAGE_RETRY_SECONDS", "1")]));
    server.ready().await;
    subscribe(&rig.pubsub, &server.url("/"), 5).await;

    // Storage goes down: every delivery fails (503) until Pub/Sub gives up.
    rig.proxy.set_down(true);
    let late = upload(
        &rig.fake,
        vec![("late/b.csv".into(), flights(2_000, 2, Some(50)))],
        scratch.path(),
    )
    .await;
    server
        .logs_matching(5, |l| l["message"] == "job summary" && l["outcome"] == "retry")
        .await;
    rig.proxy.set_down(false);

    let env = [
        ("PUBSUB_EMULATOR_HOST", rig.pubsub.host.as_str()),
        ("STORAGE_EMULATOR_HOST", rig.fake.endpoint.as_str()),
    ];
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(SCORER);
        cmd.args(args).env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let redrive = run(&[
        "redrive",
        "--subscription",
        &format!("projects/{PROJECT}/subscriptions/gcs-events-dead-pull"),
        "--topic",
        &format!("projects/{PROJECT}/topics/gcs-events"),
        "--idle-seconds",
        "20",
        "--max",
        "1",
    ]);
    let text = String::from_utf8_lossy(&redrive.stdout);
    assert!(
        redrive.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    assert!(
        text.contains("republished gs://in-bucket/late/b.csv (5 deliveries)"),
        "{text}"
    );
    check_outputs(&rig.fake, &late, Duration::from_secs(60), Some(&server)).await;

    let topic = format!("projects/{PROJECT}/topics/gcs-events");
    let reconcile = |publish: bool| {
        let mut args = vec![
            "reconcile",
            "--input-bucket",
            "in-bucket",
            "--output-bucket",
            "out-bucket",
            "--json",
        ];
        if publish {
            args.extend(["--publish", topic.as_str()]);
        }
        let out = run(&args);
        let report = serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, before) = reconcile(true);
    assert_eq!(code, Some(5), "unscored objects were found: {before}");
    let found: Vec<&str> = before["unscored"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(found, ["early/a.csv"], "{before}");
    assert_eq!(before["published"]["message_ids"].as_array().unwrap().len(), 1);
    check_outputs(&rig.fake, &early, Duration::from_secs(60), Some(&server)).await;
    let (code, after) = reconcile(false);
    assert_eq!(after["unscored"], serde_json::json!([]), "{after}");
    assert_eq!(code, Some(0));
    assert!(rig.pubsub.pull(PROJECT, "gcs-events-dead-pull", 10).await.is_empty());
}
