//! The storage seam: buckets of named objects, read as streams and written
//! atomically, create-only when asked.
//!
//! Two backends fit it: [`local`] (a bucket is a directory; the local mode and
//! tests) and [`gcs`] (Cloud Storage through Google's official crate). The
//! scoring code never knows which one it talks to.

pub mod blocking;
pub mod faults;
pub mod gcs;
pub mod local;

use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

/// A stream of object bytes, as read.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// One part of an object being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPart {
    Data(Bytes),
    /// The writer says the object is complete. Only this finalises a write:
    /// a body that merely stops (its writer dropped, panicked or was
    /// cancelled mid-way) is abandoned, so no backend can ever commit a
    /// prefix of what was meant.
    End,
}

/// The body of a write: data parts, then [`BodyPart::End`].
pub type WriteBody = Pin<Box<dyn Stream<Item = Result<BodyPart, StorageError>> + Send>>;

/// A complete body holding `bytes`.
pub fn body_of(bytes: Bytes) -> WriteBody {
    Box::pin(futures::stream::iter([Ok(BodyPart::Data(bytes)), Ok(BodyPart::End)]))
}

/// A write body as the plain byte stream backends consume: the data, ending
/// cleanly at [`BodyPart::End`], and with [`StorageError::Abandoned`] when the
/// body stops without it. Every backend writes through this, so "no end
/// marker, no object" holds for all of them.
pub fn until_end(body: WriteBody) -> ByteStream {
    /// Where the body is: going on, or failed (and failed it stays: a
    /// consumer that polls again after an error must never see a clean end,
    /// which would finalise a prefix). After the end marker the stream is
    /// over, and fused: polled again, it says so again.
    enum Body {
        Flowing(WriteBody),
        Failed(StorageError),
    }
    Box::pin(
        futures::stream::unfold(Body::Flowing(body), |state| async move {
            match state {
                Body::Failed(e) => Some((Err(e.clone()), Body::Failed(e))),
                Body::Flowing(mut body) => match body.next().await {
                    Some(Ok(BodyPart::Data(bytes))) => Some((Ok(bytes), Body::Flowing(body))),
                    Some(Ok(BodyPart::End)) => None,
                    Some(Err(e)) => Some((Err(e.clone()), Body::Failed(e))),
                    None => {
                        let e = StorageError::Abandoned("the writer stopped before the end of the object".into());
                        Some((Err(e.clone()), Body::Failed(e)))
                    }
                },
            }
        })
        .fuse(),
    )
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} does not exist")]
    NotFound(String),
    /// A create-only write found the object already there.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("invalid object name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// Worth retrying later: unavailable, throttled, timed out, cut off.
    #[error("storage is temporarily unavailable: {0}")]
    Transient(String),
    #[error("storage refused the request: {0}")]
    Permanent(String),
    /// The bucket cannot be opened from here at all (a local bucket
    /// directory that does not exist, no credentials): retrying cannot help.
    #[error("cannot open the bucket: {0}")]
    Unopenable(String),
    /// The writer gave up (its job failed or was cancelled); nothing was
    /// committed.
    #[error("write abandoned: {0}")]
    Abandoned(String),
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }

    /// As an `io::Error` the scoring engine recognises as the source's
    /// (not the data's), and from which [`StorageError::find`] gets this
    /// error back.
    pub fn into_io(self) -> std::io::Error {
        scorer_engine::score::SourceError::io(self)
    }

    /// The storage error inside an `io::Error` made by
    /// [`StorageError::into_io`], if there is one.
    pub fn find(e: &std::io::Error) -> Option<&StorageError> {
        scorer_engine::score::SourceError::find::<StorageError>(e)
    }
}

