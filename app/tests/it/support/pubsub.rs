//! Google's Pub/Sub emulator, and a push endpoint to test it with.

#![allow(dead_code, unused_imports)] // shared by several test modules; not each uses every helper

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

use super::process::*;

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
pub(super) fn duration_json(d: Duration) -> String {
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
