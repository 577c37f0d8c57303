//! The per-thread cache, `ThreadCache`: what a worker thread keeps of the proxy's shared
//! state, so that an ordinary request writes to no memory another core also writes to. A
//! stage asks it one thing, in one call that wraps the stage's decision: *decide, or reuse
//! what was decided under the same policy generation and value epoch*.
//!
//! | entry          | keyed by                         | decided by                           |
//! |----------------|----------------------------------|--------------------------------------|
//! | the view       | proxy, policy generation         | a copy of the policy and its limits  |
//! | egress passed  | host, port                       | allowlist + resolution (until expiry)|
//! | values         | secret path                      | the shared value cache / central API |
//! | plans          | host, port, TLS, plain http named| the `[[inject]]` rules, values in    |
//! | echo scrub     | host (+ echo-set generation)     | what the host was sent (`echoes`)    |
//!
//! Why: on two cores, a reference count or a lock word that both worker threads update
//! moves between their caches on every request, and an injected request took ~1 µs more
//! CPU than a plain one, which was enough to double its p99 under load (bench/README).
//!
//! # The invariant: no value outlives an invalidation
//!
//! A secret value is held in four layers; none serves a value after an invalidation of it.
//!
//! - **What bumps the value epoch** (`Central::value_epoch`, only ever up): every
//!   invalidation, always *after* the front map's entries went and under its write lock
//!   (`values.rs: forget_hot`): a secret updated, rotated or deleted (`forget`, one path), a
//!   credential revoked or a policy update or a `resync` (`forget_all`), a lost change stream
//!   (`invalidate_values`). `forgotten` records at which epoch each path (or everything) was
//!   last invalidated.
//! - **The value cache** (`values.rs`, moka, single flight): an entry leaves at its
//!   `fresh_until` (never past the secret's or the token's life). A fetch records the epoch it
//!   began at; a result older than its path's invalidation (`outdated`) is dropped and fetched
//!   again, never returned.
//! - **The hot map** (in front of it): filled only when the epoch did not move between the
//!   start of the lookup and the insert (checked under its write lock, the lock an
//!   invalidation bumps under); read only while `fresh_until` is ahead; emptied (the path, or
//!   all) by every invalidation.
//! - **The stale map** (last good copy, served only while the central API is unreachable, for
//!   `stale_if_error`): an outdated fetch does not write it (checked under its lock, which
//!   `forget` takes only after recording the invalidation); the path is dropped by `forget`,
//!   everything by `forget_all`. A lost change stream keeps it: that is no change to any
//!   value, only a reason to ask again.
//! - **The per-thread copies** (here): a request takes its `ThreadCache` at the epoch and
//!   generation it begins at (`enter`). Entering at a new epoch drops the thread's values,
//!   plans and echo copies; at a new policy generation (or another proxy), everything,
//!   view and passed upstreams too. A copy is *kept* only if neither the shared epoch nor the
//!   thread's moved since the request began (`ThreadState::admits`), and a plan or a passed upstream
//!   only under the view it was decided with; so a request that began before an invalidation
//!   and finished after it cannot put an old value back. A value copy is served only while
//!   `fresh_until` is ahead, a plan only while the first of its values' expiries is
//!   (`InjectPlan::fresh`), a passed upstream while its resolution holds. `sweep` (every
//!   `SWEEP_EVERY`, per worker) drops what expired, and everything when the thread is behind,
//!   so a deleted value does not stay in memory on a thread that serves no request.
//!
//! A request already past its lookup when an invalidation lands finishes with the value it
//! read (as it would with the shared cache alone); the next request sees the new epoch.
//! The tests below break each rule of the per-thread layer and watch for the copy being
//! served; `central`'s tests hold the shared layers to theirs (an in-flight read that
//! predates a change is read again; every invalidation moves the epoch and empties the hot
//! map).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderName, HeaderValue};

