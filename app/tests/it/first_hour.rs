//! A new user's first hour, item by item: no data lost to a typo, operator
//! tools that fail loudly, one reader for train and score, a strict online
//! API, errors that name paths, exit statuses as a contract, complete JSON,
//! logs as Cloud Logging reads them, and the local notifier's edges.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{SCORER, Server, data, find_files, scorer, stderr, stdout};

const SMALL: &str = "OPERA,TIPOVUELO,MES,atraso_15\nGrupo LATAM,I,3,1\nSky Airline,N,13,0\nCopa Air,I,7,0\n";

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(SCORER)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn an_output_that_is_the_input_or_another_output_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("m2.csv"), SMALL).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(d.join("m2.csv"), d.join("link.csv")).unwrap();
    for args in [
        vec!["score", "m2.csv", "--out", "m2.csv"],
        vec!["score", "m2.csv", "--out", "./m2.csv"],
        vec!["score", "m2.csv", "--out", "sub/../m2.csv"],
        vec!["score", "m2.csv", "--out", "link.csv"],
        vec!["score", "link.csv", "--out", "x.csv", "--errors", "m2.csv"],
        vec!["score", "m2.csv", "--out", "e1.csv", "--errors", "e1.csv"],
        vec!["score", "m2.csv", "--out", "-"],
        vec![
            "train",
            "--data",
            "m2.csv",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA",
            "--out",
            "./m2.csv",
        ],
    ] {
        let out = run_in(d, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(d.join("m2.csv")).unwrap(),
            SMALL,
            "{args:?} touched the input"
        );
        assert!(!d.join("e1.csv").exists(), "{args:?}");
    }
    // `--out -` writes the predictions to standard output.
    let out = run_in(d, &["score", "m2.csv", "--out", "-", "--errors", "rejected.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("OPERA,TIPOVUELO,MES,atraso_15,probability,prediction\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3);
    assert!(d.join("rejected.csv").exists());
    assert!(!d.join("-").exists());
}

#[test]
fn train_reads_what_score_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = std::fs::read_to_string(data("scl_flights_2017.csv")).unwrap();
    let semicolons = plain.replace(',', ";").replace('\n', "\r\n");
    std::fs::write(d.join("semi.csv"), format!("\u{feff}{semicolons}")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain.as_bytes()).unwrap();
    std::fs::write(d.join("flights.csv.gz"), gz.finish().unwrap()).unwrap();
    let fit = |source: &str, stdin: Option<&[u8]>| -> Value {
        let out = format!("{}.json", source.replace(['.', '-'], "_"));
        let mut cmd = Command::new(SCORER);
        cmd.args([
            "train",
            "--data",
            source,
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA,TIPOVUELO,MES",
            "--split-column",
            "split",
            "--balanced",
            "--name",
            "scl-flight-delay",
            "--out",
            &out,
        ])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        let run = child.wait_with_output().unwrap();
        assert!(run.status.success(), "{source}: {}", stderr(&run));
        let mut artifact: Value = serde_json::from_slice(&std::fs::read(d.join(out)).unwrap()).unwrap();
        // Only the training data's own description differs.
        artifact["training"]["data"] = Value::Null;
        artifact["training"]["data_sha256"] = Value::Null;
        artifact
    };
    let shipped = {
        let mut a: Value = serde_json::from_slice(&std::fs::read(data("model.json")).unwrap()).unwrap();
        a["training"]["data"] = Value::Null;
        a["training"]["data_sha256"] = Value::Null;
        a
    };
    assert_eq!(fit("semi.csv", None), shipped, "a ;-delimited, CRLF, BOM file");
    assert_eq!(fit("flights.csv.gz", None), shipped, "a gzip file");
    assert_eq!(fit("-", Some(plain.as_bytes())), shipped, "standard input");
}

