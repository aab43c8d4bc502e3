//! A new user's first hour, item by item: no data lost to a typo, operator
//! tools that fail loudly, one reader for train and score, a strict online
//! API, errors that name paths, exit statuses as a contract, complete JSON,
//! logs as Cloud Logging reads them, and the local notifier's edges.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{SCORER, Server, data, find_files, scorer, stderr, stdout, train_args};

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
        cmd.args(train_args(source, &["--name", "scl-flight-delay", "--out", &out]))
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
    // reconcile never creates a bucket (see reconcile_never_creates_the_buckets_it_checks).
    std::fs::create_dir_all(d.join("buckets/output")).unwrap();
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
    // A key given twice is not decided silently by the last one; a bare
    // list is told how to wrap itself.
    let raw = |body: &'static str| {
        let url = server.url("/predict");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = raw(r#"{"instances": [{"OPERA": "A", "OPERA": "B", "HORA": 1}]}"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("feature `OPERA` is given twice in one row"), "{text}");
    let (status, text) = raw(r#"{"instances": [], "instances": [{"OPERA": "A", "HORA": 1}]}"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("`instances` is given twice"), "{text}");
    let (status, text) = raw(r#"[{"OPERA": "A", "HORA": 1}]"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#"wrap it in \"instances\""#), "{text}");
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

/// The shipped data with a leading `AÑO` column: a header whose first read
/// through a decoder, a pipe or gzip need not hold the whole line.
fn with_year_column(rows: usize) -> String {
    let plain = std::fs::read_to_string(data("scl_flights_2017.csv")).unwrap();
    let mut lines = plain.lines();
    let mut text = format!("AÑO,{}\n", lines.next().unwrap());
    for line in lines.take(rows) {
        text.push_str("2017,");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn encoded(text: &str, encoding: &str) -> Vec<u8> {
    match encoding {
        "utf-8" => text.as_bytes().to_vec(),
        "utf-8 BOM" => [b"\xef\xbb\xbf".as_slice(), text.as_bytes()].concat(),
        // Every character here is Latin-1, which Windows-1252 extends.
        "windows-1252" => text.chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect(),
        "utf-16le BOM" => [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        other => panic!("{other}"),
    }
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Runs `scorer ARGS` in `dir` with `stdin` as its standard input.
fn run_with_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(SCORER)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A refused run may close its standard input unread.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

/// Every encoding `score` reads times every delimiter, as a file, as gzip
/// and on standard input: `train` finds the same columns and fits the same
/// model (it used to sniff the delimiter from the first read only, and
/// found one column `AÑO;split;...` in a Windows-1252 `;` file).
#[test]
fn train_reads_every_encoding_and_delimiter_that_score_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = with_year_column(1500);
    let args = |data: &str, out: &str| -> Vec<String> {
        [
            "train",
            "--data",
            data,
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA,TIPOVUELO,MES",
            "--split-column",
            "split",
            "--name",
            "m",
            "--out",
            out,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let weights = |out: &str| -> Value {
        let artifact: Value = serde_json::from_slice(&std::fs::read(d.join(out)).unwrap()).unwrap();
        json!([artifact["features"], artifact["weights"], artifact["intercept"]])
    };
    let mut reference = None;
    for encoding in ["utf-8", "utf-8 BOM", "windows-1252", "utf-16le BOM"] {
        for (delimiter, dname) in [(",", "comma"), (";", "semicolon"), ("\t", "tab")] {
            let bytes = encoded(&text.replace(',', delimiter), encoding);
            let name = format!("{}-{dname}", encoding.replace(' ', "-"));
            std::fs::write(d.join(format!("{name}.csv")), &bytes).unwrap();
            std::fs::write(d.join(format!("{name}.csv.gz")), gzipped(&bytes)).unwrap();
            for source in ["file", "gzip", "stdin"] {
                let what = format!("{encoding} {dname} {source}");
                let out = format!("{name}-{source}.json");
                let data = match source {
                    "file" => format!("{name}.csv"),
                    "gzip" => format!("{name}.csv.gz"),
                    _ => "-".to_owned(),
                };
                let argv = args(&data, &out);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let run = run_with_stdin(d, &argv, if source == "stdin" { &bytes } else { b"" });
                assert!(run.status.success(), "{what}: {}", stderr(&run));
                let got = weights(&out);
                match &reference {
                    None => reference = Some(got),
                    Some(r) => assert_eq!(&got, r, "{what} fitted another model"),
                }
            }
            // And `score` reads the same file.
            let run = run_in(
                d,
                &["score", &format!("{name}.csv"), "--out", &format!("{name}.out.csv")],
            );
            assert!(run.status.success(), "score {encoding} {dname}: {}", stderr(&run));
        }
    }
}

/// `-` is standard input for an input and standard output for the one
/// primary output; anywhere else it is refused, never a file named `-`.
#[test]
fn a_dash_means_standard_input_or_output_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bad.csv"), SMALL).unwrap();
    std::fs::write(d.join("m.json"), std::fs::read(data("model.json")).unwrap()).unwrap();
    for args in [
        &["score", "bad.csv", "--out", "o.csv", "--errors", "-"][..],
        &["score", "bad.csv", "--out", "-", "--errors", "-"],
        &["score", "bad.csv", "--out", "o.csv", "--model", "-"],
    ] {
        let run = run_in(d, args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert!(
            stderr(&run).contains("-: `-` is standard input or output only"),
            "{}",
            stderr(&run)
        );
        assert!(stdout(&run).is_empty(), "{args:?} wrote predictions: {}", stdout(&run));
        assert!(!d.join("-").exists() && !d.join("o.csv").exists(), "{args:?}");
    }
    // `train --out -` writes the artifact to standard output, the summary
    // to standard error.
    let run = run_in(
        d,
        &[
            "train",
            "--data",
            "bad.csv",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA",
            "--test-fraction",
            "0",
            "--out",
            "-",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let artifact: Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&run)));
    assert_eq!(artifact["format"], "scorer-logreg/1");
    assert!(stderr(&run).contains("wrote standard output"), "{}", stderr(&run));
    assert!(!d.join("-").exists());
    // And what it wrote scores: read from a file, the input from stdin.
    std::fs::write(d.join("fitted.json"), &run.stdout).unwrap();
    let run = run_with_stdin(
        d,
        &[
            "score",
            "-",
            "--out",
            "-",
            "--errors",
            "rejected.csv",
            "--model",
            "fitted.json",
        ],
        SMALL.as_bytes(),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with("OPERA,TIPOVUELO,MES,atraso_15,probability,prediction\n"));
    assert!(!d.join("-").exists());
}

/// Standard input or output that is the input or an output file is refused
/// before anything is read, as `cat` refuses "input file is output file".
#[test]
fn standard_streams_that_are_the_input_or_the_output_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("m3.csv"), SMALL).unwrap();
    std::fs::write(d.join("m4.csv"), SMALL).unwrap();
    // scorer score - --out m3.csv < m3.csv
    let run = Command::new(SCORER)
        .args(["score", "-", "--out", "m3.csv"])
        .current_dir(d)
        .stdin(std::fs::File::open(d.join("m3.csv")).unwrap())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("input file is output file"), "{}", stderr(&run));
    assert_eq!(std::fs::read_to_string(d.join("m3.csv")).unwrap(), SMALL);
    // scorer score m4.csv --out - --errors e.csv >> m4.csv (with `>` the
    // shell has emptied it already; appending shows nothing was written).
    let append = std::fs::OpenOptions::new().append(true).open(d.join("m4.csv")).unwrap();
    let run = Command::new(SCORER)
        .args(["score", "m4.csv", "--out", "-", "--errors", "e.csv"])
        .current_dir(d)
        .stdout(append)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("input file is output file"), "{}", stderr(&run));
    assert_eq!(std::fs::read_to_string(d.join("m4.csv")).unwrap(), SMALL);
    // train --data - --out m3.csv < m3.csv
    let run = Command::new(SCORER)
        .args([
            "train",
            "--data",
            "-",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA",
            "--out",
            "m3.csv",
        ])
        .current_dir(d)
        .stdin(std::fs::File::open(d.join("m3.csv")).unwrap())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert_eq!(std::fs::read_to_string(d.join("m3.csv")).unwrap(), SMALL);
}

/// Wrong arguments are status 2 with words, a model that cannot be loaded
/// is status 1 however it fails, each naming the path once.
#[test]
fn directories_models_and_chunk_sizes_are_said_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), SMALL).unwrap();
    std::fs::create_dir(d.join("somedir")).unwrap();
    std::fs::write(d.join("notjson.json"), "hello").unwrap();
    let train = |out: &'static str| -> Vec<&'static str> {
        [
            "train",
            "--data",
            "in.csv",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA",
            "--out",
        ]
        .into_iter()
        .chain([out])
        .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["score", "in.csv", "--out", "somedir/"],
            2,
            "--out somedir/ is a directory",
        ),
        (
            vec!["score", "in.csv", "--out", "somedir"],
            2,
            "--out somedir is a directory",
        ),
        (vec!["score", "in.csv", "--out", "new/"], 2, "--out new/ is a directory"),
        (
            vec!["score", "in.csv", "--out", "o.csv", "--errors", "somedir"],
            2,
            "--errors somedir is a directory",
        ),
        (train("somedir/"), 2, "--out somedir/ is a directory"),
        (
            vec!["score", "somedir", "--out", "y.csv"],
            2,
            "the input somedir is a directory",
        ),
        (
            vec![
                "train",
                "--data",
                "somedir",
                "--target",
                "y",
                "--categorical",
                "x",
                "--out",
                "m.json",
            ],
            2,
            "the training data somedir is a directory",
        ),
        (
            vec!["score", "in.csv", "--out", "o.csv", "--model", "notjson.json"],
            1,
            "cannot load the model notjson.json: ",
        ),
        (
            vec!["score", "in.csv", "--out", "o.csv", "--model", "missing.json"],
            1,
            "cannot load the model missing.json: ",
        ),
        (
            vec!["score", "in.csv", "--out", "o.csv", "--chunk-mib", "0"],
            2,
            "--chunk-mib",
        ),
    ];
    for (args, code, says) in cases {
        let run = run_in(d, &args);
        let text = stderr(&run);
        assert_eq!(run.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        if let Some(at) = args.iter().position(|a| *a == "--model") {
            let path = args[at + 1];
            assert_eq!(
                text.matches(path).count(),
                1,
                "{args:?}: {path} named more than once: {text}"
            );
        }
        assert!(
            !text.contains("os error 20") && !text.contains("os error 21"),
            "{args:?}: {text}"
        );
        assert!(!d.join("o.csv").exists() && !d.join("y.csv").exists() && !d.join("new").exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Operator tools open local buckets as they are: a missing one is status
/// 1 naming its directory, and nothing is created.
#[test]
fn reconcile_never_creates_the_buckets_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::create_dir_all(d.join("buckets/input")).unwrap();
    std::fs::create_dir_all(d.join("buckets/output")).unwrap();
    for (args, says) in [
        (&["reconcile", "--local", "empty"][..], "empty/input does not exist"),
        (&["reconcile", "--local", "wrong/dir"], "wrong/dir"),
        (
            &["reconcile", "--local", "buckets", "--input-bucket", "typo"],
            "buckets/typo does not exist",
        ),
        (
            &["reconcile", "--local", "buckets", "--output-bucket", "typo"],
            "buckets/typo does not exist",
        ),
    ] {
        let run = run_in(d, args);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {}", stderr(&run));
        assert!(stderr(&run).contains(says), "{args:?}: {}", stderr(&run));
        assert!(!stdout(&run).contains("has a committed manifest"), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(d.join("empty")).unwrap().count(), 0);
    assert!(!d.join("wrong").exists() && !d.join("buckets/typo").exists());
}

/// Local reconcile reports what the local notifier would score: hidden and
/// temporary files are ignored by both.
#[test]
fn local_reconcile_ignores_what_the_local_notifier_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("b/input/sub")).unwrap();
    std::fs::create_dir_all(d.join("b/output")).unwrap();
    for name in [".hidden.csv", "a.csv.part", "b.csv.tmp", "c.csv~", ".dir/d.csv"] {
        let path = d.join("b/input").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, SMALL).unwrap();
    }
    let run = run_in(d, &["reconcile", "--local", "b"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", stdout(&run), stderr(&run));
    std::fs::write(d.join("b/input/sub/e.csv"), SMALL).unwrap();
    let run = run_in(d, &["reconcile", "--local", "b", "--json"]);
    assert_eq!(run.status.code(), Some(5), "{}", stderr(&run));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let names: Vec<&str> = report["unscored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sub/e.csv"]);
}

/// Missing Google credentials are said at once with what to do, not
/// retried as a transient failure; local mode has no Pub/Sub to publish to.
#[test]
fn missing_credentials_fail_fast_and_local_reconcile_cannot_publish() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &[
            "reconcile",
            "--input-bucket",
            "in-b",
            "--output-bucket",
            "out-b",
            "--retry-seconds",
            "60",
        ][..],
        &[
            "redrive",
            "--subscription",
            "projects/p/subscriptions/dead",
            "--topic",
            "projects/p/topics/main",
            "--retry-seconds",
            "60",
        ],
    ] {
        let started = std::time::Instant::now();
        let run = Command::new(SCORER)
            .args(args)
            .env("HOME", home.path())
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GCE_METADATA_HOST")
            .env_remove("STORAGE_EMULATOR_HOST")
            .env_remove("PUBSUB_EMULATOR_HOST")
            .output()
            .unwrap();
        let text = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains("gcloud auth application-default login"), "{text}");
        assert!(!text.contains("temporarily") && !text.contains("retrying"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::create_dir_all(dir.path().join("output")).unwrap();
    let run = run_in(
        dir.path(),
        &["reconcile", "--local", ".", "--publish", "projects/p/topics/t"],
    );
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("local mode has no Pub/Sub"), "{}", stderr(&run));
    assert!(stderr(&run).contains("touch"), "{}", stderr(&run));
}