use super::Proxy;
use super::central::HeldValue;
use super::limits::Limits;
use super::redact::Patterns;
use super::request::{CarriedValue, Target};
use crate::domain::SecretPath;
use crate::domain::policy::Policy;

/// The policy and rate limits a request is checked against.
pub(super) struct PolicyView {
    pub policy: Policy,
    pub limits: Arc<Limits>,
}

/// What `[[inject]]` does toward one upstream when the agent sent no placeholder: the
/// headers to set (values already in place, in buffers wiped when the last copy goes), and
/// the values they carry (for redaction and the access record). No rule for the upstream:
/// both empty.
pub(super) struct InjectPlan {
    headers: Vec<(HeaderName, HeaderValue)>,
    used: Arc<[CarriedValue]>,
    /// The first of its values' expiries.
    fresh_until: Option<Instant>,
}

impl InjectPlan {
    pub fn new(headers: Vec<(HeaderName, HeaderValue)>, used: Arc<[CarriedValue]>) -> InjectPlan {
        let fresh_until = used.iter().map(|u| u.fetched.fresh_until).min();
        InjectPlan { headers, used, fresh_until }
    }

    fn fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|t| t > now)
    }
}

/// How often each worker drops its out-of-date copies.
pub(super) const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// This thread's cache, as of the policy generation and value epoch a request began at:
/// the one way a stage reaches the per-thread copies.
pub(super) struct ThreadCache<'p> {
    proxy: &'p Proxy,
    view: Arc<PolicyView>,
    /// The value epoch the request began at: what it copies or plans is kept only if no
    /// invalidation came in between.
    epoch: u64,
    /// The policy generation the request began at (its policy is this one or newer).
    generation: u64,
}

impl<'p> ThreadCache<'p> {
    /// This thread's cache for a request beginning now, brought up to date first: a new
    /// view after a policy update, no values, plans or echo copies after an invalidation.
    pub fn enter(proxy: &'p Proxy) -> ThreadCache<'p> {
        let at = At::now(proxy);
        let view = LOCAL.with_borrow_mut(|local| {
            let view = || PolicyView { policy: (*proxy.central.policy()).clone(), limits: proxy.limits() };
            ThreadState::refresh(local, at, view).view.clone()
        });
        ThreadCache { proxy, view, epoch: at.epoch, generation: at.generation }
    }

    pub fn policy(&self) -> &Policy {
        &self.view.policy
    }

    /// The policy generation the request began at: what is decided under `policy` may be
    /// kept under it (never under a newer one, whose policy this may not be).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn limits(&self) -> &Limits {
        &self.view.limits
    }

    /// The egress check of `target`: reused while the answer `check` gave under this view
    /// holds (until its resolution expires, `None`: pinned), else `check` decides.
    pub async fn egress<E, F>(&self, target: &Target, now: Instant, check: impl FnOnce() -> F) -> Result<(), E>
    where
        F: Future<Output = Result<Option<Instant>, E>>,
    {
        if self.with_current(|l| l.passed(target, now)).unwrap_or(false) {
            return Ok(());
        }
        let until = check().await?;
        self.with_current(|l| l.keep_passed(&self.view, target, until));
        Ok(())
    }

    /// The value of `path`: this thread's fresh copy, else what `fetch` gets (the shared
    /// cache or the central API), copied for this thread when fresh and no invalidation came
    /// since the request began (else the shared one itself: a stale value served while the
    /// API is down, or one that may predate the invalidation, is not kept).
    pub async fn value<E, F>(&self, path: &SecretPath, fetch: impl FnOnce() -> F) -> Result<Arc<HeldValue>, E>
    where
        F: Future<Output = Result<Arc<HeldValue>, E>>,
    {
        let now = Instant::now();
        if let Some(mine) = self.with_current(|l| l.value(path, now)).flatten() {
            return Ok(mine);
        }
        let shared = fetch().await?;
        if shared.fresh_until <= Instant::now() {
            return Ok(shared);
        }
        Ok(self.with_current_at(|l| l.keep_value(&shared)).unwrap_or(shared))
    }

