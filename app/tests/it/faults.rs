//! A fault-injecting HTTP proxy between the service and fake-gcs-server:
//! random 503 and 429 answers, slow answers, connections cut in the middle of
//! a download or an upload, and answers lost after the upstream already did
//! the work. It listens on port 80 of a loopback address of its own (the
//! storage client drops non-default ports from the `Host` header of resumable
//! uploads) and forwards `Host` unchanged, so resumable sessions come back
//! through it.
//!
//! It also answers resumable-upload status queries (`PUT` with
//! `Content-Range: bytes */*`) itself, as Cloud Storage does: 308 with the
//! range the upstream last reported persisted, or the object once the
//! session was finalised. fake-gcs-server 1.54 instead *finalises* the upload
//! on a status query, creating a truncated object under the final name,
//! which Cloud Storage never does; without this the proxy's lost answers
//! would test the emulator's bug, not the service.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;

use crate::support::fresh_loopback;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Unavailable,
    TooManyRequests,
    Slow,
    CutDownload,
    CutUpload,
    LostAnswer,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    /// Fault probability in parts per thousand.
    rate: AtomicU32,
    /// When set, every request is answered 503 (storage down).
    down: AtomicBool,
    injected: Mutex<BTreeMap<Fault, u32>>,
    requests: AtomicU32,
    /// Resumable upload sessions by `upload_id`, as the upstream reported them.
    sessions: Mutex<HashMap<String, Session>>,
    /// When set, every resumable upload chunk waits this long before it is
    /// forwarded: the upload is slower than the engine, deterministically.
    upload_delay: Mutex<Option<Duration>>,
    /// Resumable upload chunks seen.
    upload_chunks: AtomicU32,
}

/// What Cloud Storage would answer a status query on an upload session.
#[derive(Clone, Default)]
enum Session {
    /// Nothing persisted yet.
    #[default]
    Empty,
    /// The upstream's last `Range` header (`bytes=0-N`).
    Persisted(axum::http::HeaderValue),
    /// Finalised: the object resource the upstream answered with.
    Finalized(Bytes),
}

fn upload_id(uri: &axum::http::Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("upload_id="))
        .map(str::to_owned)
}

