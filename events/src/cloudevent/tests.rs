use super::*;
use crate::OBJECT_FINALIZED;
use crate::notification::Notification;

/// googleapis/google-cloudevents,
/// examples/binary/storage/StorageObjectData-simple.json, byte for byte:
/// the body Eventarc posts for a finalized object.
const SIMPLE_BODY: &str = r#"{
  "bucket": "sample-bucket",
  "contentType": "text/plain",
  "crc32c": "rTVTeQ==",
  "etag": "CNHZkbuF/ugCEAE=",
  "generation": "1587627537231057",
  "id": "sample-bucket/folder/Test.cs/1587627537231057",
  "kind": "storage#object",
  "md5Hash": "kF8MuJ5+CTJxvyhHS1xzRg==",
  "mediaLink": "https://www.googleapis.com/download/storage/v1/b/sample-bucket/o/folder%2FTest.cs?generation=1587627537231057\u0026alt=media",
  "metageneration": "1",
  "name": "folder/Test.cs",
  "selfLink": "https://www.googleapis.com/storage/v1/b/sample-bucket/o/folder/Test.cs",
  "size": "352",
  "storageClass": "MULTI_REGIONAL",
  "timeCreated": "2020-04-23T07:38:57.230Z",
  "timeStorageClassUpdated": "2020-04-23T07:38:57.230Z",
  "updated": "2020-04-23T07:38:57.230Z"
}"#;

/// The same repository's StorageObjectData-complex.json: numbers as
/// numbers.
const COMPLEX_BODY: &str = r#"{
  "bucket": "sample-bucket",
  "cacheControl": "max-age=6000",
  "componentCount": 2239872,
  "contentDisposition": "attachment",
  "contentEncoding": "gzip",
  "contentLanguage": "en",
  "contentType": "text/plain",
  "crc32c": "AAAAAA==",
  "customerEncryption": { "keySha256": "Vb/C17P2fk35hguiD/pdLoXJk2j2NlmWmUmnOPsLtfA=", "encryptionAlgorithm": "AES256" },
  "etag": "COu8mb3Dn+kCEAE=",
  "eventBasedHold": true,
  "generation": 96883251,
  "id": "sample-bucket/MyFile/1588778055917163",
  "kind": "storage#object",
  "kmsKeyName": "nulla",
  "md5Hash": "xrX0h3SqCoeoKidv+GvlBw==",
  "mediaLink": "https://www.googleapis.com/download/storage/v1/b/projectid-sample-bucket/o/MyFile?generation=1588778055917163\u0026alt=media",
  "metadata": {},
  "metageneration": 1,
  "name": "MyFile",
  "retentionExpirationTime": "1960-08-15T07:40:17.432Z",
  "selfLink": "https://www.googleapis.com/storage/v1/b/projectid-sample-bucket/o/MyFile",
  "size": 0,
  "storageClass": "MULTI_REGIONAL",
  "temporaryHold": false,
  "timeCreated": "2020-05-06T15:14:15.917Z",
  "timeDeleted": "2020-05-18T09:07:51.799Z",
  "timeStorageClassUpdated": "1988-10-25T10:29:01.558Z",
  "updated": "1970-09-15T14:05:26.975Z"
}"#;

/// googleapis/google-cloudevents,
/// examples/structured/storage/StorageObjectDataWorkflows.json, byte for
/// byte.
const STRUCTURED_EVENT: &str = r#"{
  "bucket": "sample-bucket",
  "data": {
"bucket": "sample-bucket",
"cacheControl": "max-age=6000",
"componentCount": 1234,
"contentDisposition": "attachment",
"contentEncoding": "gzip",
"contentLanguage": "en",
"contentType": "text/plain",
"crc32c": "AAAAAA==",
"customerEncryption": {
  "keySha256": "Vb/C17P2fk35hguiD/pdLoXJk2j2NlmWmUmnOPsLtfA=",
  "encryptionAlgorithm": "AES256"
},
"etag": "COu8mb3Dn+kCEAE=",
"eventBasedHold": true,
"generation": 96883251,
"id": "sample-bucket/MyFile/1234567",
"kind": "storage#object",
"kmsKeyName": "nulla",
"md5Hash": "xrX0h3SqCoeoKidv+GvlBw==",
"mediaLink": "https://www.googleapis.com/download/storage/v1/b/projectid-sample-bucket/o/MyFile?generation=1588778055917163\\u0026alt=media",
"metadata": {},
"metageneration": 1,
"name": "MyFile",
"retentionExpirationTime": "2021-12-25T21:04:32.279744Z",
"selfLink": "https://www.googleapis.com/storage/v1/b/projectid-sample-bucket/o/MyFile",
"size": 0,
"storageClass": "MULTI_REGIONAL",
"temporaryHold": false,
"timeCreated": "2020-05-06T15:14:15.917Z",
"timeDeleted": "2021-11-25T21:04:32.279744Z",
"timeStorageClassUpdated": "1988-10-25T10:29:01.558Z",
"updated": "2021-11-25T21:04:32.279744Z"
  },
  "datacontenttype": "application/json",
  "id": "1234567",
  "source": "//storage.googleapis.com/projects/_/buckets/sample-bucket",
  "specversion": "1.0",
  "subject": "objects/MyFile",
  "time": "2021-11-25T21:04:32.279744Z",
  "type": "google.cloud.storage.object.v1.finalized"
}
"#;

