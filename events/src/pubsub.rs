//! The Pub/Sub push envelope of a Cloud Storage notification
//! (`payloadFormat=JSON_API_V1`), parsed into an [`ObjectEvent`].
//!
//! Parsing is lenient where Google and its emulator differ (`messageId` or
//! `message_id`, escaped `\/`, padded or unpadded base64) and strict about
//! meaning: an envelope whose attributes and payload disagree is malformed.

use std::collections::HashMap;

use serde::Deserialize;

use crate::object::{BucketName, Generation, ObjectName, ObjectRef};
use crate::{Delivery, ObjectEvent, Trigger};

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

/// Parses a push request body into the event it carries.
pub fn parse(body: &[u8]) -> Result<ObjectEvent, EnvelopeError> {
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
    Ok(ObjectEvent {
        event_type,
        object,
        size,
        content_type: payload.and_then(|p| p.content_type),
        delivery: Delivery {
            id: message_id,
            attempt: raw.delivery_attempt,
            trigger: Trigger::PubSub {
                subscription: raw.subscription,
                publish_time: message.publish_time.or(message.publish_time_snake),
            },
        },
    })
}

fn decode_base64(data: &str) -> Result<Vec<u8>, EnvelopeError> {
    crate::decode_base64_any(data).ok_or_else(|| {
        EnvelopeError::BadBase64(format!(
            "{} characters that decode under no base64 alphabet",
            data.trim().len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::notification::Notification;

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
        let env = Notification::finalize("in-bucket", "dir/flights.csv", 17)
            .size(99)
            .push_envelope("m1", "projects/p/subscriptions/s");
        let d = parse(env.to_string().as_bytes()).unwrap();
        assert_eq!(d.delivery.id, "m1");
        assert_eq!(d.object.bucket.as_str(), "in-bucket");
        assert_eq!(d.object.name.as_str(), "dir/flights.csv");
        assert_eq!(d.object.generation.get(), 17);
        assert_eq!(d.size, Some(99));
        assert!(d.is_finalize());
    }

    #[test]
    fn emulator_quirks_are_accepted() {
        // Escaped slashes, both id spellings, unpadded base64.
        let data = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(br#"{"bucket":"in-bucket","name":"a\/b.csv","generation":"1700000000000001","size":"5"}"#);
        let body = format!(
            r#"{{"message":{{"attributes":{{"eventType":"OBJECT_FINALIZE","bucketId":"in-bucket","objectId":"a\/b.csv","objectGeneration":"1700000000000001"}},"data":"{data}","messageId":"7","message_id":"7"}},"subscription":"projects\/p\/subscriptions\/s"}}"#
        );
        let d = parse(body.as_bytes()).unwrap();
        assert_eq!(d.object.name.as_str(), "a/b.csv");
        assert!(matches!(
            &d.delivery.trigger,
            Trigger::PubSub { subscription: Some(s), .. } if s == "projects/p/subscriptions/s"
        ));
    }

    #[test]
    fn attributes_alone_are_enough() {
        let d = parse(&envelope(attrs(), None)).unwrap();
        assert_eq!(d.object.generation.get(), 1_700_000_000_000_001);
        assert_eq!(d.size, None);
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
            let err = parse(&body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
        }
    }

    #[test]
    fn disagreeing_payload_is_inconsistent() {
        let data = base64::engine::general_purpose::STANDARD
            .encode(br#"{"bucket":"other-bucket","name":"a/b.csv","generation":"1700000000000001"}"#);
        let err = parse(&envelope(attrs(), Some(&data))).unwrap_err();
        assert_eq!(err, EnvelopeError::Inconsistent("bucketId"));
    }
}
