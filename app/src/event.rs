//! The Pub/Sub push envelope and the Cloud Storage notification inside it,
//! parsed into types that can only hold valid values.
//!
//! Parsing is lenient where Google and its emulator differ (`messageId` or
//! `message_id`, escaped `\/`, padded or unpadded base64) and strict about
//! meaning: an envelope whose attributes and payload disagree is malformed.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Cloud Storage's event types, as notification attributes spell them.
pub const OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not a Pub/Sub push envelope: {0}")]
    NotAnEnvelope(String),
    #[error("message.data is not valid base64: {0}")]
    BadBase64(String),
    #[error("message.data is not a Cloud Storage object resource: {0}")]
    BadPayload(String),
    #[error("attribute {name} is {problem}")]
    BadAttribute { name: &'static str, problem: String },
    #[error("attributes and payload disagree on {0}")]
    Inconsistent(&'static str),
}

/// A Cloud Storage bucket name (3-222 characters of `a-z 0-9 - _ .`,
/// starting and ending with a letter or digit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(s: &str) -> Result<BucketName, String> {
        let ok_len = (3..=222).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
        let ok_ends = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_ends {
            Ok(BucketName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid bucket name (3-222 of a-z 0-9 - _ ., starting and ending with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of the local mode's own bucket names (`input`, `output`), known
    /// to be valid.
    pub(crate) fn local(name: &'static str) -> BucketName {
        debug_assert!(BucketName::parse(name).is_ok());
        BucketName(name.to_owned())
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Cloud Storage object name: 1-1024 bytes of UTF-8 without CR, LF or NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectName(String);

impl ObjectName {
    pub fn parse(s: &str) -> Result<ObjectName, String> {
        if s.is_empty() || s.len() > 1024 {
            return Err(format!("object name must be 1-1024 bytes, got {}", s.len()));
        }
        if s.contains(['\r', '\n', '\0']) {
            return Err("object name contains CR, LF or NUL".into());
        }
        Ok(ObjectName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object generation: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Generation(i64);

impl Generation {
    pub fn parse(s: &str) -> Result<Generation, String> {
        match s.trim().parse::<i64>() {
            Ok(g) if g > 0 => Ok(Generation(g)),
            _ => Err(format!("{s:?} is not a positive integer generation")),
        }
    }

    pub fn new(g: i64) -> Option<Generation> {
        (g > 0).then_some(Generation(g))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One generation of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectRef {
    pub bucket: BucketName,
    pub name: ObjectName,
    pub generation: Generation,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}/{}#{}", self.bucket, self.name, self.generation)
    }
}

/// A parsed push delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub publish_time: Option<String>,
    pub subscription: Option<String>,
    /// Present when the subscription has a dead-letter policy.
    pub delivery_attempt: Option<u32>,
    pub event: StorageEvent,
}

/// What happened in Cloud Storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEvent {
    /// `OBJECT_FINALIZE`, `OBJECT_DELETE`, ... as sent.
    pub event_type: String,
    pub object: ObjectRef,
    pub size: Option<u64>,
    pub content_type: Option<String>,
}

impl StorageEvent {
    pub fn is_finalize(&self) -> bool {
        self.event_type == OBJECT_FINALIZE
    }
}

#[derive(Deserialize)]
struct RawEnvelope {
    message: RawMessage,
    subscription: Option<String>,
    #[serde(rename = "deliveryAttempt")]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, String>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    #[serde(rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(rename = "publishTime")]
    publish_time: Option<String>,
    #[serde(rename = "publish_time")]
    publish_time_snake: Option<String>,
}

/// The part of the JSON_API_V1 object resource we use. Numbers arrive as
/// strings in the JSON API.
#[derive(Deserialize)]
struct RawObject {
    bucket: Option<String>,
    name: Option<String>,
    generation: Option<String>,
    size: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
}

/// Parses a push request body.
pub fn parse_push(body: &[u8]) -> Result<Delivery, EnvelopeError> {
    let raw: RawEnvelope = serde_json::from_slice(body).map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
    let message = raw.message;
    let message_id = message
        .message_id
        .or(message.message_id_snake)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| EnvelopeError::NotAnEnvelope("message.messageId is missing".into()))?;

    let payload: Option<RawObject> = match message.data.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(data) => {
            let bytes = decode_base64(data)?;
            Some(serde_json::from_slice(&bytes).map_err(|e| EnvelopeError::BadPayload(e.to_string()))?)
        }
    };
    let attrs = &message.attributes;
    let pick = |attr: &'static str, from_payload: Option<&String>| -> Result<String, EnvelopeError> {
        match (attrs.get(attr), from_payload) {
            (Some(a), Some(p)) if a != p => Err(EnvelopeError::Inconsistent(attr)),
            (Some(a), _) => Ok(a.clone()),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err(EnvelopeError::BadAttribute {
                name: attr,
                problem: "missing".into(),
            }),
        }
    };
    let bucket = pick("bucketId", payload.as_ref().and_then(|p| p.bucket.as_ref()))?;
    let name = pick("objectId", payload.as_ref().and_then(|p| p.name.as_ref()))?;
    let generation = pick("objectGeneration", payload.as_ref().and_then(|p| p.generation.as_ref()))?;
    let event_type = attrs.get("eventType").cloned().ok_or(EnvelopeError::BadAttribute {
        name: "eventType",
        problem: "missing".into(),
    })?;
    let object = ObjectRef {
        bucket: BucketName::parse(&bucket).map_err(|problem| EnvelopeError::BadAttribute {
            name: "bucketId",
            problem,
        })?,
        name: ObjectName::parse(&name).map_err(|problem| EnvelopeError::BadAttribute {
            name: "objectId",
            problem,
        })?,
        generation: Generation::parse(&generation).map_err(|problem| EnvelopeError::BadAttribute {
            name: "objectGeneration",
            problem,
        })?,
    };
    let size = payload
        .as_ref()
        .and_then(|p| p.size.as_deref())
        .and_then(|s| s.parse().ok());
    Ok(Delivery {
        message_id,
        publish_time: message.publish_time.or(message.publish_time_snake),
        subscription: raw.subscription,
        delivery_attempt: raw.delivery_attempt,
        event: StorageEvent {
            event_type,
            object,
            size,
            content_type: payload.and_then(|p| p.content_type),
        },
    })
}

fn decode_base64(data: &str) -> Result<Vec<u8>, EnvelopeError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let data = data.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(data).ok())
        .ok_or_else(|| {
            EnvelopeError::BadBase64(format!(
                "{} characters that decode under no base64 alphabet",
                data.len()
            ))
        })
}

/// The object resource Cloud Storage sends with `payloadFormat=JSON_API_V1`,
/// for the local notifier and tests.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResource {
    pub kind: &'static str,
    pub id: String,
    pub self_link: String,
    pub name: String,
    pub bucket: String,
    pub generation: String,
    pub metageneration: String,
    pub content_type: String,
    pub time_created: String,
    pub updated: String,
    pub size: String,
}

