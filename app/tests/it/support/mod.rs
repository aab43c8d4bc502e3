//! Support for the black-box tests: Google's emulators, run for real: `fake-gcs-server` (Cloud Storage, JSON
//! API over HTTP, HTTPS for gsutil), Google's Pub/Sub emulator (REST), and
//! `gsutil` against fake-gcs-server. `./test.sh` (through `.ci/tools.sh`)
//! installs or finds them and exports where they are; a missing tool is a
//! panic that says how to get it, never a skipped test.
//!
//! Every fake-gcs-server gets a loopback address of its own (`127.A.B.C`, see
//! [`fresh_loopback`]), so tests run side by side and it can listen on port 80:
//! the google-cloud-storage client drops a non-default port from the `Host`
//! header of resumable uploads, and the emulator builds the upload session's
//! `Location` from that header. The Pub/Sub emulator must listen on 127.0.0.1
//! (on any other address its REST API answers 503): it gets a free port there.
//!
//! What these emulators do differently from Google (checked on this machine):
//! - fake-gcs-server honours `ifGenerationMatch` only on multipart uploads (not
//!   on `uploadType=media`, resumable uploads or compose); it serves gRPC only as
//!   the old `google.storage.v1` service and only over HTTPS (HTTP/2 by ALPN), so
//!   the client's JSON API is what works. A notification to a topic that does not
//!   exist is dropped (logged) and the upload still succeeds: create the topic
//!   first. Its `OBJECT_DELETE` payload says `"size": "0"`.
//! - the Pub/Sub emulator sends no OIDC token (an `oidcToken` push config is
//!   accepted and ignored) and no `deliveryAttempt`; its envelope escapes `/` as
//!   `\/` and carries both `messageId`/`message_id` and `publishTime`/`publish_time`.
//!   Any answer but 2xx is a failure (429 and 400 as well as 5xx); a push not
//!   answered within the subscription's ack deadline is a failure even if a 200
//!   comes later, and is pushed again while the first is still running. It
//!   pushes at most two messages at a time per subscription. Without a retry
//!   policy it retries about every second, forever without a dead-letter policy;
//!   with one, the second attempt comes about 1 s after the first and later ones
//!   about `maximumBackoff` + 1 s apart (min 1 s / max 2 s: attempts at 0, 1, 4,
//!   7, 10 s, dead-lettered at about 13 s with `maxDeliveryAttempts: 5`). A
//!   dead-lettered message keeps its data and attributes and gains
//!   `CloudPubSubDeadLetterSourceDeliveryCount`, `...SourceSubscription` (the
//!   short name), `...SourceSubscriptionProject` and `...SourceTopicPublishTime`.
//!   Topic and subscription names need at least 3 characters.
//!
//! Rooms: [`process`] (finding the tools, loopback addresses, child
//! processes), [`fake_gcs`] (Cloud Storage), [`pubsub`] (the Pub/Sub emulator
//! and a push endpoint to test it), [`gsutil`].

#![allow(dead_code)] // shared by several test modules; not each uses every helper

pub mod fake_gcs;
pub mod gsutil;
pub mod process;
pub mod pubsub;

pub use fake_gcs::*;
pub use gsutil::*;
pub use process::{enc, fresh_loopback};
pub use pubsub::*;
