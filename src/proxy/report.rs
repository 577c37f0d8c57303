//! Access events: every injection and every refusal becomes an event with a client ULID.
//! Events are appended to a spool file in the proxy's data dir every 20 ms, and a sender
//! posts them to the central API once they are appended (at most every 200 ms while they
//! keep coming, at least once a second), up to 500 per request, advancing an offset only
//! after the API acknowledged them (persisted at most once a second, and when the spool is
//! emptied). A restart resumes from the
//! persisted offset; the API drops ids it has already recorded, so each event lands
//! exactly once.

use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::backoff::Backoff;
use super::central::{Central, CentralError};
use super::sharded::Sharded;

/// Events per report: whatever is waiting, up to the API's limit per request (a proxy that
/// falls behind catches up in fewer, larger requests).
const BATCH: usize = 500;
/// Bytes per report at most (the API takes bodies up to 256 KiB): a report is cut at
/// whichever of this and `BATCH` comes first.
const BATCH_BYTES: usize = 192 * 1024;
/// What the agent chooses is cut to these lengths (bytes) in an event, so no event comes
/// near a report's size: the URL path, the method, the host.
const MAX_URL_PATH: usize = 1024;
const MAX_METHOD: usize = 32;
const MAX_HOST: usize = 255;
/// `--spool-max-bytes` unless set: days of events for a busy proxy.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Where events the API refuses one by one are kept, beside the spool.
const DEAD_LETTERS: &str = "access-events.dead.jsonl";

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut from {} bytes]", &text[..end], text.len())
}
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Least time between two reports while events keep coming: each report is a request and a
/// write transaction at the central API, which shares the machine with busy proxies.
const SEND_GAP: Duration = Duration::from_millis(200);
/// How often, under steady load, the acknowledged offset is written to disk.
const PERSIST_OFFSET_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct AccessEvent {
    pub id: String,
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    pub host: String,
    pub method: String,
    pub url_path: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The mean over the `count` uses this event stands for.
    pub latency_ms: f64,
    /// When the first of them happened.
    pub timestamp: String,
    /// How many uses, identical in every other field, this event stands for.
    pub count: u64,
    #[serde(skip)]
    latency_total_ms: f64,
}

/// One use (an injection or a refusal) as the pipeline sees it; borrowed, so a use that
/// repeats one already waiting costs a comparison and no allocation.
#[derive(Clone, Copy)]
pub struct Use<'a> {
    pub agent: &'a str,
    pub path: Option<&'a str>,
    pub version: Option<i64>,
    pub host: &'a str,
    pub method: &'a str,
    pub url_path: &'a str,
    pub outcome: &'static str,
    pub error_code: Option<&'static str>,
    pub status: Option<u16>,
    pub latency_ms: f64,
}

impl Use<'_> {
    /// A hash of what makes two uses the same event (not DoS-resistant and need not be: a
    /// collision only costs the comparison `same_as` makes anyway).
    fn key_hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
        (self.agent, self.path, self.version, self.host, self.method, self.url_path).hash(&mut h);
        (self.outcome, self.error_code, self.status).hash(&mut h);
        h.finish()
    }

    fn same_as(&self, e: &AccessEvent) -> bool {
        self.agent == e.agent
            && self.path == e.path.as_deref()
            && self.version == e.version
            && self.host == e.host
            && self.method == e.method
            && self.url_path == e.url_path
            && self.outcome == e.outcome
            && self.error_code == e.error_code
            && self.status == e.status
    }

    fn event(&self) -> AccessEvent {
        AccessEvent {
            id: ulid::Ulid::new().to_string(),
            agent: self.agent.to_owned(),
            path: self.path.map(str::to_owned),
            version: self.version,
            host: capped(self.host, MAX_HOST),
            method: capped(self.method, MAX_METHOD),
            url_path: capped(self.url_path, MAX_URL_PATH),
            outcome: self.outcome,
            error_code: self.error_code,
            status: self.status,
            latency_ms: self.latency_ms,
            timestamp: crate::domain::time::to_rfc3339(crate::domain::time::now_ms()),
            count: 1,
            latency_total_ms: self.latency_ms,
        }
    }
}

/// The handle the pipeline records through; never blocks the request. Uses wait in memory
/// for at most `WRITE_EVERY` before the writer appends them to the spool; uses identical in
/// every field but time (same secret, version, host, method, path, outcome, status) within
/// that window become one event with their `count`. The writer is woken once per window,
/// not once per use, so a busy proxy thread pays no wake-up.
#[derive(Clone)]
pub struct Reporter {
    pending: Arc<Pending>,
    spool: Arc<Spool>,
}

struct Pending {
    /// A window per shard; a thread records into its own, so the proxy's worker threads
    /// never wait on each other here.
    windows: Sharded<Window>,
    waiting: Notify,
}

#[derive(Default)]
struct Window {
    events: Vec<AccessEvent>,
    /// Key hash → index in `events` of the event that uses with that key join.
    index: std::collections::HashMap<u64, usize, std::hash::BuildHasherDefault<KeyHashed>>,
}