/// The Pub/Sub message Cloud Storage publishes for an OBJECT_FINALIZE
/// notification (`payloadFormat=JSON_API_V1`): the object resource as data
/// and the notification attributes. `config` names the notification
/// configuration (`local`, `reconcile`).
pub fn finalize_message(
    bucket: &str,
    name: &str,
    generation: i64,
    size: u64,
    now_rfc3339: &str,
    config: &str,
) -> (Vec<u8>, Vec<(String, String)>) {
    let resource = ObjectResource {
        kind: "storage#object",
        id: format!("{bucket}/{name}/{generation}"),
        self_link: format!(
            "https://www.googleapis.com/storage/v1/b/{bucket}/o/{}",
            percent_encode(name)
        ),
        name: name.to_owned(),
        bucket: bucket.to_owned(),
        generation: generation.to_string(),
        metageneration: "1".into(),
        content_type: content_type_for(name).into(),
        time_created: now_rfc3339.to_owned(),
        updated: now_rfc3339.to_owned(),
        size: size.to_string(),
    };
    let data = serde_json::to_vec(&resource).unwrap_or_default();
    let attributes = [
        ("bucketId", bucket.to_owned()),
        ("eventTime", now_rfc3339.to_owned()),
        ("eventType", OBJECT_FINALIZE.to_owned()),
        (
            "notificationConfig",
            format!("projects/_/buckets/{bucket}/notificationConfigs/{config}"),
        ),
        ("objectGeneration", generation.to_string()),
        ("objectId", name.to_owned()),
        ("payloadFormat", "JSON_API_V1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (data, attributes)
}

/// Builds the push envelope Pub/Sub would POST for an OBJECT_FINALIZE
/// notification, the same shape Google sends.
pub fn finalize_envelope(
    bucket: &str,
    name: &str,
    generation: i64,
    size: u64,
    message_id: &str,
    subscription: &str,
    now_rfc3339: &str,
) -> serde_json::Value {
    let (data, attributes) = finalize_message(bucket, name, generation, size, now_rfc3339, "local");
    let attributes: serde_json::Map<String, serde_json::Value> =
        attributes.into_iter().map(|(k, v)| (k, v.into())).collect();
    serde_json::json!({
        "message": {
            "attributes": attributes,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": now_rfc3339,
            "publish_time": now_rfc3339,
        },
        "subscription": subscription,
    })
}

fn content_type_for(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".gz") {
        "application/gzip"
    } else if lower.ends_with(".csv") {
        "text/csv"
    } else {
        "application/octet-stream"
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(attrs: serde_json::Value, data: Option<&str>) -> Vec<u8> {
        let mut message =
            serde_json::json!({"attributes": attrs, "messageId": "42", "publishTime": "2026-01-01T00:00:00Z"});
        if let Some(d) = data {
            message["data"] = d.into();
        }
        serde_json::json!({"message": message, "subscription": "projects/p/subscriptions/s"})
            .to_string()
            .into_bytes()
    }

    fn attrs() -> serde_json::Value {
        serde_json::json!({"eventType": "OBJECT_FINALIZE", "bucketId": "in-bucket", "objectId": "a/b.csv", "objectGeneration": "1700000000000001", "payloadFormat": "JSON_API_V1"})
    }

    #[test]
    fn google_shaped_envelope_parses() {
        let env = finalize_envelope(
            "in-bucket",
            "dir/flights.csv",
            17,
            99,
            "m1",
            "projects/p/subscriptions/s",
            "2026-01-01T00:00:00Z",
        );
        let d = parse_push(env.to_string().as_bytes()).unwrap();
        assert_eq!(d.message_id, "m1");
        assert_eq!(d.event.object.bucket.as_str(), "in-bucket");
        assert_eq!(d.event.object.name.as_str(), "dir/flights.csv");
        assert_eq!(d.event.object.generation.get(), 17);
        assert_eq!(d.event.size, Some(99));
        assert!(d.event.is_finalize());
    }

    #[test]
    fn emulator_quirks_are_accepted() {
        // Escaped slashes, both id spellings, unpadded base64.
        let data = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(br#"{"bucket":"in-bucket","name":"a\/b.csv","generation":"1700000000000001","size":"5"}"#);
        let body = format!(
            r#"{{"message":{{"attributes":{{"eventType":"OBJECT_FINALIZE","bucketId":"in-bucket","objectId":"a\/b.csv","objectGeneration":"1700000000000001"}},"data":"{data}","messageId":"7","message_id":"7"}},"subscription":"projects\/p\/subscriptions\/s"}}"#
        );
        let d = parse_push(body.as_bytes()).unwrap();
        assert_eq!(d.event.object.name.as_str(), "a/b.csv");
        assert_eq!(d.subscription.as_deref(), Some("projects/p/subscriptions/s"));
    }

    #[test]
    fn attributes_alone_are_enough() {
        let d = parse_push(&envelope(attrs(), None)).unwrap();
        assert_eq!(d.event.object.generation.get(), 1_700_000_000_000_001);
        assert_eq!(d.event.size, None);
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not a Pub/Sub push envelope"),
            (b"{}".to_vec(), "not a Pub/Sub push envelope"),
            (br#"{"message":{"attributes":{}}}"#.to_vec(), "messageId is missing"),
            (envelope(attrs(), Some("%%%not base64%%%")), "not valid base64"),
            (
                envelope(attrs(), Some("bm90IGpzb24=")),
                "not a Cloud Storage object resource",
            ),
            (
                envelope(
                    serde_json::json!({"eventType": "OBJECT_FINALIZE", "objectId": "a.csv", "objectGeneration": "1"}),
                    None,
                ),
                "bucketId is missing",
            ),
            (
                envelope(
                    serde_json::json!({"eventType": "OBJECT_FINALIZE", "bucketId": "in-bucket", "objectId": "a.csv", "objectGeneration": "-3"}),
                    None,
                ),
                "objectGeneration",
            ),
            (
                envelope(
                    serde_json::json!({"eventType": "OBJECT_FINALIZE", "bucketId": "In Bucket", "objectId": "a.csv", "objectGeneration": "3"}),
                    None,
                ),
                "not a valid bucket name",
            ),
            (
                envelope(
                    serde_json::json!({"bucketId": "in-bucket", "objectId": "a.csv", "objectGeneration": "3"}),
                    None,
                ),
                "eventType is missing",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_push(&body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
        }
    }

    #[test]
    fn disagreeing_payload_is_inconsistent() {
        let data = base64::engine::general_purpose::STANDARD
            .encode(br#"{"bucket":"other-bucket","name":"a/b.csv","generation":"1700000000000001"}"#);
        let err = parse_push(&envelope(attrs(), Some(&data))).unwrap_err();
        assert_eq!(err, EnvelopeError::Inconsistent("bucketId"));
    }
}
