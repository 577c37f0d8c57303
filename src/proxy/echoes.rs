//! What each upstream host has been sent. A host that received a value can send it back at
//! any later time: in the response to a request that carried none, on another connection.
//! So a response from such a host is scrubbed of the values it was sent even when its own
//! request carried no value (and, since it is then scanned, is refused when coded, the same
//! as a response to a request with values).
//!
//! Each host keeps its last `PER_HOST` values (a rotated value stays until newer ones push
//! it out); the patterns for them are built when first needed after the set changed (a
//! request without values to that host), never on the way of a request that carries one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use super::redact::Patterns;
use super::request::CarriedValue;

/// Values remembered per host.
const PER_HOST: usize = 16;

type Hosts = HashMap<String, Sent, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Echoes {
    /// Looked up on every request that carries a value: a fast hash (host names are not
    /// attacker-chosen keys here: only hosts a value was sent to get an entry).
    hosts: RwLock<Hosts>,
    /// Moves on whenever a host's set changes: a thread's copy of a host's patterns
    /// (`local::echo_scrub`) holds while it stays.
    generation: AtomicU64,
}

#[derive(Default)]
struct Sent {
    /// Oldest first: the placeholder text and the bytes written for it.
    values: Vec<(String, Zeroizing<Vec<u8>>)>,
    patterns: Option<Arc<Patterns>>,
    /// For an upgraded (WebSocket) stream, masked rather than replaced (`websocket`).
    masks: Option<Arc<Patterns>>,
}

/// Which patterns: replacing values by their placeholders, or masking them (WebSocket).
#[derive(Clone, Copy)]
enum Use {
    Scrub,
    Mask,
}

impl Sent {
    fn holds(&self, value: &[u8]) -> bool {
        self.values.iter().any(|(_, v)| v[..] == *value)
    }

    fn held(&self, kind: Use) -> &Option<Arc<Patterns>> {
        match kind {
            Use::Scrub => &self.patterns,
            Use::Mask => &self.masks,
        }
    }

    fn held_mut(&mut self, kind: Use) -> &mut Option<Arc<Patterns>> {
        match kind {
            Use::Scrub => &mut self.patterns,
            Use::Mask => &mut self.masks,
        }
    }
}

impl Echoes {
    /// Notes that `used` went to `host`; a lookup under a read lock when they already had.
    pub fn sent(&self, host: &str, used: &[CarriedValue]) {
        let known = |hosts: &Hosts| hosts.get(host).is_some_and(|sent| used.iter().all(|u| sent.holds(u.injected())));
        if known(&self.read()) {
            return;
        }
        let mut hosts = self.write();
        let sent = hosts.entry(host.to_owned()).or_default();
        for u in used {
            if !sent.holds(u.injected()) {
                sent.values.push((u.placeholder(), Zeroizing::new(u.injected().to_vec())));
            }
        }
        let over = sent.values.len().saturating_sub(PER_HOST);
        sent.values.drain(..over);
        // Built again when next asked for.
        sent.patterns = None;
        sent.masks = None;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The sets, also after a panic elsewhere poisoned the lock: a set is never left half
    /// changed (each change is a push, a drain and two resets), and a response must not go
    /// unscrubbed because of an unrelated panic.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Hosts> {
        self.hosts.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Hosts> {
        self.hosts.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the sets are: a copy taken at one generation holds while it is the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What a response from `host` is scrubbed of when its request carried no value.
    pub fn of(&self, host: &str) -> Option<Arc<Patterns>> {
        self.built(host, Use::Scrub)
    }

    /// Every value `host` was sent, and what a request wrote byte for byte (`Written`), for a
    /// request that wrote more than the values (a `Basic` token): built for that request.
    pub fn with_exact(&self, host: &str, written: &[super::substitute::Written]) -> Option<Arc<Patterns>> {
        let hosts = self.read();
        let values: Vec<(&[u8], &str)> =
            hosts.get(host).map(|sent| sent.values.iter().map(|(p, v)| (&v[..], p.as_str())).collect())?;
        let exact: Vec<(&[u8], &[u8])> = written.iter().map(|w| (&w.wrote[..], &w.sent[..])).collect();
        Patterns::for_values(&values, &exact)
    }

    /// What an upgraded stream from `host` is masked of when its request carried no value.
    pub fn masks(&self, host: &str) -> Option<Arc<Patterns>> {
        self.built(host, Use::Mask)
    }

    /// The patterns for `host`, built from its values first if the set changed since.
    fn built(&self, host: &str, kind: Use) -> Option<Arc<Patterns>> {
        if let Some(held) = self.read().get(host).map(|sent| sent.held(kind).clone())? {
            return Some(held);
        }
        let mut hosts = self.write();
        let sent = hosts.get_mut(host)?;
        if sent.held(kind).is_none() {
            let values: Vec<(&[u8], &str)> = sent.values.iter().map(|(p, v)| (&v[..], p.as_str())).collect();
            let patterns = match kind {
                Use::Scrub => Patterns::for_values(&values, &[]),
                Use::Mask => Patterns::masking(&values.iter().map(|(v, _)| *v).collect::<Vec<_>>()),
            };
            *sent.held_mut(kind) = patterns;
        }
        sent.held(kind).clone()
    }
}
