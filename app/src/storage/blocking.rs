//! Between async storage and the synchronous polars engine.
//!
//! The engine runs on a blocking thread and speaks `Read`/`Write`; objects
//! are async streams. [`StreamReader`] pulls a download from the blocking
//! thread; [`UploadWriter`] feeds an upload through a small bounded channel,
//! so neither side ever holds a whole object in memory, and [`Upload`] pairs
//! one with the task that stores it.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::{BodyPart, ByteStream, ObjectMeta, ObjectStore, StorageError, WriteBody, WriteOptions};

/// Size of the pieces handed to an upload.
const PIECE: usize = 1 << 20;

fn cancelled() -> io::Error {
    StorageError::Abandoned("the job was cancelled".into()).into_io()
}

/// An object read by byte ranges from the engine's threads (a Parquet
/// input: its footer, then one row group's column chunks at a time). Each
/// range is a read from its offset that stops after the bytes it needs;
/// the job's cancellation ends a wait at once.
pub struct ObjectRanges {
    pub store: Arc<dyn ObjectStore>,
    pub name: String,
    pub generation: i64,
    pub size: u64,
    pub handle: Handle,
    pub cancel: CancellationToken,
}

impl crate::score::parquet_in::RandomAccess for ObjectRanges {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let want = len.min((self.size - offset) as usize);
        let read = async {
            let (_, mut stream) = self
                .store
                .read_from(&self.name, Some(self.generation), offset)
                .await
                .map_err(StorageError::into_io)?;
            let mut out = Vec::with_capacity(want);
            while out.len() < want {
                match stream.next().await {
                    Some(piece) => {
                        let piece = piece.map_err(StorageError::into_io)?;
                        let take = piece.len().min(want - out.len());
                        out.extend_from_slice(&piece[..take]);
                    }
                    // The object is shorter than it said: storage's fault
                    // (a replaced generation, a cut stream), retried.
                    None => {
                        return Err(StorageError::Transient(format!(
                            "{} ended at byte {} of {}",
                            self.name,
                            offset + out.len() as u64,
                            self.size
                        ))
                        .into_io());
                    }
                }
            }
            Ok::<_, io::Error>(out)
        };
        let cancel = &self.cancel;
        self.handle.block_on(async {
            tokio::select! {
                _ = cancel.cancelled() => Err(cancelled()),
                bytes = read => bytes,
            }
        })
    }
}

/// A download as a blocking `Read`. Only for use on a blocking thread.
pub struct StreamReader {
    stream: ByteStream,
    current: Bytes,
    handle: Handle,
    cancel: CancellationToken,
    /// The stream ended: never poll it again (a finished stream may panic).
    ended: bool,
}

impl StreamReader {
    pub fn new(stream: ByteStream, handle: Handle, cancel: CancellationToken) -> Self {
        StreamReader {
            stream,
            current: Bytes::new(),
            handle,
            cancel,
            ended: false,
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(cancelled());
            }
            // Waiting on storage must not make the job deaf to a stop.
            let cancel = &self.cancel;
            let stream = &mut self.stream;
            let next = self.handle.block_on(async {
                tokio::select! {
                    _ = cancel.cancelled() => None,
                    item = stream.next() => Some(item),
                }
            });
            let Some(next) = next else {
                return Err(cancelled());
            };
            match next {
                None => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e.into_io()),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An upload as a blocking `Write`. Call [`UploadWriter::finish`] to commit:
/// it sends the body's end marker. Dropped unfinished (an error, a panic, a
/// cancelled job) the writer closes its channel without that marker, and the
/// store abandons the upload, whatever the channel held at that moment.
pub struct UploadWriter {
    tx: Option<mpsc::Sender<Result<BodyPart, StorageError>>>,
    buf: BytesMut,
    crc32c: u32,
    size: u64,
    cancel: CancellationToken,
    handle: Handle,
}

impl UploadWriter {
    /// The writer and the body to hand to [`super::ObjectStore::write`]; the
    /// writer is for a blocking thread, `handle` the runtime the upload runs on.
    pub fn new(cancel: CancellationToken, handle: Handle) -> (UploadWriter, WriteBody) {
        let (tx, mut rx) = mpsc::channel(4);
        let body: WriteBody = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        (
            UploadWriter {
                tx: Some(tx),
                buf: BytesMut::with_capacity(PIECE),
                crc32c: 0,
                size: 0,
                cancel,
                handle,
            },
            body,
        )
    }

    fn send(&mut self, part: BodyPart) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        // A stalled upload must not make the job deaf to a stop.
        let cancel = &self.cancel;
        self.handle.block_on(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(cancelled()),
                sent = tx.send(Ok(part)) => {
                    sent.map_err(|_| StorageError::Abandoned("the upload stopped".into()).into_io())
                }
            }
        })
    }

    /// Sends what is buffered and the end marker. Returns the CRC32C and
    /// size of everything written.
    pub fn finish(mut self) -> io::Result<(u32, u64)> {
        if !self.buf.is_empty() {
            let piece = self.buf.split().freeze();
            self.send(BodyPart::Data(piece))?;
        }
        self.send(BodyPart::End)?;
        self.tx = None;
        Ok((self.crc32c, self.size))
    }
}

