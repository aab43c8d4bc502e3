//! The scorer as part of a data platform, on the emulator chain: Parquet
//! predictions that a downstream consumer (DuckDB, pyarrow) reads, a
//! BigQuery load job per committed file (against a stand-in of the BigQuery
//! API), and one message per commit on a results topic (Google's Pub/Sub
//! emulator).
//!
//! The BigQuery stand-in assumes of the real API what its documentation
//! says and cannot be checked here: `jobs.insert` is a POST of the job to
//! `/bigquery/v2/projects/P/jobs`, a job id already used in the project is
//! refused with 409 ALREADY_EXISTS, and `jobs.get` returns the job as
//! inserted. What the request must hold (table, URIs, format, append) is
//! asserted on what the service really sent.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::cloud::{PROJECT, chain, manifest_of};
use crate::harness::{SCORER, data};
use crate::support::gsutil_cp;
use crate::support::pubsub::message_data;

/// The jobs BigQuery was asked to insert, as sent, and the answers.
#[derive(Clone, Default)]
struct BigQueryStandIn {
    inserts: Arc<Mutex<Vec<Value>>>,
    jobs: Arc<Mutex<HashMap<String, Value>>>,
}

impl BigQueryStandIn {
    /// Serves on a free port of 127.0.0.1; returns the endpoint.
    async fn start(&self) -> String {
        async fn insert(
            State(s): State<BigQueryStandIn>,
            Path(project): Path<String>,
            Json(job): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            s.inserts.lock().unwrap().push(job.clone());
            let id = job["jobReference"]["jobId"].as_str().unwrap_or_default().to_owned();
            let mut jobs = s.jobs.lock().unwrap();
            if jobs.contains_key(&id) {
                let error = json!({"error": {"code": 409, "status": "ALREADY_EXISTS",
                    "message": format!("Already Exists: Job {project}:{id}")}});
                return (StatusCode::CONFLICT, Json(error));
            }
            let mut stored = job.clone();
            stored["status"] = json!({"state": "RUNNING"});
            stored["id"] = json!(format!("{project}:{id}"));
            jobs.insert(id, stored.clone());
            (StatusCode::OK, Json(stored))
        }
        async fn get_job(
            State(s): State<BigQueryStandIn>,
            Path((_, id)): Path<(String, String)>,
        ) -> (StatusCode, Json<Value>) {
            match s.jobs.lock().unwrap().get(&id) {
                Some(job) => (StatusCode::OK, Json(job.clone())),
                None => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": {"code": 404, "status": "NOT_FOUND"}})),
                ),
            }
        }
        let app = Router::new()
            .route("/bigquery/v2/projects/{project}/jobs", post(insert))
            .route("/bigquery/v2/projects/{project}/jobs/{id}", get(get_job))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        endpoint
    }

    fn inserts(&self) -> Vec<Value> {
        self.inserts.lock().unwrap().clone()
    }
}

/// The Python that reads Parquet as a consumer would (set by .ci/tools.sh).
fn consumer_python() -> String {
    std::env::var("SCORER_CONSUMER_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SCORER_CONSUMER_PYTHON is not set: run the tests through ./test.sh, which installs DuckDB and \
             pyarrow (.ci/tools.sh), or set it to a Python with `pip install duckdb pyarrow`"
        )
    })
}

