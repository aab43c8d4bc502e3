//! The CloudEvent of a Cloud Storage object event, as an Eventarc trigger
//! posts it, parsed into an [`ObjectEvent`].
//!
//! Eventarc sends the binary content mode: the attributes as `ce-*` headers
//! (`ce-id`, `ce-source: //storage.googleapis.com/projects/_/buckets/BUCKET`,
//! `ce-specversion: 1.0`, `ce-type: google.cloud.storage.object.v1.finalized`,
//! `ce-subject: objects/NAME`, `ce-time`, and the extension `ce-bucket`), and
//! the JSON API's object resource as the body (`Content-Type:
//! application/json`). The structured content mode (`Content-Type:
//! application/cloudevents+json`) carries the same attributes as members of
//! one JSON object and the object resource as its `data` (or `data_base64`).
//!
//! Parsing is lenient where senders differ (header names in any case,
//! generation and size as strings or numbers, a subject percent-encoded or
//! not, a source that names the object too) and strict about meaning: the
//! attributes and the object resource must agree on the bucket and the name,
//! and the resource must give the generation. A CloudEvent whose type is not
//! a Cloud Storage object event is [`Parsed::Other`]: not work, and nothing
//! in its data is read.

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::object::{BucketName, Generation, ObjectName, ObjectRef};
use crate::{Delivery, ObjectEvent, Trigger};

/// The media type of the structured content mode (the JSON event format).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Every Cloud Storage object event type starts so (`finalized`, `deleted`,
/// `archived`, `metadataUpdated`).
pub const OBJECT_TYPE_PREFIX: &str = "google.cloud.storage.object.v1.";

/// What the source of a Cloud Storage event starts with.
const SOURCE_PREFIX: &str = "//storage.googleapis.com/projects/";

/// How the request carries the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-*` headers, the data as the body (Eventarc's way).
    Binary,
    /// One JSON object, `application/cloudevents+json`.
    Structured,
}

/// What a CloudEvent turns out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A Cloud Storage object event (`google.cloud.storage.object.v1.*`).
    Object(ObjectEvent),
    /// A CloudEvent about something else: not work.
    Other(OtherEvent),
}