impl Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            let piece = self.buf.split().freeze();
            self.send(BodyPart::Data(piece))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An upload running beside the engine: an [`UploadWriter`] and the task
/// that streams its body into the store. Started when the first byte is due
/// (the errors object exists only if a row is rejected); [`Upload::finish`]
/// ends the body and hands back what was written and the task to await.
pub struct Upload {
    name: String,
    writer: UploadWriter,
    task: tokio::task::JoinHandle<Result<ObjectMeta, StorageError>>,
}

/// An upload whose body is complete, with what the writer sent, so the
/// caller can check what the store says it stored.
pub struct FinishedUpload {
    pub name: String,
    /// CRC32C and size of every byte written.
    pub crc32c: u32,
    pub size: u64,
    pub stored: tokio::task::JoinHandle<Result<ObjectMeta, StorageError>>,
}

impl Upload {
    /// Starts writing `name` to `store` on `handle`'s runtime. Callable from
    /// a blocking thread.
    pub fn start(
        handle: &Handle,
        store: Arc<dyn ObjectStore>,
        name: String,
        options: WriteOptions,
        cancel: CancellationToken,
    ) -> Upload {
        let (writer, body) = UploadWriter::new(cancel, handle.clone());
        let target = name.clone();
        let task = handle.spawn(async move { store.write(&target, body, options).await });
        Upload { name, writer, task }
    }

    /// Sends the end marker: the object is complete.
    pub fn finish(self) -> io::Result<FinishedUpload> {
        let (crc32c, size) = self.writer.finish()?;
        Ok(FinishedUpload {
            name: self.name,
            crc32c,
            size,
            stored: self.task,
        })
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.writer.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;
    use crate::storage::{ObjectStore, WriteOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_writer_commits_nothing_and_a_finished_one_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new("b", dir.path()).unwrap();
        for finish in [false, true] {
            let (mut writer, body) = UploadWriter::new(CancellationToken::new(), Handle::current());
            let name = format!("f{finish}.csv");
            let upload = {
                let store = store.clone();
                let name = name.clone();
                tokio::spawn(async move { store.write(&name, body, WriteOptions::create_only("text/csv")).await })
            };
            let crc = tokio::task::spawn_blocking(move || {
                writer.write_all(&vec![b'x'; 3 * PIECE + 5]).unwrap();
                if finish { Some(writer.finish().unwrap()) } else { None }
            })
            .await
            .unwrap();
            let result = upload.await.unwrap();
            assert_eq!(result.is_ok(), finish, "{result:?}");
            let stat = store.stat(&name).await.unwrap();
            assert_eq!(stat.map(|m| m.size), crc.map(|(_, size)| size));
        }
    }

    /// The state that used to commit a prefix: the upload is slower than the
    /// engine, so the channel is full when the writer is dropped unfinished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_dropped_while_the_upload_lags_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new("b", dir.path()).unwrap();
        let (mut writer, body) = UploadWriter::new(CancellationToken::new(), Handle::current());
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        // The consumer starts reading only after the writer is gone.
        let lagging: WriteBody = Box::pin(
            futures::stream::once(async move {
                let _ = dropped_rx.await;
                futures::stream::empty::<Result<BodyPart, StorageError>>()
            })
            .flatten()
            .chain(body),
        );
        let upload = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write("lag.csv", lagging, WriteOptions::create_only("text/csv"))
                    .await
            })
        };
        tokio::task::spawn_blocking(move || {
            // Fills the 4-slot channel, then gives up without finishing.
            for _ in 0..4 {
                writer.write_all(&vec![b'x'; PIECE]).unwrap();
            }
            drop(writer);
        })
        .await
        .unwrap();
        dropped_tx.send(()).unwrap();
        let result = upload.await.unwrap();
        assert!(matches!(result, Err(StorageError::Abandoned(_))), "{result:?}");
        assert!(store.stat("lag.csv").await.unwrap().is_none(), "a prefix was committed");
    }

    /// A stop reaches a writer whose upload has stalled (channel full).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_reaches_a_writer_blocked_on_a_stalled_upload() {
        let cancel = CancellationToken::new();
        let (mut writer, _body) = UploadWriter::new(cancel.clone(), Handle::current());
        let blocked = tokio::task::spawn_blocking(move || {
            // Nobody reads the body: the fifth piece blocks.
            for _ in 0..8 {
                writer.write_all(&vec![b'x'; PIECE])?;
            }
            Ok::<_, io::Error>(())
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cancel.cancel();
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
            .await
            .expect("the writer stayed blocked after the stop")
            .unwrap();
        assert!(result.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_yields_the_stream_and_storage_errors_stay_recognisable() {
        let stream: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
            Err(StorageError::Transient("cut".into())),
        ]));
        let handle = Handle::current();
        let (text, err) = tokio::task::spawn_blocking(move || {
            let mut r = StreamReader::new(stream, handle, CancellationToken::new());
            let mut out = Vec::new();
            let err = r.read_to_end(&mut out).unwrap_err();
            (out, err)
        })
        .await
        .unwrap();
        assert_eq!(text, b"abcdef");
        assert!(StorageError::find(&err).is_some());
    }
}
