//! Cloud Storage through Google's official `google-cloud-storage` crate.

use async_trait::async_trait;

use super::{ByteStream, ObjectMeta, ObjectStore, StorageError, WriteOptions};

pub struct GcsStore {
    bucket: String,
}

impl GcsStore {
    pub fn new(bucket: &str, _emulator: Option<&str>) -> Result<GcsStore, StorageError> {
        Ok(GcsStore {
            bucket: bucket.to_owned(),
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
    async fn stat(&self, _name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        Err(StorageError::Permanent("not yet".into()))
    }
    async fn read(&self, _name: &str, _generation: Option<i64>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        Err(StorageError::Permanent("not yet".into()))
    }
    async fn write(&self, _name: &str, _body: ByteStream, _options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        Err(StorageError::Permanent("not yet".into()))
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        Err(StorageError::Permanent("not yet".into()))
    }
}
