//! scorer-events: storage events as the triggers deliver them, parsed into
//! one [`ObjectEvent`] whoever sent it, and the notifications Cloud Storage
//! sends, built for the local notifier, `scorer reconcile` and the tests.
//!
//! # Layout
//!
//! - [`object`]: bucket and object names and generations, types that can
//!   only hold valid values.
//! - [`pubsub`]: the Pub/Sub push envelope of a Cloud Storage notification.
//! - [`cloudevent`]: the CloudEvent of a Cloud Storage object event, as an
//!   Eventarc trigger posts it (binary content mode) or in the structured
//!   content mode.
//! - [`notification`]: building the notification Cloud Storage publishes
//!   and the push envelope Pub/Sub posts.
//!
//! A new trigger is one new module that parses its request into an
//! [`ObjectEvent`], and one route in the service.

pub mod cloudevent;
pub mod notification;
pub mod object;
pub mod pubsub;

pub use object::{BucketName, Generation, ObjectName, ObjectRef};

/// Cloud Storage's event type for a new object generation, as notification
/// attributes spell it.
pub const OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

/// The same event as a CloudEvent type (Eventarc's trigger filter).
pub const OBJECT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

/// Something happened to one generation of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// As the trigger spelt it: `OBJECT_FINALIZE`, `OBJECT_DELETE`, ... from
    /// Pub/Sub; `google.cloud.storage.object.v1.finalized`, ... in a
    /// CloudEvent.
    pub event_type: String,
    pub object: ObjectRef,
    pub size: Option<u64>,
    pub content_type: Option<String>,
    pub delivery: Delivery,
}

impl ObjectEvent {
    /// Whether a new object generation is complete (the only work there is),
    /// in the spelling of the trigger that delivered the event.
    pub fn is_finalize(&self) -> bool {
        match self.delivery.trigger {
            Trigger::PubSub { .. } => self.event_type == OBJECT_FINALIZE,
            Trigger::CloudEvent { .. } => self.event_type == OBJECT_FINALIZED,
        }
    }
}

/// How the event arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The trigger's id of the message (Pub/Sub's message id, the
    /// CloudEvent's `id`).
    pub id: String,
    /// The delivery attempt, when the trigger counts them (Eventarc does
    /// not say).
    pub attempt: Option<u32>,
    pub trigger: Trigger,
}

/// Who delivered the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A Pub/Sub push subscription.
    PubSub {
        subscription: Option<String>,
        publish_time: Option<String>,
    },
    /// A CloudEvent over HTTP: an Eventarc trigger, or any sender of the
    /// CloudEvents HTTP binding.
    CloudEvent {
        /// `//storage.googleapis.com/projects/_/buckets/BUCKET`.
        source: String,
        /// `objects/NAME`, when sent.
        subject: Option<String>,
        time: Option<String>,
        mode: cloudevent::ContentMode,
    },
}

impl Trigger {
    /// A short name for logs: `pubsub` or `cloudevent`.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::PubSub { .. } => "pubsub",
            Trigger::CloudEvent { .. } => "cloudevent",
        }
    }
}

/// Base64 in any of its alphabets, padded or not (senders differ).
pub(crate) fn decode_base64_any(data: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let data = data.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(data).ok())
}