pub struct FaultProxy {
    pub endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.x.y.z`) injecting faults into
    /// a fraction `rate` of requests.
    pub async fn start(upstream: &str, rate: f64) -> FaultProxy {
        let ip = fresh_loopback(&[80]);
        let listener = tokio::net::TcpListener::bind((ip, 80))
            .await
            .unwrap_or_else(|e| panic!("fault proxy cannot listen on {ip}:80: {e}"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy HTTP client"),
            rate: AtomicU32::new((rate * 1000.0) as u32),
            down: AtomicBool::new(false),
            injected: Mutex::new(BTreeMap::new()),
            requests: AtomicU32::new(0),
            sessions: Mutex::new(HashMap::new()),
            upload_delay: Mutex::new(None),
            upload_chunks: AtomicU32::new(0),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            endpoint: format!("http://{ip}"),
            shared,
            task,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Delays every resumable upload chunk by `delay` (`None`: no delay).
    pub fn set_upload_delay(&self, delay: Option<Duration>) {
        *self.shared.upload_delay.lock().unwrap() = delay;
    }

    /// Resumable upload chunks seen so far.
    pub fn upload_chunks(&self) -> u32 {
        self.shared.upload_chunks.load(Ordering::SeqCst)
    }

    pub fn set_rate(&self, rate: f64) {
        self.shared.rate.store((rate * 1000.0) as u32, Ordering::SeqCst);
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<Fault, u32> {
        self.shared.injected.lock().unwrap().clone()
    }

    pub fn requests(&self) -> u32 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

fn error_answer(status: StatusCode) -> Response {
    let body = format!(
        r#"{{"error":{{"code":{},"message":"injected by the test proxy"}}}}"#,
        status.as_u16()
    );
    (status, [("content-type", "application/json")], body).into_response()
}

/// A body that yields `bytes` and then fails: the client sees the
/// connection cut.
fn cut_after(prefix: Bytes) -> Body {
    let stream = futures::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(prefix),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "cut by the test proxy",
        )),
    ]);
    Body::from_stream(stream)
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let record = |fault: Fault| {
        *shared.injected.lock().unwrap().entry(fault).or_default() += 1;
    };
    if shared.down.load(Ordering::SeqCst) {
        return error_answer(StatusCode::SERVICE_UNAVAILABLE);
    }
    let (parts, body) = request.into_parts();
    let is_download = parts.method == "GET" && parts.uri.query().is_some_and(|q| q.contains("alt=media"));
    let has_body = matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH");
    let fault = {
        let mut rng = rand::rng();
        if rng.random_range(0..1000) < shared.rate.load(Ordering::SeqCst) {
            let mut choices = vec![Fault::Unavailable, Fault::TooManyRequests, Fault::Slow];
            if is_download {
                choices.push(Fault::CutDownload);
            }
            if has_body {
                choices.push(Fault::CutUpload);
                choices.push(Fault::LostAnswer);
            }
            Some(choices[rng.random_range(0..choices.len())])
        } else {
            None
        }
    };
    if let Some(fault) = fault {
        record(fault);
    }
    match fault {
        Some(Fault::Unavailable) => return error_answer(StatusCode::SERVICE_UNAVAILABLE),
        Some(Fault::TooManyRequests) => return error_answer(StatusCode::TOO_MANY_REQUESTS),
        Some(Fault::Slow) => {
            let ms = rand::rng().random_range(100..800);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(Fault::CutUpload) => {
            // Read part of the upload, never forward it, cut the connection.
            let mut body = body.into_data_stream();
            let _ = body.next().await;
            return Response::builder()
                .status(StatusCode::OK)
                .body(cut_after(Bytes::new()))
                .unwrap_or_else(|_| error_answer(StatusCode::SERVICE_UNAVAILABLE));
        }
        _ => {}
    }
    let session = (parts.method == "PUT").then(|| upload_id(&parts.uri)).flatten();
    if session.is_some() {
        shared.upload_chunks.fetch_add(1, Ordering::SeqCst);
        let delay = *shared.upload_delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }
    if let Some(id) = &session
        && parts.headers.get("content-range").is_some_and(|v| v == "bytes */*")
    {
        let known = shared.sessions.lock().unwrap().get(id).cloned().unwrap_or_default();
        return match known {
            Session::Empty => Response::builder().status(308).body(Body::empty()),
            Session::Persisted(range) => Response::builder()
                .status(308)
                .header("range", range)
                .body(Body::empty()),
            Session::Finalized(object) => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(object)),
        }
        .unwrap_or_else(|_| error_answer(StatusCode::SERVICE_UNAVAILABLE));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream));
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    upstream = upstream.headers(headers);
    if has_body {
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut builder = Response::builder().status(status);
    for (name, value) in answer.headers() {
        let cut = matches!(fault, Some(Fault::CutDownload | Fault::LostAnswer));
        if !(hop_by_hop(name) || cut && name == "content-length") {
            builder = builder.header(name, value);
        }
    }
    if let Some(id) = session {
        // Remember what the upstream said of the session, for status queries.
        let state = if status.as_u16() == 308 {
            answer.headers().get("range").cloned().map(Session::Persisted)
        } else if status.is_success() {
            let object = answer.bytes().await.unwrap_or_default();
            shared
                .sessions
                .lock()
                .unwrap()
                .insert(id, Session::Finalized(object.clone()));
            return builder
                .body(match fault {
                    Some(Fault::LostAnswer) => cut_after(Bytes::new()),
                    _ => Body::from(object),
                })
                .unwrap_or_else(|_| error_answer(StatusCode::SERVICE_UNAVAILABLE));
        } else {
            None
        };
        if let Some(state) = state {
            shared.sessions.lock().unwrap().insert(id, state);
        }
    }
    let body = match fault {
        Some(Fault::LostAnswer) => {
            // The upstream did the work; the client never hears of it.
            let _ = answer.bytes().await;
            cut_after(Bytes::new())
        }
        Some(Fault::CutDownload) => {
            let bytes = answer.bytes().await.unwrap_or_default();
            let keep = rand::rng().random_range(0..=bytes.len() / 2);
            cut_after(bytes.slice(0..keep))
        }
        _ => Body::from_stream(answer.bytes_stream()),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| error_answer(StatusCode::SERVICE_UNAVAILABLE))
}
