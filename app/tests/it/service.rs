//! The real service (`scorer serve --local`) on a free port: the push
//! contract, the online API, the local notifier, shutdown.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, eventually, find_files};

/// The envelope Pub/Sub pushes for a file in DIR/input.
fn envelope_for(dir: &Path, name: &str) -> Value {
    let md = std::fs::metadata(dir.join("input").join(name)).unwrap();
    let generation = scorer::storage::local::generation_of(md.modified().ok());
    scorer::event::notification::Notification::finalize("input", name, generation)
        .size(md.len())
        .time("2026-01-01T00:00:00Z")
        .push_envelope("1", "projects/p/subscriptions/s")
}

fn local_server(dir: &Path, env: &[(&str, &str)]) -> Server {
    // A settle time far beyond the test keeps the notifier out of the way:
    // these tests push by hand.
    let mut all = vec![("SETTLE_SECONDS", "3600")];
    all.extend_from_slice(env);
    Server::start(&["--local", dir.to_str().unwrap()], &all)
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_ready_and_the_challenge_api_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[("PREDICT_MAX_ROWS", "5"), ("MAX_BODY_BYTES", "4096")]);
    server.ready().await;
    let client = reqwest::Client::new();
    let health: Value = client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "OK"}));

    let (status, body) = post(
        &server.url("/predict"),
        &json!({"flights": [{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predict"].as_array().unwrap().len(), 1);
    assert!(body["predict"][0] == 0 || body["predict"][0] == 1);
    assert!(body["model_version"].as_str().unwrap().starts_with("sha256:"));

    let cases = [
        (
            json!({"flights": [{"OPERA": "Argentinas", "TIPOVUELO": "N", "MES": 3}]}),
            "OPERA",
            "Argentinas",
        ),
        (
            json!({"flights": [{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "O", "MES": 3}]}),
            "TIPOVUELO",
            "\"O\"",
        ),
        (
            json!({"flights": [{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 13}]}),
            "MES",
            "\"13\"",
        ),
        (
            json!({"flights": [{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 0}]}),
            "MES",
            "\"0\"",
        ),
        (
            json!({"flights": [{"OPERA": "Aerolineas Argentinas", "MES": 3}]}),
            "TIPOVUELO",
            "missing",
        ),
        (json!({"flights": []}), "flights", "empty"),
        (json!({"nope": 1}), "", "unknown field"),
    ];
    for (request, field, value) in cases {
        let (status, body) = post(&server.url("/predict"), &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(field) && detail.contains(value), "{request}: {detail}");
    }
    let not_json = client
        .post(server.url("/predict"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    let six: Vec<Value> = (0..6)
        .map(|_| json!({"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1}))
        .collect();
    let (status, body) = post(&server.url("/predict"), &json!({ "flights": six })).await;
    assert_eq!(status, 413, "{body}");
    let big = client
        .post(server.url("/predict"))
        .body(vec![b' '; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);

    let openapi: Value = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/predict"].is_object());
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("scorer_http_responses_total"), "{metrics}");
}

#[tokio::test]
async fn a_push_scores_once_and_a_redelivery_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input/sub")).unwrap();
    std::fs::copy(
        crate::harness::data("scl_flights_2017.csv"),
        dir.path().join("input/sub/flights.csv"),
    )
    .unwrap();
    let server = local_server(dir.path(), &[]);
    server.ready().await;
    let envelope = envelope_for(dir.path(), "sub/flights.csv");
    let (status, body) = post(&server.url("/"), &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "scored");
    let manifests = find_files(&dir.path().join("output"), "manifest.json");
    assert_eq!(manifests.len(), 1);
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(manifest["status"], "scored");
    assert_eq!(manifest["rows"]["scored"], 68206);
    assert_eq!(
        manifest["input"]["generation"],
        envelope["message"]["attributes"]["objectGeneration"]
    );
    let predictions = manifest["outputs"]["predictions"]["uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_owned();
    let bytes = std::fs::read(&predictions).unwrap();
    assert_eq!(
        format!("{:08x}", crc32c::crc32c(&bytes)),
        manifest["outputs"]["predictions"]["crc32c"]
    );

    let (status, body) = post(&server.url("/"), &envelope).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(find_files(&dir.path().join("output"), "predictions.csv").len(), 1);
    let summaries = server.logs_matching(2, |l| l["message"] == "job summary").await;
    let outcomes: Vec<&str> = summaries.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["scored", "duplicate"], "{summaries:?}");
    assert_eq!(summaries[0]["rows_scored"], 68206);
    assert_eq!(summaries[0]["severity"], "INFO");
}

#[tokio::test]
async fn twenty_concurrent_deliveries_make_one_output_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::copy(
        crate::harness::data("scl_flights_2017.csv"),
        dir.path().join("input/f.csv"),
    )
    .unwrap();
    let server = local_server(dir.path(), &[]);
    server.ready().await;
    let envelope = envelope_for(dir.path(), "f.csv");
    let url = server.url("/");
    let answers = futures::future::join_all((0..20).map(|_| {
        let url = url.clone();
        let envelope = envelope.clone();
        async move { post(&url, &envelope).await }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(
        answers.iter().filter(|(_, b)| b["outcome"] == "duplicate").count(),
        19,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(_, b)| b["outcome"] == "scored").count(),
        1,
        "{answers:?}"
    );
    let out = dir.path().join("output");
    assert_eq!(find_files(&out, "manifest.json").len(), 1);
    assert_eq!(find_files(&out, "predictions.csv").len(), 1);
    assert!(find_files(&out, "predictions.2.csv").is_empty());
}

#[tokio::test]
async fn events_that_are_not_work_are_acknowledged_and_bad_envelopes_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/notes.txt"), "hello").unwrap();
    std::fs::write(dir.path().join("input/bad.csv"), "OPERA,MES\nx,1\n").unwrap();
    std::fs::write(dir.path().join("input/gone.csv"), "OPERA,TIPOVUELO,MES\n").unwrap();
    let server = local_server(dir.path(), &[]);
    server.ready().await;
    let url = server.url("/");

    let mut other_bucket = envelope_for(dir.path(), "bad.csv");
    other_bucket["message"]["attributes"]["bucketId"] = json!("someone-else");
    other_bucket["message"].as_object_mut().unwrap().remove("data");
    let mut delete = envelope_for(dir.path(), "bad.csv");
    delete["message"]["attributes"]["eventType"] = json!("OBJECT_DELETE");
    for (envelope, reason) in [
        (other_bucket, "not the input bucket"),
        (delete, "OBJECT_DELETE"),
        (envelope_for(dir.path(), "notes.txt"), "not a .csv"),
    ] {
        let (status, body) = post(&url, &envelope).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("ignored")), "{body}");
        assert!(body["detail"].as_str().unwrap().contains(reason), "{body}");
    }

    let mut garbage = envelope_for(dir.path(), "bad.csv");
    garbage["message"]["data"] = json!("@@@ not base64 @@@");
    for body in [garbage, json!({"hello": "world"})] {
        let (status, reply) = post(&url, &body).await;
        assert_eq!(status, 400, "{reply}");
    }

    // A bad file is acknowledged and reported in the output bucket.
    let (status, body) = post(&url, &envelope_for(dir.path(), "bad.csv")).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("failed")), "{body}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(&find_files(&dir.path().join("output"), "manifest.json")[0]).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "failed");
    assert!(
        manifest["failure"]
            .as_str()
            .unwrap()
            .contains("missing required column TIPOVUELO"),
        "{manifest}"
    );
    let errors = std::fs::read_to_string(
        manifest["outputs"]["errors"]["uri"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://"),
    )
    .unwrap();
    assert!(errors.contains("missing required column TIPOVUELO"), "{errors}");
    assert!(manifest["outputs"]["predictions"].is_null());

    // An event whose generation no longer exists is acknowledged with a
    // failure report saying so.
    let mut stale = envelope_for(dir.path(), "gone.csv");
    stale["message"]["attributes"]["objectGeneration"] = json!("12345");
    stale["message"].as_object_mut().unwrap().remove("data");
    let (status, body) = post(&url, &stale).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("failed")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no longer exists"), "{body}");
    assert!(dir.path().join("output/gone.csv/12345/manifest.json").is_file());

    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200, "still serving");
}

#[tokio::test]
async fn the_local_notifier_turns_a_renamed_file_into_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--local", dir.path().to_str().unwrap()], &[("SETTLE_SECONDS", "0.2")]);
    server.ready().await;
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    // Written in place: picked up once its size and time settle.
    std::fs::write(input.join("settled.csv"), "OPERA,TIPOVUELO,MES\nGrupo LATAM,I,3\n").unwrap();
    // Written elsewhere, renamed in: picked up at once.
    std::fs::write(dir.path().join("staging.csv"), "OPERA,TIPOVUELO,MES\nSky Airline,N,7\n").unwrap();
    std::fs::rename(dir.path().join("staging.csv"), input.join("renamed.csv")).unwrap();
    // Hidden and temporary files are never work.
    std::fs::write(input.join(".hidden.csv"), "x").unwrap();
    std::fs::write(input.join("upload.csv.part"), "x").unwrap();
    let out = dir.path().join("output");
    eventually(Duration::from_secs(30), || {
        (find_files(&out, "manifest.json").len() == 2).then_some(())
    })
    .await;
    for name in ["settled.csv", "renamed.csv"] {
        assert!(out.join(name).is_dir(), "{name} has no outputs");
    }
    assert!(!out.join(".hidden.csv").exists() && !out.join("upload.csv.part").exists());
    let status = server.terminate();
    assert!(status.success(), "SIGTERM must end in exit 0, got {status}");
}

#[tokio::test]
async fn pushes_need_a_token_when_an_audience_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/a.csv"), "OPERA,TIPOVUELO,MES\n").unwrap();
    let server = local_server(
        dir.path(),
        &[
            ("PUSH_AUDIENCE", "scorer-push"),
            ("PUSH_JWKS_URL", "http://127.0.0.1:9/none"),
        ],
    );
    server.ready().await;
    let (status, body) = post(&server.url("/"), &envelope_for(dir.path(), "a.csv")).await;
    assert_eq!(status, 401, "{body}");
    assert!(find_files(&dir.path().join("output"), "manifest.json").is_empty());
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_with_its_name() {
    let out = std::process::Command::new(crate::harness::SCORER)
        .args(["serve"])
        .env("INPUT_BUCKET", "same-bucket")
        .env("OUTPUT_BUCKET", "same-bucket")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("OUTPUT_BUCKET") && text.contains("must differ"), "{text}");
    // On Cloud Run, large files cannot go to child processes of the instance.
    let out = std::process::Command::new(crate::harness::SCORER)
        .args(["serve"])
        .env("INPUT_BUCKET", "in-bucket")
        .env("OUTPUT_BUCKET", "out-bucket")
        .env("K_SERVICE", "scorer")
        .env("PUSH_AUTH", "off")
        .env("SHARD_JOB", "local")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("SHARD_JOB") && text.contains("Cloud Run stops at will"),
        "{text}"
    );
}

#[tokio::test]
async fn a_model_fitted_at_start_is_kept_and_named_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::harness::data("scl_flights_2017.csv");
    let server = Server::start(
        &["--local", dir.path().to_str().unwrap()],
        &[
            ("SETTLE_SECONDS", "3600"),
            ("TRAINING_DATA_URI", data.to_str().unwrap()),
        ],
    );
    server.ready().await;
    let ready: Value = reqwest::get(server.url("/ready")).await.unwrap().json().await.unwrap();
    let version = ready["model_version"].as_str().unwrap().to_owned();
    // Same data and settings as the shipped artifact: the same model.
    let shipped = scorer::model::Model::default_model().unwrap();
    let fitted_path = dir
        .path()
        .join("output/_models/scl-flight-delay")
        .join(format!("{}.json", version.trim_start_matches("sha256:")));
    let fitted = scorer::model::Model::from_json(&std::fs::read(&fitted_path).unwrap()).unwrap();
    assert_eq!(fitted.version(), version, "the kept artifact is the one in use");
    assert_eq!(fitted.artifact().features, shipped.artifact().features);

    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/a.csv"), "OPERA,TIPOVUELO,MES\nGrupo LATAM,I,3\n").unwrap();
    let (status, _) = post(&server.url("/"), &envelope_for(dir.path(), "a.csv")).await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&find_files(&dir.path().join("output/a.csv"), "manifest.json")[0]).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["model"]["version"], version.as_str());
}

