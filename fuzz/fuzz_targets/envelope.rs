//! Arbitrary bytes as a Pub/Sub push body: `scorer_events::pubsub::parse`
//! must never panic, and what it accepts must hold only valid values.
//!
//! Each input is tried twice: as the whole request body, and as the decoded
//! `message.data` (the Cloud Storage object resource) of an otherwise valid
//! envelope, so that mutations reach the payload parser without having to
//! survive base64 inside JSON.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use scorer_events::notification::Notification;
use scorer_events::{self as event, BucketName, Generation, ObjectEvent, ObjectName, Trigger};

fuzz_target!(|data: &[u8]| {
    if let Ok(delivery) = event::pubsub::parse(data) {
        check(&delivery);
    }
    let wrapped = serde_json::json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": "1",
            "attributes": {"eventType": event::OBJECT_FINALIZE},
        },
        "subscription": "projects/p/subscriptions/s",
    });
    if let Ok(delivery) = event::pubsub::parse(wrapped.to_string().as_bytes()) {
        check(&delivery);
        assert!(delivery.is_finalize());
    }
});

/// What the types promise, and that the envelope builder and the parser agree.
fn check(d: &ObjectEvent) {
    assert!(!d.delivery.id.is_empty(), "empty message id accepted");
    let object = &d.object;

    let bucket = object.bucket.as_str();
    assert!((3..=222).contains(&bucket.len()), "bucket {bucket:?}");
    assert!(
        bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')),
        "bucket {bucket:?}"
    );
    assert_eq!(BucketName::parse(bucket).as_ref(), Ok(&object.bucket));

    let name = object.name.as_str();
    assert!((1..=1024).contains(&name.len()), "object name of {} bytes", name.len());
    assert!(!name.contains(['\r', '\n', '\0']), "object name {name:?}");
    assert_eq!(ObjectName::parse(name).as_ref(), Ok(&object.name));

    let generation = object.generation.get();
    assert!(generation > 0, "generation {generation}");
    assert_eq!(Generation::new(generation), Some(object.generation));
    assert_eq!(Generation::parse(&generation.to_string()), Ok(object.generation));

    assert_eq!(d.is_finalize(), d.event_type == event::OBJECT_FINALIZE);
    assert_eq!(object.to_string(), format!("gs://{bucket}/{name}#{generation}"));

    // The envelope the local notifier would send for this object parses back
    // to the same object, id, size and subscription.
    let Trigger::PubSub { subscription, .. } = &d.delivery.trigger else {
        panic!("the envelope parser yielded another trigger: {:?}", d.delivery.trigger);
    };
    let subscription = subscription.as_deref().unwrap_or("projects/p/subscriptions/s");
    let size = d.size.unwrap_or(0);
    let body = Notification::finalize(bucket, name, generation)
        .size(size)
        .time("2026-01-01T00:00:00Z")
        .push_envelope(&d.delivery.id, subscription);
    let again = event::pubsub::parse(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("the envelope built for {object} does not parse: {e}"));
    assert_eq!(&again.object, object);
    assert_eq!(again.delivery.id, d.delivery.id);
    assert_eq!(again.size, Some(size));
    assert!(matches!(&again.delivery.trigger, Trigger::PubSub { subscription: Some(s), .. } if s == subscription));
    assert!(again.is_finalize());
}