/// A CloudEvent that is not about a storage object, as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    #[error("the body is not a structured CloudEvent: {0}")]
    NotStructured(String),
    #[error("batched CloudEvents ({0}) are not accepted: send one event per request")]
    Batched(String),
    #[error("CloudEvent attribute {0} is missing")]
    MissingAttribute(&'static str),
    #[error("CloudEvent attribute {name} is {problem}")]
    BadAttribute { name: &'static str, problem: String },
    #[error("the event data is not a Cloud Storage object resource: {0}")]
    BadData(String),
    #[error("the object's {what} is missing (looked in {looked_in})")]
    Missing {
        what: &'static str,
        looked_in: &'static str,
    },
    #[error("{field}: {problem}")]
    BadField { field: &'static str, problem: String },
    #[error("{first} and {second} disagree on the object's {what}")]
    Inconsistent {
        what: &'static str,
        first: &'static str,
        second: &'static str,
    },
}

/// The attribute names as each mode spells them, for messages that name
/// what the sender sent.
struct Names {
    id: &'static str,
    source: &'static str,
    specversion: &'static str,
    event_type: &'static str,
    subject: &'static str,
    bucket: &'static str,
    bucket_looked_in: &'static str,
    name_looked_in: &'static str,
    generation_looked_in: &'static str,
}

const BINARY: Names = Names {
    id: "ce-id",
    source: "ce-source",
    specversion: "ce-specversion",
    event_type: "ce-type",
    subject: "ce-subject",
    bucket: "ce-bucket",
    bucket_looked_in: "data.bucket, ce-bucket and ce-source",
    name_looked_in: "data.name, ce-subject and ce-source",
    generation_looked_in: "data.generation, the body",
};

const STRUCTURED: Names = Names {
    id: "id",
    source: "source",
    specversion: "specversion",
    event_type: "type",
    subject: "subject",
    bucket: "bucket",
    bucket_looked_in: "data.bucket, bucket and source",
    name_looked_in: "data.name, subject and source",
    generation_looked_in: "data.generation",
};

/// The request's headers, names in any case.
struct Headers<'h>(Vec<(&'h str, &'h [u8])>);

impl<'h> Headers<'h> {
    fn new(headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> Headers<'h> {
        Headers(headers.into_iter().collect())
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The header's value, trimmed; an error when it is not UTF-8 or comes
    /// twice with different values.
    fn get(&self, name: &'static str) -> Result<Option<&'h str>, CloudEventError> {
        let mut found: Option<&'h str> = None;
        for (n, v) in &self.0 {
            if !n.eq_ignore_ascii_case(name) {
                continue;
            }
            let v = std::str::from_utf8(v)
                .map_err(|_| CloudEventError::BadAttribute {
                    name,
                    problem: "not UTF-8".into(),
                })?
                .trim();
            match found {
                Some(f) if f != v => {
                    return Err(CloudEventError::BadAttribute {
                        name,
                        problem: format!("sent twice, as {f:?} and {v:?}"),
                    });
                }
                _ => found = Some(v),
            }
        }
        Ok(found)
    }

    /// The media type of `Content-Type`, lower case, without parameters.
    fn media_type(&self) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }

    fn mode(&self) -> Option<ContentMode> {
        if self
            .media_type()
            .is_some_and(|m| m.starts_with("application/cloudevents"))
        {
            Some(ContentMode::Structured)
        } else if self.has("ce-specversion") || self.has("ce-type") {
            Some(ContentMode::Binary)
        } else {
            None
        }
    }
}

/// Whether the headers say the request carries a CloudEvent, and in which
/// mode: a `Content-Type` of `application/cloudevents...` is the structured
/// mode; a `ce-specversion` or `ce-type` header the binary mode; anything
/// else is not a CloudEvent (`None`).
pub fn content_mode<'h>(headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> Option<ContentMode> {
    Headers::new(headers).mode()
}

/// Parses a request, its headers (name and value) and its body, into the
/// event it carries. Headers that say no mode are read as the binary mode
/// (and miss its attributes).
pub fn parse<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> Result<Parsed, CloudEventError> {
    let headers = Headers::new(headers);
    match headers.mode() {
        Some(ContentMode::Structured) => parse_structured(&headers, body),
        Some(ContentMode::Binary) | None => parse_binary(&headers, body),
    }
}

/// The context attributes this service reads.
struct Attributes {
    id: String,
    source: String,
    event_type: String,
    subject: Option<String>,
    time: Option<String>,
    bucket: Option<String>,
}

fn required(value: Option<&str>, name: &'static str) -> Result<String, CloudEventError> {
    value
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or(CloudEventError::MissingAttribute(name))
}

fn check_specversion(value: Option<&str>, name: &'static str) -> Result<(), CloudEventError> {
    match required(value, name)?.as_str() {
        "1.0" => Ok(()),
        other => Err(CloudEventError::BadAttribute {
            name,
            problem: format!("{other:?}; only CloudEvents 1.0 is read"),
        }),
    }
}

fn parse_binary(headers: &Headers<'_>, body: &[u8]) -> Result<Parsed, CloudEventError> {
    let n = &BINARY;
    check_specversion(headers.get(n.specversion)?, n.specversion)?;
    let attributes = Attributes {
        id: required(headers.get(n.id)?, n.id)?,
        source: required(headers.get(n.source)?, n.source)?,
        event_type: required(headers.get(n.event_type)?, n.event_type)?,
        subject: headers.get(n.subject)?.map(str::to_owned),
        time: headers.get("ce-time")?.map(str::to_owned),
        bucket: headers.get(n.bucket)?.map(str::to_owned),
    };
    let data = || {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(RawObject::default());
        }
        if let Some(media) = headers.media_type()
            && !is_json(&media)
        {
            return Err(CloudEventError::BadData(format!("the body is {media}, not JSON")));
        }
        serde_json::from_slice(body).map_err(|e| CloudEventError::BadData(e.to_string()))
    };
    object_event(attributes, n, ContentMode::Binary, data)
}

fn parse_structured(headers: &Headers<'_>, body: &[u8]) -> Result<Parsed, CloudEventError> {
    let media = headers.media_type().unwrap_or_default();
    if media.starts_with("application/cloudevents-batch") {
        return Err(CloudEventError::Batched(media));
    }
    if media != STRUCTURED_CONTENT_TYPE {
        return Err(CloudEventError::NotStructured(format!(
            "{media} is not an event format this service reads ({STRUCTURED_CONTENT_TYPE} is)"
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| CloudEventError::NotStructured(e.to_string()))?;
    let serde_json::Value::Object(members) = value else {
        return Err(CloudEventError::NotStructured("not a JSON object".into()));
    };
    let text = |name: &'static str| -> Result<Option<String>, CloudEventError> {
        match members.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_owned())),
            // Ids are strings, but a number means the same.
            Some(serde_json::Value::Number(id)) if name == "id" => Ok(Some(id.to_string())),
            Some(other) => Err(CloudEventError::BadAttribute {
                name,
                problem: format!("{other}, not a string"),
            }),
        }
    };
    let n = &STRUCTURED;
    check_specversion(text(n.specversion)?.as_deref(), n.specversion)?;
    let attributes = Attributes {
        id: required(text(n.id)?.as_deref(), n.id)?,
        source: required(text(n.source)?.as_deref(), n.source)?,
        event_type: required(text(n.event_type)?.as_deref(), n.event_type)?,
        subject: text(n.subject)?,
        time: text("time")?,
        bucket: text(n.bucket)?,
    };
    let data = || {
        let present = |name: &str| members.get(name).filter(|v| !v.is_null());
        if let Some(media) = text("datacontenttype")?
            && !is_json(&media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        {
            return Err(CloudEventError::BadData(format!(
                "datacontenttype is {media}, not JSON"
            )));
        }
        let object = match (present("data"), present("data_base64")) {
            (None, None) => return Ok(RawObject::default()),
            (Some(_), Some(_)) => {
                return Err(CloudEventError::BadData("both data and data_base64 are given".into()));
            }
            // Some senders put the JSON text in a string.
            (Some(serde_json::Value::String(s)), None) => serde_json::from_str(s),
            (Some(d), None) => serde_json::from_value(d.clone()),
            (None, Some(serde_json::Value::String(b64))) => {
                let bytes = crate::decode_base64_any(b64)
                    .ok_or_else(|| CloudEventError::BadData("data_base64 is not valid base64".into()))?;
                serde_json::from_slice(&bytes)
            }
            (None, Some(other)) => {
                return Err(CloudEventError::BadData(format!(
                    "data_base64 is {other}, not a string"
                )));
            }
        };
        object.map_err(|e| CloudEventError::BadData(e.to_string()))
    };
    object_event(attributes, n, ContentMode::Structured, data)
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// The part of the object resource we use. The JSON API sends numbers as
/// strings; Google's own samples of the CloudEvent sometimes as numbers.
#[derive(Default, Deserialize)]
struct RawObject {
    kind: Option<String>,
    bucket: Option<String>,
    name: Option<String>,
    generation: Option<Scalar>,
    size: Option<Scalar>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// `//storage.googleapis.com/projects/P/buckets/BUCKET`, or the same with
/// `/objects/NAME` (as the Functions Framework's converted legacy events
/// spell it): the bucket and, when there, the name.
fn storage_source(source: &str) -> Option<(&str, Option<&str>)> {
    let (project, rest) = source.strip_prefix(SOURCE_PREFIX)?.split_once("/buckets/")?;
    if project.is_empty() || project.contains('/') {
        return None;
    }
    Some(match rest.split_once("/objects/") {
        Some((bucket, name)) => (bucket, Some(name)),
        None => (rest, None),
    })
}

/// Object names in attributes may come percent-encoded (the HTTP binding
/// says so) or as they are (Eventarc sends them so).
fn same_name(a: &str, b: &str) -> bool {
    let decoded = |s: &str| percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned());
    a == b || decoded(a).is_some_and(|d| d == b) || decoded(b).is_some_and(|d| d == a)
}

/// The one value the data and the attributes give for `what`: the data's
/// when it has one, else the first attribute's; every other that is present
/// must agree. Returns where the value came from too.
fn agree<'a>(
    what: &'static str,
    data: (&'static str, Option<&'a str>),
    attributes: &[(&'static str, Option<&'a str>)],
    same: fn(&str, &str) -> bool,
    looked_in: &'static str,
) -> Result<(&'static str, &'a str), CloudEventError> {
    let mut chosen = data.1.map(|v| (data.0, v));
    for &(name, value) in attributes {
        let Some(value) = value else { continue };
        match chosen {
            None => chosen = Some((name, value)),
            Some((first, v)) if !same(value, v) => {
                return Err(CloudEventError::Inconsistent {
                    what,
                    first,
                    second: name,
                });
            }
            Some(_) => {}
        }
    }
    chosen.ok_or(CloudEventError::Missing { what, looked_in })
}

fn object_event(
    attributes: Attributes,
    n: &Names,
    mode: ContentMode,
    data: impl FnOnce() -> Result<RawObject, CloudEventError>,
) -> Result<Parsed, CloudEventError> {
    if !attributes.event_type.starts_with(OBJECT_TYPE_PREFIX) {
        return Ok(Parsed::Other(OtherEvent {
            id: attributes.id,
            event_type: attributes.event_type,
            source: attributes.source,
        }));
    }
    let data = data()?;
    if let Some(kind) = data.kind.as_deref()
        && kind != "storage#object"
    {
        return Err(CloudEventError::BadData(format!(
            "kind is {kind:?}, not storage#object"
        )));
    }
    let (source_bucket, source_name) =
        storage_source(&attributes.source).ok_or_else(|| CloudEventError::BadAttribute {
            name: n.source,
            problem: format!(
                "{:?}, not {SOURCE_PREFIX}_/buckets/BUCKET as a Cloud Storage event's",
                attributes.source
            ),
        })?;
    let subject_name = match attributes.subject.as_deref() {
        None => None,
        Some(subject) => Some(
            subject
                .strip_prefix("objects/")
                .ok_or_else(|| CloudEventError::BadAttribute {
                    name: n.subject,
                    problem: format!("{subject:?}, not objects/NAME"),
                })?,
        ),
    };
    let (bucket_from, bucket) = agree(
        "bucket",
        ("data.bucket", data.bucket.as_deref()),
        &[
            (n.bucket, attributes.bucket.as_deref()),
            (n.source, Some(source_bucket)),
        ],
        |a, b| a == b,
        n.bucket_looked_in,
    )?;
    let (name_from, name) = agree(
        "name",
        ("data.name", data.name.as_deref()),
        &[(n.subject, subject_name), (n.source, source_name)],
        same_name,
        n.name_looked_in,
    )?;
    let generation = data.generation.as_ref().ok_or(CloudEventError::Missing {
        what: "generation",
        looked_in: n.generation_looked_in,
    })?;
    let object = ObjectRef {
        bucket: BucketName::parse(bucket).map_err(|problem| CloudEventError::BadField {
            field: bucket_from,
            problem,
        })?,
        name: ObjectName::parse(name).map_err(|problem| CloudEventError::BadField {
            field: name_from,
            problem,
        })?,
        generation: Generation::parse(&generation.text()).map_err(|problem| CloudEventError::BadField {
            field: "data.generation",
            problem,
        })?,
    };
    Ok(Parsed::Object(ObjectEvent {
        event_type: attributes.event_type,
        object,
        size: data.size.and_then(|s| s.text().parse().ok()),
        content_type: data.content_type,
        delivery: Delivery {
            id: attributes.id,
            attempt: None,
            trigger: Trigger::CloudEvent {
                source: attributes.source,
                subject: attributes.subject,
                time: attributes.time,
                mode,
            },
        },
    }))
}

#[cfg(test)]
mod tests {
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
        b64["data_base64"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data.to_string()).into();
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
                br#"{"bucket":"sample-bucket","name":"folder/Test.cs","generation":"3","kind":"storage#bucket"}"#
                    .to_vec(),
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
}
