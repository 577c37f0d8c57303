//! What a worker thread keeps of the proxy's shared state, so that an ordinary request
//! writes to no memory another core also writes to: its own copy of the policy (with the
//! rate limits built from it), the upstreams that passed the egress check under it (until
//! their resolution expires), its own copies of the values it injects, per upstream the
//! headers the `[[inject]]` rules put there (checked once, then reused), and per host what a
//! response from it is scrubbed of (`echoes`, while the shared sets stay). Every copy is
//! dropped when what it was taken from moves on: the policy generation, the value epoch
//! (bumped by every invalidation: rotation, deletion, revocation, a policy update, a lost
//! change stream), a value's expiry or a resolution's.
//!
//! Why: on two cores, a reference count or a lock word that both worker threads update
//! moves between their caches on every request, and an injected request took ~1 µs more
//! CPU than a plain one, which was enough to double its p99 under load (bench/README).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue};

use super::Proxy;
use super::central::Fetched;
use super::limits::Limits;
use super::redact::Patterns;
use super::request::{Target, Used};
use crate::domain::SecretPath;
use crate::domain::policy::Policy;

/// The policy and rate limits a request is checked against.
pub(super) struct View {
    pub policy: Policy,
    pub limits: Arc<Limits>,
}

/// What `[[inject]]` does toward one upstream when the agent sent no placeholder: the
/// headers to set (values already in place, in buffers wiped when the last copy goes), and
/// the values they carry (for redaction and the access record). No rule for the upstream:
/// both empty.
pub(super) struct Plan {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub used: Arc<[Used]>,
    /// The first of its values' expiries.
    fresh_until: Option<Instant>,
}

impl Plan {
    pub fn new(headers: Vec<(HeaderName, HeaderValue)>, used: Arc<[Used]>) -> Plan {
        let fresh_until = used.iter().map(|u| u.fetched.fresh_until).min();
        Plan { headers, used, fresh_until }
    }

    fn fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|t| t > now)
    }
}

/// Upstreams with a plan, per thread, at most (then they start over).
const PLANS: usize = 64;
/// Values copied, per thread, at most (then they start over).
const VALUES: usize = 256;
/// Upstreams that passed the egress check, per thread, at most (then they start over).
const PASSED: usize = 256;

struct Local {
    central: u64,
    generation: u64,
    epoch: u64,
    view: Arc<View>,
    /// By host, then port: until when the egress check's answer holds (`None`: pinned).
    passed: HashMap<String, Vec<(u16, Option<Instant>)>>,
    /// By path.
    values: HashMap<String, Arc<Fetched>>,
    /// By (host, port, TLS, plain http named): everything the rules and checks depend on
    /// besides the policy and the values.
    plans: Vec<((String, u16, bool, bool), Plan)>,
    /// By host: this thread's copy of what a response from it is scrubbed of.
    echoes: HashMap<String, Echo>,
}

/// A host's echo patterns (`echoes`) as of one generation of the shared sets, and the
/// values this thread saw noted as sent there since (held, so that a pointer compared
/// below is never one reused by another value).
struct Echo {
    generation: u64,
    noted: Vec<(Arc<Fetched>, Option<String>)>,
    scrub: Option<Arc<Patterns>>,
}

/// Hosts with echo patterns, and values noted per host, per thread, at most (then they
/// start over).
const ECHO_HOSTS: usize = 256;
const NOTED: usize = 32;

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// The value epoch a request began at: what it copies or plans is kept only if no
/// invalidation came in between.
#[derive(Clone, Copy)]
pub(super) struct Epoch(u64);

/// This thread's view of the policy, brought up to date first (as are its values and plans).
pub(super) fn view(proxy: &Proxy) -> (Arc<View>, Epoch) {
    let (id, generation, epoch) = now_at(proxy);
    LOCAL.with_borrow_mut(|local| {
        match local {
            Some(l) if l.central == id && l.generation == generation => {
                if l.epoch != epoch {
                    l.epoch = epoch;
                    l.values.clear();
                    l.plans.clear();
                    l.echoes.clear();
                }
            }
            _ => {
                let view = View { policy: (*proxy.central.policy()).clone(), limits: proxy.limits() };
                *local = Some(Local {
                    central: id,
                    generation,
                    epoch,
                    view: Arc::new(view),
                    passed: HashMap::new(),
                    values: HashMap::new(),
                    plans: Vec::new(),
                    echoes: HashMap::new(),
                });
            }
        }
        (local.as_ref().expect("set above").view.clone(), Epoch(epoch))
    })
}