#[tokio::test]
async fn an_unloadable_model_stops_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::SCORER)
        .args(["serve", "--local", dir.path().to_str().unwrap()])
        .env("PORT", "0")
        .env("MODEL_URI", "/nonexistent/model.json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("MODEL_URI=/nonexistent/model.json"), "{text}");
}

#[tokio::test]
async fn api_keys_explanations_and_the_generic_form() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[("PREDICT_API_KEYS", "k-one, k-two")]);
    server.ready().await;
    let client = reqwest::Client::new();
    let body = json!({"instances": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 12}], "explain": 2});
    let without = client.post(server.url("/predict")).json(&body).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = client
        .post(server.url("/predict"))
        .header("x-api-key", "k-three")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .post(server.url("/predict"))
        .header("x-api-key", "k-two")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let answer: Value = right.json().await.unwrap();
    let parts = answer["explanations"][0].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0]["contribution"].as_f64().unwrap().abs() >= parts[1]["contribution"].as_f64().unwrap().abs());
    // Health and readiness stay open: Cloud Run and load balancers probe them.
    assert_eq!(client.get(server.url("/ready")).send().await.unwrap().status(), 200);
}

/// One image, two services: each role serves its own routes, and a predict
/// instance needs no input bucket nor push authentication, even on Cloud Run.
#[tokio::test]
async fn each_role_serves_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let push = local_server(dir.path(), &[("SERVICE_ROLE", "push")]);
    let predict = Server::start(
        &["--output-bucket", "out-b", "--local", dir.path().to_str().unwrap()],
        &[("SERVICE_ROLE", "predict"), ("K_SERVICE", "scorer-predict")],
    );
    push.ready().await;
    predict.ready().await;
    let flight = json!({"instances": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]});
    let envelope = json!({"message": {"messageId": "1", "attributes": {}}});
    assert_eq!(post(&push.url("/predict"), &flight).await.0, 404);
    assert_eq!(post(&push.url("/"), &envelope).await.0, 400, "the push route is there");
    assert_eq!(post(&predict.url("/predict"), &flight).await.0, 200);
    assert_eq!(post(&predict.url("/"), &envelope).await.0, 404);
    for server in [&push, &predict] {
        let health = reqwest::get(server.url("/health")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
}

/// `GET /status` answers what `scorer status --json` prints: waiting
/// before a push, scored after it (with the manifest), an earlier
/// generation marked as no longer current, 404 for an object that is not
/// there and 400 for a name that is not one.
#[tokio::test]
async fn status_says_where_one_input_stands_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[]);
    server.ready().await;
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/a.csv"), "OPERA,TIPOVUELO,MES\nGrupo LATAM,I,3\n").unwrap();
    let get = |query: &'static str| {
        let url = server.url(&format!("/status?{query}"));
        async move {
            let r = reqwest::get(url).await.unwrap();
            let code = r.status().as_u16();
            (code, r.text().await.unwrap())
        }
    };
    let (code, body) = get("object=a.csv").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["current"].as_bool()),
        (Some("waiting"), Some(true)),
        "{v}"
    );

    let (status, _) = post(&server.url("/"), &envelope_for(dir.path(), "a.csv")).await;
    assert_eq!(status, 200);
    let (code, body) = get("object=a.csv").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "scored", "{v}");
    assert_eq!(v["manifest"]["rows"]["scored"], 1, "{v}");
    assert!(
        v["manifest_uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with("manifest.json"),
        "{v}"
    );

    let (code, body) = get("object=a.csv&generation=1").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["current"].as_bool()),
        (Some("waiting"), Some(false)),
        "{v}"
    );
    assert_eq!(get("object=missing.csv").await.0, 404);
    assert_eq!(get("object=a.csv&generation=-4").await.0, 400);
}
