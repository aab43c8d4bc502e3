//! The exit-path matrix: every stage of a job crossed with every way a job
//! can end early, on the real service against fake-gcs-server.
//!
//! Stages (where the job is when it ends): `download` (opening the input),
//! `scoring` (mid-download), `predictions-upload`, `errors-upload` (mid
//! upload: the upload stalls while the engine fills its channel, the state
//! that used to commit a prefix), `manifest` (the commit). Endings: SIGTERM
//! with `SHUTDOWN_GRACE_SECONDS=0`, the lease taken over by another instance,
//! storage failing permanently, a panic, and the input deleted meanwhile.
//! The stage is reached deterministically through the service's test-only
//! fault injection (`SCORER_TEST_FAULTS`, refused on Cloud Run): a `delay`
//! holds the job there while the test acts, `fail` and `panic` end it there.
//!
//! Each row runs its cells in the three output formats in turn (CSV,
//! JSON Lines, Parquet, shifted by one from row to row), so that every
//! stage and every ending meets every format somewhere in the matrix.
//!
//! After each case: every object in the output bucket is named by a
//! committed manifest or byte-identical to a complete output (never a
//! prefix), and what the manifest names is there with its recorded size and
//! CRC32C; every push answered 2xx has a committed manifest; a panic or a
//! storage failure is never acknowledged; no lease was renewed after its job
//! ended; and a later delivery finishes the input with one output set.
//!
//! What the emulator cannot show: fake-gcs-server sends a whole object in
//! one response, so an input deleted after its download began is still read
//! to the end (Cloud Storage would end a resumed read with 404, which the job
//! reports as `failed`); only the `download` stage sees the deletion.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{SCORER, Server};
use crate::support::{FakeGcs, FakeGcsOptions};
use scorer::storage::gcs::{GcsOptions, GcsStore};
use scorer::storage::{ObjectStore, StorageError, WriteOptions, read_all, write_bytes};

const INPUT: &str = "exit/flights.csv";
/// The lease's time to live in these tests: renewals every second.
const LEASE_TTL_S: u64 = 3;
/// How long a `delay` fault holds the job at its stage.
const HOLD: &str = "3s";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Download,
    Scoring,
    PredictionsUpload,
    ErrorsUpload,
    Manifest,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Download,
        Stage::Scoring,
        Stage::PredictionsUpload,
        Stage::ErrorsUpload,
        Stage::Manifest,
    ];

    fn spec(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Scoring => "scoring",
            Stage::PredictionsUpload => "predictions-upload",
            Stage::ErrorsUpload => "errors-upload",
            Stage::Manifest => "manifest",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Sigterm,
    LeaseLost,
    StorageFails,
    Panic,
    InputDeleted,
}

impl Ending {
    fn action(self) -> String {
        match self {
            Ending::Sigterm | Ending::LeaseLost | Ending::InputDeleted => format!("delay={HOLD}"),
            Ending::StorageFails => "fail".into(),
            Ending::Panic => "panic".into(),
        }
    }
}

/// A raw-layout flights file whose every other row has an unknown month:
/// both outputs span several 1 MiB upload pieces (the errors about 7 MB, the
/// predictions about 10 MB, past the 8 MiB resumable threshold, so chunks go
/// up before the end), and the errors upload runs beside the predictions.
fn input_bytes() -> Vec<u8> {
    let mut out = String::from(
        "Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES\n",
    );
    let airlines = ["Grupo LATAM", "Sky Airline", "Copa Air", "Avianca"];
    for i in 0..130_000usize {
        let month = if i % 2 == 1 { 13 } else { i % 12 + 1 };
        let kind = if i % 3 == 0 { "I" } else { "N" };
        out.push_str(&format!(
            "2017-01-01 10:00:00,{i},SCEL,SAEZ,LAN,2017-01-01 10:05:00,{i},SCEL,SAEZ,LAN,1,{month},2017,Lunes,{kind},{},Santiago,Buenos Aires\n",
            airlines[i % airlines.len()]
        ));
    }
    out.into_bytes()
}

