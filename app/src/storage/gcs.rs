//! Cloud Storage through Google's official `google-cloud-storage` crate.
//!
//! Object data goes through the crate: streamed downloads (resumed after a
//! cut connection by its read-resume policy) and uploads of a streamed source
//! of unknown size (one multipart request when it ends below the resumable
//! threshold, a resumable upload in bounded chunks otherwise), create-only
//! with `ifGenerationMatch=0`. The crate's metadata and listing calls are
//! gRPC-only (`StorageControl`), which neither the emulator nor every network
//! path serves, so `stat` and `list` use the JSON API with the same
//! credentials.
//!
//! Transient failures (408, 429, 5xx, timeouts, cut connections) are retried
//! with truncated exponential backoff and jitter for at most the retry budget;
//! every retry is logged. With an emulator (`STORAGE_EMULATOR_HOST`) the
//! client talks to it anonymously.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::StreamExt;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::retry_policy::RetryableErrors;
use google_cloud_storage::streaming_source::{Payload, SizeHint, StreamingSource};
use serde::Deserialize;

use crate::event::notification::path_segment;
use crate::google_clients::LoggedRetries;

use super::{ByteStream, ObjectMeta, ObjectStore, StorageError, WriteBody, WriteOptions, until_end};

const PRODUCTION_ENDPOINT: &str = "https://storage.googleapis.com";
/// Uploads that end below this go up in one request; longer ones resumably.
const RESUMABLE_THRESHOLD: usize = 8 << 20;
/// Memory an upload holds while sending a resumable chunk.
const RESUMABLE_BUFFER: usize = 8 << 20;

