//! `BigQueryLoads` against a stand-in of the BigQuery API v2: a local HTTP
//! server on 127.0.0.1 that records each request (method, path, query,
//! JSON body) and answers as the test tells it. The tests assert the exact
//! request the generated client sends and how each answer is taken.
//!
//! # What the stand-in assumes about the real API
//!
//! The real API cannot be reached here (no network, no credentials), so the
//! stand-in follows BigQuery's published REST reference, and these tests
//! show only that the client speaks that reference, not that BigQuery
//! accepts a given load:
//!
//! - `jobs.insert` is `POST /bigquery/v2/projects/{projectId}/jobs` with
//!   the Job resource as its JSON body: `jobReference` (`projectId`,
//!   `jobId`, `location`) and `configuration.load` with camelCase field
//!   names and the dispositions and `sourceFormat` as strings. The answer
//!   is the Job, whose `jobReference.location` BigQuery fills in.
//! - A job id already used in the project is refused with HTTP 409 and
//!   BigQuery's error body (`error.status` `ALREADY_EXISTS`, `error.errors`
//!   with reason `duplicate`), as BigQuery's error-messages page lists it.
//! - `jobs.get` is `GET /bigquery/v2/projects/{projectId}/jobs/{jobId}`
//!   with the location as the `location` query parameter.
//! - Unavailable is HTTP 503 (`backendError`), a refused permission 403
//!   (`accessDenied`), with the same error body shape.
//! - The generated client adds the system parameter
//!   `$alt=json;enum-encoding=int` to every call (it sends the same to
//!   Google); the stand-in ignores it. It only asks for enums in the answer
//!   as numbers, and nothing read here from an answer is an enum.
//!
//! What it cannot show: that the caller's project, table and permissions
//! exist, and what the job does once started (it is never waited for).

use std::sync::{Arc, Mutex};

use scorer_cloud::CloudError;
use scorer_cloud::bigquery::{BigQueryLoads, LoadFormat, LoadJob, LoadRequest, TableRef, TableRefError};
use serde_json::{Value, json};

/// One request the stand-in saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

type Answer = Box<dyn Fn(&Seen) -> (u16, Value) + Send + Sync>;

struct StandIn {
    seen: Arc<Mutex<Vec<Seen>>>,
    url: String,
}

impl StandIn {
    /// A server that answers each request with `answer`'s status and body.
    async fn start(answer: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static) -> StandIn {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(Box::new(answer));
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(
                move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
                    let seen = seen.clone();
                    let answer = answer.clone();
                    async move {
                        let request = Seen {
                            method: method.to_string(),
                            path: uri.path().to_owned(),
                            query: uri.query().unwrap_or_default().to_owned(),
                            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        };
                        let (status, body) = answer(&request);
                        seen.lock().unwrap().push(request);
                        (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body))
                    }
                },
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        StandIn { seen, url }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn client(&self) -> BigQueryLoads {
        BigQueryLoads::new(Some(&self.url)).await.unwrap()
    }
}

/// BigQuery's error body for `status` (reason as in its error-messages page).
fn error(code: u16, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    })
}

/// The Job BigQuery answers for a load of `request`'s body, running.
fn accepted(request: &Seen, location: &str) -> Value {
    let mut job = request.body.clone();
    job["jobReference"]["location"] = json!(location);
    job["kind"] = json!("bigquery#job");
    job["status"] = json!({"state": "RUNNING"});
    job
}

fn parquet_load() -> LoadRequest {
    LoadRequest {
        table: TableRef::parse("my-project.scorer.predictions").unwrap(),
        job_id: "scorer_load_in-bucket_run_a_csv_1764000000000000".to_owned(),
        location: Some("europe-west1".to_owned()),
        source_uris: vec![
            "gs://out-bucket/run/a.csv/predictions-00000.parquet".to_owned(),
            "gs://out-bucket/run/a.csv/predictions-00001.parquet".to_owned(),
        ],
        format: LoadFormat::Parquet,
    }
}

