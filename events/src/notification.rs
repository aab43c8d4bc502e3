//! The OBJECT_FINALIZE notification Cloud Storage publishes
//! (`payloadFormat=JSON_API_V1`: the object resource as data, the
//! notification's attributes) and the push envelope Pub/Sub posts with it,
//! built the way Google does: for the local notifier, `scorer reconcile`
//! and the tests.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::OBJECT_FINALIZE;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(path_segment("a/b c.csv"), "a%2Fb%20c.csv");
        assert_eq!(path_segment("vuelos-año_1.~csv"), "vuelos-a%C3%B1o_1.~csv");
    }
}
