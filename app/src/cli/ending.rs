//! How a short-lived command (`score`, `train`, the operator tools) ends when
//! it is cut short, so that it leaves nothing behind and says nothing odd:
//!
//! - **SIGINT / SIGTERM** (Ctrl-C, `timeout`): every temporary file still in
//!   flight is removed and the command exits 130 (SIGINT) or 143 (SIGTERM),
//!   as a shell reports a command killed by the signal. The target of an
//!   output is never created: the rename into place and the handler take
//!   the same lock.
//! - **The reader of standard output goes away** (`| head`): Rust ignores
//!   SIGPIPE, so a write fails with `BrokenPipe`; the command then removes
//!   its temporary files and dies of SIGPIPE, quietly, as `cat` does (a
//!   shell sees status 141). SIGPIPE itself stays ignored, because the
//!   operator tools also write to network sockets, where a peer that goes
//!   away must be an error to retry, not the end of the process.
//!
//! `serve` and `demo` have their own shutdown (`scorer::shutdown`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::failed::{Exit, Failed};

/// Temporary files written by this process and not yet renamed into place.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a list that is still right.
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the temporary file `path`, registered for removal on a signal.
/// Registration and creation happen under the lock the handler takes, so a
/// signal sees either no file or a registered one.
pub fn create(path: &Path) -> io::Result<File> {
    let mut list = in_flight();
    let file = File::create(path)?;
    list.push(path.to_owned());
    Ok(file)
}

/// Renames a temporary file into place and forgets it. Under the lock: a
/// signal either removes the temporary file before the rename (the target
/// is not created) or finds it renamed (the target is complete).
pub fn rename(path: &Path, target: &Path) -> io::Result<()> {
    let mut list = in_flight();
    let renamed = std::fs::rename(path, target);
    if renamed.is_ok() {
        list.retain(|p| p != path);
    }
    renamed
}

/// Removes a temporary file (if it was created) and forgets it.
pub fn remove(path: &Path) {
    let mut list = in_flight();
    let _ = std::fs::remove_file(path);
    list.retain(|p| p != path);
}

/// Installs the SIGINT/SIGTERM handler: a thread of its own that waits for
/// either, removes the files in flight and exits. Without it (it could not
/// be installed) the signals keep their default, immediate effect.
pub fn on_signals_remove_temporaries() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_io().build() else {
        return;
    };
    // Registered here, before any file is created, not in the thread: a
    // signal that came before the thread ran would otherwise kill the
    // process with the default disposition.
    let signals = {
        let _entered = runtime.enter();
        signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
    };
    let Ok((mut interrupt, mut terminate)) = signals else {
        return;
    };
    std::thread::spawn(move || {
        let code = runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            }
        });
        let list = in_flight();
        for path in list.iter() {
            let _ = std::fs::remove_file(path);
        }
        // Exits with the lock held: no rename or new temporary file can
        // follow the removal.
        std::process::exit(code);
    });
}

/// The reader of standard output went away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct ReaderGone;

impl ReaderGone {
    pub fn failed() -> Failed {
        Failed::new(Exit::Failure, ReaderGone)
    }

    /// Whether `failed` is the reader going away.
    pub fn is(failed: &Failed) -> bool {
        failed.error.is::<ReaderGone>()
    }
}

/// Ends the process as SIGPIPE ends `cat`, once the caller has cleaned up.
pub fn die_of_sigpipe() -> ! {
    for path in in_flight().iter() {
        let _ = std::fs::remove_file(path);
    }
    // SAFETY: restoring a signal's default disposition and raising it are
    // async-signal-safe libc calls with valid constant arguments; nothing
    // runs after them in this thread but the fallback exit.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Where a command's report goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Writes `text` to standard output (or error) whole; a reader that went
/// away is [`ReaderGone`], never a panic.
pub fn say(stream: Stream, text: &str) -> Result<(), Failed> {
    let written = match stream {
        Stream::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Stderr => io::stderr().lock().write_all(text.as_bytes()),
    };
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ReaderGone::failed()),
        Err(e) => Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!(
                "cannot write to standard {}: {e}",
                if stream == Stream::Stdout { "output" } else { "error" }
            ),
        )),
    }
}