#[tokio::test]
async fn a_parquet_load_is_one_jobs_insert_with_the_table_the_files_and_the_dispositions() {
    let api = StandIn::start(|r| (200, accepted(r, "europe-west1"))).await;
    let job = api.client().await.start(&parquet_load()).await.unwrap();
    assert_eq!(
        job,
        LoadJob {
            project: "my-project".to_owned(),
            job_id: "scorer_load_in-bucket_run_a_csv_1764000000000000".to_owned(),
            location: Some("europe-west1".to_owned()),
            already_existed: false,
        }
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/bigquery/v2/projects/my-project/jobs");
    // The whole body: nothing else is sent (no schema, no autodetect: for
    // Parquet the schema is the file's and the table's).
    assert_eq!(
        seen[0].body,
        json!({
            "jobReference": {
                "projectId": "my-project",
                "jobId": "scorer_load_in-bucket_run_a_csv_1764000000000000",
                "location": "europe-west1",
            },
            "configuration": {
                "load": {
                    "sourceUris": [
                        "gs://out-bucket/run/a.csv/predictions-00000.parquet",
                        "gs://out-bucket/run/a.csv/predictions-00001.parquet",
                    ],
                    "destinationTable": {
                        "projectId": "my-project",
                        "datasetId": "scorer",
                        "tableId": "predictions",
                    },
                    "createDisposition": "CREATE_NEVER",
                    "writeDisposition": "WRITE_APPEND",
                    "sourceFormat": "PARQUET",
                }
            }
        })
    );
}

#[tokio::test]
async fn a_csv_load_skips_the_header_with_its_delimiter_and_neither_guesses_nor_drops_columns() {
    let api = StandIn::start(|r| (200, accepted(r, "EU"))).await;
    let load = LoadRequest {
        location: None,
        format: LoadFormat::Csv {
            skip_leading_rows: 1,
            field_delimiter: ';',
        },
        source_uris: vec!["gs://out-bucket/run/a.csv/predictions.csv".to_owned()],
        ..parquet_load()
    };
    let job = api.client().await.start(&load).await.unwrap();
    // No location asked: the one BigQuery reports.
    assert_eq!(job.location.as_deref(), Some("EU"));
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let body = &seen[0].body;
    assert_eq!(
        body["jobReference"],
        json!({"projectId": "my-project", "jobId": load.job_id})
    );
    let config = &body["configuration"]["load"];
    assert_eq!(config["sourceFormat"], "CSV");
    assert_eq!(config["skipLeadingRows"], 1);
    assert_eq!(config["fieldDelimiter"], ";");
    assert_eq!(config["allowQuotedNewlines"], true);
    assert_eq!(config["autodetect"], false);
    assert_eq!(config["ignoreUnknownValues"], false);
    assert_eq!(config["writeDisposition"], "WRITE_APPEND");
    assert_eq!(config["createDisposition"], "CREATE_NEVER");
    assert_eq!(
        config["sourceUris"],
        json!(["gs://out-bucket/run/a.csv/predictions.csv"])
    );
    assert_eq!(
        config.as_object().map(|o| o.len()),
        Some(10),
        "nothing else is set: {config}"
    );
}

#[tokio::test]
async fn a_json_lines_load_neither_guesses_nor_drops_columns() {
    let api = StandIn::start(|r| (200, accepted(r, "europe-west1"))).await;
    let load = LoadRequest {
        format: LoadFormat::JsonLines,
        ..parquet_load()
    };
    api.client().await.start(&load).await.unwrap();
    let seen = api.seen();
    let config = &seen[0].body["configuration"]["load"];
    assert_eq!(config["sourceFormat"], "NEWLINE_DELIMITED_JSON");
    assert_eq!(config["autodetect"], false);
    assert_eq!(config["ignoreUnknownValues"], false);
    assert!(config.get("skipLeadingRows").is_none(), "{config}");
    assert!(config.get("fieldDelimiter").is_none(), "{config}");
}

/// The stand-in of a project where `held_by`'s load (its jobs.insert body)
/// already holds every job id it is asked for.
async fn taken(held_by: Value) -> StandIn {
    StandIn::start(move |r| match r.method.as_str() {
        "POST" => (
            409,
            error(
                409,
                "ALREADY_EXISTS",
                "duplicate",
                "Already Exists: Job my-project:europe-west1.scorer_load_x",
            ),
        ),
        _ => {
            let mut job = held_by.clone();
            job["jobReference"]["location"] = json!("europe-west1");
            job["status"] = json!({"state": "DONE"});
            (200, job)
        }
    })
    .await
}

#[tokio::test]
async fn a_job_id_bigquery_already_holds_is_the_same_load_started_before_and_no_error() {
    let first = StandIn::start(|r| (200, accepted(r, "europe-west1"))).await;
    first.client().await.start(&parquet_load()).await.unwrap();
    let inserted = first.seen()[0].body.clone();

    let api = taken(inserted).await;
    let job = api.client().await.start(&parquet_load()).await.unwrap();
    assert_eq!(
        job,
        LoadJob {
            project: "my-project".to_owned(),
            job_id: parquet_load().job_id,
            location: Some("europe-west1".to_owned()),
            already_existed: true,
        }
    );
    // The insert, then the job read back where it runs: nothing inserted twice.
    let seen = api.seen();
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["POST", "GET"],
        "{seen:?}"
    );
    assert_eq!(
        seen[1].path,
        "/bigquery/v2/projects/my-project/jobs/scorer_load_in-bucket_run_a_csv_1764000000000000"
    );
    assert!(
        seen[1].query.split('&').any(|p| p == "location=europe-west1"),
        "{}",
        seen[1].query
    );
}