/// GoogleCloudPlatform/functions-framework-conformance,
/// events/generate/data/storage-cloudevent-input.json: the object named
/// in the source, no subject.
const CONFORMANCE_EVENT: &str = r#"{
  "specversion": "1.0",
  "type": "google.cloud.storage.object.v1.finalized",
  "source": "//storage.googleapis.com/projects/_/buckets/some-bucket/objects/folder/Test.cs",
  "id": "aaaaaa-1111-bbbb-2222-cccccccccccc",
  "time": "2020-09-29T11:32:00.000Z",
  "datacontenttype": "application/json",
  "data": {
"bucket": "some-bucket",
"contentType": "text/plain",
"crc32c": "rTVTeQ==",
"etag": "CNHZkbuF/ugCEAE=",
"generation": "1587627537231057",
"id": "some-bucket/folder/Test.cs/1587627537231057",
"kind": "storage#object",
"md5Hash": "kF8MuJ5+CTJxvyhHS1xzRg==",
"mediaLink": "https://www.googleapis.com/download/storage/v1/b/some-bucket/o/folder%2FTest.cs?generation=1587627537231057\u0026alt=media",
"metageneration": "1",
"name": "folder/Test.cs",
"selfLink": "https://www.googleapis.com/storage/v1/b/some-bucket/o/folder/Test.cs",
"size": "352",
"storageClass": "MULTI_REGIONAL",
"timeCreated": "2020-04-23T07:38:57.230Z",
"timeStorageClassUpdated": "2020-04-23T07:38:57.230Z",
"updated": "2020-04-23T07:38:57.230Z"
  }
}
"#;

/// The headers Eventarc sends with a finalized object's event, in the
/// spelling Google's documentation shows them (`ce-id` ... and
/// `Content-Type`), plus the `ce-bucket` extension.
fn eventarc_headers(bucket: &str, name: &str) -> Vec<(String, String)> {
    [
        ("Content-Type", "application/json".to_owned()),
        ("ce-id", "123451234512345".to_owned()),
        ("ce-specversion", "1.0".to_owned()),
        ("ce-time", "2020-01-02T12:34:56.789Z".to_owned()),
        ("ce-type", OBJECT_FINALIZED.to_owned()),
        (
            "ce-source",
            format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
        ),
        ("ce-subject", format!("objects/{name}")),
        ("ce-bucket", bucket.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

type HeaderList = Vec<(String, String)>;

fn with(mut headers: HeaderList, name: &str, value: Option<&str>) -> Vec<(String, String)> {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        headers.push((name.to_owned(), v.to_owned()));
    }
    headers
}

fn run(headers: &[(String, String)], body: &[u8]) -> Result<Parsed, CloudEventError> {
    parse(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())), body)
}

fn object(headers: &[(String, String)], body: &[u8]) -> ObjectEvent {
    match run(headers, body) {
        Ok(Parsed::Object(event)) => event,
        other => panic!("not an object event: {other:?}"),
    }
}

fn structured() -> Vec<(String, String)> {
    vec![("content-type".to_owned(), STRUCTURED_CONTENT_TYPE.to_owned())]
}

#[test]
fn eventarc_binary_mode_parses() {
    let headers = eventarc_headers("sample-bucket", "folder/Test.cs");
    let event = object(&headers, SIMPLE_BODY.as_bytes());
    assert_eq!(event.object.bucket.as_str(), "sample-bucket");
    assert_eq!(event.object.name.as_str(), "folder/Test.cs");
    assert_eq!(event.object.generation.get(), 1_587_627_537_231_057);
    assert_eq!(event.size, Some(352));
    assert_eq!(event.content_type.as_deref(), Some("text/plain"));
    assert_eq!(event.delivery.id, "123451234512345");
    assert_eq!(event.delivery.attempt, None);
    assert_eq!(event.event_type, OBJECT_FINALIZED);
    assert!(event.is_finalize());
    assert_eq!(
        event.delivery.trigger,
        Trigger::CloudEvent {
            source: "//storage.googleapis.com/projects/_/buckets/sample-bucket".into(),
            subject: Some("objects/folder/Test.cs".into()),
            time: Some("2020-01-02T12:34:56.789Z".into()),
            mode: ContentMode::Binary,
        }
    );
}

