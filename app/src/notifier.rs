//! The local stand-in for Cloud Storage notifications and Pub/Sub push.
//!
//! It watches the input directory and, for every complete new file, POSTs the
//! same push envelope Google would (OBJECT_FINALIZE, JSON_API_V1 payload) to
//! the service's push endpoint, retrying 429/5xx with backoff as Pub/Sub does
//! and writing what it gave up on to `DIR/dead-letter/`.
//!
//! Like Cloud Storage, which notifies only once an object is complete, it acts
//! only on complete files: renamed into the directory (acted on at once, the
//! pattern to use), or written in place and then closed by their writer
//! (inotify's close-after-write), with size and modification time unchanged
//! for the settle time. A writer that pauses longer than the settle time
//! while it holds the file open is not mistaken for a finished one. Without
//! inotify (or for files that were there before the notifier started), the
//! size and time must stay unchanged for the settle time. Hidden files (any
//! path segment starting with `.`) and temporary names (`*.tmp`, `*.part`,
//! `*.partial`, `*.crdownload`, `*.swp`, `*~`) are ignored.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::notification::Notification;
use crate::storage::local::{LocalStore, generation_of};

/// How often the directory is rescanned (inotify only speeds things up).
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Delivery attempts before a notification is dead-lettered.
const MAX_ATTEMPTS: u32 = 12;

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub input: LocalStore,
    /// Where dead letters go.
    pub dead_letter_dir: PathBuf,
    /// The push endpoint, e.g. `http://127.0.0.1:8080/`.
    pub endpoint: String,
    pub settle: Duration,
}

/// Whether a path inside the input directory names a candidate object.
pub fn is_candidate(relative: &Path) -> bool {
    let mut segments = relative.components().peekable();
    if segments.peek().is_none() {
        return false;
    }
    for c in relative.components() {
        let s = c.as_os_str().to_string_lossy();
        if s.starts_with('.') {
            return false;
        }
    }
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    const TEMPORARY: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", ".swp"];
    !(name.ends_with('~') || TEMPORARY.iter().any(|t| name.ends_with(t)))
}

struct Seen {
    size: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

/// A file open for writing is taken as complete anyway after this long
/// without a change (a close event missed, a writer that never closes).
const STALE_WRITE: Duration = Duration::from_secs(60);

/// What inotify said about a path.
enum Watched {
    /// Renamed into the directory: complete.
    Renamed(PathBuf),
    /// Created or written: open for writing until closed.
    Writing(PathBuf),
    /// Closed after writing.
    Closed(PathBuf),
}

/// Runs until `stop` is cancelled.
pub async fn run(config: NotifierConfig, stop: CancellationToken) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap_or_default();
    let (tx, mut watched) = mpsc::unbounded_channel::<Watched>();
    let root = config.input.root().to_path_buf();
    // inotify: renames into the directory count as complete at once; a file
    // created or written in place is open until its writer closes it.
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        let Ok(event) = event else { return };
        let make: fn(PathBuf) -> Watched = match event.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => Watched::Renamed,
            EventKind::Create(CreateKind::File | CreateKind::Any) | EventKind::Modify(ModifyKind::Data(_)) => {
                Watched::Writing
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Watched::Closed,
            _ => return,
        };
        for path in event.paths {
            let _ = tx.send(make(path));
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&root, RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the input directory; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling only");
            None
        }
    };
    tracing::info!(input = %root.display(), endpoint = %config.endpoint, "local notifier watching");
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut complete: HashSet<PathBuf> = HashSet::new();
    let mut writing: HashSet<PathBuf> = HashSet::new();
    let mut sent: HashSet<(String, i64)> = HashSet::new();
    let mut ticker = tokio::time::interval(SCAN_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(event) = watched.recv() => note(event, &mut complete, &mut writing),
            _ = ticker.tick() => {}
        }
        while let Ok(event) = watched.try_recv() {
            note(event, &mut complete, &mut writing);
        }
        let files = list_files(&root).await;
        let present: HashSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        seen.retain(|p, _| present.contains(p));
        complete.retain(|p| present.contains(p));
        writing.retain(|p| present.contains(p));
        for (path, md) in &files {
            let Some(name) = config.input.name_of(path) else {
                continue;
            };
            let Ok(relative) = path.strip_prefix(&root) else {
                continue;
            };
            if !is_candidate(relative) {
                continue;
            }
            let generation = generation_of(md.modified().ok());
            if sent.contains(&(name.clone(), generation)) {
                continue;
            }
            let settled = match seen.get(path) {
                Some(s) if s.size == md.len() && s.modified == md.modified().ok() => {
                    let quiet = s.since.elapsed();
                    quiet >= config.settle && (!writing.contains(path) || quiet >= STALE_WRITE.max(config.settle))
                }
                _ => {
                    seen.insert(
                        path.clone(),
                        Seen {
                            size: md.len(),
                            modified: md.modified().ok(),
                            since: Instant::now(),
                        },
                    );
                    false
                }
            };
            if !(settled || complete.contains(path)) {
                continue;
            }
            sent.insert((name.clone(), generation));
            tokio::spawn(deliver(
                client.clone(),
                config.clone(),
                name,
                generation,
                md.len(),
                stop.clone(),
            ));
        }
    }
}

