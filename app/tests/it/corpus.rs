//! Hostile and broken inputs, tried systematically: each case with the
//! outcome it must have. Files go through `scorer score`; envelopes and odd
//! object names through the real service.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{SCORER, Server, find_files};

const HEADER: &str = "OPERA,TIPOVUELO,MES";

enum Expect {
    /// Scored, with this many rows scored and rejected.
    Scored(u64, u64),
    /// The file fails as a whole with a message containing this.
    Failed(&'static str),
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn rows(n: usize) -> String {
    let mut s = format!("{HEADER}\n");
    for i in 0..n {
        s.push_str(["Grupo LATAM,I,3\n", "Sky Airline,N,12\n", "Copa Air,I,7\n"][i % 3]);
    }
    s
}

fn file_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut truncated = gzip(rows(5000).as_bytes());
    truncated.truncate(truncated.len() / 2);
    let mut utf16 = vec![0xff, 0xfe];
    for unit in rows(2).encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    vec![
        ("empty", vec![], Expect::Failed("the file is empty")),
        (
            "header only",
            format!("{HEADER}\n").into_bytes(),
            Expect::Failed("no data rows"),
        ),
        (
            "header only without newline",
            HEADER.as_bytes().to_vec(),
            Expect::Failed("no data rows"),
        ),
        (
            "only blank lines after the header",
            format!("{HEADER}\n\n\r\n\n").into_bytes(),
            Expect::Failed("no data rows"),
        ),
        (
            "binary (NUL bytes)",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec(),
            Expect::Failed("binary data"),
        ),
        (
            "random non-UTF-8 bytes",
            (0..2000u32)
                .map(|i| (i * 7919 % 251 + 1) as u8)
                .filter(|b| *b != b'\n')
                .collect(),
            Expect::Failed("missing required column"),
        ),
        (
            "missing column",
            b"OPERA,MES\nGrupo LATAM,3\n".to_vec(),
            Expect::Failed("missing required column TIPOVUELO"),
        ),
        (
            "a model column twice",
            b"OPERA,TIPOVUELO,MES,MES\nGrupo LATAM,I,3,4\n".to_vec(),
            Expect::Failed("\"MES\" appears more than once"),
        ),
        (
            "duplicate other column names",
            b"x,OPERA,x,TIPOVUELO,MES\n1,Grupo LATAM,2,I,3\n".to_vec(),
            Expect::Scored(1, 0),
        ),
        ("truncated gzip", truncated, Expect::Failed("cannot be decoded")),
        ("gzip", gzip(rows(10).as_bytes()), Expect::Scored(10, 0)),
        (
            "UTF-8 byte-order mark",
            [b"\xef\xbb\xbf".as_slice(), rows(3).as_bytes()].concat(),
            Expect::Scored(3, 0),
        ),
        (
            "CRLF line ends",
            rows(3).replace('\n', "\r\n").into_bytes(),
            Expect::Scored(3, 0),
        ),
        (
            "semicolons (Excel, Spanish locale)",
            rows(3).replace(',', ";").into_bytes(),
            Expect::Scored(3, 0),
        ),
        (
            "Latin-1 header",
            b"A\xd1O,OPERA,TIPOVUELO,MES\n2017,Grupo LATAM,I,3\n".to_vec(),
            Expect::Scored(1, 0),
        ),
        ("UTF-16 with BOM", utf16, Expect::Scored(2, 0)),
        (
            "invalid UTF-8 in one row of a UTF-8 file",
            [
                rows(3).as_bytes(),
                "Sky Airline,N,4\n".repeat(30_000).as_bytes(),
                b"Grupo LATAM,I,3,\xff\xfe\n".as_slice(),
                b"Copa Air,I,7\n",
            ]
            .concat(),
            Expect::Scored(30_004, 1),
        ),
        (
            "quoted fields with delimiters, quotes and newlines",
            b"OPERA,TIPOVUELO,MES,note\n\"Grupo LATAM\",I,3,\"a, \"\"b\"\"\nc\"\n".to_vec(),
            Expect::Scored(1, 0),
        ),
        (
            "ragged rows",
            format!("{HEADER},x\nGrupo LATAM,I,3,a\nGrupo LATAM,I\nGrupo LATAM,I,3,a,b\n").into_bytes(),
            Expect::Scored(1, 2),
        ),
        (
            "a short row and a long row whose delimiters add up",
            format!("{HEADER},x,y\nGrupo LATAM,I,3,a,b\nGrupo LATAM,I,3,a\nSky Airline,N,4,a,b,c\n").into_bytes(),
            Expect::Scored(1, 2),
        ),
        (
            "unterminated quote at the end",
            format!("{HEADER}\nGrupo LATAM,I,3\n\"Sky Airline,N,4\n").into_bytes(),
            Expect::Scored(1, 1),
        ),
        (
            "stray quote inside a field",
            format!("{HEADER},x\nGrupo LATAM,I,3,5\"\nSky Airline,N,4,y\n").into_bytes(),
            Expect::Scored(2, 0),
        ),
        (
            "unknown values, padded values, decimals",
            format!("{HEADER}\nNowhere,I,3\nGrupo LATAM, I,3\nGrupo LATAM,I,3.0\nGrupo LATAM,I,3\n").into_bytes(),
            Expect::Scored(1, 3),
        ),
        (
            "no final newline",
            format!("{HEADER}\nGrupo LATAM,I,3").into_bytes(),
            Expect::Scored(1, 0),
        ),
        (
            "trailing empty header column",
            b"OPERA,TIPOVUELO,MES,\nGrupo LATAM,I,3,\n".to_vec(),
            Expect::Scored(1, 0),
        ),
        (
            "a thousand columns",
            {
                let extra: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
                let values: Vec<&str> = (0..1000).map(|_| "v").collect();
                format!("{HEADER},{}\nGrupo LATAM,I,3,{}\n", extra.join(","), values.join(",")).into_bytes()
            },
            Expect::Scored(1, 0),
        ),
    ]
}

#[test]
fn broken_and_hostile_files_each_get_their_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let cases = file_cases();
    assert!(cases.len() >= 25);
    for (i, (name, bytes, expect)) in cases.into_iter().enumerate() {
        let input = dir.path().join(format!("case{i}.csv"));
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path().join(format!("case{i}.out.csv"));
        let run = Command::new(SCORER)
            .args([
                "score",
                input.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        match expect {
            Expect::Scored(scored, rejected) => {
                assert!(run.status.success(), "{name}: {stderr}");
                let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
                assert_eq!(
                    (summary["rows_scored"].as_u64(), summary["rows_rejected"].as_u64()),
                    (Some(scored), Some(rejected)),
                    "{name}: {summary}"
                );
                let errors = dir.path().join(format!("case{i}.out.errors.csv"));
                assert_eq!(
                    errors.exists(),
                    rejected > 0,
                    "{name}: errors file iff rows were rejected"
                );
            }
            Expect::Failed(message) => {
                assert_eq!(run.status.code(), Some(3), "{name}: {stderr}");
                // With --json, the failure is JSON on standard error.
                let failure: Value =
                    serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stderr}"));
                let error = failure["error"].as_str().unwrap_or_default();
                assert!(error.contains(message), "{name}: {error:?} lacks {message:?}");
                assert!(!out.exists(), "{name}: no partial output");
            }
        }
    }
}

/// A 1 GiB record streams past without being held: it is rejected, the rows
/// around it are scored, and memory stays small.
#[test]
fn a_one_gibibyte_line_is_rejected_without_being_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let mut child = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%M",
            SCORER,
            "score",
            "-",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU time (/usr/bin/time) is needed: apt-get install time");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(format!("{HEADER},blob\nGrupo LATAM,I,3,a\nSky Airline,N,4,").as_bytes())
            .unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..1024 {
            stdin.write_all(&block).unwrap();
        }
        stdin.write_all(b"\nCopa Air,I,7,b\n").unwrap();
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (summary["rows_scored"].as_u64(), summary["rows_rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let errors = std::fs::read_to_string(dir.path().join("out.errors.csv")).unwrap();
    assert!(errors.contains("\n3,2,,,\"record is 1073741"), "{errors}");
    let peak_kib: u64 = stderr.trim().lines().last().unwrap().trim().parse().unwrap();
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB for a 1 GiB line");
}

fn envelope(name: &str, generation: i64) -> Value {
    scorer::event::notification::Notification::finalize("input", name, generation)
        .size(10)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("1", "projects/p/subscriptions/s")
}

#[tokio::test]
async fn hostile_envelopes_and_object_names_each_get_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(input.join("dir")).unwrap();
    for name in ["a%2Fb.csv", "vuelos-año-ñandú.csv", "dir/ok.csv"] {
        std::fs::write(input.join(name), format!("{HEADER}\nGrupo LATAM,I,3\n")).unwrap();
    }
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[("SETTLE_SECONDS", "3600"), ("MAX_BODY_BYTES", "65536")],
    );
    server.ready().await;
    let client = reqwest::Client::new();
    let generation = |name: &str| {
        scorer::storage::local::generation_of(std::fs::metadata(input.join(name)).unwrap().modified().ok())
    };
    let mut wrong_type = envelope("dir/ok.csv", 1);
    wrong_type["message"]["attributes"]["objectGeneration"] = json!(17);
    let mut deep = String::new();
    for _ in 0..10_000 {
        deep.push('[');
    }
    let bodies: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("not JSON", b"hello".to_vec(), 400, None),
        ("empty body", vec![], 400, None),
        ("a JSON list", b"[]".to_vec(), 400, None),
        ("no message", br#"{"subscription": "s"}"#.to_vec(), 400, None),
        (
            "message without attributes or data",
            br#"{"message": {"messageId": "1"}}"#.to_vec(),
            400,
            None,
        ),
        (
            "attribute of the wrong type",
            serde_json::to_vec(&wrong_type).unwrap(),
            400,
            None,
        ),
        ("deeply nested JSON", deep.into_bytes(), 400, None),
        ("huge body", vec![b' '; 100_000], 413, None),
        // Names no local file can have: reported as failed under a hashed
        // output prefix, never a path outside the bucket.
        (
            "name with ..",
            serde_json::to_vec(&envelope("x/../../etc/passwd.csv", 5)).unwrap(),
            200,
            Some("failed"),
        ),
        (
            "name with a control character",
            serde_json::to_vec(&envelope("bell\u{7}.csv", 5)).unwrap(),
            200,
            Some("failed"),
        ),
        (
            "name longer than a file name may be",
            serde_json::to_vec(&envelope(&format!("{}.csv", "n".repeat(1010)), 5)).unwrap(),
            200,
            Some("failed"),
        ),
        (
            "object that vanished",
            serde_json::to_vec(&envelope("never-existed.csv", 5)).unwrap(),
            200,
            Some("failed"),
        ),
        (
            "percent-encoded slash in the name",
            serde_json::to_vec(&envelope("a%2Fb.csv", generation("a%2Fb.csv"))).unwrap(),
            200,
            Some("scored"),
        ),
        (
            "unicode name",
            serde_json::to_vec(&envelope("vuelos-año-ñandú.csv", generation("vuelos-año-ñandú.csv"))).unwrap(),
            200,
            Some("scored"),
        ),
        (
            "object in a folder",
            serde_json::to_vec(&envelope("dir/ok.csv", generation("dir/ok.csv"))).unwrap(),
            200,
            Some("scored"),
        ),
    ];
    for (name, body, status, outcome) in bodies {
        let response = client
            .post(server.url("/"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        if let Some(outcome) = outcome {
            let reply: Value = response.json().await.unwrap();
            assert_eq!(reply["outcome"], outcome, "{name}: {reply}");
        }
    }
    let out = dir.path().join("output");
    assert_eq!(find_files(&out, "manifest.json").len(), 7);
    assert_eq!(find_files(&out.join("_by-hash"), "manifest.json").len(), 3);
    assert!(out.join("never-existed.csv/5/manifest.json").is_file());
    assert!(
        out.join("a%2Fb.csv").is_dir() && out.join("vuelos-año-ñandú.csv").is_dir() && out.join("dir/ok.csv").is_dir()
    );
    assert!(!dir.path().join("etc").exists());
    assert_eq!(reqwest::get(server.url("/health")).await.unwrap().status(), 200);
}
