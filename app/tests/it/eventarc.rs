//! Eventarc's CloudEvents at `POST /`, beside the Pub/Sub envelope: the
//! real service on fake-gcs-server, an uploaded object, and the request an
//! Eventarc trigger on `google.cloud.storage.object.v1.finalized` posts for
//! it, written out here header by header and byte by byte (binary content
//! mode), or as one JSON object (structured content mode).

use serde_json::Value;

use crate::harness::Server;
use crate::support::{FakeGcs, FakeGcsOptions, enc};
use scorer::event::notification::Notification;

const CSV: &[u8] = b"OPERA,TIPOVUELO,MES\nGrupo LATAM,I,3\nSky Airline,N,7\nAerolineas Argentinas,I,12\n";

/// Cloud Storage (fake-gcs-server) with the input and output buckets, and
/// the service reading them.
async fn service() -> (FakeGcs, Server) {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    let server = Server::start(
        &[],
        &[
            ("STORAGE_EMULATOR_HOST", fake.endpoint.as_str()),
            ("INPUT_BUCKET", "in-bucket"),
            ("OUTPUT_BUCKET", "out-bucket"),
            ("STORAGE_RETRY_SECONDS", "5"),
        ],
    );
    server.ready().await;
    (fake, server)
}

/// The object resource of `name` as Cloud Storage's JSON API spells it,
/// which is the body of Eventarc's CloudEvent: the fields in Cloud
/// Storage's order, numbers as strings.
async fn object_resource(fake: &FakeGcs, name: &str) -> String {
    let meta = fake.object_metadata("in-bucket", name).await.expect("uploaded");
    let field = |f: &str| meta[f].as_str().unwrap_or_default().to_owned();
    let generation = field("generation");
    let time = field("timeCreated");
    let encoded = enc(name);
    format!(
        r#"{{
  "kind": "storage#object",
  "id": "in-bucket/{name}/{generation}",
  "selfLink": "https://www.googleapis.com/storage/v1/b/in-bucket/o/{encoded}",
  "mediaLink": "https://storage.googleapis.com/download/storage/v1/b/in-bucket/o/{encoded}?generation={generation}&alt=media",
  "name": "{name}",
  "bucket": "in-bucket",
  "generation": "{generation}",
  "metageneration": "1",
  "contentType": "text/csv",
  "storageClass": "STANDARD",
  "size": "{size}",
  "md5Hash": "{md5}",
  "crc32c": "{crc32c}",
  "etag": "{etag}",
  "timeCreated": "{time}",
  "updated": "{time}",
  "timeStorageClassUpdated": "{time}"
}}
"#,
        size = field("size"),
        md5 = field("md5Hash"),
        crc32c = field("crc32c"),
        etag = field("etag"),
    )
}

/// Posts the CloudEvent as Eventarc does: binary content mode, the
/// attributes in `ce-*` headers.
async fn post_binary(server: &Server, id: &str, event_type: &str, name: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/"))
        .header("Content-Type", "application/json")
        .header("ce-id", id)
        .header("ce-source", "//storage.googleapis.com/projects/_/buckets/in-bucket")
        .header("ce-specversion", "1.0")
        .header("ce-type", event_type)
        .header("ce-subject", format!("objects/{name}"))
        .header("ce-time", "2026-01-01T00:00:00.123456Z")
        .header("ce-bucket", "in-bucket")
        .header(
            "User-Agent",
            "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(server: &Server, content_type: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every object the service wrote under `prefix` of the output bucket.
async fn outputs(fake: &FakeGcs, prefix: &str) -> Vec<String> {
    fake.list("out-bucket", prefix)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

const FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

#[tokio::test]
async fn an_eventarc_cloudevent_scores_once_and_a_redelivery_is_a_duplicate() {
    let (fake, server) = service().await;
    let generation = fake.put_object("in-bucket", "2026/vuelos.csv", CSV).await;
    let body = object_resource(&fake, "2026/vuelos.csv").await;

    let (status, reply) = post_binary(&server, "9876543210", FINALIZED, "2026/vuelos.csv", &body).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("scored")), "{reply}");
    let manifest_name = format!("2026/vuelos.csv/{generation}/manifest.json");
    let manifest: Value =
        serde_json::from_slice(&fake.get_object("out-bucket", &manifest_name).await.expect("a manifest")).unwrap();
    assert_eq!(manifest["status"], "scored");
    assert_eq!(manifest["rows"]["scored"], 3);
    assert_eq!(manifest["input"]["uri"], "gs://in-bucket/2026/vuelos.csv");
    assert_eq!(
        manifest["input"]["generation"].to_string().trim_matches('"'),
        generation.to_string()
    );

    // Eventarc redelivers (at-least-once): the same request is a duplicate,
    // and so is the Pub/Sub envelope of the same generation.
    let (status, reply) = post_binary(&server, "9876543210", FINALIZED, "2026/vuelos.csv", &body).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")), "{reply}");
    let envelope = Notification::finalize("in-bucket", "2026/vuelos.csv", generation)
        .size(CSV.len() as u64)
        .push_envelope("555", "projects/p/subscriptions/s");
    let (status, reply) = post(&server, "application/json", envelope.to_string()).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")), "{reply}");
    assert_eq!(
        outputs(&fake, "2026/").await,
        [
            format!("2026/vuelos.csv/{generation}/manifest.json"),
            format!("2026/vuelos.csv/{generation}/predictions.csv")
        ]
    );

    let summaries = server.logs_matching(3, |l| l["message"] == "job summary").await;
    let outcomes: Vec<&str> = summaries.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["scored", "duplicate", "duplicate"], "{summaries:?}");
    let received = server.logs_matching(3, |l| l["message"] == "push received").await;
    let seen: Vec<(&str, &str)> = received
        .iter()
        .map(|l| (l["trigger"].as_str().unwrap(), l["message_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("cloudevent", "9876543210"),
            ("cloudevent", "9876543210"),
            ("pubsub", "555")
        ]
    );
    assert!(
        received[0]["delivery_attempt"].is_null(),
        "Eventarc does not count attempts"
    );
}

#[tokio::test]
async fn the_structured_mode_and_the_envelope_and_a_cloudevent_of_one_generation() {
    let (fake, server) = service().await;

    // Structured content mode: the attributes and the object in one JSON
    // object, generation and size as numbers.
    let generation = fake.put_object("in-bucket", "a.csv", CSV).await;
    let mut data: Value = serde_json::from_str(&object_resource(&fake, "a.csv").await).unwrap();
    data["generation"] = generation.into();
    data["size"] = CSV.len().into();
    let event = serde_json::json!({
        "specversion": "1.0",
        "id": "structured-1",
        "source": "//storage.googleapis.com/projects/_/buckets/in-bucket",
        "type": FINALIZED,
        "subject": "objects/a.csv",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    });
    let (status, reply) = post(
        &server,
        "application/cloudevents+json; charset=utf-8",
        event.to_string(),
    )
    .await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("scored")), "{reply}");
    let (status, reply) = post(&server, "application/cloudevents+json", event.to_string()).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")), "{reply}");

    // The envelope first, then Eventarc's CloudEvent for the same
    // generation (both triggers configured at once, as during a switch from
    // one to the other): one output set.
    let generation_b = fake.put_object("in-bucket", "b.csv", CSV).await;
    let envelope = Notification::finalize("in-bucket", "b.csv", generation_b)
        .size(CSV.len() as u64)
        .push_envelope("1", "projects/p/subscriptions/s");
    let (status, reply) = post(&server, "application/json", envelope.to_string()).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("scored")), "{reply}");
    let body = object_resource(&fake, "b.csv").await;
    let (status, reply) = post_binary(&server, "2", FINALIZED, "b.csv", &body).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")), "{reply}");

    assert_eq!(
        outputs(&fake, "a.csv/").await,
        [
            format!("a.csv/{generation}/manifest.json"),
            format!("a.csv/{generation}/predictions.csv"),
        ]
    );
    assert_eq!(
        outputs(&fake, "b.csv/").await,
        [
            format!("b.csv/{generation_b}/manifest.json"),
            format!("b.csv/{generation_b}/predictions.csv"),
        ]
    );
}