/// What the service knows of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    /// Cloud Storage's generation; for local files, the modification time in
    /// nanoseconds since the epoch.
    pub generation: i64,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
    #[serde(skip)]
    pub updated: Option<SystemTime>,
    /// When this generation was created (metadata changes move `updated`,
    /// not this).
    #[serde(skip)]
    pub created: Option<SystemTime>,
    /// The object's custom metadata (`x-goog-meta-KEY: VALUE` on upload;
    /// locally, the file's extended attributes `user.KEY`). Filled by
    /// [`ObjectStore::stat`] only.
    #[serde(skip)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// How to write an object.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Fail with [`StorageError::AlreadyExists`] instead of replacing.
    pub create_only: bool,
    /// Replace the object only while its live generation is this one (a
    /// compare-and-swap); fail with [`StorageError::AlreadyExists`] when
    /// another writer moved it first (Cloud Storage's 412).
    pub if_generation: Option<i64>,
    pub content_type: &'static str,
}

impl WriteOptions {
    pub fn create_only(content_type: &'static str) -> Self {
        WriteOptions {
            create_only: true,
            if_generation: None,
            content_type,
        }
    }

    /// A compare-and-swap: replaces generation `expected` of the object,
    /// or creates it when `expected` is `None`.
    pub fn replacing(expected: Option<i64>, content_type: &'static str) -> Self {
        WriteOptions {
            create_only: expected.is_none(),
            if_generation: expected,
            content_type,
        }
    }
}

/// A bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// The bucket's name, as events name it.
    fn bucket(&self) -> &str;

    /// A URI for people and manifests: `gs://bucket/name` or `file:///...`.
    fn uri(&self, name: &str) -> String;

    /// Whether `name` can be an object here (the local backend refuses names
    /// that could leave its directory); Cloud Storage's rules otherwise.
    fn check_name(&self, name: &str) -> Result<(), StorageError> {
        if name.is_empty() || name.len() > 1024 || name.contains(['\r', '\n', '\0']) {
            return Err(StorageError::InvalidName {
                name: name.to_owned(),
                reason: "object names are 1-1024 bytes without CR, LF or NUL".into(),
            });
        }
        Ok(())
    }

    /// The object's metadata, `None` if absent.
    async fn stat(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// The object's metadata with the CRC32C of its content, computed if the
    /// backend keeps none (used to tell our own object from someone else's).
    async fn checksum(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.stat(name).await
    }

    /// Opens an object for streaming. With `generation`, that generation
    /// exactly (`NotFound` if it was replaced or deleted).
    async fn read(&self, name: &str, generation: Option<i64>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.read_from(name, generation, 0).await
    }

    /// Opens an object for streaming from byte `offset` to its end (a
    /// ranged read: the bytes before it are never sent); the metadata is the
    /// whole object's. An offset at or past the end yields no bytes.
    async fn read_from(
        &self,
        name: &str,
        generation: Option<i64>,
        offset: u64,
    ) -> Result<(ObjectMeta, ByteStream), StorageError>;

    /// Writes a whole object from a body. The object becomes visible only
    /// once the body yielded [`BodyPart::End`]; an error item, or a body that
    /// stops without the end marker, abandons the write and leaves nothing
    /// behind. Backends consume the body through [`until_end`].
    async fn write(&self, name: &str, body: WriteBody, options: WriteOptions) -> Result<ObjectMeta, StorageError>;

    /// Objects whose names start with `prefix`, in name order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Writes a small object held in memory (manifests, leases): backends
    /// can send it in one request, whose preconditions every server honours.
    async fn write_small(&self, name: &str, bytes: Bytes, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        self.write(name, body_of(bytes), options).await
    }
}

