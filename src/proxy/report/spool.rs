//! The access-event spool: a JSON-lines file in the proxy's data dir that events are
//! appended to (and synced) before they count as recorded, so a crash loses none. It keeps
//! the cap (`--spool-max-bytes` of undelivered events, past which injections are refused),
//! the events a failed append could not write, the offset the central API's
//! acknowledgements have reached, and the repair of a line torn by a crash mid-append.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Pending, WRITE_EVERY};

pub(super) struct Spool {
    pub(super) path: PathBuf,
    pub(super) offset_path: PathBuf,
    /// Held while appending and while truncating, so the two never interleave.
    pub(super) file: Mutex<std::fs::File>,
    pub(super) appended: Notify,
    /// Past this size the spool is full: injections are refused until it drains.
    max_bytes: u64,
    pub(super) full: std::sync::atomic::AtomicBool,
    /// Events an append could not write (a full disk), written first by the next append;
    /// while any wait here, injections are refused as when the spool is full.
    unwritten: Mutex<Vec<u8>>,
    pub(super) stuck: std::sync::atomic::AtomicBool,
    /// Where the central API's acknowledgements have reached: what lies beyond is what the
    /// cap is about (the file itself is emptied only when everything was delivered).
    pub(super) delivered: std::sync::atomic::AtomicU64,
}

impl Spool {
    pub(super) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<Spool>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("access-events.jsonl");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).read(true).open(&path)?;
        // A line torn by a crash mid-append is ended, so the next one starts whole.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            std::io::Read::read_exact(&mut file, &mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let delivered = read_offset(&dir.join("access-events.offset")).min(len);
        let spool = Arc::new(Spool {
            offset_path: dir.join("access-events.offset"),
            path,
            file: Mutex::new(file),
            appended: Notify::new(),
            max_bytes,
            full: std::sync::atomic::AtomicBool::new(false),
            unwritten: Mutex::new(Vec::new()),
            stuck: std::sync::atomic::AtomicBool::new(false),
            delivered: std::sync::atomic::AtomicU64::new(delivered),
        });
        spool.measure(spool_len(&spool));
        Ok(spool)
    }

    /// Notes how much of the spool (`len` bytes) awaits delivery: full, or not (any more).
    pub(super) fn measure(&self, len: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let undelivered = len.saturating_sub(self.delivered.load(Relaxed));
        let full = undelivered >= self.max_bytes;
        if full != self.full.load(Relaxed) {
            self.full.store(full, Relaxed);
            if full {
                tracing::error!(bytes = undelivered, max = self.max_bytes, path = %self.path.display(), "the access-event spool is full: requests that would inject are refused until the central API takes the events");
            } else {
                tracing::info!(bytes = undelivered, "the access-event spool drained: injecting again");
            }
        }
    }
}

/// Appends what was recorded to the spool, a batch per pause, synced before it counts as
/// written (off the runtime's threads: a sync can take milliseconds).
pub(super) async fn write_spool(spool: Arc<Spool>, pending: Arc<Pending>) {
    loop {
        if spool.stuck.load(std::sync::atomic::Ordering::Relaxed) {
            // Events wait in memory for a write that failed: tried again each second,
            // requests or not (readyz says 503 meanwhile, so none may come).
            let _ = tokio::time::timeout(Duration::from_secs(1), pending.waiting.notified()).await;
        } else {
            pending.waiting.notified().await;
        }
        tokio::time::sleep(WRITE_EVERY).await;
        let (spool, pending) = (spool.clone(), pending.clone());
        let appended = tokio::task::spawn_blocking(move || {
            append_pending(&spool, &pending);
            if let Err(e) = spool.file.lock().expect("spool lock poisoned").sync_data() {
                tracing::error!(error = %e, path = %spool.path.display(), "cannot sync the access-event spool");
            }
            spool.measure(spool_len(&spool));
            spool.appended.notify_one();
        });
        if let Err(e) = appended.await {
            tracing::error!(error = %e, "the access-event writer failed");
        }
    }
}

/// Moves every gathered event into the spool. The windows are emptied under the spool's
/// lock, so once one caller returns, nothing taken before it is still on its way to the file.
pub(super) fn append_pending(spool: &Spool, pending: &Pending) {
    let mut file = spool.file.lock().expect("spool lock poisoned");
    let mut unwritten = spool.unwritten.lock().expect("spool lock poisoned");
    let mut lines = std::mem::take(&mut *unwritten);
    for mut window in pending.windows.each() {
        for e in window.events.drain(..) {
            if serde_json::to_writer(&mut lines, &e).is_ok() {
                lines.push(b'\n');
            }
        }
        window.index.clear();
    }
    if lines.is_empty() {
        return;
    }
    let stuck = match file.write_all(&lines) {
        Ok(()) => false,
        Err(e) => {
            if !spool.stuck.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(error = %e, path = %spool.path.display(), "cannot append access events to the spool; they are kept in memory and requests that would inject are refused until it can be written");
            }
            // Part of a line may have reached the file: the retry starts on a line of its own.
            unwritten.push(b'\n');
            unwritten.extend_from_slice(&lines);
            true
        }
    };
    if stuck != spool.stuck.swap(stuck, std::sync::atomic::Ordering::Relaxed) && !stuck {
        tracing::info!(path = %spool.path.display(), "the access-event spool can be written again");
    }
}

pub(super) fn spool_len(spool: &Spool) -> u64 {
    std::fs::metadata(&spool.path).map(|m| m.len()).unwrap_or(0)
}

pub(super) fn read_offset(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

pub(super) fn write_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("offset.tmp");
    std::fs::write(&tmp, offset.to_string())?;
    std::fs::rename(tmp, path)
}

/// Once everything in the spool is acknowledged, empties it. The offset is reset first: a
/// crash in between resends what was sent, which the API recognises, rather than skipping.
pub(super) fn compact(spool: &Spool, offset: u64) -> u64 {
    if offset == 0 {
        return 0;
    }
    let file = spool.file.lock().expect("spool lock poisoned");
    if file.metadata().map(|m| m.len()).unwrap_or(0) != offset {
        return offset;
    }
    if write_offset(&spool.offset_path, 0).is_err() {
        return offset;
    }
    match file.set_len(0) {
        Ok(()) => {
            spool.delivered.store(0, std::sync::atomic::Ordering::Relaxed);
            spool.measure(0);
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot empty the access-event spool");
            offset
        }
    }
}