    /// What `[[inject]]` puts into a request to `target` that carries no placeholder of its
    /// own: this thread's fresh plan for the upstream, its headers set in `head`, else the
    /// plan `decide` makes (from `head`, values in), kept unless the policy or the values moved
    /// on meanwhile. Returns the head and the values it carries.
    pub async fn plan<E, F>(
        &self,
        target: &Target,
        now: Instant,
        mut head: Parts,
        decide: impl FnOnce(Parts) -> F,
    ) -> Result<(Parts, Arc<[CarriedValue]>), E>
    where
        F: Future<Output = Result<(Parts, InjectPlan), E>>,
    {
        if let Some((injected, used)) = self.with_current(|l| l.apply_plan(target, &mut head.headers, now)).flatten() {
            if injected {
                head.extensions = http::Extensions::new(); // as `substitute::inject` leaves it
            }
            return Ok((head, used));
        }
        let (head, plan) = decide(head).await?;
        let used = plan.used.clone();
        if plan.fresh(Instant::now()) {
            self.with_current_at(|l| l.keep_plan(&self.view, target, plan));
        }
        Ok((head, used))
    }

    /// What a response from `host` is scrubbed of, `used` having gone there: this thread's
    /// copy while the shared echo sets (`echoes`) have not changed since and it has seen these
    /// values noted, so that an ordinary request takes no shared lock and counts no shared
    /// reference; else what `decide` returns (noting `used` in the shared sets), copied.
    pub fn echo_scrub(
        &self,
        host: &str,
        used: &[CarriedValue],
        decide: impl FnOnce() -> Option<Arc<Patterns>>,
    ) -> Option<Arc<Patterns>> {
        // Read first: a change made after this is a newer generation, which the next request sees.
        let generation = self.proxy.echoes.generation();
        if let Some(scrub) = self.with_current(|l| l.echo(host, generation, used)).flatten() {
            return scrub;
        }
        let scrub = decide().map(|shared| Arc::new(Patterns::clone(&shared)));
        self.with_current(|l| l.keep_echo(host, generation, used, scrub.clone()));
        scrub
    }

    /// Drops what this thread holds that is out of date: everything after a policy update or
    /// an invalidation, and what expired. Each worker runs this every `SWEEP_EVERY`.
    pub fn sweep(proxy: &Proxy) {
        let at = At::now(proxy);
        let now = Instant::now();
        LOCAL.with_borrow_mut(|local| ThreadState::sweep(local, at, now));
    }

    /// Like `with_current`, only if no invalidation came since the request began, as seen by
    /// this thread or by the central cache: what a request keeps must not predate one.
    fn with_current_at<R>(&self, f: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
        let shared = self.proxy.central.value_epoch();
        self.with_current(|l| l.admits(self.epoch, shared).then(|| f(l))).flatten()
    }

    /// Runs `f` on this thread's state if it belongs to this proxy (`enter` brought it up to
    /// date at the start of the request; an invalidation since then is seen by the next
    /// request, as it would be by one already past its lookup).
    fn with_current<R>(&self, f: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
        let id = self.proxy.central.id();
        LOCAL.with_borrow_mut(|local| local.as_mut().filter(|l| l.central == id).map(f))
    }
}

// ---- the state, without the thread-local and the proxy: what the tests drive ---------

/// Upstreams with a plan, per thread, at most (then they start over).
const PLANS: usize = 64;
/// Values copied, per thread, at most (then they start over).
const VALUES: usize = 256;
/// Upstreams that passed the egress check, per thread, at most (then they start over).
const PASSED: usize = 256;
/// Hosts with echo patterns, and values noted per host, per thread, at most (then they
/// start over).
const ECHO_HOSTS: usize = 256;
const NOTED: usize = 32;