#[test]
fn numbers_as_numbers_header_names_in_any_case() {
    let headers: Vec<(String, String)> = eventarc_headers("sample-bucket", "MyFile")
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    let event = object(&headers, COMPLEX_BODY.as_bytes());
    assert_eq!(event.object.generation.get(), 96_883_251);
    assert_eq!(event.size, Some(0));
    assert_eq!(event.delivery.id, "123451234512345");
}

#[test]
fn structured_mode_parses() {
    let event = object(&structured(), STRUCTURED_EVENT.as_bytes());
    assert_eq!(event.object.to_string(), "gs://sample-bucket/MyFile#96883251");
    assert_eq!(event.delivery.id, "1234567");
    assert!(event.is_finalize());
    assert!(matches!(
        event.delivery.trigger,
        Trigger::CloudEvent {
            mode: ContentMode::Structured,
            ..
        }
    ));
    // The source may name the object itself; data in base64 reads the
    // same; a charset parameter changes nothing.
    let conformance = object(&structured(), CONFORMANCE_EVENT.as_bytes());
    assert_eq!(
        conformance.object.to_string(),
        "gs://some-bucket/folder/Test.cs#1587627537231057"
    );
    let mut b64: serde_json::Value = serde_json::from_str(STRUCTURED_EVENT).unwrap();
    let data = b64.as_object_mut().unwrap().remove("data").unwrap();
    b64["data_base64"] = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data.to_string()).into();
    let charset = with(
        structured(),
        "content-type",
        Some("Application/CloudEvents+JSON; charset=UTF-8"),
    );
    assert_eq!(object(&charset, b64.to_string().as_bytes()).object, event.object);
}

