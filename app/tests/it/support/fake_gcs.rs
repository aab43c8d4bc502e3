//! fake-gcs-server: the Cloud Storage emulator.

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
use super::pubsub::PubSubEmulator;

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