#[tokio::test]
async fn a_job_id_another_job_holds_is_a_permanent_error() {
    let other = json!({
        "jobReference": {"projectId": "my-project", "jobId": parquet_load().job_id},
        "configuration": {"load": {
            "destinationTable": {"projectId": "my-project", "datasetId": "scorer", "tableId": "other"},
            "sourceUris": ["gs://elsewhere/x.parquet"],
        }},
    });
    let api = taken(other).await;
    let e = api.client().await.start(&parquet_load()).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("my-project.scorer.other"), "{e}");

    let query = json!({
        "jobReference": {"projectId": "my-project", "jobId": parquet_load().job_id},
        "configuration": {"query": {"query": "SELECT 1"}},
    });
    let api = taken(query).await;
    let e = api.client().await.start(&parquet_load()).await.unwrap_err();
    assert!(!e.is_transient() && e.to_string().contains("not a load"), "{e}");
}

#[tokio::test]
async fn unavailable_is_transient_and_tried_once_a_refused_permission_permanent() {
    let api = StandIn::start(|_| (503, error(503, "UNAVAILABLE", "backendError", "Backend error"))).await;
    let e = api.client().await.start(&parquet_load()).await.unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e}");
    // jobs.insert is not retried by the client: the caller retries, with
    // the same job id.
    assert_eq!(api.seen().len(), 1);

    let api = StandIn::start(|_| {
        (
            403,
            error(
                403,
                "PERMISSION_DENIED",
                "accessDenied",
                "Access Denied: Project my-project: User does not have bigquery.jobs.create permission",
            ),
        )
    })
    .await;
    let e = api.client().await.start(&parquet_load()).await.unwrap_err();
    assert!(matches!(e, CloudError::Permanent(_)), "{e}");
    assert!(e.to_string().contains("bigquery.jobs.create"), "{e}");
}

#[tokio::test]
async fn a_request_bigquery_would_refuse_is_refused_without_a_call() {
    let api = StandIn::start(|r| (200, accepted(r, "EU"))).await;
    let client = api.client().await;
    for load in [
        LoadRequest {
            job_id: "has spaces".to_owned(),
            ..parquet_load()
        },
        LoadRequest {
            source_uris: vec!["/local/file.parquet".to_owned()],
            ..parquet_load()
        },
    ] {
        let e = client.start(&load).await.unwrap_err();
        assert!(matches!(e, CloudError::Permanent(_)), "{e}");
    }
    assert!(api.seen().is_empty());
}

#[test]
fn a_table_is_project_dataset_table() {
    assert_eq!(
        "p.d.t".parse::<TableRef>(),
        Ok(TableRef {
            project: "p".to_owned(),
            dataset: "d".to_owned(),
            table: "t".to_owned(),
        })
    );
    assert!(matches!(
        TableRef::parse("scorer.predictions"),
        Err(TableRefError::PartCount(_, 2))
    ));
    assert!(matches!(
        TableRef::parse("p.d.t.x"),
        Err(TableRefError::PartCount(_, 4))
    ));
    assert!(matches!(
        TableRef::parse(".d.t"),
        Err(TableRefError::EmptyPart(_, "project"))
    ));
    assert!(matches!(
        TableRef::parse("p.d."),
        Err(TableRefError::EmptyPart(_, "table"))
    ));
}
