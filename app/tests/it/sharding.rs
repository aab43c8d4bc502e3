//! Inputs larger than one push request may score (`INLINE_MAX_BYTES`),
//! scored by a job execution in parallel tasks, on the emulators: the
//! buckets on fake-gcs-server, the tasks as `scorer shard` processes (the
//! local pool, `SHARD_JOB=local`, or started by a stand-in of Cloud Run's
//! `RunJob` endpoint exactly as Cloud Run would start them).
//!
//! Each test holds the sharded outputs to the same file scored inline by
//! `scorer score`: the shards, concatenated without their repeated header
//! lines, are byte-identical to the inline predictions, and `errors.csv`
//! (lines and rows global to the input) is byte-identical to the inline
//! errors file.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{SCORER, Server, data, scorer};
use crate::support::{FakeGcs, FakeGcsOptions, Notifications, PubSubEmulator, PushSubscription, gsutil_cp};

const PROJECT: &str = "scorer-test";

/// The shipped SCL file with a rejected row every 997 rows, a quoted field
/// holding the delimiter, and CRLF line ends: about 1.9 MB.
pub(crate) fn input_file() -> Vec<u8> {
    let text = std::fs::read_to_string(data("scl_flights_2017.csv")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = match i {
            0 => line.to_owned(),
            i if i % 997 == 0 => line.replacen(",I,", ",X,", 1).replacen(",N,", ",X,", 1),
            i if i % 1013 == 0 => line.replacen("Grupo LATAM", "\"Grupo LATAM\"", 1),
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// `scorer score` of `bytes`: (predictions, errors).
pub(crate) fn inline(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out.csv");
    let errors = dir.path().join("errors.csv");
    let o = scorer(&[
        "score",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--errors",
        errors.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() || o.status.code() == Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (std::fs::read(&out).unwrap(), std::fs::read(&errors).unwrap_or_default())
}

/// The shards of a manifest, concatenated without their repeated headers.
async fn joined_shards(fake: &FakeGcs, manifest: &Value) -> Vec<u8> {
    let mut joined = Vec::new();
    let shards = manifest["outputs"]["shards"].as_array().expect("shards");
    for (i, shard) in shards.iter().enumerate() {
        let bytes = fake
            .get_object("out-bucket", shard["name"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, shard["size"].as_u64().unwrap());
        assert_eq!(format!("{:08x}", crc32c::crc32c(&bytes)), shard["crc32c"]);
        let from = if i == 0 {
            0
        } else {
            bytes.iter().position(|b| *b == b'\n').unwrap() + 1
        };
        joined.extend_from_slice(&bytes[from..]);
    }
    joined
}

pub(crate) async fn manifest(fake: &FakeGcs, name: &str, generation: i64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(bytes) = fake
            .get_object("out-bucket", &format!("{name}/{generation}/manifest.json"))
            .await
        {
            return serde_json::from_slice(&bytes).unwrap();
        }
        assert!(Instant::now() < deadline, "no manifest for {name} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn storage() -> FakeGcs {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    fake
}

pub(crate) fn server(fake: &FakeGcs, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("STORAGE_EMULATOR_HOST", fake.endpoint.as_str()),
        ("INPUT_BUCKET", "in-bucket"),
        ("OUTPUT_BUCKET", "out-bucket"),
        ("STORAGE_RETRY_SECONDS", "10"),
        ("INLINE_MAX_BYTES", "100000"),
        ("LEASE_TTL_SECONDS", "5"),
    ];
    all.extend_from_slice(env);
    Server::start(&[], &all)
}

pub(crate) fn envelope(name: &str, generation: i64, size: u64) -> Value {
    scorer::event::notification::Notification::finalize("in-bucket", name, generation)
        .size(size)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("1", "projects/p/subscriptions/s")
}

pub(crate) async fn push(server: &Server, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Shard bytes that cut `size` into `tasks` tasks.
pub(crate) fn shard_bytes(size: usize, tasks: usize) -> String {
    size.div_ceil(tasks).to_string()
}

#[tokio::test]
async fn through_the_emulator_chain_a_large_file_is_scored_in_four_tasks_exactly_as_inline() {
    let bytes = input_file();
    let (expected, expected_errors) = inline(&bytes);
    assert!(!expected_errors.is_empty());
    let pubsub = PubSubEmulator::start().await;
    pubsub.create_event_topics(PROJECT).await;
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: Some(Notifications::new(&pubsub, PROJECT, "gcs-events").bucket("in-bucket")),
    })
    .await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let per_task = shard_bytes(bytes.len(), 4);
    let server = server(&fake, &[("SHARD_JOB", "local"), ("SHARD_BYTES", &per_task)]);
    server.ready().await;
    let push = PushSubscription::new(&server.url("/"))
        .ack_deadline(Duration::from_secs(60))
        .backoff(Duration::from_secs(1), Duration::from_secs(5))
        .dead_letter("gcs-events-dead", 5);
    pubsub
        .create_push_subscription(PROJECT, "scorer-push", "gcs-events", &push)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    std::fs::write(&path, &bytes).unwrap();
    gsutil_cp(&fake, &path, "gs://in-bucket/exports/big.csv").await;
    let generation = fake.object_metadata("in-bucket", "exports/big.csv").await.unwrap()["generation"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let m = manifest(&fake, "exports/big.csv", generation, Duration::from_secs(120)).await;

    assert_eq!(m["status"], "scored", "{m}");
    assert_eq!(m["execution"]["tasks"], 4, "{m}");
    assert!(m["execution"]["fallback"].is_null(), "{m}");
    assert!(m["outputs"]["predictions"].is_null());
    assert_eq!(m["outputs"]["shards"].as_array().unwrap().len(), 4);
    assert_eq!(m["input"]["format"]["delimiter"], ",");
    let joined = joined_shards(&fake, &m).await;
    assert!(joined == expected, "the shards differ from the inline predictions");
    let errors = fake
        .get_object("out-bucket", m["outputs"]["errors"]["name"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&errors),
        String::from_utf8_lossy(&expected_errors),
        "global line numbers"
    );
    let rejected = m["rows"]["rejected"].as_u64().unwrap();
    assert!(rejected > 60, "{rejected}");
    assert_eq!(m["rows"]["in"], 68206);
    assert!(m["metrics"]["accuracy"].as_f64().is_some());
    // The tasks' manifest says how the push service chose the model, and
    // the ranges' labelled rows draw the curves the whole file draws inline.
    assert_eq!(m["model"]["chosen_by"]["route"], "default", "{m}");
    let curves = m["outputs"]["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 4, "{m}");
    let points = curves
        .iter()
        .filter_map(|c| c["name"].as_str())
        .find(|n| n.ends_with("/curves.json"))
        .unwrap();
    let mut ranged: Value = serde_json::from_slice(&fake.get_object("out-bucket", points).await.unwrap()).unwrap();
    let whole = dir.path().join("whole");
    let run = scorer(&[
        "score",
        path.to_str().unwrap(),
        "--out",
        dir.path().join("whole.csv").to_str().unwrap(),
        "--curves",
        whole.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut inline: Value = serde_json::from_slice(&std::fs::read(whole.join("curves.json")).unwrap()).unwrap();
    ranged["of"] = Value::Null;
    inline["of"] = Value::Null;
    assert_eq!(ranged, inline);
    // The push was answered `dispatched`, once; one summary says `scored`.
    let dispatched = server
        .logs_matching(1, |l| l["message"] == "job summary" && l["outcome"] == "dispatched")
        .await;
    assert_eq!(dispatched.len(), 1, "{dispatched:?}");
    let scored = server
        .logs_matching(1, |l| l["message"] == "job summary" && l["outcome"] == "scored")
        .await;
    assert_eq!(scored.len(), 1, "{scored:?}");
    assert!(pubsub.pull(PROJECT, "gcs-events-dead-pull", 10).await.is_empty());
}

#[tokio::test]
async fn redeliveries_start_no_second_execution_and_a_killed_task_is_retried_into_one_set_of_shards() {
    let fake = storage().await;
    let bytes = input_file();
    let (expected, _) = inline(&bytes);
    let generation = fake.put_object("in-bucket", "big.csv", &bytes).await;
    let per_task = shard_bytes(bytes.len(), 4);
    // Task 2's first attempt dies mid-range (mid-download: a killed task);
    // its retry scores the range.
    let server = server(
        &fake,
        &[
            ("SHARD_JOB", "local"),
            ("SHARD_BYTES", &per_task),
            ("SCORER_TEST_TASK_FAULTS", "2:0:scoring:abort"),
        ],
    );
    server.ready().await;
    let body = envelope("big.csv", generation, bytes.len() as u64);
    let answers = futures::future::join_all((0..8).map(|_| push(&server, &body))).await;
    for (status, answer) in &answers {
        assert!(
            *status == 200 && answer["outcome"] == "dispatched" || *status == 429 && answer["outcome"] == "in_progress",
            "{status} {answer}"
        );
    }
    let m = manifest(&fake, "big.csv", generation, Duration::from_secs(120)).await;
    assert_eq!(m["status"], "scored", "{m}");
    let started = server
        .logs_matching(1, |l| l["message"] == "input dispatched to a job execution")
        .await;
    assert_eq!(started.len(), 1, "one execution only: {started:?}");
    // After the commit a redelivery is a duplicate.
    let (status, answer) = push(&server, &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(
        server
            .logs()
            .iter()
            .filter(|l| l["message"] == "input dispatched to a job execution")
            .count(),
        1
    );
    // The killed attempt was retried.
    let failed = server
        .logs_matching(1, |l| l["message"] == "shard task failed" && l["task"] == 2)
        .await;
    assert_eq!(failed[0]["attempt"], 0);
    let record = fake
        .get_object(
            "out-bucket",
            &format!("_shards/big.csv/{generation}/of-00004/00002.json"),
        )
        .await
        .unwrap();
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["attempt"], 1);
    // One set of shards and the curves of their labelled rows, nothing else
    // beside the manifest.
    let listed: Vec<String> = fake
        .list("out-bucket", &format!("big.csv/{generation}/"))
        .await
        .into_iter()
        .map(|(n, _)| n.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        [
            "calibration.svg",
            "curves.json",
            "precision_recall.svg",
            "roc.svg",
            "errors.csv",
            "manifest.json",
            "predictions-00000-of-00004.csv",
            "predictions-00001-of-00004.csv",
            "predictions-00002-of-00004.csv",
            "predictions-00003-of-00004.csv"
        ]
    );
    assert!(joined_shards(&fake, &m).await == expected);
}

/// A file whose middle holds one record with a quoted field of many lines:
/// the second task's speculative start lands inside it.
fn quoted_middle() -> Vec<u8> {
    let mut out = String::from("OPERA,TIPOVUELO,MES,note\n");
    for i in 0..3000 {
        out.push_str(&format!("Grupo LATAM,N,{},row {i}\n", i % 12 + 1));
    }
    out.push_str("Sky Airline,I,7,\"");
    for i in 0..4000 {
        out.push_str(&format!("quoted line {i}\n"));
    }
    out.push_str("\"\n");
    for i in 0..3000 {
        out.push_str(&format!("Sky Airline,I,{},row {i}\n", i % 12 + 1));
    }
    out.into_bytes()
}

/// The quoted block sits across the middle cut of four ranges: range 2's
/// speculative start lands inside it, the chain breaks there, and the
/// committing task scores range 2 again from where range 1 really ended
/// (about one range of work, not the file), saying so in the manifest.
#[tokio::test]
async fn when_a_quoted_line_break_fools_a_boundary_only_that_range_is_scored_again() {
    let fake = storage().await;
    let bytes = quoted_middle();
    let (expected, _) = inline(&bytes);
    let generation = fake.put_object("in-bucket", "quoted.csv", &bytes).await;
    let per_task = shard_bytes(bytes.len(), 4);
    let server = server(&fake, &[("SHARD_JOB", "local"), ("SHARD_BYTES", &per_task)]);
    server.ready().await;
    let (status, answer) = push(&server, &envelope("quoted.csv", generation, bytes.len() as u64)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("dispatched")),
        "{answer}"
    );
    let m = manifest(&fake, "quoted.csv", generation, Duration::from_secs(120)).await;
    assert_eq!(m["status"], "scored", "{m}");
    assert!(m["execution"]["fallback"].is_null(), "not scored whole: {m}");
    let repaired = m["execution"]["repaired"].as_array().cloned().unwrap_or_default();
    assert_eq!(repaired.len(), 1, "{m}");
    let note = repaired[0].as_str().unwrap_or_default();
    assert!(
        note.starts_with("range 2 re-scored from byte") && note.contains("fooled"),
        "{note}"
    );
    assert_eq!(m["outputs"]["shards"].as_array().map(Vec::len), Some(4), "{m}");
    assert!(
        joined_shards(&fake, &m).await == expected,
        "the repaired chain's predictions differ from the inline ones"
    );
    assert_eq!(m["rows"]["scored"], 6001);
}

/// A stand-in of the Cloud Run Admin API's `RunJob`: records each request
/// and then does what Cloud Run does, starting the execution's tasks with
/// the overridden environment and `CLOUD_RUN_TASK_*` set.
struct RunJobStandIn {
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    tasks: Arc<Mutex<Vec<std::process::Child>>>,
    url: String,
}

impl Drop for RunJobStandIn {
    fn drop(&mut self) {
        for mut task in self.tasks.lock().unwrap().drain(..) {
            let _ = task.kill();
            let _ = task.wait();
        }
    }
}

impl RunJobStandIn {
    /// With `task_env` `None`, an execution starts no task and is reported
    /// over at once (failed), as one whose tasks all died would be.
    async fn start(task_env: Option<Vec<(String, String)>>) -> RunJobStandIn {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let spawned = Arc::new(Mutex::new(Vec::new()));
        let app = {
            let requests = requests.clone();
            let spawned = spawned.clone();
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let requests = requests.clone();
                let spawned = spawned.clone();
                let task_env = task_env.clone();
                async move {
                    if !uri.path().ends_with(":run") {
                        // GetExecution: running (no completion time), or over.
                        let name = uri.path().trim_start_matches("/v2/").to_owned();
                        return axum::Json(match &task_env {
                            Some(_) => json!({"name": name, "runningCount": 1}),
                            None => json!({"name": name, "completionTime": "2026-11-29T00:00:00Z", "failedCount": 1}),
                        });
                    }
                    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    requests.lock().unwrap().push((uri.to_string(), request.clone()));
                    let job = uri
                        .path()
                        .trim_start_matches("/v2/")
                        .trim_end_matches(":run")
                        .to_owned();
                    let execution = format!("{job}/executions/standin-{:04}", requests.lock().unwrap().len());
                    let overrides = &request["overrides"];
                    let tasks = overrides["taskCount"].as_u64().unwrap_or(1);
                    let env: Vec<(String, String)> = overrides["containerOverrides"][0]["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            (
                                e["name"].as_str().unwrap().to_owned(),
                                e["value"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect();
                    for index in 0..task_env.as_ref().map_or(0, |_| tasks) {
                        let task = Command::new(SCORER)
                            .arg("shard")
                            .envs(task_env.iter().flatten().cloned())
                            .envs(env.iter().cloned())
                            .env("CLOUD_RUN_TASK_INDEX", index.to_string())
                            .env("CLOUD_RUN_TASK_COUNT", tasks.to_string())
                            .env("CLOUD_RUN_TASK_ATTEMPT", "0")
                            .env("CLOUD_RUN_EXECUTION", &execution)
                            .env("RUST_LOG", "warn")
                            .spawn()
                            .unwrap();
                        spawned.lock().unwrap().push(task);
                    }
                    axum::Json(json!({
                        "name": format!("projects/p/locations/l/operations/op-{tasks}"),
                        "metadata": {
                            "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                            "name": execution,
                            "taskCount": tasks,
                        },
                    }))
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        RunJobStandIn {
            requests,
            tasks: spawned,
            url,
        }
    }
}

#[tokio::test]
async fn the_service_asks_cloud_run_for_one_execution_with_the_input_in_its_environment() {
    let fake = storage().await;
    let bytes = input_file();
    let (expected, _) = inline(&bytes);
    let generation = fake.put_object("in-bucket", "run/big.csv", &bytes).await;
    let task_env = vec![
        ("STORAGE_EMULATOR_HOST".to_owned(), fake.endpoint.clone()),
        ("OUTPUT_BUCKET".to_owned(), "out-bucket".to_owned()),
        ("SHARD_MAX_RETRIES".to_owned(), "0".to_owned()),
    ];
    let run = RunJobStandIn::start(Some(task_env)).await;
    let job = "projects/my-project/locations/europe-west1/jobs/scorer-shard";
    let per_task = shard_bytes(bytes.len(), 3);
    let server = server(
        &fake,
        &[
            ("SHARD_JOB", job),
            ("RUN_API_ENDPOINT", &run.url),
            ("SHARD_BYTES", &per_task),
        ],
    );
    server.ready().await;
    let body = envelope("run/big.csv", generation, bytes.len() as u64);
    let (status, answer) = push(&server, &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("dispatched")),
        "{answer}"
    );
    let detail = answer["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(&format!("{job}/executions/standin-0001")), "{answer}");
    // A redelivery while it runs starts nothing.
    let (status, again) = push(&server, &body).await;
    assert_eq!(
        (status, again["outcome"].as_str()),
        (200, Some("dispatched")),
        "{again}"
    );

    let requests = run.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (uri, request) = &requests[0];
    assert!(uri.starts_with(&format!("/v2/{job}:run")), "{uri}");
    // The job's name travels in the path (`POST /v2/{name}:run`), not the body.
    assert!(request.get("name").is_none(), "{request}");
    let overrides = &request["overrides"];
    assert_eq!(overrides["taskCount"], 3, "{request}");
    let env: BTreeMap<String, String> = overrides["containerOverrides"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(env["INPUT_URI"], "gs://in-bucket/run/big.csv");
    assert_eq!(env["INPUT_GENERATION"], generation.to_string());
    assert!(env["MODEL_VERSION"].starts_with("sha256:"), "{env:?}");
    let chosen_by: Value = serde_json::from_str(&env["MODEL_CHOSEN_BY"]).unwrap();
    assert_eq!(chosen_by["route"], "default", "{env:?}");
    // The service's own settings travel with the execution, so a job
    // template that drifted cannot write elsewhere or retry differently.
    assert_eq!(env["OUTPUT_BUCKET"], "out-bucket");
    assert_eq!(env["SHARD_MAX_RETRIES"], "3");

    let m = manifest(&fake, "run/big.csv", generation, Duration::from_secs(120)).await;
    assert_eq!(m["status"], "scored", "{m}");
    assert_eq!(m["execution"]["name"], format!("{job}/executions/standin-0001"));
    assert_eq!(m["model"]["chosen_by"], chosen_by, "{m}");
    assert!(joined_shards(&fake, &m).await == expected);
}

/// One task of an execution over a local bucket directory, as Cloud Run
/// would start it; `faults` are `SCORER_TEST_TASK_FAULTS`.
fn local_task(
    dir: &std::path::Path,
    generation: i64,
    index: u32,
    count: u32,
    attempt: u32,
    extra: &[(&str, &str)],
) -> Command {
    let mut command = Command::new(SCORER);
    command
        .arg("shard")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SCORER_LOCAL_DIR", dir)
        .env("INPUT_URI", "gs://input/big.csv")
        .env("INPUT_GENERATION", generation.to_string())
        .env("OUTPUT_BUCKET", "output")
        .env("CLOUD_RUN_TASK_INDEX", index.to_string())
        .env("CLOUD_RUN_TASK_COUNT", count.to_string())
        .env("CLOUD_RUN_TASK_ATTEMPT", attempt.to_string())
        .env("CLOUD_RUN_EXECUTION", "projects/p/locations/l/jobs/j/executions/e-1")
        .env("SHARD_MAX_RETRIES", "3")
        .env("LOG_FORMAT", "json")
        .envs(extra.iter().copied());
    command
}

/// A local bucket directory holding `input/big.csv`; its generation.
fn local_input(dir: &std::path::Path) -> i64 {
    std::fs::create_dir_all(dir.join("input")).unwrap();
    std::fs::create_dir_all(dir.join("output")).unwrap();
    let path = dir.join("input/big.csv");
    std::fs::write(&path, input_file()).unwrap();
    scorer::storage::local::generation_of(std::fs::metadata(&path).unwrap().modified().ok())
}

fn local_manifest(dir: &std::path::Path, generation: i64) -> Option<Value> {
    let path = dir.join(format!("output/big.csv/{generation}/manifest.json"));
    std::fs::read(path).ok().map(|b| serde_json::from_slice(&b).unwrap())
}

/// The last attempt of a task whose model is not the one the input was
/// dispatched for still leaves the input a report: a dispatched input never
/// ends without a manifest.
#[test]
fn a_last_attempt_that_cannot_even_start_reports_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let out = local_task(
        dir.path(),
        generation,
        0,
        2,
        2,
        &[("MODEL_VERSION", "sha256:0000000000000000")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        local_manifest(dir.path(), generation).is_none(),
        "not the last attempt: no report yet"
    );
    let out = local_task(
        dir.path(),
        generation,
        0,
        2,
        3,
        &[("MODEL_VERSION", "sha256:0000000000000000")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let m = local_manifest(dir.path(), generation).expect("the last attempt's report");
    assert_eq!(m["status"], "failed", "{m}");
    let failure = m["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("dispatched for sha256:0000000000000000"), "{m}");
    assert!(
        m["input"]["size"].as_u64().unwrap() > 0,
        "the report knows the input: {m}"
    );
}

/// Cloud Run stops a task at its timeout with SIGTERM and kills it 10 s
/// later: on the last attempt, the task reports the input in that time and
/// releases what it held; on an earlier one it leaves the input to the retry.
#[test]
fn a_task_stopped_on_its_last_attempt_reports_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    // One task: the input is scored whole under its lease, slowly.
    let mut child = local_task(
        dir.path(),
        generation,
        0,
        1,
        3,
        &[("SCORER_TEST_TASK_FAULTS", "0:3:scoring:delay=30s")],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Stopped once it holds the lease and is scoring.
    let leases = dir.path().join(format!("output/_leases/big.csv/{generation}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&leases).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the task never took its lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?} after SIGTERM",
        stopped.elapsed()
    );
    let lines = lines.join().unwrap();
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    let m = local_manifest(dir.path(), generation).unwrap_or_else(|| panic!("no report: {lines:#?}"));
    assert_eq!(m["status"], "failed", "{m}");
    assert!(
        m["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped by a signal"),
        "{m}"
    );
    // The lease it held is released (its newest record says so), and
    // nothing half-written is left.
    let newest = walk(&leases).into_iter().max().unwrap();
    let record: Value = serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    assert_eq!(record["released"], true, "{record}");
    let leftovers: Vec<_> = walk(&dir.path().join("output"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("scorer-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A task whose range is recorded but whose commit keeps failing, on its
/// last attempt, does not turn the finished work into a failure: the next
/// execution's task commits it scored.
#[test]
fn a_failed_commit_on_a_last_attempt_leaves_finished_work_to_be_committed() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let out = local_task(dir.path(), generation, 0, 2, 0, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = local_task(
        dir.path(),
        generation,
        1,
        2,
        3,
        &[("SCORER_TEST_TASK_FAULTS", "1:3:manifest:fail")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        local_manifest(dir.path(), generation).is_none(),
        "no failure report over two recorded ranges"
    );
    assert_eq!(
        errors_files(dir.path(), generation),
        ["errors.csv"],
        "the merge got as far as errors.csv"
    );
    // The next execution (a redelivery after this one ended) commits it.
    let out = local_task(
        dir.path(),
        generation,
        1,
        2,
        0,
        &[("CLOUD_RUN_EXECUTION", "projects/p/locations/l/jobs/j/executions/e-2")],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = local_manifest(dir.path(), generation).expect("committed");
    assert_eq!(m["status"], "scored", "{m}");
    assert_eq!(m["outputs"]["shards"].as_array().map(Vec::len), Some(2), "{m}");
    // The merge is deterministic: the second adopts the first's errors.csv
    // rather than leaving it orphaned beside an errors.2.csv (as a second
    // task merging at the same moment would have).
    assert!(
        m["outputs"]["errors"]["name"]
            .as_str()
            .unwrap()
            .ends_with("/errors.csv"),
        "{m}"
    );
    assert_eq!(errors_files(dir.path(), generation), ["errors.csv"]);
}

/// Two tasks that find every range recorded at the same moment both merge
/// the rejects and write `errors.csv` at once: one set of outputs, one
/// `errors.csv`, and both tasks succeed.
#[test]
fn two_tasks_merging_at_once_leave_one_errors_csv() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let out = local_task(dir.path(), generation, 0, 2, 0, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Range 1 is recorded, then its merge fails mid-upload: every range
    // recorded, no errors.csv, no manifest.
    let out = local_task(
        dir.path(),
        generation,
        1,
        2,
        0,
        &[("SCORER_TEST_TASK_FAULTS", "1:0:errors-upload:fail")],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "the merge was meant to fail");
    assert!(
        errors_files(dir.path(), generation).is_empty(),
        "{:?}",
        errors_files(dir.path(), generation)
    );
    assert!(local_manifest(dir.path(), generation).is_none());
    // Two retries at once, each pausing inside its errors.csv upload: both
    // chose the name before either finished writing it.
    let faults = "0:1:errors-upload:delay=1s;1:1:errors-upload:delay=1s";
    let mut a = local_task(dir.path(), generation, 0, 2, 1, &[("SCORER_TEST_TASK_FAULTS", faults)])
        .spawn()
        .unwrap();
    let b = local_task(dir.path(), generation, 1, 2, 1, &[("SCORER_TEST_TASK_FAULTS", faults)])
        .output()
        .unwrap();
    let a_status = a.wait().unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(a_status.success());
    let m = local_manifest(dir.path(), generation).expect("committed");
    assert_eq!(m["status"], "scored", "{m}");
    assert!(
        m["outputs"]["errors"]["name"]
            .as_str()
            .unwrap()
            .ends_with("/errors.csv"),
        "{m}"
    );
    assert_eq!(errors_files(dir.path(), generation), ["errors.csv"]);
}

/// An input one task scores whole (one task, or a format that cannot be
/// cut) still says how the service chose its model; a label the task
/// cannot read is left out, never the input's failure.
#[test]
fn a_task_scoring_the_input_whole_names_how_its_model_was_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let chosen = r#"{"reference": "scl-flight-delay@production", "route": "prefix big"}"#;
    let out = local_task(dir.path(), generation, 0, 1, 0, &[("MODEL_CHOSEN_BY", chosen)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = local_manifest(dir.path(), generation).expect("committed");
    assert_eq!(m["execution"]["tasks"], 1, "{m}");
    assert_eq!(
        m["model"]["chosen_by"],
        json!({"reference": "scl-flight-delay@production", "route": "prefix big"}),
        "{m}"
    );

    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let out = local_task(dir.path(), generation, 0, 1, 0, &[("MODEL_CHOSEN_BY", "{not json")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODEL_CHOSEN_BY"));
    let m = local_manifest(dir.path(), generation).expect("committed");
    assert_eq!(m["status"], "scored", "{m}");
    assert!(m["model"].get("chosen_by").is_none(), "{m}");
}

/// The names of the `errors*` objects beside a local input's manifest.
fn errors_files(dir: &std::path::Path, generation: i64) -> Vec<String> {
    let mut names: Vec<String> = walk(&dir.join(format!("output/big.csv/{generation}")))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .filter(|n| n.starts_with("errors"))
        .collect();
    names.sort();
    names
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// An execution Cloud Run reports over, with no manifest written (its tasks
/// all died), does not keep the input waiting for `DISPATCH_STALE_SECONDS`:
/// the next delivery starts another execution, and after three the input
/// gets a failure report.
#[tokio::test]
async fn an_execution_reported_over_without_a_manifest_is_dispatched_again_then_reported() {
    let fake = storage().await;
    let bytes = input_file();
    let generation = fake.put_object("in-bucket", "run/dead.csv", &bytes).await;
    let run = RunJobStandIn::start(None).await;
    let job = "projects/my-project/locations/europe-west1/jobs/scorer-shard";
    let server = server(&fake, &[("SHARD_JOB", job), ("RUN_API_ENDPOINT", &run.url)]);
    server.ready().await;
    let body = envelope("run/dead.csv", generation, bytes.len() as u64);
    for n in 1..=3 {
        let (status, answer) = push(&server, &body).await;
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some("dispatched")),
            "{answer}"
        );
        assert_eq!(run.requests.lock().unwrap().len(), n, "delivery {n}");
    }
    let (status, answer) = push(&server, &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("failed")), "{answer}");
    let m = manifest(&fake, "run/dead.csv", generation, Duration::from_secs(10)).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert!(
        m["failure"].as_str().unwrap_or_default().contains("standin-0003"),
        "{m}"
    );
}

/// `reconcile` tells an input a job execution is scoring from lost work:
/// dispatched recently, it is reported as being scored (exit 0); started
/// longer ago than an execution may run, it is unscored (exit 5) and says
/// that a redelivery dispatches it again.
#[test]
fn reconcile_tells_a_running_execution_from_lost_work() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let names = scorer::layout::OutputNames::new(
        &scorer::event::ObjectName::parse("big.csv").unwrap(),
        scorer::event::Generation::new(generation).unwrap(),
    );
    let started = |at: &str| {
        let output = dir.path().join("output");
        for (name, body) in [
            (names.dispatch(1), json!({"requested": true})),
            (
                names.dispatch_started(1),
                json!({"execution": "projects/p/locations/l/jobs/j/executions/e-1", "tasks": 2, "started_at": at, "dispatcher": "test"}),
            ),
        ] {
            let path = output.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body.to_string()).unwrap();
        }
    };
    let reconcile = || {
        Command::new(SCORER)
            .args(["reconcile", "--local", dir.path().to_str().unwrap()])
            .output()
            .unwrap()
    };
    started(&humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    let out = reconcile();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("being scored by a job execution") && text.contains("executions/e-1"),
        "{text}"
    );

    std::fs::remove_dir_all(dir.path().join("output/_shards")).unwrap();
    started("2026-01-01T00:00:00Z");
    let out = reconcile();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("started long ago, no manifest"), "{text}");
    assert!(text.contains("1 object(s)"), "{text}");
}

/// `scorer status` reads where one input stands from the output bucket's
/// records: waiting, in progress (lease), dispatched (execution), scored
/// (with its outputs); JSON too; a typo'd input is an error, not "waiting".
#[test]
fn status_says_where_one_input_stands() {
    let dir = tempfile::tempdir().unwrap();
    let generation = local_input(dir.path());
    let names = scorer::layout::OutputNames::new(
        &scorer::event::ObjectName::parse("big.csv").unwrap(),
        scorer::event::Generation::new(generation).unwrap(),
    );
    let status = |extra: &[&str]| {
        let out = Command::new(SCORER)
            .args(["status", "gs://input/big.csv", "--local", dir.path().to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let write = |name: String, body: Value| {
        let path = dir.path().join("output").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body.to_string()).unwrap();
    };
    let (code, text) = status(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("input/big.csv generation {generation}")) && text.contains("waiting"),
        "{text}"
    );

    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    let ms = later.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    write(
        names.lease(1),
        json!({"holder": "instance-7", "expires_at_ms": ms, "released": false}),
    );
    let (_, text) = status(&[]);
    assert!(text.contains("in progress: instance-7 holds the lease until"), "{text}");
    write(
        names.lease(2),
        json!({"holder": "instance-7", "expires_at_ms": 0, "released": true}),
    );

    write(names.dispatch(1), json!({"requested": true}));
    write(
        names.dispatch_started(1),
        json!({"execution": "projects/p/locations/l/jobs/j/executions/e-9", "tasks": 2,
               "started_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
               "dispatcher": "test"}),
    );
    let (_, text) = status(&[]);
    assert!(
        text.contains("dispatched: projects/p/locations/l/jobs/j/executions/e-9"),
        "{text}"
    );
    let (_, json_text) = status(&["--json"]);
    let v: Value = serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: {json_text}"));
    assert_eq!(
        (v["state"].as_str(), v["stale"].as_bool()),
        (Some("dispatched"), Some(false)),
        "{v}"
    );

    // The tasks commit: scored, with its shards listed.
    for (index, attempt) in [(0, 0), (1, 0)] {
        let out = local_task(dir.path(), generation, index, 2, attempt, &[])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (code, text) = status(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("  scored") && text.contains("predictions-00001-of-00002.csv"),
        "{text}"
    );
    assert!(text.contains("manifest.json"), "{text}");
    let (_, json_text) = status(&["--json"]);
    let v: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(v["state"], "scored", "{v}");
    assert_eq!(v["manifest"]["status"], "scored", "{v}");

    let (code, text) = status(&["--generation", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("no longer the current generation") && text.contains("waiting"),
        "{text}"
    );
    let out = Command::new(SCORER)
        .args(["status", "gs://input/nope.csv", "--local", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
}