#[test]
fn train_errors_say_what_is_wrong() {
    let base = [
        "train",
        "--data",
        data("scl_flights_2017.csv").to_str().unwrap(),
        "--out",
        "/tmp/scorer-never-written.json",
    ]
    .map(str::to_owned);
    for (extra, expected) in [
        (
            vec![
                "--target",
                "atraso_15",
                "--categorical",
                "TIPOVUELO",
                "--numeric",
                "OPERA",
            ],
            "OPERA is not numeric (first non-number at line 2: \"Grupo LATAM\")",
        ),
        (
            vec![
                "--target",
                "atraso_15",
                "--categorical",
                "OPERA",
                "--split-column",
                "split",
                "--train-value",
                "TRAIN",
            ],
            "no row has split=TRAIN (values seen: test, train)",
        ),
        (
            vec!["--target", "MES", "--categorical", "OPERA"],
            "labels must be 0/1; MES holds 1..12",
        ),
    ] {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend(extra);
        let out = scorer(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gaps.csv"),
        "OPERA,MES,y\nA,1,1\n,2,0\nB,3,1\nA,,0\nB,5,x\nA,6,0\n",
    )
    .unwrap();
    let out = run_in(
        dir.path(),
        &[
            "train",
            "--data",
            "gaps.csv",
            "--target",
            "y",
            "--categorical",
            "OPERA,MES",
            "--test-fraction",
            "0",
            "--out",
            "m.json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "skipped 1 with an empty MES (line 5); 1 with an empty OPERA (line 3); 1 with label \"x\" (not 0 or 1) in y (line 6)"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_error_names_the_path_and_what_was_being_done() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), SMALL).unwrap();
    std::fs::write(d.join("notjson.json"), "hello").unwrap();
    let out = run_in(d, &["score", "in.csv", "--out", "nowhere/out.csv"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot write the predictions to nowhere/out.csv")
            && text.contains("the directory nowhere does not exist"),
        "{text}"
    );
    let out = run_in(
        d,
        &[
            "train",
            "--data",
            "in.csv",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA",
            "--out",
            "nowhere/m.json",
        ],
    );
    let text = stderr(&out);
    assert!(
        text.contains("cannot write the model artifact to nowhere/m.json"),
        "{text}"
    );
    assert!(!text.contains(".tmp"), "an internal temporary file is named: {text}");
    let out = run_in(d, &["score", "in.csv", "--out", "o.csv", "--model", "notjson.json"]);
    let text = stderr(&out);
    assert!(text.contains("notjson.json"), "{text}");
    let first = text.find("expected value").unwrap_or_else(|| panic!("{text}"));
    assert!(!text[first + 1..].contains("expected value"), "said twice: {text}");
    let out = run_in(d, &["score", "missing.csv", "--out", "o.csv"]);
    assert!(
        stderr(&out).contains("cannot open the input missing.csv"),
        "{}",
        stderr(&out)
    );
}

/// Every row of the exit-status table, and the README's copy of it.
#[test]
fn exit_statuses_are_a_contract() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), SMALL).unwrap();
    std::fs::write(d.join("bad.csv"), "OPERA,MES\nx,1\n").unwrap();
    std::fs::create_dir_all(d.join("buckets/input")).unwrap();
    std::fs::write(d.join("buckets/input/a.csv"), SMALL).unwrap();
    let cases: [(&[&str], u8); 7] = [
        (&["score", "in.csv", "--out", "o.csv"], 0),
        (&["score", "missing.csv", "--out", "o.csv"], 1),
        (&["score", "in.csv", "--out", "o.csv", "--no-such-flag"], 2),
        (&["score", "bad.csv", "--out", "o.csv"], 3),
        (&["score", "in.csv", "--out", "o.csv", "--max-rejected", "0"], 4),
        (
            &["score", "in.csv", "--out", "o.csv", "--max-rejected-fraction", "0.2"],
            4,
        ),
        (&["reconcile", "--local", "buckets"], 5),
    ];
    for (args, code) in cases {
        let out = run_in(d, args);
        assert_eq!(out.status.code(), Some(i32::from(code)), "{args:?}: {}", stderr(&out));
    }
    // Exit 4 still leaves the outputs.
    assert!(d.join("o.csv").exists() && d.join("o.errors.csv").exists());
    let readme = std::fs::read_to_string(crate::harness::repo_root().join("README.md")).unwrap();
    for (exit, meaning) in scorer::exit::Exit::TABLE {
        let row = format!("| {} | {meaning} |", exit.code());
        assert!(readme.contains(&row), "README.md lacks the exit-status row {row:?}");
    }
}

