//! Hostile requests on the online API: oversize, deeply nested and slow
//! bodies. The service answers each correctly and keeps serving others.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Server;

async fn valid_predict(server: &Server) -> Duration {
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(server.url("/predict"))
        .json(&json!({"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    started.elapsed()
}

#[tokio::test]
async fn slow_oversize_and_nested_bodies_do_not_stop_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[
            ("SETTLE_SECONDS", "3600"),
            ("BODY_TIMEOUT_SECONDS", "2"),
            ("MAX_BODY_BYTES", "1048576"),
        ],
    );
    server.ready().await;

    // Slow-loris: 200 connections promise a body and dribble it.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"fl")
            .await
            .unwrap();
        slow.push(s);
    }
    // Meanwhile everyone else is served promptly.
    for _ in 0..20 {
        let took = valid_predict(&server).await;
        assert!(
            took < Duration::from_secs(1),
            "a normal request took {took:?} under a slow-loris load"
        );
    }
    // The slow senders are cut off with 408 once the body time limit passes.
    let mut answer = String::new();
    let mut first = slow.remove(0);
    tokio::time::timeout(Duration::from_secs(10), first.read_to_string(&mut answer))
        .await
        .expect("a slow body must be timed out")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(slow);

    let client = reqwest::Client::new();
    let huge = client
        .post(server.url("/predict"))
        .body(vec![b'{'; (1 << 20) + 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let nested = format!("{{\"flights\": {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = client.post(server.url("/predict")).body(nested).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let nested_value = json!({"flights": [{"OPERA": serde_json::from_str::<serde_json::Value>(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap(), "TIPOVUELO": "N", "MES": 1}]});
    let r = client
        .post(server.url("/predict"))
        .json(&nested_value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let many: Vec<_> = (0..20_000)
        .map(|_| json!({"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 5}))
        .collect();
    let r = client
        .post(server.url("/predict"))
        .json(&json!({ "flights": many }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "over PREDICT_MAX_ROWS (10,000)");
    valid_predict(&server).await;
}