#[tokio::test]
async fn cloudevents_that_are_not_work_are_acknowledged_and_malformed_ones_refused() {
    let (fake, server) = service().await;
    fake.put_object("in-bucket", "gone.csv", CSV).await;
    fake.put_object("in-bucket", "notes.txt", b"not a csv").await;
    let gone = object_resource(&fake, "gone.csv").await;
    let notes = object_resource(&fake, "notes.txt").await;

    // Another storage event type, a non-CSV object, and an event that is not
    // about storage objects at all (its body not even read): acknowledged.
    let cases = [
        (
            "google.cloud.storage.object.v1.deleted",
            "gone.csv",
            gone.as_str(),
            "google.cloud.storage.object.v1.deleted events are not work",
        ),
        (
            "google.cloud.storage.object.v1.metadataUpdated",
            "gone.csv",
            gone.as_str(),
            "metadataUpdated events are not work",
        ),
        (FINALIZED, "notes.txt", notes.as_str(), "not a .csv"),
        (
            "google.cloud.pubsub.topic.v1.messagePublished",
            "gone.csv",
            "{\"message\": {}}",
            "not Cloud Storage object events",
        ),
    ];
    for (event_type, name, body, reason) in cases {
        let (status, reply) = post_binary(&server, "3", event_type, name, body).await;
        assert_eq!((status, reply["outcome"].as_str()), (200, Some("ignored")), "{reply}");
        assert!(reply["detail"].as_str().unwrap().contains(reason), "{reply}");
    }

    // Malformed: refused, the detail naming what is missing or disagrees.
    let without_generation = gone.replace(&format!("\"generation\": \"{}\",", generation_of(&gone)), "");
    let cases = [
        (
            "gone.csv",
            without_generation.as_str(),
            "the object's generation is missing",
        ),
        ("other.csv", gone.as_str(), "data.name and ce-subject disagree"),
        ("gone.csv", "not json", "not a Cloud Storage object resource"),
    ];
    for (subject, body, problem) in cases {
        let (status, reply) = post_binary(&server, "4", FINALIZED, subject, body).await;
        assert_eq!((status, reply["outcome"].as_str()), (400, Some("rejected")), "{reply}");
        assert!(reply["detail"].as_str().unwrap().contains(problem), "{reply}");
    }
    let (status, reply) = post(
        &server,
        "application/cloudevents+json",
        "{\"specversion\": \"1.0\"}".into(),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("attribute id is missing"),
        "{reply}"
    );

    assert!(
        outputs(&fake, "").await.iter().all(|n| n.starts_with("_models/")),
        "nothing is written, not even a lease (only the registry's start-up model)"
    );
    let ignored = server
        .logs_matching(4, |l| l["message"] == "job summary" && l["outcome"] == "ignored")
        .await;
    assert_eq!(ignored.len(), 4, "{ignored:?}");
    server
        .logs_matching(4, |l| l["message"] == "malformed CloudEvent")
        .await;
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200, "still serving");
}

/// The generation in an object resource written by [`object_resource`].
fn generation_of(resource: &str) -> String {
    let v: Value = serde_json::from_str(resource).unwrap();
    v["generation"].as_str().unwrap().to_owned()
}