/// Spawns `scorer ARGS` in `dir` with its standard output a pipe whose
/// reader takes `keep` bytes and goes away (with 0, is gone before the
/// command starts, as `| true` usually is).
fn with_early_closing_reader(dir: &Path, args: &[&str], keep: usize) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::new(SCORER);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    let mut child = if keep == 0 {
        drop(reader);
        let child = command.spawn().unwrap();
        drop(command);
        child
    } else {
        let child = command.spawn().unwrap();
        // This side's copy of the write end must go, or the pipe never ends.
        drop(command);
        let mut kept = vec![0; keep];
        let _ = reader.read_exact(&mut kept);
        drop(reader);
        child
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

/// A reader that goes away (`| head`, `| true`) ends the command quietly,
/// by SIGPIPE as it ends `cat`, never a panic; no temporary file is left.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("m2.csv"), SMALL).unwrap();
    let big = big_input(d, 8);
    std::fs::create_dir_all(d.join("b/input")).unwrap();
    std::fs::create_dir_all(d.join("b/output")).unwrap();
    std::fs::write(d.join("b/input/x.csv"), SMALL).unwrap();
    for (args, keep) in [
        (&["score", "m2.csv", "--out", "j.csv"][..], 0),
        (&["score", "m2.csv", "--out", "j.csv", "--json"], 0),
        (&["score", &big, "--out", "-", "--errors", "e.csv"], 600),
        (
            &[
                "train",
                "--data",
                "m2.csv",
                "--target",
                "atraso_15",
                "--categorical",
                "OPERA",
                "--out",
                "m.json",
            ],
            0,
        ),
        (&["reconcile", "--local", "b"], 0),
        (&["openapi"], 0),
    ] {
        let (status, err) = with_early_closing_reader(d, args, keep);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
        assert_eq!(status.signal(), Some(13), "{args:?}: {status:?}");
    }
    assert_no_temporaries(d);
}