thread_local! {
    static LOCAL: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

/// Which proxy, policy generation and value epoch the shared state is at.
#[derive(Clone, Copy)]
struct At {
    central: u64,
    generation: u64,
    epoch: u64,
}

impl At {
    fn now(proxy: &Proxy) -> At {
        let central = &proxy.central;
        At {
            central: central.id(),
            generation: central.policy_generation.load(std::sync::atomic::Ordering::Acquire),
            epoch: central.value_epoch(),
        }
    }
}

struct ThreadState {
    central: u64,
    generation: u64,
    epoch: u64,
    view: Arc<PolicyView>,
    /// By host, then port: until when the egress check's answer holds (`None`: pinned).
    passed: HashMap<String, Vec<(u16, Option<Instant>)>>,
    /// By path.
    values: HashMap<String, Arc<HeldValue>>,
    /// By (host, port, TLS, plain http named): everything the rules and checks depend on
    /// besides the policy and the values.
    plans: Vec<((String, u16, bool, bool), InjectPlan)>,
    /// By host: this thread's copy of what a response from it is scrubbed of.
    echoes: HashMap<String, Echo>,
}

/// A host's echo patterns (`echoes`) as of one generation of the shared sets, and the
/// values this thread saw noted as sent there since (held, so that a pointer compared
/// below is never one reused by another value).
struct Echo {
    generation: u64,
    noted: Vec<(Arc<HeldValue>, Option<String>)>,
    scrub: Option<Arc<Patterns>>,
}

impl ThreadState {
    /// Brings `local` up to `at`: a new view (and nothing else) for another proxy or policy
    /// generation; no values, plans or echo copies after an invalidation.
    fn refresh(local: &mut Option<ThreadState>, at: At, view: impl FnOnce() -> PolicyView) -> &ThreadState {
        match local {
            Some(l) if l.central == at.central && l.generation == at.generation => {
                if l.epoch != at.epoch {
                    l.epoch = at.epoch;
                    l.values.clear();
                    l.plans.clear();
                    l.echoes.clear();
                }
            }
            _ => {
                *local = Some(ThreadState {
                    central: at.central,
                    generation: at.generation,
                    epoch: at.epoch,
                    view: Arc::new(view()),
                    passed: HashMap::new(),
                    values: HashMap::new(),
                    plans: Vec::new(),
                    echoes: HashMap::new(),
                });
            }
        }
        local.as_ref().expect("set above")
    }

    /// Everything when behind `at`, else what expired by `now`.
    fn sweep(local: &mut Option<ThreadState>, at: At, now: Instant) {
        match local {
            Some(l) if l.central == at.central && l.generation == at.generation && l.epoch == at.epoch => {
                l.values.retain(|_, v| v.fresh_until > now);
                l.plans.retain(|(_, plan)| plan.fresh(now));
                l.echoes.retain(|_, echo| echo.noted.iter().all(|(fetched, _)| fetched.fresh_until > now));
                l.passed.retain(|_, ports| {
                    ports.retain(|(_, until)| until.is_none_or(|t| t > now));
                    !ports.is_empty()
                });
            }
            _ => *local = None,
        }
    }

    /// Whether a request that began at `epoch` may keep what it made, the shared epoch being
    /// `shared`: only if neither moved since.
    fn admits(&self, epoch: u64, shared: u64) -> bool {
        shared == epoch && self.epoch == epoch
    }

    fn passed(&self, target: &Target, now: Instant) -> bool {
        self.passed.get(target.host.as_str()).is_some_and(|ports| {
            ports.iter().any(|(port, until)| *port == target.port && until.is_none_or(|t| t > now))
        })
    }

    /// Keeps that `target` passed the egress check under `view`'s policy, until `until`.
    fn keep_passed(&mut self, view: &Arc<PolicyView>, target: &Target, until: Option<Instant>) {
        if !Arc::ptr_eq(&self.view, view) {
            return;
        }
        if self.passed.len() >= PASSED {
            self.passed.clear();
        }
        let ports = self.passed.entry(target.host.clone()).or_default();
        ports.retain(|(port, _)| *port != target.port);
        ports.push((target.port, until));
    }

    fn value(&self, path: &SecretPath, now: Instant) -> Option<Arc<HeldValue>> {
        self.values.get(path.as_str()).filter(|v| v.fresh_until > now).cloned()
    }

    /// This thread's own copy of `shared`, kept.
    fn keep_value(&mut self, shared: &HeldValue) -> Arc<HeldValue> {
        if self.values.len() >= VALUES {
            self.values.clear();
        }
        let copy = Arc::new(shared.private_copy());
        self.values.insert(copy.path.as_str().to_owned(), copy.clone());
        copy
    }

    /// Applies the fresh plan for `target`, if any: its headers go into `headers`; returns
    /// whether it set any, and the values they carry.
    fn apply_plan(
        &self,
        target: &Target,
        headers: &mut http::HeaderMap,
        now: Instant,
    ) -> Option<(bool, Arc<[CarriedValue]>)> {
        let (_, plan) = self.plans.iter().find(|(key, plan)| same(key, target) && plan.fresh(now))?;
        for (name, value) in &plan.headers {
            headers.insert(name.clone(), value.clone());
        }
        Some((!plan.headers.is_empty(), plan.used.clone()))
    }

    /// Keeps `plan` for `target`, made under `view`.
    fn keep_plan(&mut self, view: &Arc<PolicyView>, target: &Target, plan: InjectPlan) {
        if !Arc::ptr_eq(&self.view, view) {
            return;
        }
        if self.plans.len() >= PLANS {
            self.plans.clear();
        }
        self.plans.retain(|(key, _)| !same(key, target));
        self.plans.push(((target.host.clone(), target.port, target.tls, target.plain_http_allowed), plan));
    }

    /// This thread's scrub for `host` if it is as of `generation` and has seen `used` noted.
    fn echo(&self, host: &str, generation: u64, used: &[CarriedValue]) -> Option<Option<Arc<Patterns>>> {
        let echo = self.echoes.get(host).filter(|e| e.generation == generation)?;
        used.iter().all(|u| echo.noted.iter().any(|n| noted_as(n, u))).then(|| echo.scrub.clone())
    }

    fn keep_echo(&mut self, host: &str, generation: u64, used: &[CarriedValue], scrub: Option<Arc<Patterns>>) {
        if self.echoes.len() >= ECHO_HOSTS {
            self.echoes.clear();
        }
        let echo =
            self.echoes.entry(host.to_owned()).or_insert_with(|| Echo { generation, noted: Vec::new(), scrub: None });
        if echo.generation != generation || echo.noted.len() + used.len() > NOTED {
            echo.noted.clear();
        }
        echo.generation = generation;
        echo.scrub = scrub;
        echo.noted.extend(used.iter().map(|u| (u.fetched.clone(), u.field.as_ref().map(|(name, _)| name.clone()))));
    }
}

fn noted_as((fetched, field): &(Arc<HeldValue>, Option<String>), u: &CarriedValue) -> bool {
    Arc::ptr_eq(fetched, &u.fetched) && field.as_deref() == u.field.as_ref().map(|(name, _)| name.as_str())
}

fn same(key: &(String, u16, bool, bool), t: &Target) -> bool {
    key.1 == t.port && key.2 == t.tls && key.3 == t.plain_http_allowed && key.0 == t.host
}

#[cfg(test)]
mod tests {
    //! Each test breaks one rule of the invariant at the top of this module and checks that
    //! the copy it would leave behind is not served.

    use std::time::Duration;

    use super::*;

    const POLICY: &str = "[agent]\nname = \"t\"\n\n[egress]\nallow = [\"api.example\"]\n";

    fn view() -> PolicyView {
        let policy = Policy::parse("t.toml", POLICY).expect("a valid policy");
        let limits = Arc::new(Limits::from_policy(&policy));
        PolicyView { policy, limits }
    }

    fn at(generation: u64, epoch: u64) -> At {
        At { central: 7, generation, epoch }
    }

    /// A thread's state brought to `at`.
    fn local(at: At) -> Option<ThreadState> {
        let mut local = None;
        ThreadState::refresh(&mut local, at, view);
        local
    }

    fn target() -> Target {
        Target {
            tls: true,
            host: "api.example".into(),
            port: 443,
            base_path: None,
            plain_http_allowed: false,
            route: None,
        }
    }

    fn value(path: &str, fresh_for: Duration) -> Arc<HeldValue> {
        Arc::new(HeldValue::for_tests(path, "s3cret-value", Instant::now() + fresh_for))
    }

    fn used(fetched: &Arc<HeldValue>) -> CarriedValue {
        CarriedValue { fetched: fetched.clone(), field: None, kind: None }
    }

    fn plan_over(fetched: &Arc<HeldValue>) -> InjectPlan {
        let header = (HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer s3cret-value"));
        InjectPlan::new(vec![header], Arc::from(vec![used(fetched)]))
    }

    fn path(p: &str) -> SecretPath {
        p.parse().expect("a valid path")
    }

    #[test]
    fn a_value_copy_is_not_served_after_the_epoch_moves() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        l.keep_value(&value("prod/key", Duration::from_secs(60)));
        assert!(l.value(&path("prod/key"), Instant::now()).is_some());
        ThreadState::refresh(&mut slot, at(0, 2), || unreachable!("same generation: the view stays"));
        let l = slot.as_ref().unwrap();
        assert!(l.value(&path("prod/key"), Instant::now()).is_none());
        assert!(l.values.is_empty() && l.plans.is_empty() && l.echoes.is_empty());
    }

    #[test]
    fn nothing_is_kept_by_a_request_that_began_before_an_invalidation() {
        let slot = local(at(0, 5));
        let l = slot.as_ref().unwrap();
        assert!(l.admits(5, 5));
        // The request began at 4: an invalidation came in between.
        assert!(!l.admits(4, 5));
        // The shared epoch moved after the request (and this thread) began at 5.
        assert!(!l.admits(5, 6));
    }

    #[test]
    fn a_plan_over_an_expired_value_is_not_reused() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        let view = l.view.clone();
        let short = value("prod/key", Duration::from_millis(50));
        l.keep_plan(&view, &target(), plan_over(&short));
        let mut headers = http::HeaderMap::new();
        let (injected, used) = l.apply_plan(&target(), &mut headers, Instant::now()).expect("fresh plan reused");
        assert!(injected && used.len() == 1 && headers.contains_key("authorization"));

        let later = Instant::now() + Duration::from_secs(1);
        let mut headers = http::HeaderMap::new();
        assert!(l.apply_plan(&target(), &mut headers, later).is_none());
        assert!(headers.is_empty(), "an expired plan sets nothing");
        assert!(!plan_over(&short).fresh(later), "nor is one kept when it is already expired");
        ThreadState::sweep(&mut slot, at(0, 1), later);
        assert!(slot.as_ref().unwrap().plans.is_empty());
    }

    #[test]
    fn a_policy_generation_change_drops_the_view_and_all_it_decided() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        let old = l.view.clone();
        let fetched = value("prod/key", Duration::from_secs(60));
        l.keep_passed(&old, &target(), None);
        l.keep_value(&fetched);
        l.keep_plan(&old, &target(), plan_over(&fetched));
        assert!(l.passed(&target(), Instant::now()));

        ThreadState::refresh(&mut slot, at(1, 1), view);
        let l = slot.as_mut().unwrap();
        assert!(!Arc::ptr_eq(&l.view, &old));
        assert!(!l.passed(&target(), Instant::now()));
        assert!(l.value(&path("prod/key"), Instant::now()).is_none());
        assert!(l.apply_plan(&target(), &mut http::HeaderMap::new(), Instant::now()).is_none());
        // A request still under the old view keeps nothing it decided with it.
        l.keep_passed(&old, &target(), None);
        l.keep_plan(&old, &target(), plan_over(&fetched));
        assert!(!l.passed(&target(), Instant::now()) && l.plans.is_empty());
    }

    #[test]
    fn another_proxy_in_the_process_starts_over() {
        let mut slot = local(at(0, 1));
        slot.as_mut().unwrap().keep_value(&value("prod/key", Duration::from_secs(60)));
        ThreadState::refresh(&mut slot, At { central: 8, generation: 0, epoch: 1 }, view);
        assert!(slot.as_ref().unwrap().values.is_empty());
    }

    #[test]
    fn an_expired_copy_is_not_served_and_is_swept() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        l.keep_value(&value("prod/key", Duration::from_millis(50)));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(l.value(&path("prod/key"), later).is_none());
        ThreadState::sweep(&mut slot, at(0, 1), later);
        assert!(slot.as_ref().unwrap().values.is_empty());
    }

    #[test]
    fn a_thread_behind_the_shared_state_drops_everything_at_the_sweep() {
        for behind in [at(0, 2), at(1, 1), At { central: 8, generation: 0, epoch: 1 }] {
            let mut slot = local(at(0, 1));
            slot.as_mut().unwrap().keep_value(&value("prod/key", Duration::from_secs(60)));
            ThreadState::sweep(&mut slot, behind, Instant::now());
            assert!(slot.is_none());
        }
    }

    #[test]
    fn a_copy_is_a_private_one_holding_the_same_value() {
        let mut slot = local(at(0, 1));
        let shared = value("prod/key", Duration::from_secs(60));
        let copy = slot.as_mut().unwrap().keep_value(&shared);
        assert!(!Arc::ptr_eq(&copy, &shared));
        assert_eq!(copy.value.expose(), shared.value.expose());
        assert_eq!(copy.fresh_until, shared.fresh_until);
    }

    #[test]
    fn a_passed_upstream_is_checked_again_once_its_resolution_expires() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        let view = l.view.clone();
        let now = Instant::now();
        l.keep_passed(&view, &target(), Some(now + Duration::from_secs(1)));
        assert!(l.passed(&target(), now));
        assert!(!l.passed(&Target { port: 8443, ..target() }, now), "another port was not checked");
        assert!(!l.passed(&target(), now + Duration::from_secs(2)));
    }

    #[test]
    fn an_echo_copy_holds_only_for_its_generation_and_the_values_it_saw_noted() {
        let mut slot = local(at(0, 1));
        let l = slot.as_mut().unwrap();
        let (a, b) = (value("prod/a", Duration::from_secs(60)), value("prod/b", Duration::from_secs(60)));
        let scrub = Patterns::for_values(&[(b"s3cret-value", "{{secret:prod/a}}")], &[]);
        l.keep_echo("api.example", 3, &[used(&a)], scrub);
        assert!(l.echo("api.example", 3, &[used(&a)]).is_some_and(|s| s.is_some()));
        assert!(l.echo("api.example", 3, &[]).is_some(), "a request without values is scrubbed of a's");
        assert!(l.echo("api.example", 4, &[used(&a)]).is_none(), "the shared sets changed");
        assert!(l.echo("api.example", 3, &[used(&b)]).is_none(), "b was not seen noted");
        assert!(l.echo("other.example", 3, &[]).is_none());
        ThreadState::refresh(&mut slot, at(0, 2), view);
        assert!(slot.as_ref().unwrap().echo("api.example", 3, &[]).is_none(), "an invalidation drops it");
    }
}
