//! Access events: every injection and every refusal becomes an event with a client ULID.
//! Events are appended to a spool file in the proxy's data dir every 20 ms, and a sender
//! posts them to the central API once they are appended (at most every 200 ms while they
//! keep coming, at least once a second), up to 500 per request, advancing an offset only
//! after the API acknowledged them (persisted at most once a second, and when the spool is
//! emptied). A restart resumes from the
//! persisted offset; the API drops ids it has already recorded, so each event lands
//! exactly once.
//!
//! This file owns the event (`AccessEvent`), the use the pipeline records (`Use`) and the
//! folding of identical uses within a window into one event with its count (`Reporter`).
//! spool.rs owns the file on disk: appending (synced), the cap, the repair of a line torn
//! by a crash, the acknowledged offset, and emptying the file once all is delivered.
//! sender.rs owns delivery: batching spool lines into reports, backing off, sending the
//! events of a refused report (400/413/422) one by one, and the dead-letter file.

mod sender;
mod spool;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::central::Central;
use super::sharded::Sharded;
use sender::send_spool;
use spool::{Spool, append_pending, spool_len, write_spool};

/// What the agent chooses is cut to these lengths (bytes) in an event, so no event comes
/// near a report's size: the URL path, the method, the host.
const MAX_URL_PATH: usize = 1024;
const MAX_METHOD: usize = 32;
const MAX_HOST: usize = 255;
/// `--spool-max-bytes` unless set: days of events for a busy proxy.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

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
    /// `body_field` for a value written into a body field, `aws_sigv4` for a credential a
    /// request was signed with; absent for headers and queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
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
    /// How the value went on the wire (`AccessEvent::kind`).
    pub kind: Option<&'static str>,
}

impl Use<'_> {
    /// A hash of what makes two uses the same event (not DoS-resistant and need not be: a
    /// collision only costs the comparison `same_as` makes anyway).
    fn key_hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
        (self.agent, self.path, self.version, self.host, self.method, self.url_path).hash(&mut h);
        (self.outcome, self.error_code, self.status, self.kind).hash(&mut h);
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
            && self.kind == e.kind
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
            kind: self.kind,
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

/// Opens the spool in `dir` and starts the writer and the sender.
pub fn start(dir: &Path, central: Arc<Central>, max_bytes: u64) -> std::io::Result<Reporter> {
    let spool = Spool::open(dir, max_bytes)?;
    let pending = Arc::new(Pending::new());
    tokio::spawn(write_spool(spool.clone(), pending.clone()));
    tokio::spawn(send_spool(spool.clone(), central));
    Ok(Reporter { pending, spool })
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
            kind: None,
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

    /// The spool's lines are the wire's events: each one reads as `api::access::AccessEvent`
    /// field for field.
    #[test]
    fn a_spooled_event_is_the_api_access_event() {
        let mut refused = a_use(403, 2.0);
        (refused.outcome, refused.error_code, refused.path, refused.version) =
            ("denied", Some("host_not_allowed"), None, None);
        for event in [a_use(200, 1.5).event(), refused.event()] {
            let line = serde_json::to_vec(&event).unwrap();
            let wire: crate::api::access::AccessEvent = crate::api::decode("POST /v1/access-events", &line).unwrap();
            assert_eq!(
                serde_json::to_value(&wire).unwrap(),
                serde_json::from_slice::<serde_json::Value>(&line).unwrap()
            );
            assert_eq!((wire.outcome.as_str(), wire.count), (event.outcome, Some(event.count)));
        }
    }
}
