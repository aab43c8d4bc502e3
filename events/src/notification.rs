//! The OBJECT_FINALIZE notification Cloud Storage publishes
//! (`payloadFormat=JSON_API_V1`: the object resource as data, the
//! notification's attributes) and the push envelope Pub/Sub posts with it,
//! built the way Google does: for the local notifier, `scorer reconcile`
//! and the tests. Also the CloudEvent an Eventarc trigger posts for the same
//! object (`google.cloud.storage.object.v1.finalized`), in either content
//! mode, for the tests.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::{OBJECT_FINALIZE, OBJECT_FINALIZED};

/// What a path segment of a JSON API URL keeps unencoded (RFC 3986's
/// unreserved characters).
pub const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `name` as one URL path segment (`/` encoded too), as the JSON API wants
/// object names.
pub fn path_segment(name: &str) -> String {
    utf8_percent_encode(name, PATH_SEGMENT).to_string()
}

/// The object resource Cloud Storage sends with `payloadFormat=JSON_API_V1`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectResource<'a> {
    kind: &'static str,
    id: String,
    self_link: String,
    name: &'a str,
    bucket: &'a str,
    generation: String,
    metageneration: &'static str,
    content_type: &'static str,
    time_created: &'a str,
    updated: &'a str,
    size: String,
}

/// An OBJECT_FINALIZE notification, built step by step:
/// `Notification::finalize(bucket, name, generation).size(n)`.
#[derive(Debug, Clone)]
pub struct Notification {
    bucket: String,
    name: String,
    generation: i64,
    size: u64,
    time: String,
    config: String,
}

impl Notification {
    /// A new object generation; size 0, the current time, and the
    /// notification configuration `local` until said otherwise.
    pub fn finalize(bucket: &str, name: &str, generation: i64) -> Notification {
        Notification {
            bucket: bucket.to_owned(),
            name: name.to_owned(),
            generation,
            size: 0,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            config: "local".to_owned(),
        }
    }

    pub fn size(mut self, size: u64) -> Notification {
        self.size = size;
        self
    }

    /// The event time (RFC 3339).
    pub fn time(mut self, rfc3339: &str) -> Notification {
        self.time = rfc3339.to_owned();
        self
    }

    /// Names the notification configuration (`local`, `reconcile`, ...).
    pub fn config(mut self, config: &str) -> Notification {
        self.config = config.to_owned();
        self
    }

    /// The object resource, as JSON.
    pub fn object_resource(&self) -> Vec<u8> {
        let resource = ObjectResource {
            kind: "storage#object",
            id: format!("{}/{}/{}", self.bucket, self.name, self.generation),
            self_link: format!(
                "https://www.googleapis.com/storage/v1/b/{}/o/{}",
                self.bucket,
                path_segment(&self.name)
            ),
            name: &self.name,
            bucket: &self.bucket,
            generation: self.generation.to_string(),
            metageneration: "1",
            content_type: content_type_for(&self.name),
            time_created: &self.time,
            updated: &self.time,
            size: self.size.to_string(),
        };
        serde_json::to_vec(&resource).unwrap_or_default()
    }

    /// The Pub/Sub message Cloud Storage publishes: data and attributes.
    pub fn message(&self) -> (Vec<u8>, Vec<(String, String)>) {
        let attributes = [
            ("bucketId", self.bucket.clone()),
            ("eventTime", self.time.clone()),
            ("eventType", OBJECT_FINALIZE.to_owned()),
            (
                "notificationConfig",
                format!("projects/_/buckets/{}/notificationConfigs/{}", self.bucket, self.config),
            ),
            ("objectGeneration", self.generation.to_string()),
            ("objectId", self.name.clone()),
            ("payloadFormat", "JSON_API_V1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        (self.object_resource(), attributes)
    }

    /// The push envelope Pub/Sub posts for the message, as Google sends it.
    pub fn push_envelope(&self, message_id: &str, subscription: &str) -> serde_json::Value {
        let (data, attributes) = self.message();
        let attributes: serde_json::Map<String, serde_json::Value> =
            attributes.into_iter().map(|(k, v)| (k, v.into())).collect();
        serde_json::json!({
            "message": {
                "attributes": attributes,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": self.time,
                "publish_time": self.time,
            },
            "subscription": subscription,
        })
    }

    /// The CloudEvent an Eventarc trigger posts for the object, in the
    /// binary content mode: its headers (`Content-Type` and the `ce-*`
    /// attributes) and its body, the object resource. The subject carries
    /// the name as it is where a header can (Eventarc sends it so), with
    /// what a header cannot carry percent-encoded.
    pub fn cloudevent(&self, id: &str) -> (Vec<(String, String)>, Vec<u8>) {
        let subject = if self.name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            self.name.clone()
        } else {
            utf8_percent_encode(&self.name, HEADER_UNSAFE).to_string()
        };
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("ce-id", id.to_owned()),
            ("ce-source", self.cloudevent_source()),
            ("ce-specversion", "1.0".to_owned()),
            ("ce-type", OBJECT_FINALIZED.to_owned()),
            ("ce-subject", format!("objects/{subject}")),
            ("ce-time", self.time.clone()),
            ("ce-bucket", self.bucket.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        (headers, self.object_resource())
    }

    /// The same CloudEvent in the structured content mode
    /// (`application/cloudevents+json`).
    pub fn structured_cloudevent(&self, id: &str) -> serde_json::Value {
        let data: serde_json::Value = serde_json::from_slice(&self.object_resource()).unwrap_or_default();
        serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": self.cloudevent_source(),
            "type": OBJECT_FINALIZED,
            "subject": format!("objects/{}", self.name),
            "time": self.time,
            "bucket": self.bucket,
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    fn cloudevent_source(&self) -> String {
        format!("//storage.googleapis.com/projects/_/buckets/{}", self.bucket)
    }
}

/// What an HTTP header value cannot carry (controls and non-ASCII bytes),
/// and `%` once anything is encoded.
const HEADER_UNSAFE: &AsciiSet = &percent_encoding::CONTROLS.add(b'%');

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(path_segment("a/b c.csv"), "a%2Fb%20c.csv");
        assert_eq!(path_segment("vuelos-año_1.~csv"), "vuelos-a%C3%B1o_1.~csv");
    }
}
