//! gsutil against fake-gcs-server (HTTPS only).

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

use super::fake_gcs::FakeGcs;
use super::process::*;

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