#[test]
fn the_mode_is_told_by_the_headers() {
    let mode = |headers: &[(&str, &str)]| content_mode(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert_eq!(mode(&[("content-type", "application/json")]), None);
    assert_eq!(mode(&[]), None);
    assert_eq!(
        mode(&[("content-type", "application/json"), ("Ce-Type", OBJECT_FINALIZED)]),
        Some(ContentMode::Binary)
    );
    assert_eq!(mode(&[("CE-SPECVERSION", "1.0")]), Some(ContentMode::Binary));
    assert_eq!(
        mode(&[("content-type", "application/cloudevents+json; charset=utf-8")]),
        Some(ContentMode::Structured)
    );
    assert_eq!(
        mode(&[("content-type", "application/cloudevents-batch+json")]),
        Some(ContentMode::Structured)
    );
}

#[test]
fn other_types_are_not_object_events_and_their_data_is_not_read() {
    let headers = with(
        with(
            eventarc_headers("sample-bucket", "x"),
            "ce-type",
            Some("google.cloud.pubsub.topic.v1.messagePublished"),
        ),
        "ce-source",
        Some("//pubsub.googleapis.com/projects/p/topics/t"),
    );
    assert_eq!(
        run(&headers, b"{\"message\": {}}").unwrap(),
        Parsed::Other(OtherEvent {
            id: "123451234512345".into(),
            event_type: "google.cloud.pubsub.topic.v1.messagePublished".into(),
            source: "//pubsub.googleapis.com/projects/p/topics/t".into(),
        })
    );
    // A deletion is an object event, parsed as strictly, and not a
    // finalize.
    let deleted = with(
        eventarc_headers("sample-bucket", "folder/Test.cs"),
        "ce-type",
        Some("google.cloud.storage.object.v1.deleted"),
    );
    let event = object(&deleted, SIMPLE_BODY.as_bytes());
    assert!(!event.is_finalize());
    assert!(run(&deleted, b"{}").unwrap_err().to_string().contains("generation"));
}

#[test]
fn subjects_percent_encoded_or_not_name_the_same_object() {
    let body = br#"{"bucket":"b-1","name":"dir/a b%.csv","generation":"5"}"#;
    for subject in ["objects/dir/a b%.csv", "objects/dir/a%20b%25.csv"] {
        let headers = with(eventarc_headers("b-1", "x"), "ce-subject", Some(subject));
        assert_eq!(object(&headers, body).object.name.as_str(), "dir/a b%.csv");
    }
}

#[test]
fn malformed_events_say_what_is_wrong() {
    let h = || eventarc_headers("sample-bucket", "folder/Test.cs");
    let body = SIMPLE_BODY.as_bytes();
    let cases: Vec<(HeaderList, Vec<u8>, &str)> = vec![
        (with(h(), "ce-id", None), body.to_vec(), "attribute ce-id is missing"),
        (
            with(h(), "ce-source", None),
            body.to_vec(),
            "attribute ce-source is missing",
        ),
        (
            with(h(), "ce-type", None),
            body.to_vec(),
            "attribute ce-type is missing",
        ),
        (
            with(h(), "ce-specversion", None),
            body.to_vec(),
            "ce-specversion is missing",
        ),
        (
            with(h(), "ce-specversion", Some("0.3")),
            body.to_vec(),
            "only CloudEvents 1.0",
        ),
        (h(), b"not json".to_vec(), "not a Cloud Storage object resource"),
        (h(), b"[1]".to_vec(), "not a Cloud Storage object resource"),
        (
            with(h(), "content-type", Some("application/protobuf")),
            body.to_vec(),
            "not JSON",
        ),
        (h(), Vec::new(), "generation is missing"),
        (
            h(),
            br#"{"bucket":"sample-bucket","name":"folder/Test.cs"}"#.to_vec(),
            "the object's generation is missing",
        ),
        (
            with(with(h(), "ce-subject", None), "ce-bucket", None),
            br#"{"bucket":"sample-bucket","generation":"3"}"#.to_vec(),
            "the object's name is missing",
        ),
        (
            h(),
            br#"{"bucket":"sample-bucket","name":"folder/Test.cs","generation":"-3"}"#.to_vec(),
            "data.generation",
        ),
        (
            h(),
            br#"{"bucket":"sample-bucket","name":"folder/Test.cs","generation":1.5}"#.to_vec(),
            "data.generation",
        ),
        (
            h(),
            br#"{"bucket":"sample-bucket","name":"folder/Test.cs","generation":"3","kind":"storage#bucket"}"#.to_vec(),
            "storage#bucket",
        ),
        (
            with(h(), "ce-subject", Some("folder/Test.cs")),
            body.to_vec(),
            "not objects/NAME",
        ),
        (
            with(h(), "ce-source", Some("//pubsub.googleapis.com/projects/p/topics/t")),
            body.to_vec(),
            "ce-source",
        ),
        (
            with(h(), "ce-subject", Some("objects/folder/Other.cs")),
            body.to_vec(),
            "data.name and ce-subject disagree on the object's name",
        ),
        (
            with(h(), "ce-bucket", Some("other-bucket")),
            body.to_vec(),
            "data.bucket and ce-bucket disagree on the object's bucket",
        ),
        (
            with(
                h(),
                "ce-source",
                Some("//storage.googleapis.com/projects/_/buckets/other-bucket"),
            ),
            body.to_vec(),
            "data.bucket and ce-source disagree",
        ),
        (
            with(
                with(h(), "ce-bucket", Some("In Bucket")),
                "ce-source",
                Some("//storage.googleapis.com/projects/_/buckets/In Bucket"),
            ),
            br#"{"name":"folder/Test.cs","generation":"3"}"#.to_vec(),
            "ce-bucket: \"In Bucket\" is not a valid bucket name",
        ),
        (
            with(h(), "content-type", Some("application/cloudevents-batch+json")),
            b"[]".to_vec(),
            "batched CloudEvents",
        ),
        (structured(), b"[]".to_vec(), "not a structured CloudEvent"),
        (
            structured(),
            b"{\"specversion\":\"1.0\"}".to_vec(),
            "attribute id is missing",
        ),
        (
            structured(),
            STRUCTURED_EVENT
                .replace("\"subject\": \"objects/MyFile\"", "\"subject\": \"objects/Other\"")
                .into_bytes(),
            "data.name and subject disagree",
        ),
        (
            structured(),
            STRUCTURED_EVENT.replace("\"generation\": 96883251,", "").into_bytes(),
            "the object's generation is missing (looked in data.generation)",
        ),
        (
            structured(),
            STRUCTURED_EVENT
                .replace("\"id\": \"1234567\"", "\"id\": [1]")
                .into_bytes(),
            "attribute id is [1], not a string",
        ),
    ];
    for (headers, body, expected) in cases {
        let err = run(&headers, &body).unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
    }
    // A header sent twice must say one thing.
    let mut twice = h();
    twice.push(("CE-ID".into(), "another".into()));
    assert!(run(&twice, body).unwrap_err().to_string().contains("sent twice"));
}

#[test]
fn the_notification_builder_sends_what_eventarc_sends() {
    let notification = Notification::finalize("in-bucket", "dir/vuelos año.csv", 17)
        .size(99)
        .time("2026-01-01T00:00:00Z");
    let (headers, body) = notification.cloudevent("m-1");
    let event = object(&headers, &body);
    assert_eq!(event.object.to_string(), "gs://in-bucket/dir/vuelos año.csv#17");
    assert_eq!((event.size, event.delivery.id.as_str()), (Some(99), "m-1"));
    assert!(event.is_finalize());
    let structured_event = notification.structured_cloudevent("m-1");
    let again = object(&structured(), structured_event.to_string().as_bytes());
    assert_eq!(again.object, event.object);
}