/// The index's keys are hashes already: used as they are.
#[derive(Default)]
struct KeyHashed(u64);

impl std::hash::Hasher for KeyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How long the writer lets uses gather before appending them.
const WRITE_EVERY: Duration = Duration::from_millis(20);
impl Pending {
    fn new() -> Pending {
        Pending { windows: Sharded::default(), waiting: Notify::new() }
    }
}

impl Reporter {
    pub fn record(&self, u: Use<'_>) {
        let hash = u.key_hash();
        let first = {
            let mut window = self.pending.windows.mine();
            let window = &mut *window;
            match window.index.get(&hash).map(|&i| &mut window.events[i]) {
                Some(e) if u.same_as(e) => {
                    e.count += 1;
                    e.latency_total_ms += u.latency_ms;
                    e.latency_ms = e.latency_total_ms / e.count as f64;
                }
                _ => {
                    window.index.insert(hash, window.events.len());
                    window.events.push(u.event());
                }
            }
            window.events.len() == 1 && window.events[0].count == 1
        };
        if first {
            self.pending.waiting.notify_one();
        }
    }

    /// Whether the spool is full: a use now could not be recorded, so none is made.
    pub fn spool_full(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.spool.full.load(Relaxed) || self.spool.stuck.load(Relaxed)
    }

