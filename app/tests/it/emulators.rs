//! The emulators themselves, checked: what the other tests rely on them
//! doing (see `support` for how they are run and how they differ from Google).

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

// --- the emulators themselves, checked --------------------------------------------

#[tokio::test]
async fn fake_gcs_stores_lists_and_reads_objects() {
    let fake = FakeGcs::start(FakeGcsOptions::default()).await;
    fake.create_bucket("in-bucket").await;
    let g1 = fake.put_object("in-bucket", "a/x y.csv", b"a,b\n1,2\n").await;
    let g2 = fake.put_object("in-bucket", "a/z.csv", b"z").await;
    fake.put_object("in-bucket", "b.csv", b"b").await;
    assert_eq!(
        fake.get_object("in-bucket", "a/x y.csv").await.as_deref(),
        Some(&b"a,b\n1,2\n"[..])
    );
    assert_eq!(fake.get_object("in-bucket", "a/missing.csv").await, None);
    assert_eq!(
        fake.list("in-bucket", "a/").await,
        vec![("a/x y.csv".to_owned(), g1), ("a/z.csv".to_owned(), g2)]
    );
    let meta = fake.object_metadata("in-bucket", "a/z.csv").await.expect("metadata");
    assert_eq!(meta["size"], "1");
    assert!(fake.delete_object("in-bucket", "a/z.csv").await);
    assert!(!fake.delete_object("in-bucket", "a/z.csv").await);
}

#[tokio::test]
async fn gsutil_copies_to_and_reads_from_fake_gcs() {
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: None,
    })
    .await;
    fake.create_bucket("in-bucket").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("flights.csv");
    std::fs::write(&local, "OPERA,TIPOVUELO,MES\nGrupo LATAM,N,3\n").expect("write the local file");
    gsutil_cp(&fake, &local, "gs://in-bucket/").await;
    let stored = fake
        .get_object("in-bucket", "flights.csv")
        .await
        .expect("uploaded by gsutil");
    assert_eq!(stored, b"OPERA,TIPOVUELO,MES\nGrupo LATAM,N,3\n");
    assert_eq!(gsutil_cat(&fake, "gs://in-bucket/flights.csv").await, stored);
}

/// The chain the end-to-end test relies on: `gsutil cp` -> fake-gcs-server ->
/// OBJECT_FINALIZE notification -> Pub/Sub emulator -> push.
#[tokio::test]
async fn gsutil_upload_notifies_pubsub_which_pushes_the_storage_event() {
    let pubsub = PubSubEmulator::start().await;
    let sink = PushSink::start(200).await;
    pubsub.create_topic("proj", "storage-events").await;
    pubsub
        .create_push_subscription(
            "proj",
            "scorer-push",
            "storage-events",
            &PushSubscription::new(&sink.url),
        )
        .await;
    let notifications = Notifications::new(&pubsub, "proj", "storage-events").bucket("in-bucket");
    let fake = FakeGcs::start(FakeGcsOptions {
        https: true,
        notifications: Some(notifications),
    })
    .await;
    fake.create_bucket("in-bucket").await;
    fake.create_bucket("out-bucket").await;
    fake.put_object("out-bucket", "not-watched.csv", b"x").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("flights.csv");
    std::fs::write(&local, "a,b\n1,2\n").expect("write the local file");
    gsutil_cp(&fake, &local, "gs://in-bucket/a/flights.csv").await;
    let meta = fake
        .object_metadata("in-bucket", "a/flights.csv")
        .await
        .expect("uploaded by gsutil");
    let generation = meta["generation"].as_str().expect("generation").to_owned();

    let pushed = sink.wait_for(1, Duration::from_secs(30)).await;
    let envelope = pushed[0].json();
    assert_eq!(envelope["subscription"], "projects/proj/subscriptions/scorer-push");
    let attributes = &envelope["message"]["attributes"];
    assert_eq!(attributes["eventType"], "OBJECT_FINALIZE");
    assert_eq!(attributes["payloadFormat"], "JSON_API_V1");
    assert_eq!(attributes["bucketId"], "in-bucket");
    assert_eq!(attributes["objectId"], "a/flights.csv");
    assert_eq!(attributes["objectGeneration"], generation);
    let object: Value = serde_json::from_slice(&message_data(&envelope["message"])).expect("object resource JSON");
    assert_eq!(object["name"], "a/flights.csv");
    assert_eq!(object["bucket"], "in-bucket");
    assert_eq!(object["generation"], generation);
    assert_eq!(object["contentType"], "text/csv");
    // the upload to the unwatched bucket published nothing
    assert_eq!(sink.received().len(), 1, "{:?}", sink.received());
}

#[tokio::test]
async fn a_push_that_keeps_failing_ends_in_the_dead_letter_topic() {
    let pubsub = PubSubEmulator::start().await;
    let sink = PushSink::start(503).await;
    pubsub.create_topic("proj", "work").await;
    pubsub.create_topic("proj", "work-dead").await;
    pubsub
        .create_pull_subscription("proj", "work-dead-pull", "work-dead", Duration::from_secs(10))
        .await;
    let push = PushSubscription::new(&sink.url)
        .ack_deadline(Duration::from_secs(10))
        .backoff(Duration::from_secs(1), Duration::from_secs(2))
        .dead_letter("work-dead", 5);
    pubsub
        .create_push_subscription("proj", "work-push", "work", &push)
        .await;
    pubsub.publish("proj", "work", b"poison", &[("k", "v")]).await;

    let dead = pubsub
        .pull_until("proj", "work-dead-pull", 1, Duration::from_secs(60))
        .await;
    let (ack_id, message) = &dead[0];
    assert_eq!(message_data(message), b"poison");
    assert_eq!(message["attributes"]["k"], "v");
    assert_eq!(message["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"], "5");
    assert_eq!(
        message["attributes"]["CloudPubSubDeadLetterSourceSubscription"],
        "work-push"
    );
    assert_eq!(sink.received().len(), 5);
    pubsub.ack("proj", "work-dead-pull", std::slice::from_ref(ack_id)).await;
    assert!(pubsub.pull("proj", "work-dead-pull", 10).await.is_empty());
}