/// Runs `script` (with the Parquet file as argv[1]) and returns its stdout as JSON.
fn consume(parquet: &std::path::Path, script: &str) -> Value {
    let run = Command::new(consumer_python())
        .args(["-c", script, parquet.to_str().unwrap()])
        .output()
        .expect("the consumer's Python runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).expect("JSON from the consumer")
}

const DUCKDB: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
rows = con.execute(
    "SELECT row_number, probability, prediction, OPERA, source_uri, source_generation, model_version, "
    "typeof(scored_at) FROM read_parquet(?) ORDER BY row_number", [sys.argv[1]]).fetchall()
print(json.dumps({"rows": [[r[0], repr(r[1]), r[2], r[3]] for r in rows],
                  "source_uri": sorted({r[4] for r in rows}), "source_generation": sorted({r[5] for r in rows}),
                  "model_version": sorted({r[6] for r in rows}), "scored_at_type": sorted({r[7] for r in rows})}))
"#;

const PYARROW: &str = r#"
import json, sys, pyarrow.parquet as pq
f = pq.ParquetFile(sys.argv[1])
schema = {field.name: str(field.type) for field in f.schema_arrow}
print(json.dumps({"row_groups": f.num_row_groups, "rows": f.metadata.num_rows, "schema": schema,
                  "compression": f.metadata.row_group(0).column(0).compression}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_predictions_load_into_bigquery_once_and_are_announced() {
    let bigquery = BigQueryStandIn::default();
    let endpoint = bigquery.start().await;
    let table = format!("{PROJECT}.flights.predictions");
    let topic = format!("projects/{PROJECT}/topics/results");
    let c = chain(&[
        ("OUTPUT_FORMAT", "parquet"),
        ("CHUNK_MIB", "1"),
        ("BIGQUERY_TABLE", table.as_str()),
        ("BIGQUERY_LOCATION", "EU"),
        ("BIGQUERY_ENDPOINT", endpoint.as_str()),
        ("RESULTS_TOPIC", topic.as_str()),
    ])
    .await;
    c.pubsub.create_topic(PROJECT, "results").await;
    c.pubsub
        .create_pull_subscription(PROJECT, "results-pull", "results", Duration::from_secs(10))
        .await;

    gsutil_cp(&c.fake, &data("scl_flights_2017.csv"), "gs://in-bucket/2017/scl.csv").await;
    let manifest = manifest_of(&c.fake, "2017/scl.csv", Duration::from_secs(120)).await;
    // The load and the announcement follow the commit, the announcement
    // last (then its record, results.json, awaited below).
    let messages = c
        .pubsub
        .pull_until(PROJECT, "results-pull", 1, Duration::from_secs(30))
        .await;
    assert_eq!(messages.len(), 1);
    let (ack, message) = &messages[0];
    c.pubsub.ack(PROJECT, "results-pull", std::slice::from_ref(ack)).await;
    assert_eq!(manifest["status"], "scored");
    assert_eq!(manifest["outputs"]["format"], "parquet");
    let generation = manifest["input"]["generation"].as_str().unwrap().to_owned();
    let predictions_uri = manifest["outputs"]["predictions"]["uri"].as_str().unwrap().to_owned();
    assert_eq!(
        predictions_uri,
        format!("gs://out-bucket/2017/scl.csv/{generation}/predictions.parquet")
    );

    // Read back as a consumer would: DuckDB, pyarrow.
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("p.parquet");
    let bytes = c
        .fake
        .get_object("out-bucket", &format!("2017/scl.csv/{generation}/predictions.parquet"))
        .await
        .unwrap();
    std::fs::write(&parquet, &bytes).unwrap();
    let csv_out = dir.path().join("p.csv");
    let run = Command::new(SCORER)
        .args([
            "score",
            data("scl_flights_2017.csv").to_str().unwrap(),
            "--out",
            csv_out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(run.status.success());
    let reference: Vec<(f64, i64, String)> = csv::Reader::from_path(&csv_out)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[5].parse().unwrap(), r[6].parse().unwrap(), r[1].to_owned())
        })
        .collect();
    let read = consume(&parquet, DUCKDB);
    let rows = read["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 68206);
    assert_eq!(rows.len(), reference.len());
    for (i, (row, (p, prediction, opera))) in rows.iter().zip(&reference).enumerate() {
        assert_eq!(row[0].as_i64(), Some(i as i64 + 1));
        // As text: serde_json's own float parsing may be 1 ulp off.
        assert_eq!(
            row[1].as_str().map(|t| t.parse::<f64>().unwrap()),
            Some(*p),
            "row {}: probability",
            i + 1
        );
        assert_eq!(row[2].as_i64(), Some(*prediction));
        assert_eq!(row[3].as_str(), Some(opera.as_str()));
    }
    assert_eq!(read["source_uri"], json!(["gs://in-bucket/2017/scl.csv"]));
    assert_eq!(read["source_generation"], json!([generation.parse::<i64>().unwrap()]));
    assert_eq!(read["model_version"], json!([manifest["model"]["version"]]));
    assert_eq!(read["scored_at_type"], json!(["TIMESTAMP WITH TIME ZONE"]));
    let shape = consume(&parquet, PYARROW);
    assert_eq!(shape["rows"], 68206);
    assert_eq!(shape["row_groups"], 2, "row groups of 65,536 rows: {shape}");
    assert_eq!(shape["compression"], "ZSTD");
    assert_eq!(shape["schema"]["probability"], "double");
    assert_eq!(shape["schema"]["prediction"], "int64");
    assert_eq!(shape["schema"]["scored_at"], "timestamp[us, tz=UTC]");

    // One load job, appending the committed object, its id from the generation.
    let load_record = || async {
        c.fake
            .get_object("out-bucket", &format!("2017/scl.csv/{generation}/bigquery.json"))
            .await
            .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
    };
    let inserts = bigquery.inserts();
    assert_eq!(inserts.len(), 1, "{inserts:?}");
    let job = &inserts[0];
    let load = &job["configuration"]["load"];
    assert_eq!(load["sourceUris"], json!([predictions_uri]));
    assert_eq!(load["sourceFormat"], "PARQUET");
    assert_eq!(load["writeDisposition"], "WRITE_APPEND");
    assert_eq!(load["destinationTable"]["datasetId"], "flights");
    assert_eq!(load["destinationTable"]["tableId"], "predictions");
    assert_eq!(job["jobReference"]["location"], "EU");
    let job_id = job["jobReference"]["jobId"].as_str().unwrap().to_owned();
    assert!(job_id.ends_with(&format!("_{generation}")), "{job_id}");
    assert_eq!(load_record().await.expect("bigquery.json")["job_id"], job_id.as_str());

    // One results message, filterable by its attributes.
    assert_eq!(message["attributes"]["status"], "scored");
    assert_eq!(message["attributes"]["bucket"], "in-bucket");
    assert_eq!(message["attributes"]["generation"], generation.as_str());
    let body: Value = serde_json::from_slice(&message_data(message)).unwrap();
    assert_eq!(body["input_uri"], "gs://in-bucket/2017/scl.csv");
    assert_eq!(body["generation"], generation.as_str());
    assert_eq!(body["rows_scored"], 68206);
    assert_eq!(body["predictions_uris"], json!([predictions_uri]));
    assert_eq!(body["manifest_uri"], manifest["manifest_uri"]);
    assert_eq!(body["model_version"], manifest["model"]["version"]);
    assert_eq!(body["bigquery"]["job_id"], job_id.as_str());

    // A redelivery after everything was recorded does nothing again.
    let redeliver = || async {
        let (data, attributes) = scorer::event::notification::Notification::finalize(
            "in-bucket",
            "2017/scl.csv",
            generation.parse().unwrap(),
        )
        .size(0)
        .time("2026-01-01T00:00:00Z")
        .message();
        let attributes: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        c.pubsub.publish(PROJECT, "gcs-events", &data, &attributes).await;
    };
    // The original delivery records its announcement after publishing it:
    // awaited, or a redelivery now would rightly announce again.
    let announced = format!("2017/scl.csv/{generation}/results.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.fake.get_object("out-bucket", &announced).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "no {announced}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Pushed straight to the service: its answer comes after the follow-ups
    // (the summary log line comes before them).
    let envelope =
        scorer::event::notification::Notification::finalize("in-bucket", "2017/scl.csv", generation.parse().unwrap())
            .size(0)
            .time("2026-01-01T00:00:00Z")
            .push_envelope("redelivered", "projects/p/subscriptions/s");
    let answer = reqwest::Client::new()
        .post(c.server.url("/"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["outcome"], "duplicate", "{answer}");
    assert_eq!(bigquery.inserts().len(), 1);
    assert!(c.pubsub.pull(PROJECT, "results-pull", 10).await.is_empty());

    // A crash after the commit and before the follow-ups were recorded:
    // the next delivery tries the load again (BigQuery refuses the same job
    // id, so nothing loads twice) and announces again (at least once).
    assert!(
        c.fake
            .delete_object("out-bucket", &format!("2017/scl.csv/{generation}/bigquery.json"))
            .await
    );
    assert!(
        c.fake
            .delete_object("out-bucket", &format!("2017/scl.csv/{generation}/results.json"))
            .await
    );
    redeliver().await;
    let again = c
        .pubsub
        .pull_until(PROJECT, "results-pull", 1, Duration::from_secs(60))
        .await;
    assert_eq!(again.len(), 1);
    c.pubsub
        .ack(PROJECT, "results-pull", std::slice::from_ref(&again[0].0))
        .await;
    let body: Value = serde_json::from_slice(&message_data(&again[0].1)).unwrap();
    assert_eq!(body["generation"], generation.as_str());
    let inserts = bigquery.inserts();
    assert_eq!(inserts.len(), 2);
    assert_eq!(inserts[1]["jobReference"]["jobId"], job_id.as_str());
    assert_eq!(bigquery.jobs.lock().unwrap().len(), 1, "one job in BigQuery");
    assert_eq!(
        load_record().await.expect("bigquery.json again")["job_id"],
        job_id.as_str()
    );

    // JSON Lines in, gzip-compressed, through the same chain: told by its
    // first character, scored, loaded, announced.
    let mut jsonl = String::new();
    let shipped = std::fs::read_to_string(data("scl_flights_2017.csv")).unwrap();
    for (i, line) in shipped.lines().skip(1).take(1000).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if i == 10 {
            jsonl.push_str("not json\n");
        }
        jsonl.push_str(&format!(
            "{{\"split\":\"{}\",\"OPERA\":\"{}\",\"TIPOVUELO\":\"{}\",\"MES\":{},\"atraso_15\":{}}}\n",
            f[0], f[1], f[2], f[3], f[4]
        ));
    }
    let gz_path = dir.path().join("flights.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, jsonl.as_bytes()).unwrap();
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    gsutil_cp(&c.fake, &gz_path, "gs://in-bucket/events/flights.jsonl.gz").await;
    let manifest = manifest_of(&c.fake, "events/flights.jsonl.gz", Duration::from_secs(120)).await;
    assert_eq!(manifest["status"], "scored", "{manifest}");
    assert_eq!(manifest["input"]["format"]["kind"], "jsonl");
    assert_eq!(manifest["input"]["format"]["compression"], "gzip");
    assert_eq!(manifest["rows"]["scored"], 1000);
    assert_eq!(manifest["rows"]["rejected"], 1);
    let errors = c
        .fake
        .get_object("out-bucket", manifest["outputs"]["errors"]["name"].as_str().unwrap())
        .await
        .unwrap();
    let errors = String::from_utf8_lossy(&errors);
    assert!(errors.contains("11,11,,,the line is not valid JSON"), "{errors}");
    let messages = c
        .pubsub
        .pull_until(PROJECT, "results-pull", 1, Duration::from_secs(30))
        .await;
    c.pubsub
        .ack(PROJECT, "results-pull", std::slice::from_ref(&messages[0].0))
        .await;
    let body: Value = serde_json::from_slice(&message_data(&messages[0].1)).unwrap();
    assert_eq!(body["name"], "events/flights.jsonl.gz");
    assert_eq!(bigquery.inserts().len(), 3);

    // Parquet in (the predictions above, as a table someone exports): read
    // by ranges, every row scored again, its own columns kept.
    gsutil_cp(&c.fake, &parquet, "gs://in-bucket/tables/scl.parquet").await;
    let manifest = manifest_of(&c.fake, "tables/scl.parquet", Duration::from_secs(120)).await;
    assert_eq!(manifest["status"], "scored", "{manifest}");
    assert_eq!(manifest["input"]["format"]["kind"], "parquet");
    assert_eq!(manifest["rows"]["scored"], 68206);
    let columns = manifest["outputs"]["columns"].as_array().unwrap();
    assert_eq!(
        columns[0], "scorer_probability",
        "the input's own probability is kept: {columns:?}"
    );
    // The load and the announcement follow the commit: the manifest can be
    // seen before either, the announcement only after the load.
    let messages = c
        .pubsub
        .pull_until(PROJECT, "results-pull", 1, Duration::from_secs(60))
        .await;
    let body: Value = serde_json::from_slice(&message_data(&messages[0].1)).unwrap();
    assert_eq!(body["name"], "tables/scl.parquet");
    assert_eq!(bigquery.inserts().len(), 4);
}

/// A file too large for one push request, scored in four ranges by the
/// local pool, in Parquet: every range is a Parquet file of its own, and
/// read in order they hold the inline run's rows and probabilities; only
/// the first range knows its row numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_input_in_parquet_is_the_inline_rows_range_by_range() {
    use crate::sharding::{envelope, inline, input_file, manifest, push, server, shard_bytes, storage};
    let bytes = input_file();
    let (expected, _) = inline(&bytes);
    let reference: Vec<String> = csv::Reader::from_reader(expected.as_slice())
        .records()
        .map(|r| r.unwrap()[5].to_owned())
        .collect();
    let fake = storage().await;
    let generation = fake.put_object("in-bucket", "big.csv", &bytes).await;
    let per_task = shard_bytes(bytes.len(), 4);
    let server = server(
        &fake,
        &[
            ("SHARD_JOB", "local"),
            ("SHARD_BYTES", &per_task),
            ("OUTPUT_FORMAT", "parquet"),
        ],
    );
    server.ready().await;
    let (status, _) = push(&server, &envelope("big.csv", generation, bytes.len() as u64)).await;
    assert!((200..300).contains(&status), "{status}");
    let m = manifest(&fake, "big.csv", generation, Duration::from_secs(120)).await;
    assert_eq!(m["status"], "scored", "{m}");
    assert_eq!(m["outputs"]["format"], "parquet");
    let shards = m["outputs"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = shard["name"].as_str().unwrap();
        assert!(
            name.ends_with(&format!("predictions-{i:05}-of-00004.parquet")),
            "{name}"
        );
        let path = dir.path().join(format!("{i}.parquet"));
        std::fs::write(&path, fake.get_object("out-bucket", name).await.unwrap()).unwrap();
        files.push(path.to_str().unwrap().to_owned());
    }
    let script = r#"
import duckdb, json, sys
con = duckdb.connect()
out = []
for f in sys.argv[1:]:
    rows = con.execute("SELECT probability, row_number FROM read_parquet(?)", [f]).fetchall()
    out.append({"p": [repr(r[0]) for r in rows], "numbered": sum(r[1] is not None for r in rows),
                "first": rows[0][1] if rows else None})
print(json.dumps(out))
"#;
    let run = Command::new(consumer_python())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let read: Value = serde_json::from_slice(&run.stdout).unwrap();
    let probabilities: Vec<String> = read
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["p"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(probabilities.len(), reference.len());
    for (i, (got, want)) in probabilities.iter().zip(&reference).enumerate() {
        assert_eq!(
            got.parse::<f64>().unwrap(),
            want.parse::<f64>().unwrap(),
            "row {}",
            i + 1
        );
    }
    let first = &read[0];
    assert_eq!(first["first"], 1);
    assert_eq!(
        first["numbered"].as_u64(),
        Some(first["p"].as_array().unwrap().len() as u64)
    );
    for later in &read.as_array().unwrap()[1..] {
        assert_eq!(later["numbered"], 0, "a later range cannot know its row numbers");
    }
}

/// A results topic that does not exist cannot be mended by retrying: the
/// commit stands, the refusal is recorded beside the manifest and logged,
/// and the delivery is acknowledged rather than retried until it is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_topic_that_is_not_there_is_recorded_not_retried_forever() {
    let topic = format!("projects/{PROJECT}/topics/no-such-topic");
    let c = chain(&[("RESULTS_TOPIC", topic.as_str())]).await;
    gsutil_cp(&c.fake, &data("scl_flights_2017.csv"), "gs://in-bucket/a.csv").await;
    let manifest = manifest_of(&c.fake, "a.csv", Duration::from_secs(120)).await;
    assert_eq!(manifest["status"], "scored");
    let generation = manifest["input"]["generation"].as_str().unwrap().to_owned();
    let record = loop {
        if let Some(bytes) = c
            .fake
            .get_object("out-bucket", &format!("a.csv/{generation}/results.json"))
            .await
        {
            break serde_json::from_slice::<Value>(&bytes).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["message_id"], "");
    assert!(record["error"].as_str().is_some_and(|e| !e.is_empty()), "{record}");
    c.server
        .logs_matching(1, |l| {
            l["severity"] == "ERROR" && l["message"] == "the results topic refused the message; it will not be retried"
        })
        .await;
    // Acknowledged: nothing reaches the dead-letter topic, one summary.
    assert!(c.pubsub.pull(PROJECT, "gcs-events-dead-pull", 10).await.is_empty());
    let summaries = c
        .server
        .logs_matching(1, |l| l["message"] == "job summary" && l["outcome"] == "scored")
        .await;
    assert_eq!(summaries.len(), 1);
}