#[test]
fn json_output_is_complete_and_failures_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), SMALL).unwrap();
    std::fs::write(d.join("bad.csv"), "OPERA,MES\nx,1\n").unwrap();
    let out = run_in(d, &["score", "in.csv", "--out", "o.csv", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["model_name"], "scl-flight-delay");
    assert!(summary["model_version"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(summary["predictions"], "o.csv");
    assert_eq!(summary["errors"], "o.errors.csv");
    assert_eq!(summary["rows_rejected"], 1);
    let out = run_in(d, &["score", "bad.csv", "--out", "o.csv", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let failure: Value =
        serde_json::from_slice(out.stderr.trim_ascii()).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(failure["exit"], 3);
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("missing required column TIPOVUELO"),
        "{failure}"
    );
}

/// The push access log is Cloud Logging's `httpRequest` object with the
/// request's trace; a failed file is a WARNING.
#[tokio::test]
async fn logs_carry_the_fields_cloud_logging_reads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/bad.csv"), "OPERA,MES\nx,1\n").unwrap();
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[("SETTLE_SECONDS", "3600"), ("GOOGLE_CLOUD_PROJECT", "my-project")],
    );
    server.ready().await;
    let md = std::fs::metadata(dir.path().join("input/bad.csv")).unwrap();
    let envelope = scorer::event::notification::Notification::finalize(
        "input",
        "bad.csv",
        scorer::storage::local::generation_of(md.modified().ok()),
    )
    .size(md.len())
    .time("2026-01-01T00:00:00Z")
    .push_envelope("1", "projects/p/subscriptions/s");
    let r = reqwest::Client::new()
        .post(server.url("/"))
        .header("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1")
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let access = server.logs_matching(1, |l| l["httpRequest"].is_object()).await;
    let line = &access[0];
    assert_eq!(line["severity"], "INFO");
    assert_eq!(line["httpRequest"]["requestMethod"], "POST");
    assert_eq!(line["httpRequest"]["status"], 200);
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
    );
    assert!(line["message"].as_str().unwrap().starts_with("POST /"), "{line}");
    assert!(line.get("http_request").is_none(), "{line}");
    let summary = server
        .logs_matching(1, |l| l["message"] == "job summary" && l["outcome"] == "failed")
        .await;
    assert_eq!(summary[0]["severity"], "WARNING", "{}", summary[0]);
    assert_eq!(
        summary[0]["logging.googleapis.com/trace"],
        "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
    );
}