/// The output formats, in the order the rows cycle through them.
const FORMATS: [&str; 3] = ["csv", "jsonl", "parquet"];

/// The complete outputs of a fault-free run: predictions and errors.
/// Without provenance columns (their `scored_at` differs from run to run),
/// every run of one input writes the same bytes in every format.
fn complete_outputs(bytes: &[u8], format: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out.csv");
    let run = std::process::Command::new(SCORER)
        .args(["score", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--format", format, "--provenance", "off"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    (
        std::fs::read(&out).unwrap(),
        std::fs::read(dir.path().join("out.errors.csv")).unwrap(),
    )
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Case {
    format: &'static str,
    fake: FakeGcs,
    store: GcsStore,
    generation: i64,
    predictions: Vec<u8>,
    errors: Vec<u8>,
}

impl Case {
    async fn new(format: &'static str) -> Case {
        let fake = FakeGcs::start(FakeGcsOptions::default()).await;
        fake.create_bucket("in-bucket").await;
        fake.create_bucket("out-bucket").await;
        let bytes = input_bytes();
        let (predictions, errors) = complete_outputs(&bytes, format);
        let generation = fake.put_object("in-bucket", INPUT, &bytes).await;
        let store = GcsStore::new(
            "out-bucket",
            Some(&fake.endpoint),
            GcsOptions {
                retry_budget: Duration::from_secs(5),
                ..GcsOptions::default()
            },
        )
        .await
        .unwrap();
        Case {
            format,
            fake,
            store,
            generation,
            predictions,
            errors,
        }
    }

    fn server(&self, faults: Option<&str>) -> Server {
        let mut env = vec![
            ("STORAGE_EMULATOR_HOST", self.fake.endpoint.as_str()),
            ("INPUT_BUCKET", "in-bucket"),
            ("OUTPUT_BUCKET", "out-bucket"),
            ("STORAGE_RETRY_SECONDS", "5"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
            ("LEASE_TTL_SECONDS", "3"),
            ("OUTPUT_FORMAT", self.format),
            ("PROVENANCE", "off"),
        ];
        if let Some(spec) = faults {
            env.push(("SCORER_TEST_FAULTS", spec));
        }
        Server::start(&[], &env)
    }

    fn envelope(&self) -> Value {
        scorer::event::notification::Notification::finalize("in-bucket", INPUT, self.generation)
            .size(0)
            .time("2026-01-01T00:00:00Z")
            .push_envelope("exit-path", "projects/p/subscriptions/s")
    }

    fn lease_prefix(&self) -> String {
        format!("_leases/{INPUT}/{}/", self.generation)
    }

    /// Writes the next lease record as another instance, create-only, so the
    /// job's next renewal finds the lease taken over.
    async fn take_lease_over(&self) {
        for _ in 0..20 {
            let newest = self
                .store
                .list(&self.lease_prefix())
                .await
                .unwrap()
                .iter()
                .filter_map(|o| o.name.rsplit('/').next()?.strip_suffix(".json")?.parse::<u32>().ok())
                .max()
                .unwrap_or(0);
            let record =
                serde_json::json!({"holder": "another-instance", "expires_at_ms": now_ms() + 2_000, "released": false});
            let name = format!("{}{:06}.json", self.lease_prefix(), newest + 1);
            match write_bytes(
                &self.store,
                &name,
                record.to_string().into_bytes(),
                WriteOptions::create_only("application/json"),
            )
            .await
            {
                Ok(_) => return,
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => panic!("taking the lease over: {e}"),
            }
        }
        panic!("could not take the lease over");
    }

    /// Objects of the output bucket outside `_leases/`, with their bytes.
    async fn outputs(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for meta in self.store.list("").await.unwrap() {
            // Leases, and the registry the service writes at start.
            if meta.name.starts_with("_leases/") || meta.name.starts_with("_models/") {
                continue;
            }
            let (_, bytes) = read_all(&self.store, &meta.name, 1 << 30).await.unwrap();
            out.push((meta.name, bytes));
        }
        out
    }

    /// The committed manifest, if any.
    async fn manifest(&self) -> Option<Value> {
        let name = format!("{INPUT}/{}/manifest.json", self.generation);
        match read_all(&self.store, &name, 1 << 20).await {
            Ok((_, bytes)) => Some(serde_json::from_slice(&bytes).unwrap()),
            Err(StorageError::NotFound(_)) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every output object is named by the manifest or is a complete output
    /// (never a prefix), and every object the manifest names is there with
    /// the size and CRC32C it records and the content a fault-free run
    /// gives. Returns how many objects were inspected.
    async fn assert_no_partial_objects(&self, label: &str) -> usize {
        let manifest = self.manifest().await;
        let mut named = Vec::new();
        if let Some(m) = &manifest {
            // The curves of a labelled input, as recorded.
            for curve in m["outputs"]["curves"].as_array().into_iter().flatten() {
                let name = curve["name"].as_str().unwrap();
                let (meta, bytes) = read_all(&self.store, name, 1 << 30)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: the manifest names {name}, which cannot be read: {e}"));
                assert_eq!(curve["size"].as_u64(), Some(meta.size), "{label}: {name}");
                assert_eq!(
                    curve["crc32c"].as_str(),
                    Some(format!("{:08x}", crc32c::crc32c(&bytes)).as_str()),
                    "{label}: {name}"
                );
                named.push(name.to_owned());
            }
            for kind in ["predictions", "errors"] {
                let Some(name) = m["outputs"][kind]["name"].as_str() else {
                    continue;
                };
                let (meta, bytes) = read_all(&self.store, name, 1 << 30)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: the manifest names {name}, which cannot be read: {e}"));
                assert_eq!(
                    m["outputs"][kind]["size"].as_u64(),
                    Some(meta.size),
                    "{label}: {name} is not the size its manifest records"
                );
                assert_eq!(
                    m["outputs"][kind]["crc32c"].as_str(),
                    Some(format!("{:08x}", crc32c::crc32c(&bytes)).as_str()),
                    "{label}: {name} is not the content its manifest records"
                );
                let expected = match (kind, m["status"].as_str()) {
                    ("predictions", _) => Some(&self.predictions),
                    ("errors", Some("scored")) => Some(&self.errors),
                    // A failure report: one line saying why.
                    _ => None,
                };
                if let Some(expected) = expected {
                    assert!(
                        bytes == *expected,
                        "{label}: the committed {name} differs from a fault-free run"
                    );
                } else {
                    assert!(
                        String::from_utf8_lossy(&bytes).contains("the file was not scored"),
                        "{label}: {name} is no failure report"
                    );
                }
                named.push(name.to_owned());
            }
        }
        let outputs = self.outputs().await;
        for (name, bytes) in &outputs {
            if named.contains(name) {
                continue;
            }
            let file = name.rsplit('/').next().unwrap_or(name);
            let complete = if name.contains("/curves/") {
                // Written in one request each: whole, or not at all.
                bytes.ends_with(b"</svg>\n")
                    || bytes.ends_with(b"</svg>")
                    || serde_json::from_slice::<Value>(bytes).is_ok()
            } else if file.starts_with("predictions") {
                *bytes == self.predictions
            } else if file.starts_with("errors") {
                *bytes == self.errors
            } else {
                file == "manifest.json"
            };
            assert!(
                complete,
                "{label}: {name} ({} bytes) is neither named by the manifest nor complete (predictions {} bytes, errors {} bytes)",
                bytes.len(),
                self.predictions.len(),
                self.errors.len()
            );
        }
        outputs.len()
    }

    /// No lease record of ours was written after `ended_ms` (renewals carry
    /// an expiry of their creation time plus the TTL).
    async fn assert_no_renewal_after(&self, ended_ms: u64, label: &str) {
        for meta in self.store.list(&self.lease_prefix()).await.unwrap() {
            let (_, bytes) = read_all(&self.store, &meta.name, 1 << 16).await.unwrap();
            let record: Value = serde_json::from_slice(&bytes).unwrap();
            if record["holder"] == "another-instance" || record["released"] == true {
                continue;
            }
            let expires = record["expires_at_ms"].as_u64().unwrap();
            assert!(
                expires <= ended_ms + LEASE_TTL_S * 1000 + 250,
                "{label}: lease {} renewed after the job ended ({record})",
                meta.name
            );
        }
    }
}

async fn push(server: &Server, envelope: &Value) -> Option<u16> {
    reqwest::Client::new()
        .post(server.url("/"))
        .json(envelope)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Runs one cell of the matrix and checks its invariants.
pub async fn run_case(stage: Stage, ending: Ending, format: &'static str) -> usize {
    let label = format!("{stage:?} x {ending:?} ({format})");
    let case = Case::new(format).await;
    let spec = format!("{}:{}", stage.spec(), ending.action());
    let mut server = case.server(Some(&spec));
    server.ready().await;
    let envelope = case.envelope();
    let first = {
        let url = server.url("/");
        let envelope = envelope.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&envelope)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        })
    };
    // Stage-dependent faults that never fire (an upload the input does not
    // need) leave nothing to act on; every stage here is reached.
    if matches!(ending, Ending::Sigterm | Ending::LeaseLost | Ending::InputDeleted) {
        server.logs_matching(1, |l| l["message"] == "test fault injected").await;
        match ending {
            Ending::Sigterm => server.signal_term(),
            Ending::LeaseLost => case.take_lease_over().await,
            Ending::InputDeleted => assert!(case.fake.delete_object("in-bucket", INPUT).await),
            _ => unreachable!(),
        }
    }
    let status = first.await.unwrap();
    let ended_ms = now_ms();
    if matches!(ending, Ending::Panic | Ending::StorageFails) {
        assert!(
            !status.is_some_and(|s| (200..300).contains(&s)),
            "{label}: a job that met a {ending:?} was acknowledged ({status:?})"
        );
    }
    if ending == Ending::Sigterm {
        server.exited(Duration::from_secs(30)).await;
    }
    if status.is_some_and(|s| (200..300).contains(&s)) {
        assert!(
            case.manifest().await.is_some(),
            "{label}: answered {status:?} without a committed manifest"
        );
    }
    let mut inspected = case.assert_no_partial_objects(&label).await;
    // Two renewal periods: a renewer still running would have written.
    tokio::time::sleep(Duration::from_millis(LEASE_TTL_S * 1000 * 2 / 3 + 200)).await;
    case.assert_no_renewal_after(ended_ms, &label).await;

    // A later delivery (the process restarted when it was stopped; a taken
    // lease must expire first, so Pub/Sub's retries are played here).
    if ending == Ending::Sigterm {
        drop(server);
        server = case.server(None);
        server.ready().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = push(&server, &envelope).await;
        if status == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: redelivery still answers {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let manifest = case
        .manifest()
        .await
        .unwrap_or_else(|| panic!("{label}: no manifest after redelivery"));
    let gone = ending == Ending::InputDeleted && stage == Stage::Download;
    assert_eq!(
        manifest["status"],
        if gone { "failed" } else { "scored" },
        "{label}: {manifest}"
    );
    inspected += case.assert_no_partial_objects(&label).await;
    inspected
}

async fn row(ending: Ending) {
    let mut inspected = 0;
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        inspected += run_case(stage, ending, FORMATS[(i + ending as usize) % FORMATS.len()]).await;
    }
    // Reached only if no cell found a truncated object or an acknowledged
    // input without outputs (each would have failed its assertion).
    println!(
        "exit paths {ending:?}: {} paths, {inspected} objects inspected, no truncated object, no input acknowledged without outputs",
        Stage::ALL.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_paths_sigterm_at_every_stage() {
    row(Ending::Sigterm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_paths_lease_lost_at_every_stage() {
    row(Ending::LeaseLost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_paths_storage_failing_at_every_stage() {
    row(Ending::StorageFails).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_paths_panic_at_every_stage() {
    row(Ending::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_paths_input_deleted_at_every_stage() {
    row(Ending::InputDeleted).await;
}
