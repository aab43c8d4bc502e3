//! scorer-events: storage events as the triggers deliver them, parsed into
//! one [`ObjectEvent`] whoever sent it, and the notifications Cloud Storage
//! sends, built for the local notifier, `scorer reconcile` and the tests.
//!
//! # Layout
//!
//! - [`object`]: bucket and object names and generations, types that can
//!   only hold valid values.
//! - [`pubsub`]: the Pub/Sub push envelope of a Cloud Storage notification.
//! - [`notification`]: building the notification Cloud Storage publishes
//!   and the push envelope Pub/Sub posts.
//!
//! A new trigger is one new module that parses its request into an
//! [`ObjectEvent`], and one route in the service.

pub mod notification;
pub mod object;
pub mod pubsub;

pub use object::{BucketName, Generation, ObjectName, ObjectRef};

/// Cloud Storage's event type for a new object generation, as notification
/// attributes spell it.
pub const OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

/// Something happened to one generation of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// As the trigger spelt it: `OBJECT_FINALIZE`, `OBJECT_DELETE`, ...
    pub event_type: String,
    pub object: ObjectRef,
    pub size: Option<u64>,
    pub content_type: Option<String>,
    pub delivery: Delivery,
}

impl ObjectEvent {
    /// Whether a new object generation is complete (the only work there is).
    pub fn is_finalize(&self) -> bool {
        self.event_type == OBJECT_FINALIZE
    }
}

/// How the event arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The trigger's id of the message (Pub/Sub's message id).
    pub id: String,
    /// The delivery attempt, when the trigger counts them.
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
}
