//! Between async storage and the synchronous polars engine.
//!
//! The engine runs on a blocking thread and speaks `Read`/`Write`; objects
//! are async streams. [`StreamReader`] pulls a download from the blocking
//! thread; [`UploadWriter`] feeds an upload through a small bounded channel,
//! so neither side ever holds a whole object in memory.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ByteStream, StorageError};

/// Size of the pieces handed to an upload.
const PIECE: usize = 1 << 20;

fn cancelled() -> io::Error {
    StorageError::Abandoned("the job was cancelled".into()).into_io()
}

/// A download as a blocking `Read`. Only for use on a blocking thread.
pub struct StreamReader {
    stream: ByteStream,
    current: Bytes,
    handle: Handle,
    cancel: CancellationToken,
}

impl StreamReader {
    pub fn new(stream: ByteStream, handle: Handle, cancel: CancellationToken) -> Self {
        StreamReader {
            stream,
            current: Bytes::new(),
            handle,
            cancel,
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.cancel.is_cancelled() {
                return Err(cancelled());
            }
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e.into_io()),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An upload as a blocking `Write`. Call [`UploadWriter::finish`] to commit;
/// dropping it unfinished abandons the upload, which then leaves nothing.
pub struct UploadWriter {
    tx: Option<mpsc::Sender<Result<Bytes, StorageError>>>,
    buf: BytesMut,
    crc32c: u32,
    size: u64,
    cancel: CancellationToken,
}

impl UploadWriter {
    /// The writer and the body stream to hand to [`super::ObjectStore::write`].
    pub fn new(cancel: CancellationToken) -> (UploadWriter, ByteStream) {
        let (tx, rx) = mpsc::channel(4);
        let body = Box::pin(tokio_stream_from(rx));
        (
            UploadWriter {
                tx: Some(tx),
                buf: BytesMut::with_capacity(PIECE),
                crc32c: 0,
                size: 0,
                cancel,
            },
            body,
        )
    }

    fn send(&mut self, piece: Bytes) -> io::Result<()> {
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        tx.blocking_send(Ok(piece))
            .map_err(|_| StorageError::Abandoned("the upload stopped".into()).into_io())
    }

    /// Sends what is buffered and ends the body cleanly. Returns the CRC32C
    /// and size of everything written.
    pub fn finish(mut self) -> io::Result<(u32, u64)> {
        if !self.buf.is_empty() {
            let piece = self.buf.split().freeze();
            self.send(piece)?;
        }
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
            self.send(piece)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Unfinished: make the upload fail rather than commit a prefix.
            let _ = tx.try_send(Err(StorageError::Abandoned("the writer stopped before the end".into())));
        }
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, StorageError>>,
) -> impl futures::Stream<Item = Result<Bytes, StorageError>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
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
            let (mut writer, body) = UploadWriter::new(CancellationToken::new());
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
        assert!(err.get_ref().unwrap().is::<StorageError>());
    }
}