/// `/predict` holds every row to the CSV's rule: a misspelt numeric feature
/// is a 400 naming the right one, never a silent imputation.
#[tokio::test]
async fn predict_is_strict_about_every_feature() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("hora.json");
    let mut csv = String::from("OPERA,HORA,y\n");
    for i in 0..400 {
        let hour = i % 24;
        let late = u8::from(hour >= 17);
        csv.push_str(&format!("{},{hour}.5,{late}\n", if i % 2 == 0 { "A" } else { "B" }));
    }
    std::fs::write(dir.path().join("hora.csv"), csv).unwrap();
    let out = run_in(
        dir.path(),
        &[
            "train",
            "--data",
            "hora.csv",
            "--target",
            "y",
            "--categorical",
            "OPERA",
            "--numeric",
            "HORA",
            "--out",
            "hora.json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[("SETTLE_SECONDS", "3600"), ("MODEL_URI", model.to_str().unwrap())],
    );
    server.ready().await;
    let post = |body: Value| {
        let url = server.url("/predict");
        async move {
            let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, ok) = post(json!({"instances": [{"OPERA": "A", "HORA": 18.5}]})).await;
    assert_eq!(status, 200, "{ok}");
    let (status, body) = post(json!({"instances": [{"OPERA": "A", "hora": 18.5}]})).await;
    assert_eq!(status, 400);
    let text = body.to_string();
    assert!(
        text.contains("unknown field \\\"hora\\\" (did you mean HORA?)"),
        "{text}"
    );
    assert!(text.contains("instances[0].HORA: missing"), "{text}");
    // null is the explicit way to ask for the training mean.
    let (status, imputed) = post(json!({"instances": [{"OPERA": "A", "HORA": null}]})).await;
    assert_eq!(status, 200, "{imputed}");
    assert_ne!(imputed["probability"], ok["probability"]);
}

/// `serve --local` listens on loopback unless told otherwise.
#[tokio::test]
async fn local_mode_listens_on_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(SCORER)
        .args(["serve", "--local", dir.path().to_str().unwrap()])
        .env("PORT", "0")
        .env_remove("HOST")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let addr = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                return v["addr"].as_str().map(str::to_owned);
            }
        }
        None
    })
    .join()
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(addr.as_deref().is_some_and(|a| a.starts_with("127.0.0.1:")), "{addr:?}");
}

/// A file written slowly in place, its writer pausing longer than the
/// settle time, is scored once, whole, when its writer closes it.
#[tokio::test]
async fn a_file_written_slowly_in_place_is_scored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--local", dir.path().to_str().unwrap()], &[("SETTLE_SECONDS", "1")]);
    server.ready().await;
    server
        .logs_matching(1, |l| l["message"] == "local notifier watching")
        .await;
    let path = dir.path().join("input/slow.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"OPERA,TIPOVUELO,MES\n").unwrap();
    for month in 1..=3 {
        file.write_all(format!("Grupo LATAM,I,{month}\n").as_bytes()).unwrap();
        file.flush().unwrap();
        // The writer pauses longer than the settle time, file still open.
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }
    drop(file);
    let manifests = crate::harness::eventually(Duration::from_secs(30), || {
        let found = find_files(&dir.path().join("output"), "manifest.json");
        (!found.is_empty()).then_some(found)
    })
    .await;
    // Give a second (wrong) notification the time it would need.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let manifests_now = find_files(&dir.path().join("output"), "manifest.json");
    assert_eq!(manifests_now.len(), 1, "scored more than once: {manifests_now:?}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(manifest["rows"]["in"], 3, "{manifest}");
}

/// An unreachable Pub/Sub or Cloud Storage is an error, with each retry
/// logged at WARNING, never "nothing to do".
#[test]
fn operator_tools_fail_loudly_when_a_service_is_unreachable() {
    let redrive = Command::new(SCORER)
        .args([
            "redrive",
            "--subscription",
            "projects/p/subscriptions/dead",
            "--topic",
            "projects/p/topics/main",
            "--retry-seconds",
            "2",
        ])
        .env("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = stderr(&redrive);
    assert_eq!(redrive.status.code(), Some(1), "{text}");
    assert!(text.contains("projects/p/subscriptions/dead"), "{text}");
    assert!(!stdout(&redrive).contains("0 republished"), "{}", stdout(&redrive));
    let reconcile = Command::new(SCORER)
        .args([
            "reconcile",
            "--input-bucket",
            "in-b",
            "--output-bucket",
            "out-b",
            "--retry-seconds",
            "2",
        ])
        .env("STORAGE_EMULATOR_HOST", "127.0.0.1:1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = stderr(&reconcile);
    assert_eq!(reconcile.status.code(), Some(1), "{text}");
    assert!(text.contains("Cloud Storage request failed; retrying"), "{text}");
    assert!(
        !stdout(&reconcile).contains("has a committed manifest"),
        "{}",
        stdout(&reconcile)
    );
}