/// Reads a small object whole (manifests, leases, model artifacts).
pub async fn read_all(
    store: &dyn ObjectStore,
    name: &str,
    limit: usize,
) -> Result<(ObjectMeta, Vec<u8>), StorageError> {
    let (meta, mut stream) = store.read(name, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(StorageError::Permanent(format!(
                "{} is larger than {limit} bytes",
                store.uri(name)
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((meta, out))
}

/// Writes a small object from memory.
pub async fn write_bytes(
    store: &dyn ObjectStore,
    name: &str,
    bytes: Vec<u8>,
    options: WriteOptions,
) -> Result<ObjectMeta, StorageError> {
    store.write_small(name, Bytes::from(bytes), options).await
}

/// Where buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Bucket `b` is the directory `DIR/b` (local mode and tests).
    Local { dir: std::path::PathBuf },
    /// Cloud Storage, or its emulator at `emulator` (an http URL), with its
    /// client settings.
    Gcs {
        emulator: Option<String>,
        options: gcs::GcsOptions,
    },
}

/// What [`open`] does about a local bucket directory that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create it: the service's own buckets (`serve --local`, the demo).
    Create,
    /// Refuse: an operator tool reading buckets that should be there, where
    /// creating one would turn a typo into "all clear".
    Refuse,
}

/// Opens `bucket` on `backend`: the one place buckets are made, for the
/// service, the operator tools and the tests. `missing` matters to local
/// buckets only (a Cloud Storage bucket is never created here).
pub async fn open(
    backend: &Backend,
    bucket: &str,
    missing: Missing,
) -> Result<std::sync::Arc<dyn ObjectStore>, StorageError> {
    Ok(match backend {
        Backend::Local { dir } => std::sync::Arc::new(open_local(dir, bucket, missing)?),
        Backend::Gcs { emulator, options } => {
            std::sync::Arc::new(gcs::GcsStore::new(bucket, emulator.as_deref(), options.clone()).await?)
        }
    })
}

/// Opens the local bucket `DIR/bucket`, as [`open`] does, as the concrete
/// type the local notifier watches.
pub fn open_local(dir: &std::path::Path, bucket: &str, missing: Missing) -> Result<local::LocalStore, StorageError> {
    let root = dir.join(bucket);
    let opened = match missing {
        Missing::Create => local::LocalStore::new(bucket, &root),
        Missing::Refuse => local::LocalStore::existing(bucket, &root),
    };
    opened.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            StorageError::Unopenable(format!("{bucket}: the directory {} does not exist", root.display()))
        }
        _ => StorageError::Unopenable(format!("{bucket}: {}: {e}", root.display())),
    })
}

/// `STORAGE_EMULATOR_HOST` (or `PUBSUB_EMULATOR_HOST`) as tools set it,
/// `host:port`, or as a URL: always an `http://` URL.
pub fn emulator_url(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.to_owned())
    } else {
        Ok(format!("http://{value}"))
    }
}

/// A location given as `gs://bucket/name` or a local path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Gcs { bucket: String, name: String },
    Local(std::path::PathBuf),
}

impl Location {
    pub fn parse(text: &str) -> Result<Location, String> {
        if let Some(rest) = text.strip_prefix("gs://") {
            let (bucket, name) = rest
                .split_once('/')
                .ok_or_else(|| format!("{text:?} names a bucket but no object (gs://BUCKET/OBJECT)"))?;
            if bucket.is_empty() || name.is_empty() {
                return Err(format!("{text:?} needs both a bucket and an object name"));
            }
            return Ok(Location::Gcs {
                bucket: bucket.to_owned(),
                name: name.to_owned(),
            });
        }
        if text.is_empty() {
            return Err("empty location".into());
        }
        Ok(Location::Local(text.strip_prefix("file://").unwrap_or(text).into()))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Gcs { bucket, name } => write!(f, "gs://{bucket}/{name}"),
            Location::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_body_stays_failed() {
        let body: WriteBody = Box::pin(futures::stream::iter(vec![Ok(BodyPart::Data(Bytes::from_static(
            b"a",
        )))]));
        let mut stream = until_end(body);
        assert!(stream.next().await.unwrap().is_ok());
        for _ in 0..3 {
            // However often it is polled again, never a clean end.
            assert!(matches!(stream.next().await, Some(Err(StorageError::Abandoned(_)))));
        }
        let done = until_end(body_of(Bytes::from_static(b"b")));
        let items: Vec<_> = done.collect().await;
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("gs://b/m/model.json").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                name: "m/model.json".into()
            }
        );
        assert!(Location::parse("gs://b").is_err());
        assert!(Location::parse("gs:///x").is_err());
        assert_eq!(
            Location::parse("data/model.json").unwrap(),
            Location::Local("data/model.json".into())
        );
    }
}