/// Drops what this thread holds that is out of date: everything after a policy update or
/// an invalidation, and expired values and the plans over them. Each worker runs this every
/// second (`SWEEP_EVERY`), so a deleted or expired value does not stay in memory on a thread
/// that serves no request.
pub(super) fn sweep(proxy: &Proxy) {
    let (id, generation, epoch) = now_at(proxy);
    let now = Instant::now();
    LOCAL.with_borrow_mut(|local| match local {
        Some(l) if l.central == id && l.generation == generation && l.epoch == epoch => {
            l.values.retain(|_, v| v.fresh_until > now);
            l.plans.retain(|(_, plan)| plan.fresh(now));
            l.echoes.retain(|_, echo| echo.noted.iter().all(|(fetched, _)| fetched.fresh_until > now));
            l.passed.retain(|_, ports| {
                ports.retain(|(_, until)| until.is_none_or(|t| t > now));
                !ports.is_empty()
            });
        }
        _ => *local = None,
    });
}

/// How often each worker drops its out-of-date copies.
pub(super) const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A fresh value without waiting: this thread's copy, else a copy of the shared cache's.
pub(super) fn cached(proxy: &Proxy, epoch: Epoch, path: &SecretPath) -> Option<Arc<Fetched>> {
    let now = Instant::now();
    let mine = with_current(proxy, |l| l.values.get(path.as_str()).filter(|v| v.fresh_until > now).cloned());
    if let Some(v) = mine.flatten() {
        return Some(v);
    }
    proxy.central.cached(path).map(|shared| adopt(proxy, epoch, &shared))
}

/// This thread's copy of a value fetched from the shared cache or the central API (the
/// value itself when it is not fresh, a stale one served while the API is down, or when an
/// invalidation came after the request began).
pub(super) fn adopt(proxy: &Proxy, epoch: Epoch, shared: &Arc<Fetched>) -> Arc<Fetched> {
    if shared.fresh_until <= Instant::now() {
        return shared.clone();
    }
    let kept = with_current_at(proxy, epoch, |l| {
        if l.values.len() >= VALUES {
            l.values.clear();
        }
        let copy = Arc::new(shared.private_copy());
        l.values.insert(copy.path.as_str().to_owned(), copy.clone());
        copy
    });
    kept.unwrap_or_else(|| shared.clone())
}

/// What a response from `host` is scrubbed of, after noting that `used` went there
/// (`Echoes::sent`): this thread's copy, while the shared sets have not changed since and
/// it has seen these values noted, so that an ordinary request takes no shared lock and
/// counts no shared reference. An out-of-date copy is replaced by a private copy of the
/// shared patterns.
pub(super) fn echo_scrub(proxy: &Proxy, host: &str, used: &[Used]) -> Option<Arc<Patterns>> {
    let same = |(fetched, field): &(Arc<Fetched>, Option<String>), u: &Used| {
        Arc::ptr_eq(fetched, &u.fetched) && field.as_deref() == u.field.as_ref().map(|(name, _)| name.as_str())
    };
    // Read first: a change made after this is a newer generation, which the next request sees.
    let generation = proxy.echoes.generation();
    let mine = with_current(proxy, |l| {
        let echo = l.echoes.get(host).filter(|e| e.generation == generation)?;
        used.iter().all(|u| echo.noted.iter().any(|n| same(n, u))).then(|| echo.scrub.clone())
    });
    if let Some(scrub) = mine.flatten() {
        return scrub;
    }
    if !used.is_empty() {
        proxy.echoes.sent(host, used);
    }
    let scrub = proxy.echoes.of(host).map(|shared| Arc::new(Patterns::clone(&shared)));
    with_current(proxy, |l| {
        if l.echoes.len() >= ECHO_HOSTS {
            l.echoes.clear();
        }
        let echo =
            l.echoes.entry(host.to_owned()).or_insert_with(|| Echo { generation, noted: Vec::new(), scrub: None });
        if echo.generation != generation || echo.noted.len() + used.len() > NOTED {
            echo.noted.clear();
        }
        echo.generation = generation;
        echo.scrub = scrub.clone();
        echo.noted.extend(used.iter().map(|u| (u.fetched.clone(), u.field.as_ref().map(|(name, _)| name.clone()))));
    });
    scrub
}