/// `N` copies of the shipped data's rows in one file; its name.
fn big_input(dir: &Path, copies: usize) -> String {
    let plain = std::fs::read_to_string(data("scl_flights_2017.csv")).unwrap();
    let (header, rows) = plain.split_once('\n').unwrap();
    let mut text = String::with_capacity(rows.len() * copies + header.len() + 1);
    text.push_str(header);
    text.push('\n');
    for _ in 0..copies {
        text.push_str(rows);
    }
    std::fs::write(dir.join("big.csv"), text).unwrap();
    "big.csv".to_owned()
}

fn assert_no_temporaries(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Ctrl-C (or SIGTERM) in the middle of a run removes the temporary file
/// and creates no output: status 130 (143 for SIGTERM), as a shell reports.
#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = big_input(d, 40);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let mut child = Command::new(SCORER)
            .args(["score", &big, "--out", "big.out.csv"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once the temporary file exists the run is under way (it is
        // created before the first byte is read).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_dir(d)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        {
            assert!(std::time::Instant::now() < deadline, "no temporary file appeared");
            assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
            std::thread::sleep(Duration::from_millis(2));
        }
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {}", stderr(&out));
        assert_no_temporaries(d);
        assert!(!d.join("big.out.csv").exists(), "SIG{signal}: the target was created");
    }
}

/// The explanation column lists the largest contribution first, as
/// docs/CLI.md shows it; a model trained without --name gets the data
/// file's name, so `score` never says "model model".
#[test]
fn explanations_and_model_names_read_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("one.csv"), "OPERA,TIPOVUELO,MES\nGrupo LATAM,I,7\n").unwrap();
    let run = run_in(
        d,
        &["score", "one.csv", "--out", "-", "--errors", "e.csv", "--explain", "2"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let explanation = stdout(&run)
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .to_owned();
    let doc = std::fs::read_to_string(crate::harness::repo_root().join("docs/CLI.md")).unwrap();
    assert!(
        doc.contains(&format!("`Grupo LATAM,I,7` gives `{explanation}`")),
        "docs/CLI.md should show the real explanation {explanation:?}"
    );
    std::fs::write(d.join("flights.csv"), SMALL).unwrap();
    let run = run_in(
        d,
        &[
            "train",
            "--data",
            "flights.csv",
            "--target",
            "atraso_15",
            "--categorical",
            "OPERA,TIPOVUELO",
            "--test-fraction",
            "0",
            "--out",
            "m.json",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let run = run_in(d, &["score", "flights.csv", "--out", "o.csv", "--model", "m.json"]);
    let text = stdout(&run);
    assert!(text.contains("; model flights sha256:"), "{text}");
    assert!(!text.contains("model model"), "{text}");
}