    /// On the way out (the command of `airlock run` ended, or a signal): appends what is
    /// still gathering to the spool and syncs it, then gives the sender up to `within` to
    /// deliver the spool. Returns whether everything was delivered; what was not stays in
    /// the spool and goes on the next start with the same data dir.
    pub async fn close(&self, within: Duration) -> bool {
        append_pending(&self.spool, &self.pending);
        if let Err(e) = self.spool.file.lock().expect("spool lock poisoned").sync_data() {
            tracing::error!(error = %e, path = %self.spool.path.display(), "cannot sync the access-event spool");
        }
        self.spool.appended.notify_one();
        let deadline = tokio::time::Instant::now() + within;
        while spool_len(&self.spool) > 0 {
            if tokio::time::Instant::now() >= deadline {
                let left = spool_len(&self.spool);
                tracing::warn!(
                    path = %self.spool.path.display(),
                    bytes = left,
                    "access events not yet delivered stay in the spool; they go on the next start with this data dir"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

struct Spool {
    path: PathBuf,
    offset_path: PathBuf,
    /// Held while appending and while truncating, so the two never interleave.
    file: Mutex<std::fs::File>,
    appended: Notify,
    /// Past this size the spool is full: injections are refused until it drains.
    max_bytes: u64,
    full: std::sync::atomic::AtomicBool,
    /// Events an append could not write (a full disk), written first by the next append;
    /// while any wait here, injections are refused as when the spool is full.
    unwritten: Mutex<Vec<u8>>,
    stuck: std::sync::atomic::AtomicBool,
    /// Where the central API's acknowledgements have reached: what lies beyond is what the
    /// cap is about (the file itself is emptied only when everything was delivered).
    delivered: std::sync::atomic::AtomicU64,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<Spool>> {
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
    fn measure(&self, len: u64) {
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

/// Opens the spool in `dir` and starts the writer and the sender.
pub fn start(dir: &Path, central: Arc<Central>, max_bytes: u64) -> std::io::Result<Reporter> {
    let spool = Spool::open(dir, max_bytes)?;
    let pending = Arc::new(Pending::new());
    tokio::spawn(write_spool(spool.clone(), pending.clone()));
    tokio::spawn(send_spool(spool.clone(), central));
    Ok(Reporter { pending, spool })
}

/// Appends what was recorded to the spool, a batch per pause, synced before it counts as
/// written (off the runtime's threads: a sync can take milliseconds).
async fn write_spool(spool: Arc<Spool>, pending: Arc<Pending>) {
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
fn append_pending(spool: &Spool, pending: &Pending) {
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

fn spool_len(spool: &Spool) -> u64 {
    std::fs::metadata(&spool.path).map(|m| m.len()).unwrap_or(0)
}

fn read_offset(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn write_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("offset.tmp");
    std::fs::write(&tmp, offset.to_string())?;
    std::fs::rename(tmp, path)
}

/// An event line of the spool, and the offset after it.
type Line = (Vec<u8>, u64);

/// Complete event lines from `offset`, up to `BATCH` of them and `BATCH_BYTES` (one at
/// least), each with the offset after it; and the offset after the last line read. A line
/// that is not a JSON object (a torn write) is stepped over.
fn read_batch(path: &Path, offset: u64) -> std::io::Result<(Vec<Line>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let (mut events, mut bytes, mut next) = (Vec::new(), 0, offset);
    let mut line = Vec::new();
    while events.len() < BATCH {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line still being written
        }
        let event = line[..n - 1].trim_ascii();
        if !events.is_empty() && bytes + event.len() > BATCH_BYTES {
            break; // the next report starts with this line
        }
        next += n as u64;
        if event.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(event).is_ok() {
            bytes += event.len() + 1;
            events.push((event.to_vec(), next));
        }
    }
    Ok((events, next))
}

/// The report body `{"events":[…]}` for these event lines.
fn report_body<'e>(events: impl IntoIterator<Item = &'e [u8]>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The API refused what was sent (not who sent it, nor how often): sending it again as it
/// is would be refused for ever.
fn refuses_the_report(e: &CentralError) -> bool {
    matches!(e, CentralError::Refused { status, .. } if matches!(status, 400 | 413 | 422))
}

/// Keeps an event the API refused on its own in the dead-letter file, and says so.
fn dead_letter(spool: &Spool, event: &[u8], why: &CentralError) {
    let id = serde_json::from_slice::<serde_json::Value>(event)
        .ok()
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let path = spool.path.with_file_name(DEAD_LETTERS);
    let kept = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| {
        file.write_all(event)?;
        file.write_all(b"\n")?;
        file.sync_data()
    });
    match kept {
        Ok(()) => {
            tracing::error!(%id, error = %why, file = %path.display(), "the central API refused an access event; it is kept in the dead-letter file and delivery goes on")
        }
        Err(e) => {
            tracing::error!(%id, error = %why, write_error = %e, "the central API refused an access event, and it could not be kept in the dead-letter file")
        }
    }
}

async fn send_spool(spool: Arc<Spool>, central: Arc<Central>) {
    let mut offset = read_offset(&spool.offset_path);
    if offset > spool_len(&spool) {
        offset = 0; // the spool was emptied after the offset was last written
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut persisted = std::time::Instant::now();
    let mut sent = tokio::time::Instant::now();
    loop {
        let _ = tokio::time::timeout(FLUSH_EVERY, spool.appended.notified()).await;
        tokio::time::sleep_until(sent + SEND_GAP).await;
        sent = tokio::time::Instant::now();
        loop {
            let (events, next) = match read_batch(&spool.path, offset) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the access-event spool");
                    break;
                }
            };
            let count = events.len();
            if count == 0 {
                if next > offset {
                    offset = next; // only unreadable lines: step over them
                    continue;
                }
                offset = compact(&spool, offset);
                break;
            }
            let mut delivered = central.report(report_body(events.iter().map(|(e, _)| &e[..]))).await;
            if let Err(e) = &delivered
                && refuses_the_report(e)
            {
                // One event the API refuses must not hold up the rest: each goes alone, and
                // one refused alone is set aside.
                tracing::warn!(error = %e, events = count, "the central API refused a report; sending its events one by one");
                delivered = Ok(());
                for (event, after) in &events {
                    match central.report(report_body([&event[..]])).await {
                        Ok(()) => {}
                        Err(e) if refuses_the_report(&e) => dead_letter(&spool, event, &e),
                        Err(e) => {
                            delivered = Err(e);
                            break;
                        }
                    }
                    offset = *after;
                }
            }
            match delivered {
                Ok(()) => {
                    offset = next;
                    spool.delivered.store(offset, std::sync::atomic::Ordering::Relaxed);
                    spool.measure(spool_len(&spool));
                    // Persisted at most once per pause: after a crash the events since
                    // are sent again, and the API drops the ids it already has.
                    if persisted.elapsed() >= PERSIST_OFFSET_EVERY {
                        let path = spool.offset_path.clone();
                        match tokio::task::spawn_blocking(move || write_offset(&path, offset)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot persist the spool offset"),
                            Err(e) => tracing::error!(error = %e, "spool offset writer failed"),
                        }
                        persisted = std::time::Instant::now();
                    }
                    backoff.reset();
                    // On to the next report; an empty read then empties the spool.
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, pending_from = offset, retry_in_ms = wait.as_millis() as u64, "access events kept in the spool");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Once everything in the spool is acknowledged, empties it. The offset is reset first: a
/// crash in between resends what was sent, which the API recognises, rather than skipping.
fn compact(spool: &Spool, offset: u64) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a_use(status: u16, latency_ms: f64) -> Use<'static> {
        Use {
            agent: "research-agent",
            path: Some("production/openai/api-key"),
            version: Some(2),
            host: "api.openai.com",
            method: "POST",
            url_path: "/v1/chat/completions",
            outcome: "injected",
            error_code: None,
            status: Some(status),
            latency_ms,
        }
    }

    #[test]
    fn identical_uses_in_one_window_become_one_event_with_their_count() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter {
            pending: Arc::new(Pending::new()),
            spool: Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES).unwrap(),
        };
        reporter.record(a_use(200, 1.0));
        reporter.record(a_use(200, 3.0));
        reporter.record(a_use(429, 1.0));
        reporter.record(a_use(200, 5.0));
        // One thread: one shard holds them all.
        let window = reporter.pending.windows.mine();
        let counts: Vec<(Option<u16>, u64, f64)> =
            window.events.iter().map(|e| (e.status, e.count, e.latency_ms)).collect();
        assert_eq!(counts, vec![(Some(200), 3, 3.0), (Some(429), 1, 1.0)]);
        let line = serde_json::to_value(&window.events[0]).unwrap();
        assert_eq!(line["count"], 3);
        assert!(line.get("latency_total_ms").is_none(), "internal totals are not reported: {line}");
    }
}
