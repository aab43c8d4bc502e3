//! A bucket that is a directory: the local mode's storage and the tests'.
//!
//! Writes go to a temporary file inside the bucket's `.scorer-tmp/` and are
//! then linked (create-only) or renamed into place, so a reader never sees a
//! partial object. Object names are checked so none can escape the directory.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectMeta, ObjectStore, StorageError, WriteBody, WriteOptions, until_end};

/// Directory (inside the bucket) for writes in progress; never an object.
pub const TMP_DIR: &str = ".scorer-tmp";

#[derive(Debug, Clone)]
pub struct LocalStore {
    bucket: String,
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) the directory `root` as bucket `bucket`.
    pub fn new(bucket: impl Into<String>, root: impl AsRef<Path>) -> io::Result<LocalStore> {
        std::fs::create_dir_all(root.as_ref())?;
        Ok(LocalStore {
            bucket: bucket.into(),
            root: std::fs::canonicalize(root.as_ref())?,
        })
    }

    /// Opens the existing directory `root` as bucket `bucket`; `NotFound`
    /// when it is missing (or is not a directory).
    pub fn existing(bucket: impl Into<String>, root: impl AsRef<Path>) -> io::Result<LocalStore> {
        let root = std::fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not a directory"));
        }
        Ok(LocalStore {
            bucket: bucket.into(),
            root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind an object name, if the name is acceptable.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, StorageError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// The object name of a file inside the bucket directory.
    pub fn name_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<&str>> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let name = parts?.join("/");
        check_name(&name).ok().map(|_| name)
    }

    fn meta(&self, name: &str, md: &std::fs::Metadata) -> ObjectMeta {
        let updated = md.modified().ok();
        ObjectMeta {
            name: name.to_owned(),
            generation: generation_of(updated),
            size: md.len(),
            crc32c: None,
            updated,
            // A file's generation is its modification time: a rewrite is a
            // new generation, created then.
            created: updated,
            metadata: Default::default(),
        }
    }
}

/// Renames `tmp` over `dest` only while `dest`'s generation is `expected`.
/// Every compare-and-swap of the bucket holds one lock file while it
/// compares and renames, so two processes cannot both see the same
/// generation and both replace it.
/// Returns the new object's metadata, read under the lock: read after it,
/// the file could already be the next writer's.
fn swap_if_generation(
    lock: &Path,
    tmp: &Path,
    dest: &Path,
    expected: i64,
    name: &str,
) -> Result<std::fs::Metadata, StorageError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|e| io_error(name, e))?;
    file.lock().map_err(|e| io_error(name, e))?;
    let current = match std::fs::metadata(dest) {
        Ok(md) => generation_of(md.modified().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::AlreadyExists(name.to_owned())),
        Err(e) => return Err(io_error(name, e)),
    };
    if current != expected {
        return Err(StorageError::AlreadyExists(name.to_owned()));
    }
    // A rename whose new file has the same modification time would keep
    // the generation: the file's time is moved on by at least 1 ns.
    let written = std::fs::metadata(tmp).map_err(|e| io_error(name, e))?;
    if generation_of(written.modified().ok()) <= current {
        let later = UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(current).unwrap_or_default() + 1);
        std::fs::File::options()
            .write(true)
            .open(tmp)
            .and_then(|f| f.set_modified(later))
            .map_err(|e| io_error(name, e))?;
    }
    let swapped = std::fs::metadata(tmp).map_err(|e| io_error(name, e))?;
    std::fs::rename(tmp, dest).map_err(|e| io_error(name, e))?;
    drop(file);
    Ok(swapped)
}

/// A file's custom metadata: its extended attributes in the `user.`
/// namespace (`setfattr -n user.model -v NAME FILE`), as Cloud Storage's
/// `x-goog-meta-*`. A file system without them has none.
fn custom_metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(names) = xattr::list(path) else { return out };
    for attr in names {
        let Some(key) = attr.to_str().and_then(|a| a.strip_prefix("user.")) else {
            continue;
        };
        if let Ok(Some(value)) = xattr::get(path, &attr)
            && let Ok(value) = String::from_utf8(value)
        {
            out.insert(key.to_owned(), value);
        }
    }
    out
}

