//! The README runs as written (and the local-pipeline session it points to
//! in docs/CLI.md). Its examples, each marked
//! `<!-- example: NAME -->`, are run here as they are written (the command
//! in the first block after the marker) and their output compared with the
//! block that shows it, once what changes from run to run (temporary paths,
//! generations, timings, rates) is masked on both sides. With
//! `SCORER_UPDATE_README=1` the outputs of this run are written into
//! README.md instead (one test at a time: `./test.sh --test it -- readme::
//! --test-threads=1`; then review the diff). docs/CONFIGURATION.md is held
//! to `scorer serve --help` the same way.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{SCORER, Server, repo_root};

/// The first `n` fenced blocks after `<!-- example: NAME -->`: their text
/// and where each sits in the README.
fn blocks(readme: &str, name: &str, n: usize) -> Vec<(String, std::ops::Range<usize>)> {
    let marker = format!("<!-- example: {name} -->");
    let mut at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("the page has no {marker}"))
        + marker.len();
    let mut out = Vec::new();
    while out.len() < n {
        let open = at
            + readme[at..]
                .find("```")
                .unwrap_or_else(|| panic!("example {name} has {} block(s), not {n}", out.len()));
        let body_start = open + readme[open..].find('\n').map_or(readme.len() - open, |i| i + 1);
        let close = body_start
            + readme[body_start..]
                .find("```")
                .unwrap_or_else(|| panic!("an example block of {name} is not closed"));
        out.push((readme[body_start..close].to_owned(), body_start..close));
        at = close + 3;
    }
    out
}

/// Masks digits in the places that change from run to run: after `(` in
/// `(NN ms)`, timings and rates (`in 0.05 s (1303536 rows/s)`), and long
/// numbers (generations).
fn mask(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            let after: String = chars[i..chars.len().min(i + 8)].iter().collect();
            let varies = after.starts_with(" ms)")
                || after.starts_with(" s (")
                || after.starts_with(" rows/s")
                || number.len() >= 12;
            out.push_str(if varies { "#" } else { &number });
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Writes `replacements` (ranges of README.md and their new text) back.
fn update(readme: &str, mut replacements: Vec<(std::ops::Range<usize>, String)>) {
    replacements.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut text = readme.to_owned();
    for (range, new) in replacements {
        text.replace_range(range, &new);
    }
    std::fs::write(repo_root().join("README.md"), text).unwrap();
}

fn updating() -> bool {
    std::env::var_os("SCORER_UPDATE_README").is_some()
}

#[test]
fn the_demo_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let shown = blocks(&readme, "demo", 1);
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(SCORER)
        .args(["demo", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed = String::from_utf8_lossy(&run.stdout).replace(dir.path().to_str().unwrap(), "/tmp/scorer-demo-6yGG2q");
    if updating() {
        return update(&readme, vec![(shown[0].1.clone(), printed)]);
    }
    assert_eq!(
        mask(&shown[0].0),
        mask(&printed),
        "README.md's demo output is stale; rerun with SCORER_UPDATE_README=1"
    );
}

#[test]
fn the_score_example_runs_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let shown = blocks(&readme, "score", 2);
    let command = shown[0].0.trim();
    let args: Vec<&str> = command
        .strip_prefix("target/release/scorer ")
        .unwrap_or_else(|| panic!("the score example should run target/release/scorer: {command}"))
        .split_whitespace()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("predictions.csv");
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == "/tmp/predictions.csv" {
                out_path.to_str().unwrap().to_owned()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let run = Command::new(SCORER)
        .args(&args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed = String::from_utf8_lossy(&run.stdout).replace(out_path.to_str().unwrap(), "/tmp/predictions.csv");
    if updating() {
        return update(&readme, vec![(shown[1].1.clone(), printed)]);
    }
    assert_eq!(
        mask(&shown[1].0),
        mask(&printed),
        "README.md's score output is stale; rerun with SCORER_UPDATE_README=1"
    );
}

#[tokio::test]
async fn the_predict_example_answers_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let shown = blocks(&readme, "predict", 2);
    let command = &shown[0].0;
    let body = command
        .split("-d '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("the predict example has no -d '...' body: {command}"));
    let path = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("localhost:8080"))
        .unwrap_or_else(|| panic!("the predict example calls no localhost:8080 route: {command}"));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[("SETTLE_SECONDS", "3600")],
    );
    server.ready().await;
    let answer = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let got: Value = serde_json::from_str(&text).unwrap();
    if updating() {
        return update(&readme, vec![(shown[1].1.clone(), format!("{text}\n"))]);
    }
    let expected: Value =
        serde_json::from_str(&shown[1].0).unwrap_or_else(|e| panic!("the README's answer is not JSON: {e}"));
    assert_eq!(
        expected, got,
        "README.md's predict answer is stale; rerun with SCORER_UPDATE_README=1"
    );
}

/// The local pipeline block (docs/CLI.md, where the README sends a user
/// who wants the whole pipeline locally) runs as pasted into a shell: every line, in
/// order, with the server in the background. Only the places that would
/// clash with other tests change: the binary's path, the directory and the
/// port (a free one instead of 8080, through `PORT` and the URLs).
#[test]
fn the_serve_local_example_runs_as_pasted() {
    use std::os::unix::process::CommandExt;
    let page = std::fs::read_to_string(repo_root().join("docs/CLI.md")).unwrap();
    let script = blocks(&page, "serve-local", 1).remove(0).0;
    for needed in [
        "target/release/scorer serve --local /tmp/scoring &",
        "127.0.0.1:8080",
        "manifest.json",
    ] {
        assert!(
            script.contains(needed),
            "the serve-local example lost {needed:?}:\n{script}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let scoring = dir.path().join("scoring");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = script
        .replace("target/release/scorer", SCORER)
        .replace("/tmp/scoring", scoring.to_str().unwrap())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let mut child = Command::new("bash")
        .args(["-c", &format!("set -e\n{script}")])
        .current_dir(repo_root())
        .env("PORT", port.to_string())
        .env_remove("HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        // Its own process group: the server it leaves in the background is
        // stopped with the group.
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{group}")])
        .status();
    let output = child.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let status = status.unwrap_or_else(|| panic!("the serve-local example did not finish; it printed:\n{printed}"));
    assert!(
        status.success(),
        "the serve-local example failed ({status}); it printed:\n{printed}"
    );
    let manifest_start = printed
        .find("{\n")
        .unwrap_or_else(|| panic!("no manifest printed:\n{printed}"));
    let manifest: Value = serde_json::from_str(printed[manifest_start..].trim())
        .unwrap_or_else(|e| panic!("the manifest printed is not JSON ({e}):\n{printed}"));
    assert_eq!(manifest["status"], "scored", "{manifest}");
    assert_eq!(manifest["rows"]["scored"], 68206, "{manifest}");
}

#[test]
fn every_setting_of_serve_is_documented() {
    let help = Command::new(SCORER).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let doc = std::fs::read_to_string(repo_root().join("docs/CONFIGURATION.md")).unwrap();
    let mut named = 0;
    for var in help
        .split("env: ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !(c.is_ascii_uppercase() || c == '_')).next())
    {
        named += 1;
        assert!(
            doc.contains(&format!("| `{var}` |")),
            "docs/CONFIGURATION.md has no row for {var}"
        );
    }
    assert!(named > 20, "serve --help named {named} variables");
    assert!(Path::new(&repo_root().join("README.md")).exists());
}