/// Records what inotify said about a path.
fn note(event: Watched, complete: &mut HashSet<PathBuf>, writing: &mut HashSet<PathBuf>) {
    match event {
        Watched::Renamed(path) => {
            writing.remove(&path);
            complete.insert(path);
        }
        Watched::Writing(path) => {
            complete.remove(&path);
            writing.insert(path);
        }
        Watched::Closed(path) => {
            writing.remove(&path);
        }
    }
}

async fn list_files(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    if !entry.file_name().to_string_lossy().starts_with('.') {
                        stack.push(entry.path());
                    }
                } else if kind.is_file()
                    && let Ok(md) = entry.metadata()
                {
                    out.push((entry.path(), md));
                }
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// Pushes one notification until it is acknowledged (2xx) or given up on.
async fn deliver(
    client: reqwest::Client,
    config: NotifierConfig,
    name: String,
    generation: i64,
    size: u64,
    stop: CancellationToken,
) {
    let message_id = format!("{}", rand::random::<u64>() >> 11);
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let envelope = Notification::finalize(crate::storage::ObjectStore::bucket(&config.input), &name, generation)
        .size(size)
        .time(&now)
        .push_envelope(&message_id, "projects/local/subscriptions/scorer-local");
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_ATTEMPTS {
        let mut body = envelope.clone();
        body["deliveryAttempt"] = attempt.into();
        let result = client.post(&config.endpoint).json(&body).send().await;
        let retry_reason = match result {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(object = %name, status = %r.status(), "notification acknowledged");
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        tracing::info!(object = %name, attempt, reason = %retry_reason, "push not acknowledged; will retry");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    let _ = tokio::fs::create_dir_all(&config.dead_letter_dir).await;
    let path = config.dead_letter_dir.join(format!("{message_id}.json"));
    let text = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
    match tokio::fs::write(&path, text).await {
        Ok(()) => tracing::error!(object = %name, dead_letter = %path.display(), "gave up on a notification"),
        Err(e) => tracing::error!(object = %name, error = %e, "gave up on a notification and could not keep it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_temporary_files_are_not_candidates() {
        for (path, ok) in [
            ("a.csv", true),
            ("sub/b.csv.gz", true),
            ("notes.txt", true),
            (".a.csv", false),
            (".hidden/a.csv", false),
            ("a.csv.tmp", false),
            ("a.csv.part", false),
            ("a.csv~", false),
            ("x.crdownload", false),
        ] {
            assert_eq!(is_candidate(Path::new(path)), ok, "{path}");
        }
    }
}
