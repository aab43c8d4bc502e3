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
mod tests;
