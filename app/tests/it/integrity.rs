//! Integrity on the paths beside the exit-path matrix: an upload that lags
//! when the instance stops, long object names, finished work under load,
//! push authentication on Cloud Run, and what `reconcile` reports.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::faults::FaultProxy;
use crate::harness::{SCORER, Server, find_files};
use crate::support::{FakeGcs, FakeGcsOptions};

fn local_server(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("SETTLE_SECONDS", "3600")];
    all.extend_from_slice(env);
    Server::start(&["--local", dir.to_str().unwrap()], &all)
}

fn envelope(bucket: &str, name: &str, generation: i64) -> Value {
    scorer::event::notification::Notification::finalize(bucket, name, generation)
        .size(0)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("1", "projects/p/subscriptions/s")
}

fn local_envelope(dir: &Path, name: &str) -> Value {
    let md = std::fs::metadata(dir.join("input").join(name)).unwrap();
    envelope("input", name, scorer::storage::local::generation_of(md.modified().ok()))
}

async fn post(server: &Server, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn flights(rows: usize) -> String {
    let mut out = String::from("OPERA,TIPOVUELO,MES,extra\n");
    for i in 0..rows {
        out.push_str(&format!(
            "Grupo LATAM,{},{},row {i} padded to make the output larger than one upload chunk of the client\n",
            if i % 2 == 0 { "I" } else { "N" },
            i % 12 + 1
        ));
    }
    out
}

/// The state that used to commit a prefix, for real: the instance is told
/// to stop while its upload lags behind the engine (every resumable chunk
/// held back by the proxy), so the upload channel is full when the job is
/// abandoned. Nothing may be finalised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_upload_lags_commits_no_prefix() {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let proxy = FaultProxy::start(&fake.endpoint, 0.0).await;
    // About 60 MB of predictions: resumable, in 8 MiB chunks.
    let bytes = flights(500_000);
    let generation = fake.put_object("in-bucket", "big.csv", bytes.as_bytes()).await;
    let mut server = Server::start(
        &[],
        &[
            ("STORAGE_EMULATOR_HOST", proxy.endpoint.as_str()),
            ("INPUT_BUCKET", "in-bucket"),
            ("OUTPUT_BUCKET", "out-bucket"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
            ("STORAGE_RETRY_SECONDS", "5"),
        ],
    );
    server.ready().await;
    proxy.set_upload_delay(Some(Duration::from_secs(3)));
    let push = {
        let url = server.url("/");
        let body = envelope("in-bucket", "big.csv", generation);
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    crate::harness::eventually(Duration::from_secs(60), || (proxy.upload_chunks() >= 1).then_some(())).await;
    server.signal_term();
    let answer = push.await.unwrap().map(|r| r.status().as_u16()).ok();
    server.exited(Duration::from_secs(60)).await;
    proxy.set_upload_delay(None);
    let outputs = fake.list("out-bucket", "big.csv/").await;
    // The job had not written half of its 60 MB when it was stopped: the
    // client holds two 8 MiB chunks, the upload channel 4 MiB.
    assert_ne!(answer, Some(200), "a job stopped mid-upload was acknowledged");
    assert!(outputs.is_empty(), "an abandoned upload was finalised: {outputs:?}");
}

/// Cloud Storage allows 1,024-byte names; outputs of such an input go under
/// a short hashed prefix, the manifest names the input in full, and
/// `reconcile` finds it scored.
#[tokio::test]
async fn a_long_object_name_is_scored_under_a_hashed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    // 1,000 bytes, in segments a file system takes (at most 255 bytes each).
    let dirs = vec!["d".repeat(180); 5].join("/");
    let name = format!("{dirs}/{}.csv", "f".repeat(1000 - dirs.len() - 1 - 4));
    assert_eq!(name.len(), 1000);
    let path = dir.path().join("input").join(&name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, flights(10)).unwrap();
    let server = local_server(dir.path(), &[]);
    server.ready().await;
    let (status, reply) = post(&server, &local_envelope(dir.path(), &name)).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("scored")), "{reply}");
    let manifests = find_files(&dir.path().join("output/_by-hash"), "manifest.json");
    assert_eq!(manifests.len(), 1);
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(manifest["input"]["name"], name.as_str());
    assert_eq!(manifest["rows"]["scored"], 10);
    let out = std::process::Command::new(SCORER)
        .args(["reconcile", "--local", dir.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unscored"], serde_json::json!([]), "{report}");
}

/// A redelivery of committed work is a 200 `duplicate` even when every job
/// slot is taken.
#[tokio::test]
async fn finished_work_is_acknowledged_whatever_the_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/done.csv"), flights(10)).unwrap();
    std::fs::write(dir.path().join("input/slow.csv"), flights(10)).unwrap();
    {
        let server = local_server(dir.path(), &[]);
        server.ready().await;
        let (status, _) = post(&server, &local_envelope(dir.path(), "done.csv")).await;
        assert_eq!(status, 200);
    }
    let server = local_server(
        dir.path(),
        &[
            ("MAX_CONCURRENT_JOBS", "1"),
            ("SCORER_TEST_FAULTS", "download:delay=5s"),
        ],
    );
    server.ready().await;
    let slow = {
        let url = server.url("/");
        let body = local_envelope(dir.path(), "slow.csv");
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    server.logs_matching(1, |l| l["message"] == "test fault injected").await;
    let (status, reply) = post(&server, &local_envelope(dir.path(), "done.csv")).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")), "{reply}");
    // A new input still waits for a slot.
    std::fs::write(dir.path().join("input/new.csv"), flights(10)).unwrap();
    let (status, _) = post(&server, &local_envelope(dir.path(), "new.csv")).await;
    assert_eq!(status, 429);
    let slow = slow.await.unwrap().unwrap();
    let status = slow.status();
    assert_eq!(status, 200, "{}", slow.text().await.unwrap_or_default());
}

/// On Cloud Run (K_SERVICE set) the service does not start without push
/// authentication, unless it is explicitly turned off, which is said at
/// every start.
#[tokio::test]
async fn on_cloud_run_push_auth_is_required_or_explicitly_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(SCORER)
        .args(["serve", "--local", dir.path().to_str().unwrap()])
        .env("K_SERVICE", "scorer")
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PUSH_AUDIENCE") && stderr.contains("PUSH_AUTH=off"),
        "{stderr}"
    );
    let out = std::process::Command::new(SCORER)
        .args(["serve", "--local", dir.path().to_str().unwrap()])
        .env("K_SERVICE", "scorer")
        .env("PUSH_AUDIENCE", "scorer-push")
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PUSH_SERVICE_ACCOUNT"), "{stderr}");

    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[
            ("K_SERVICE", "scorer"),
            ("PUSH_AUTH", "off"),
            ("SETTLE_SECONDS", "3600"),
        ],
    );
    server.ready().await;
    server
        .logs_matching(1, |l| {
            l["severity"] == "WARNING" && l["message"].as_str().is_some_and(|m| m.contains("PUSH_AUTH=off"))
        })
        .await;
}

fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// `reconcile` looks back as far as outputs are kept, reports orphans
/// without touching them, carries on past an object it cannot judge, and
/// exits 5 when something is unscored.
#[tokio::test]
async fn reconcile_keeps_to_the_retention_window_and_reports_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    for name in ["recent.csv", "ancient.csv", "epoch.csv"] {
        std::fs::write(input.join(name), flights(3)).unwrap();
    }
    let day = Duration::from_secs(86_400);
    set_mtime(&input.join("ancient.csv"), SystemTime::now() - 200 * day);
    set_mtime(&input.join("epoch.csv"), SystemTime::UNIX_EPOCH);
    // An orphan: a complete predictions object no manifest names.
    let orphan_dir = dir.path().join("output/gone.csv/123");
    std::fs::create_dir_all(&orphan_dir).unwrap();
    std::fs::write(orphan_dir.join("predictions.csv"), "a,b\n").unwrap();

    let run = |extra: &[&str]| {
        let mut args = vec!["reconcile", "--local", dir.path().to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(SCORER).args(&args).output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let names = |report: &Value| -> Vec<String> {
        report["unscored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (code, report) = run(&[]);
    assert_eq!(code, Some(5), "{report}");
    // The epoch file is outside the window too; --all brings both back.
    assert_eq!(names(&report), ["recent.csv"], "{report}");
    assert_eq!(report["orphans"].as_array().unwrap().len(), 1, "{report}");
    assert!(orphan_dir.join("predictions.csv").exists(), "orphans are left alone");
    let (code, report) = run(&["--all"]);
    assert_eq!(code, Some(5));
    assert_eq!(names(&report), ["ancient.csv", "recent.csv"], "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(problems[0]["uri"].as_str().unwrap().ends_with("epoch.csv"), "{report}");
    let (code, report) = run(&["--retention-days", "365"]);
    assert_eq!(
        (code, names(&report)),
        (Some(5), vec!["ancient.csv".to_owned(), "recent.csv".to_owned()])
    );
    // --prefix narrows both lists: an input under it, and no orphan (the
    // orphan's outputs are not under it).
    let (code, report) = run(&["--all", "--prefix", "anc"]);
    assert_eq!(
        (code, names(&report)),
        (Some(5), vec!["ancient.csv".to_owned()]),
        "{report}"
    );
    assert_eq!(report["orphans"].as_array().unwrap().len(), 0, "{report}");
    let (code, report) = run(&["--prefix", "nothing-here/"]);
    assert_eq!((code, names(&report)), (Some(0), vec![]), "{report}");
}

/// `reconcile --publish --dry-run` lists what it would publish and reaches
/// no Pub/Sub at all (here: an emulator address nothing listens on).
#[tokio::test]
async fn reconcile_dry_run_publishes_nothing() {
    let fake = crate::support::FakeGcs::start(crate::support::FakeGcsOptions::default()).await;
    fake.create_bucket("in-dry").await;
    fake.create_bucket("out-dry").await;
    fake.put_object("in-dry", "a/one.csv", flights(2).as_bytes()).await;
    fake.put_object("in-dry", "b/two.csv", flights(2).as_bytes()).await;
    let out = std::process::Command::new(SCORER)
        .args([
            "reconcile",
            "--input-bucket",
            "in-dry",
            "--output-bucket",
            "out-dry",
            "--publish",
            "projects/p/topics/t",
            "--dry-run",
            "--prefix",
            "a/",
        ])
        .env("STORAGE_EMULATOR_HOST", &fake.endpoint)
        .env("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("a/one.csv") && !text.contains("b/two.csv"), "{text}");
    assert!(
        text.contains("dry run: would publish 1 notification(s) to projects/p/topics/t, published none"),
        "{text}"
    );
}

/// Operator tools fail loudly on a bucket argument that is not a bucket.
#[test]
fn operator_tools_refuse_what_is_not_a_bucket() {
    let out = std::process::Command::new(SCORER)
        .args([
            "reconcile",
            "--input-bucket",
            "gs:///tmp/x/",
            "--output-bucket",
            "out-b",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--input-bucket"), "{stderr}");
}