/// Client settings worth changing (tests shorten the retry budget).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsOptions {
    /// How long one operation may keep retrying transient failures.
    pub retry_budget: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for GcsOptions {
    fn default() -> Self {
        GcsOptions {
            retry_budget: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// One bucket in Cloud Storage (or its emulator).
pub struct GcsStore {
    bucket: String,
    bucket_path: String,
    client: Storage,
    json: JsonApi,
}

/// The JSON API calls the crate does not offer over HTTP.
struct JsonApi {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
    options: GcsOptions,
}

impl GcsStore {
    /// A client for `bucket`; with `emulator` (an http URL), anonymous.
    pub async fn new(bucket: &str, emulator: Option<&str>, options: GcsOptions) -> Result<GcsStore, StorageError> {
        let credentials = crate::google_clients::credentials(emulator.is_some()).map_err(StorageError::Unopenable)?;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(options.initial_backoff)
            .with_maximum_delay(options.max_backoff)
            .build()
            .map_err(|e| StorageError::Permanent(format!("backoff settings: {e}")))?;
        let mut builder = Storage::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(LoggedRetries {
                policy: RetryableErrors.with_time_limit(options.retry_budget),
                what: "Cloud Storage".to_owned(),
            })
            .with_backoff_policy(backoff)
            .with_resumable_upload_threshold(RESUMABLE_THRESHOLD)
            .with_resumable_upload_buffer_size(RESUMABLE_BUFFER);
        let endpoint = emulator.unwrap_or(PRODUCTION_ENDPOINT).trim_end_matches('/').to_owned();
        if emulator.is_some() {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let client = builder
            .build()
            .await
            .map_err(|e| StorageError::Permanent(format!("cannot create the Cloud Storage client: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| StorageError::Permanent(format!("http client: {e}")))?;
        Ok(GcsStore {
            bucket: bucket.to_owned(),
            bucket_path: format!("projects/_/buckets/{bucket}"),
            client,
            json: JsonApi {
                http,
                endpoint,
                credentials,
                options,
            },
        })
    }
}

/// Maps the crate's errors onto the seam's; an error of our own (a body
/// stream that gave up) is recognised through the source chain.
fn map_error(name: &str, e: google_cloud_storage::Error) -> StorageError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<StorageError>() {
            return ours.clone();
        }
        // A checksum mismatch, a short read or an upload the service lost
        // track of: the data in flight was damaged; doing it again helps.
        if s.is::<google_cloud_storage::error::WriteError>() || s.is::<google_cloud_storage::error::ReadError>() {
            return StorageError::Transient(format!("{name}: {e}"));
        }
        source = s.source();
    }
    match e.http_status_code() {
        Some(404) => StorageError::NotFound(name.to_owned()),
        Some(412) => StorageError::AlreadyExists(name.to_owned()),
        Some(408 | 429) | Some(500..=599) => StorageError::Transient(format!("{name}: {e}")),
        Some(_) => StorageError::Permanent(format!("{name}: {e}")),
        None if e.is_io() || e.is_timeout() || e.is_connect() || e.is_transport() || e.is_exhausted() => {
            StorageError::Transient(format!("{name}: {e}"))
        }
        None => match e.status().map(|s| s.code) {
            Some(google_cloud_gax::error::rpc::Code::NotFound) => StorageError::NotFound(name.to_owned()),
            Some(google_cloud_gax::error::rpc::Code::FailedPrecondition) => {
                StorageError::AlreadyExists(name.to_owned())
            }
            _ => StorageError::Permanent(format!("{name}: {e}")),
        },
    }
}

/// Our write body as the crate's upload source: it ends only at the body's
/// end marker, and a body that stops without one is an error, so the crate
/// never finalises a prefix (a multipart upload is not sent, a resumable
/// session is left unfinalised and expires). The mutex only makes the source
/// `Sync`, as the crate asks; it is never contended (`get_mut`).
struct StreamSource(Mutex<ByteStream>);

impl StreamingSource for StreamSource {
    type Error = StorageError;

    async fn next(&mut self) -> Option<Result<Bytes, StorageError>> {
        match self.0.get_mut() {
            Ok(stream) => stream.next().await,
            Err(_) => Some(Err(StorageError::Abandoned("upload source poisoned".into()))),
        }
    }

    async fn size_hint(&self) -> Result<SizeHint, StorageError> {
        Ok(SizeHint::new())
    }
}

#[derive(Deserialize)]
struct JsonObject {
    name: String,
    generation: String,
    size: String,
    crc32c: Option<String>,
    updated: Option<String>,
    #[serde(rename = "timeCreated")]
    time_created: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct JsonList {
    #[serde(default)]
    items: Vec<JsonObject>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

impl JsonObject {
    fn into_meta(self) -> ObjectMeta {
        use base64::Engine as _;
        let crc32c = self
            .crc32c
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes);
        ObjectMeta {
            name: self.name,
            generation: self.generation.parse().unwrap_or_default(),
            size: self.size.parse().unwrap_or_default(),
            crc32c,
            updated: self.updated.and_then(|u| humantime::parse_rfc3339_weak(&u).ok()),
            created: self.time_created.and_then(|u| humantime::parse_rfc3339_weak(&u).ok()),
            metadata: self.metadata,
        }
    }
}

impl JsonApi {
    /// GET with credentials, retried on transient failures.
    async fn get(&self, what: &str, url: &str, query: &[(&str, &str)]) -> Result<Option<Bytes>, StorageError> {
        let attempt = || async {
            let mut request = self.http.get(url).query(query);
            match self.credentials.headers(Default::default()).await {
                Ok(CacheableResource::New { data, .. }) => request = request.headers(data),
                Ok(CacheableResource::NotModified) => {}
                Err(e) if e.is_transient() => return Err(StorageError::Transient(format!("credentials: {e}"))),
                Err(e) => return Err(StorageError::Permanent(format!("credentials: {e}"))),
            }
            let response = request
                .send()
                .await
                .map_err(|e| StorageError::Transient(format!("{what}: {e}")))?;
            match response.status().as_u16() {
                200 => response
                    .bytes()
                    .await
                    .map(Some)
                    .map_err(|e| StorageError::Transient(format!("{what}: {e}"))),
                404 => Ok(None),
                code @ (408 | 429 | 500..=599) => Err(StorageError::Transient(format!("{what}: HTTP {code}"))),
                code => Err(StorageError::Permanent(format!("{what}: HTTP {code}"))),
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.options.initial_backoff)
                    .with_max_delay(self.options.max_backoff)
                    .with_jitter()
                    .with_total_delay(Some(self.options.retry_budget))
                    .without_max_times(),
            )
            .when(StorageError::is_transient)
            .notify(|e, wait| tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "Cloud Storage request failed; retrying"))
            .await
    }
}

impl GcsStore {
    /// One upload, create-only when asked; the client picks multipart or
    /// resumable from the payload's size.
    async fn upload<T, P>(&self, name: &str, payload: T, options: WriteOptions) -> Result<ObjectMeta, StorageError>
    where
        T: Into<Payload<P>>,
        P: StreamingSource + Send + Sync + 'static,
        P::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut request = self
            .client
            .write_object(&self.bucket_path, name, payload)
            .set_content_type(options.content_type);
        if let Some(generation) = options.if_generation {
            request = request.set_if_generation_match(generation);
        } else if options.create_only {
            request = request.set_if_generation_match(0);
        }
        let object = request.send_buffered().await.map_err(|e| map_error(name, e))?;
        Ok(ObjectMeta {
            name: object.name,
            generation: object.generation,
            size: u64::try_from(object.size).unwrap_or_default(),
            crc32c: object.checksums.and_then(|c| c.crc32c),
            updated: None,
            created: None,
            metadata: Default::default(),
        })
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn uri(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.bucket)
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.json.endpoint,
            path_segment(&self.bucket),
            path_segment(name)
        );
        let fields = [("fields", "name,generation,size,crc32c,updated,timeCreated,metadata")];
        match self.json.get(&self.uri(name), &url, &fields).await? {
            None => Ok(None),
            Some(body) => serde_json::from_slice::<JsonObject>(&body)
                .map(|o| Some(o.into_meta()))
                .map_err(|e| StorageError::Permanent(format!("{}: unexpected metadata: {e}", self.uri(name)))),
        }
    }

    async fn read_from(
        &self,
        name: &str,
        generation: Option<i64>,
        offset: u64,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let mut request = self.client.read_object(&self.bucket_path, name);
        if let Some(g) = generation {
            request = request.set_generation(g);
        }
        if offset > 0 {
            request = request.set_read_range(google_cloud_storage::model_ext::ReadRange::offset(offset));
        }
        let response = request.send().await.map_err(|e| map_error(name, e))?;
        let highlights = response.object();
        let mut meta = ObjectMeta {
            name: name.to_owned(),
            generation: highlights.generation,
            size: u64::try_from(highlights.size).unwrap_or_default(),
            crc32c: highlights.checksums.as_ref().and_then(|c| c.crc32c),
            updated: None,
            created: None,
            metadata: Default::default(),
        };
        if meta.size == 0 {
            // The client takes the size from `x-goog-stored-content-length`,
            // which fake-gcs-server does not send; the metadata has it (one
            // more request, only for objects that claim to be empty).
            if let Ok(Some(stored)) = self.stat(name).await
                && stored.generation == meta.generation
            {
                meta.size = stored.size;
            }
        }
        let owned = name.to_owned();
        let stream = futures::stream::unfold(response, move |mut response| {
            let name = owned.clone();
            async move {
                let item = response.next().await?;
                Some((item.map_err(|e| map_error(&name, e)), response))
            }
        });
        Ok((meta, Box::pin(stream.fuse())))
    }

    async fn write(&self, name: &str, body: WriteBody, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        self.upload(name, StreamSource(Mutex::new(until_end(body))), options)
            .await
    }

    async fn write_small(&self, name: &str, bytes: Bytes, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        // A payload of known size under the resumable threshold goes up in
        // one multipart request.
        self.upload(name, bytes, options).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let url = format!("{}/storage/v1/b/{}/o", self.json.endpoint, path_segment(&self.bucket));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("prefix", prefix),
                (
                    "fields",
                    "items(name,generation,size,crc32c,updated,timeCreated),nextPageToken",
                ),
            ];
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let body = self
                .json
                .get(&self.uri(prefix), &url, &query)
                .await?
                .ok_or_else(|| StorageError::NotFound(format!("bucket {}", self.bucket)))?;
            let page: JsonList = serde_json::from_slice(&body)
                .map_err(|e| StorageError::Permanent(format!("listing {}: {e}", self.uri(prefix))))?;
            out.extend(page.items.into_iter().map(JsonObject::into_meta));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