/// Local objects have no generation; the modification time in nanoseconds
/// plays its part (a rewrite of the same name gets a new one).
pub fn generation_of(modified: Option<SystemTime>) -> i64 {
    modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Object names as Cloud Storage allows them, minus what would let a name
/// leave its directory or hide among temporary files.
pub fn check_name(name: &str) -> Result<(), StorageError> {
    let bad = |reason: &str| {
        Err(StorageError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if name.starts_with('/') {
        return bad("starts with /");
    }
    for segment in name.split('/') {
        match segment {
            "" => return bad("has an empty path segment"),
            "." | ".." => return bad("has a . or .. path segment"),
            TMP_DIR => return bad("uses the reserved segment .scorer-tmp"),
            _ => {}
        }
    }
    Ok(())
}

fn io_error(name: &str, e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound(name.to_owned()),
        // A name the file system cannot hold (a segment over 255 bytes).
        io::ErrorKind::InvalidFilename => StorageError::InvalidName {
            name: name.to_owned(),
            reason: e.to_string(),
        },
        io::ErrorKind::AlreadyExists => StorageError::AlreadyExists(name.to_owned()),
        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput => {
            StorageError::Permanent(format!("{name}: {e}"))
        }
        _ => StorageError::Transient(format!("{name}: {e}")),
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn uri(&self, name: &str) -> String {
        format!("file://{}", self.root.join(name).display())
    }

    fn check_name(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_of(name)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => {
                let mut meta = self.meta(name, &md);
                meta.metadata = custom_metadata(&path);
                Ok(Some(meta))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(name, e)),
        }
    }

    async fn checksum(&self, name: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let (mut meta, mut stream) = match self.read(name, None).await {
            Ok(opened) => opened,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut crc = 0u32;
        while let Some(chunk) = stream.next().await {
            crc = crc32c::crc32c_append(crc, &chunk?);
        }
        meta.crc32c = Some(crc);
        Ok(Some(meta))
    }

    async fn read_from(
        &self,
        name: &str,
        generation: Option<i64>,
        offset: u64,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        use tokio::io::AsyncSeekExt as _;
        let path = self.path_of(name)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| io_error(name, e))?;
        let md = file.metadata().await.map_err(|e| io_error(name, e))?;
        if !md.is_file() {
            return Err(StorageError::NotFound(name.to_owned()));
        }
        let meta = self.meta(name, &md);
        if generation.is_some_and(|g| g != meta.generation) {
            return Err(StorageError::NotFound(format!(
                "{name} (generation {}; it now has {})",
                generation.unwrap_or_default(),
                meta.generation
            )));
        }
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| io_error(name, e))?;
        }
        let owned = name.to_owned();
        let stream = ReaderStream::with_capacity(file, 256 * 1024).map(move |r| r.map_err(|e| io_error(&owned, e)));
        Ok((meta, Box::pin(stream)))
    }

    async fn write(&self, name: &str, body: WriteBody, options: WriteOptions) -> Result<ObjectMeta, StorageError> {
        let dest = self.path_of(name)?;
        let mut body = until_end(body);
        let tmp_dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| io_error(name, e))?;
        let tmp = tmp_dir.join(format!("{:016x}", rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| io_error(name, e))?;
            let mut crc = 0u32;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                crc = crc32c::crc32c_append(crc, &chunk);
                file.write_all(&chunk).await.map_err(|e| io_error(name, e))?;
            }
            file.sync_all().await.map_err(|e| io_error(name, e))?;
            drop(file);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| io_error(name, e))?;
            }
            let swapped = if let Some(expected) = options.if_generation {
                let (tmp, dest, owned) = (tmp.clone(), dest.clone(), name.to_owned());
                let lock = tmp_dir.join("compare-and-swap.lock");
                Some(
                    tokio::task::spawn_blocking(move || swap_if_generation(&lock, &tmp, &dest, expected, &owned))
                        .await
                        .map_err(|e| StorageError::Transient(format!("{name}: {e}")))??,
                )
            } else if options.create_only {
                // link(2) fails if the destination exists: an atomic create-only.
                tokio::fs::hard_link(&tmp, &dest).await.map_err(|e| io_error(name, e))?;
                None
            } else {
                tokio::fs::rename(&tmp, &dest).await.map_err(|e| io_error(name, e))?;
                None
            };
            let md = match swapped {
                Some(md) => md,
                None => tokio::fs::metadata(&dest).await.map_err(|e| io_error(name, e))?,
            };
            let mut meta = self.meta(name, &md);
            meta.crc32c = Some(crc);
            Ok(meta)
        }
        .await;
        // The temporary file is gone after a rename; after a link or a
        // failure it must be removed. Best effort: a leftover is only litter.
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let store = self.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&dir.display().to_string(), e)),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else { continue };
                    if kind.is_dir() {
                        if entry.file_name() != TMP_DIR {
                            stack.push(path);
                        }
                    } else if kind.is_file()
                        && let Some(name) = store.name_of(&path)
                        && name.starts_with(&prefix)
                        && let Ok(md) = entry.metadata()
                    {
                        out.push(store.meta(&name, &md));
                    }
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Transient(format!("listing failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{read_all, write_bytes};

    #[test]
    fn names_cannot_escape_or_hide() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a/.scorer-tmp/x",
            "a\nb",
            "a\u{7}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a.csv",
            "dir/sub/file.csv.gz",
            "a%2Fb.csv",
            "vuelos-año.csv",
            "..a",
            ".hidden",
        ] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[tokio::test]
    async fn create_only_write_refuses_the_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new("b", dir.path()).unwrap();
        let opts = WriteOptions::create_only("text/plain");
        let meta = write_bytes(&store, "x/y.txt", b"one".to_vec(), opts).await.unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.crc32c, Some(crc32c::crc32c(b"one")));
        let err = write_bytes(&store, "x/y.txt", b"two".to_vec(), opts).await.unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");
        let (_, bytes) = read_all(&store, "x/y.txt", 100).await.unwrap();
        assert_eq!(bytes, b"one");
        let listed = store.list("").await.unwrap();
        assert_eq!(listed.len(), 1, "temporary files must not be listed: {listed:?}");
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new("b", dir.path()).unwrap();
        use crate::storage::BodyPart;
        let failing: WriteBody = Box::pin(futures::stream::iter(vec![
            Ok(BodyPart::Data(bytes::Bytes::from_static(b"partial"))),
            Err(StorageError::Abandoned("test".into())),
        ]));
        // A body that just stops, without the end marker: its writer gave up.
        let unfinished: WriteBody = Box::pin(futures::stream::iter(vec![Ok(BodyPart::Data(
            bytes::Bytes::from_static(b"partial"),
        ))]));
        for body in [failing, unfinished] {
            let err = store
                .write("p.csv", body, WriteOptions::create_only("text/csv"))
                .await
                .unwrap_err();
            assert!(matches!(err, StorageError::Abandoned(_)), "{err}");
            assert!(store.stat("p.csv").await.unwrap().is_none());
            assert_eq!(std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn reading_a_replaced_generation_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new("b", dir.path()).unwrap();
        std::fs::write(dir.path().join("f.csv"), "a\n").unwrap();
        let meta = store.stat("f.csv").await.unwrap().unwrap();
        assert!(store.read("f.csv", Some(meta.generation)).await.is_ok());
        let err = store.read("f.csv", Some(meta.generation + 1)).await.err().unwrap();
        assert!(matches!(err, StorageError::NotFound(_)));
    }
}