/// Whether `target` passed the egress check under this thread's policy, and the answer
/// still holds at `now`.
pub(super) fn passed(proxy: &Proxy, target: &Target, now: Instant) -> bool {
    with_current(proxy, |l| {
        l.passed.get(target.host.as_str()).is_some_and(|ports| {
            ports.iter().any(|(port, until)| *port == target.port && until.is_none_or(|t| t > now))
        })
    })
    .unwrap_or(false)
}

/// Keeps that `target` passed the egress check under `view`'s policy, until `until`.
pub(super) fn keep_passed(proxy: &Proxy, view: &Arc<View>, target: &Target, until: Option<Instant>) {
    with_current(proxy, |l| {
        if !Arc::ptr_eq(&l.view, view) {
            return;
        }
        if l.passed.len() >= PASSED {
            l.passed.clear();
        }
        let ports = l.passed.entry(target.host.clone()).or_default();
        ports.retain(|(port, _)| *port != target.port);
        ports.push((target.port, until));
    });
}

/// Applies the fresh plan for `target`, if this thread has one: its headers go into
/// `headers`; returns whether it set any, and the values they carry.
pub(super) fn apply_plan(
    proxy: &Proxy,
    target: &Target,
    headers: &mut http::HeaderMap,
    now: Instant,
) -> Option<(bool, Arc<[Used]>)> {
    with_current(proxy, |l| {
        let (_, plan) = l.plans.iter().find(|(key, plan)| same(key, target) && plan.fresh(now))?;
        for (name, value) in &plan.headers {
            headers.insert(name.clone(), value.clone());
        }
        Some((!plan.headers.is_empty(), plan.used.clone()))
    })
    .flatten()
}

/// Keeps `plan` for `target`, made with `view` from values taken at `epoch`, unless the
/// policy or the values moved on meanwhile.
pub(super) fn keep_plan(proxy: &Proxy, view: &Arc<View>, epoch: Epoch, target: &Target, plan: Plan) {
    if !plan.fresh(Instant::now()) {
        return;
    }
    with_current_at(proxy, epoch, |l| {
        if !Arc::ptr_eq(&l.view, view) {
            return;
        }
        if l.plans.len() >= PLANS {
            l.plans.clear();
        }
        l.plans.retain(|(key, _)| !same(key, target));
        l.plans.push(((target.host.clone(), target.port, target.tls, target.plain_http_allowed), plan));
    });
}

fn same(key: &(String, u16, bool, bool), t: &Target) -> bool {
    key.1 == t.port && key.2 == t.tls && key.3 == t.plain_http_allowed && key.0 == t.host
}

/// Which proxy, policy generation and value epoch the shared state is at.
fn now_at(proxy: &Proxy) -> (u64, u64, u64) {
    let central = &proxy.central;
    (central.id(), central.policy_generation.load(std::sync::atomic::Ordering::Acquire), central.value_epoch())
}

/// Like `with_current`, only if no invalidation came since `epoch`, as seen by this thread
/// or by the central cache: what a request keeps must not predate one.
fn with_current_at<R>(proxy: &Proxy, epoch: Epoch, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    if proxy.central.value_epoch() != epoch.0 {
        return None;
    }
    with_current(proxy, |l| (l.epoch == epoch.0).then(|| f(l))).flatten()
}

/// Runs `f` on this thread's state if it belongs to `proxy` and is current (`view` made it so
/// at the start of the request; an invalidation since then is seen by the next request, as
/// it would be by one already past its lookup).
fn with_current<R>(proxy: &Proxy, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    let id = proxy.central.id();
    LOCAL.with_borrow_mut(|local| local.as_mut().filter(|l| l.central == id).map(f))
}
