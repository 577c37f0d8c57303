//! The proxy's side of the central API. The agent key is exchanged for scoped tokens (one
//! for the grants that need no approval, one per approval-gated set, which waits for a
//! human), renewed at two thirds of their life; the agent's policy is fetched with the key;
//! secret values are fetched with the token that covers them and cached in memory with
//! single-flight misses and a TTL no longer than the secret's or the token's life.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::domain::policy::Policy;
use crate::domain::time::{now_ms, parse_rfc3339};
use crate::domain::{SecretPath, SecretValue};
use crate::proxy::backoff::Backoff;

/// How long a fetched value is served from memory at most.
pub const DEFAULT_VALUE_TTL: Duration = Duration::from_secs(60);
/// How long a value may still be served while the central API is unreachable.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(300);
/// After an operator denies the proxy's approval request for a grant, how long requests that
/// need the grant get 403 `approval_denied` before the proxy files a new request; a policy
/// change ends it sooner. `--approval-denied-cooldown`.
pub const DEFAULT_DENIAL_COOLDOWN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("cannot reach the central API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the central API refused the proxy: {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("secret '{0}' is not available (deleted, expired or not readable)")]
    NotFound(String),
    #[error("no token covers secret '{0}' yet: its grant waits for approval")]
    AwaitingApproval(String),
    /// An operator denied the approval request a token was minted with.
    #[error("approval request {approval_id} was denied ({})", reason_text(.reason))]
    Denied { approval_id: String, reason: Option<String> },
    /// The grant that covers `path` was denied approval, and the cool-down has `retry_in` left.
    #[error(
        "the grant for secret '{path}' was denied approval (request {approval_id}: {}); asked again in {} s or when the policy changes",
        reason_text(.reason),
        .retry_in.as_secs()
    )]
    ApprovalDenied { path: String, approval_id: String, reason: Option<String>, retry_in: Duration },
    #[error("the proxy holds no valid token for secret '{0}' (revoked, or the agent was deleted)")]
    NoToken(String),
    #[error("unexpected answer from the central API: {0}")]
    Protocol(String),
}

impl CentralError {
    /// The API refused this agent (bad key, no policy): trying again will not help.
    pub fn refuses_the_agent(&self) -> bool {
        matches!(self, CentralError::Refused { status, .. } if refuses_the_agent(*status))
    }
}

/// An operator's reason for a denial, as the agent and the log are told it.
pub fn reason_text(reason: &Option<String>) -> String {
    match reason.as_deref().map(str::trim) {
        Some(reason) if !reason.is_empty() => format!("reason: {reason}"),
        _ => "no reason given".to_owned(),
    }
}

/// The longest wait between two looks at a pending approval.
const APPROVAL_POLL: Duration = Duration::from_secs(2);

/// At most this many paths in the front cache (the back one holds up to 10,000).
const HOT_CAPACITY: usize = 1024;

/// A value as the proxy holds it; zeroized when the last reference goes.
pub struct Fetched {
    pub path: SecretPath,
    pub value: SecretValue,
    pub version: i64,
    pub allowed_hosts: Vec<String>,
    /// When this entry must leave the cache.
    pub fresh_until: Instant,
    /// The value epoch when the fetch began: an invalidation of this path since then means
    /// the answer may predate the change (`Central::outdated`).
    epoch: u64,
}

impl Fetched {
    /// A copy of its own (its reference count on memory no other copy shares):
    /// what a worker thread keeps (`proxy::local`). The value is copied into a zeroizing buffer.
    pub fn private_copy(&self) -> Fetched {
        Fetched {
            path: self.path.clone(),
            value: self.value.clone(),
            version: self.version,
            allowed_hosts: self.allowed_hosts.clone(),
            fresh_until: self.fresh_until,
            epoch: self.epoch,
        }
    }
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched").field("path", &self.path).field("version", &self.version).finish_non_exhaustive()
    }
}

struct Token {
    id: String,
    value: Zeroizing<String>,
    expires_at: Instant,
    lifetime: Duration,
}

/// A denied approval request, in force for a slot until `until` (or a policy change).
#[derive(Clone)]
struct Denial {
    approval_id: String,
    reason: Option<String>,
    until: Instant,
}

/// One token covering a set of grants.
struct Slot {
    scopes: Vec<String>,
    needs_approval: bool,
    token: RwLock<Option<Token>>,
    /// Set while a denial of this slot's approval request is in force: its keeper files no
    /// new request, and reads that need its token are refused as `approval_denied`.
    denied: std::sync::Mutex<Option<Denial>>,
    /// Wakes the slot's keeper to mint again now (its token was revoked), or to stop.
    remint: tokio::sync::Notify,
    /// The policy no longer has this slot's grants: its keeper drops the token and stops.
    retired: AtomicBool,
}

impl Slot {
    fn new(scopes: Vec<String>, needs_approval: bool) -> Arc<Slot> {
        Arc::new(Slot {
            scopes,
            needs_approval,
            token: RwLock::new(None),
            denied: std::sync::Mutex::new(None),
            remint: tokio::sync::Notify::new(),
            retired: AtomicBool::new(false),
        })
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.remint.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The denial in force, if its cool-down has not ended.
    fn denial(&self) -> Option<Denial> {
        let denied = self.denied.lock().expect("denial lock poisoned");
        denied.as_ref().filter(|d| d.until > Instant::now()).cloned()
    }

    fn set_denial(&self, denial: Option<Denial>) {
        *self.denied.lock().expect("denial lock poisoned") = denial;
    }
}

pub struct Central {
    http: reqwest::Client,
    /// The central API's addresses (replicas on one database); `current` is the one used.
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    agent_key: Zeroizing<String>,
    policy: std::sync::RwLock<Arc<Policy>>,
    /// The tokens the proxy reads values with, one per group of the policy's grants
    /// (`slots_for`); replaced with the policy.
    slots: std::sync::RwLock<Arc<Vec<Arc<Slot>>>>,
    values: moka::future::Cache<String, Arc<Fetched>>,
    /// In front of `values`: fresh entries any request can read under a shared lock, so a
    /// cache hit costs a map lookup. Filled from `values`, emptied with it.
    hot: std::sync::RwLock<std::collections::HashMap<String, Arc<Fetched>>>,
    /// Last good value per path, served while the central API is unreachable.
    stale: std::sync::Mutex<std::collections::HashMap<String, (Arc<Fetched>, Instant)>>,
    value_ttl: Duration,
    stale_if_error: Duration,
    /// `DEFAULT_DENIAL_COOLDOWN` unless set, in milliseconds.
    denial_cooldown_ms: std::sync::atomic::AtomicU64,
    ready: AtomicBool,
    agent_id: String,
    /// The agent's name: its policy is found by it, so no policy update changes it.
    agent_name: String,
    /// Bumped whenever the policy is replaced, so the proxy can rebuild what depends on it.
    pub policy_generation: std::sync::atomic::AtomicU64,
    /// Told the generation whenever the policy is replaced: for connections that outlive
    /// one request (tunnels, WebSockets) to check again what they were let through for.
    policy_changed: tokio::sync::watch::Sender<u64>,
    /// Bumped (under the front cache's write lock, after the entries went) by every
    /// invalidation: a lookup compares it before putting an entry back, and the worker
    /// threads drop their copies of values when it moves.
    value_epoch: std::sync::atomic::AtomicU64,
    /// The epoch of the last invalidation of everything, and of each path invalidated since:
    /// a value whose fetch began before is not used (a fetch in flight when its secret
    /// changed would otherwise put the old value back after the invalidation).
    forgotten: std::sync::Mutex<(u64, std::collections::HashMap<String, u64>)>,
    /// Tells this `Central` from any other in the process (per-thread copies are keyed by it).
    id: u64,
}

struct FreshUntil;

impl moka::Expiry<String, Arc<Fetched>> for FreshUntil {
    fn expire_after_create(&self, _: &String, v: &Arc<Fetched>, now: Instant) -> Option<Duration> {
        Some(v.fresh_until.saturating_duration_since(now))
    }
}

impl Central {
    /// Fetches the agent's policy with its key and prepares a token slot per grant group.
    pub async fn connect(
        bases: &[String],
        agent_key: Zeroizing<String>,
        value_ttl: Duration,
    ) -> Result<Arc<Central>, CentralError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("airlock-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CentralError::Protocol(e.to_string()))?;
        let bases: Vec<String> = bases.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        if bases.is_empty() {
            return Err(CentralError::Protocol("no central API address".into()));
        }
        // The first address that answers.
        let mut first = None;
        for (i, base) in bases.iter().enumerate() {
            match fetch_policy(&http, base, &agent_key).await {
                Err(e @ CentralError::Unreachable { .. }) => first = first.or(Some(Err(e))),
                answered => {
                    first = Some(answered.map(|policy| (i, policy)));
                    break;
                }
            }
        }
        let (current, policy) = first.expect("at least one address")?;
        let agent_id = fetch_agent_id(&http, &bases[current], &agent_key).await?;
        let slots = slots_for(&policy);
        let agent_name = policy.agent.name.clone();
        let values = moka::future::Cache::builder().max_capacity(10_000).expire_after(FreshUntil).build();
        Ok(Arc::new(Central {
            http,
            bases,
            current: std::sync::atomic::AtomicUsize::new(current),
            agent_key,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            slots: std::sync::RwLock::new(Arc::new(slots)),
            values,
            hot: Default::default(),
            stale: Default::default(),
            value_ttl,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            denial_cooldown_ms: (DEFAULT_DENIAL_COOLDOWN.as_millis() as u64).into(),
            ready: AtomicBool::new(false),
            agent_id,
            agent_name,
            policy_generation: Default::default(),
            policy_changed: tokio::sync::watch::Sender::new(0),
            value_epoch: Default::default(),
            forgotten: Default::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        }))
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    /// A watch on policy updates, taken before reading the policy a connection is let
    /// through under, so no update in between is missed (`PolicyWatch::until_disallowed`).
    pub fn watch_policy(self: &Arc<Self>) -> PolicyWatch {
        PolicyWatch { changed: self.policy_changed.subscribe(), central: self.clone() }
    }

    /// The agent's name, without the policy lock (every injection's access event names it).
    pub fn agent_name(&self) -> &str {
        &self.agent_name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many invalidations there have been: a copy of a value taken at one epoch is not
    /// used at another.
    pub fn value_epoch(&self) -> u64 {
        self.value_epoch.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// How long a denied approval stands before the proxy asks again (set before `start`).
    pub fn set_denial_cooldown(&self, cooldown: Duration) {
        self.denial_cooldown_ms.store(cooldown.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    fn denial_cooldown(&self) -> Duration {
        Duration::from_millis(self.denial_cooldown_ms.load(Ordering::Relaxed))
    }

    /// Mints every token once (waiting for approvals in the background) and keeps them
    /// renewed. Ready once the tokens that need no approval are in hand.
    pub fn start(self: &Arc<Self>) {
        let slots = self.slots();
        for slot in slots.iter() {
            self.keep(slot.clone());
        }
        if slots.iter().all(|s| s.needs_approval) {
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        self.slots.read().expect("slots lock poisoned").clone()
    }

    fn keep(self: &Arc<Self>, slot: Arc<Slot>) {
        let central = self.clone();
        tokio::spawn(async move { central.keep_token(&slot).await });
    }

    /// Mints the slot's token (unless it holds one already) and renews it, until the slot is
    /// retired. After a denied approval it files no new request until the cool-down ends or
    /// the policy changes.
    async fn keep_token(&self, slot: &Slot) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut renew_in = slot.token.read().await.as_ref().map(|t| t.lifetime * 2 / 3);
        loop {
            if let Some(wait) = renew_in.take() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = slot.remint.notified() => if !slot.is_retired() {
                        tracing::info!("proxy token revoked; minting a new one");
                    },
                }
            }
            if slot.is_retired() {
                *slot.token.write().await = None;
                return tracing::info!(scopes = ?slot.scopes, "proxy token dropped: the policy no longer grants its scopes");
            }
            match self.mint(slot).await {
                Ok(token) => {
                    let wait = token.lifetime * 2 / 3;
                    tracing::info!(scopes = ?slot.scopes, renew_in_secs = wait.as_secs(), "proxy token minted");
                    *slot.token.write().await = Some(token);
                    if !slot.needs_approval {
                        self.ready.store(true, Ordering::Relaxed);
                    }
                    backoff.reset();
                    renew_in = Some(wait);
                }
                Err(_) if slot.is_retired() => {}
                Err(CentralError::Denied { approval_id, reason }) => {
                    let cooldown = self.denial_cooldown();
                    tracing::warn!(
                        %approval_id,
                        reason = %reason_text(&reason),
                        scopes = ?slot.scopes,
                        cooldown_secs = cooldown.as_secs(),
                        "approval denied: requests that need this grant are refused (approval_denied) until the cool-down ends or the policy changes"
                    );
                    // Subscribed before the denial is set: a policy change that clears it
                    // (`refresh_policy`) is then seen here too.
                    let mut policy_changes = self.policy_changed.subscribe();
                    slot.set_denial(Some(Denial { approval_id, reason, until: Instant::now() + cooldown }));
                    tokio::select! {
                        _ = tokio::time::sleep(cooldown) => {}
                        _ = policy_changes.changed() => {}
                    }
                    slot.set_denial(None);
                    backoff.reset();
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot mint the proxy token");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn mint(&self, slot: &Slot) -> Result<Token, CentralError> {
        let body = json!({ "scope": slot.scopes, "description": "airlock proxy" });
        let (status, resp) = self.call(reqwest::Method::POST, "/v1/tokens", &self.agent_key, Some(&body)).await?;
        match status {
            201 => token_from(&resp),
            202 => self.await_approval(slot, &resp).await,
            _ => Err(refused(status, &resp)),
        }
    }

    async fn await_approval(&self, slot: &Slot, pending: &Value) -> Result<Token, CentralError> {
        let id = pending["approval_request_id"].as_str().unwrap_or_default().to_owned();
        tracing::warn!(approval_request_id = %id, "proxy token waits for approval: approve it with `airlock approval approve {id}`");
        // Polled every 1–2 s, jittered like every other wait on the central API.
        let mut poll = Backoff::new(APPROVAL_POLL, APPROVAL_POLL);
        loop {
            tokio::time::sleep(poll.next_wait()).await;
            if slot.is_retired() {
                return Err(CentralError::Protocol(format!("approval {id}: no longer needed (policy changed)")));
            }
            let (status, resp) =
                self.call(reqwest::Method::GET, &format!("/v1/approvals/{id}"), &self.agent_key, None).await?;
            if status != 200 {
                return Err(refused(status, &resp));
            }
            match resp["status"].as_str() {
                Some("approved") if resp["token"].is_object() => return token_from(&resp["token"]),
                Some("approved") => {
                    return Err(CentralError::Protocol(format!("approval {id}: token already collected")));
                }
                Some("denied") => {
                    let reason = resp["note"].as_str().map(str::to_owned);
                    return Err(CentralError::Denied { approval_id: id, reason });
                }
                _ => {}
            }
        }
    }

    /// A fresh value from the front cache, without waiting: what most requests need.
    pub fn cached(&self, path: &SecretPath) -> Option<Arc<Fetched>> {
        let hot = self.hot.read().expect("hot cache lock poisoned");
        hot.get(path.as_str()).filter(|v| v.fresh_until > Instant::now()).cloned()
    }

    /// The value of `path`: from memory when fresh, else from the central API (one fetch
    /// however many requests miss at once).
    pub async fn value(&self, path: &SecretPath) -> Result<Arc<Fetched>, Arc<CentralError>> {
        if let Some(v) = self.cached(path) {
            return Ok(v);
        }
        // Twice at most: a value found to predate an invalidation of its path is fetched again.
        for _ in 0..2 {
            // Read before the fetch begins, so an invalidation during it is seen below.
            let epoch = self.value_epoch();
            match self.values.try_get_with(path.as_str().to_owned(), self.fetch(path)).await {
                Ok(v) if self.outdated(&v) => self.values.invalidate(path.as_str()).await,
                Ok(v) => {
                    // Kept only if nothing was invalidated since the lookup began.
                    let mut hot = self.hot.write().expect("hot cache lock poisoned");
                    // Expired entries leave here (a miss comes at least once per value TTL), so
                    // no value outlives its expiry in memory by more than that.
                    let now = Instant::now();
                    hot.retain(|_, v| v.fresh_until > now);
                    if self.value_epoch() == epoch && hot.len() < HOT_CAPACITY {
                        hot.insert(path.as_str().to_owned(), v.clone());
                    }
                    return Ok(v);
                }
                Err(e) if matches!(*e, CentralError::Unreachable { .. }) => {
                    return self.stale_value(path.as_str()).ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Arc::new(CentralError::Protocol(format!("secret '{path}' changed again while it was being read"))))
    }

    /// Whether `v` was fetched before its path (or everything) was last invalidated.
    fn outdated(&self, v: &Fetched) -> bool {
        let forgotten = self.forgotten.lock().expect("forgotten lock poisoned");
        v.epoch < forgotten.0 || forgotten.1.get(v.path.as_str()).is_some_and(|at| v.epoch < *at)
    }

    fn stale_value(&self, path: &str) -> Option<Arc<Fetched>> {
        let stale = self.stale.lock().expect("stale lock poisoned");
        let (v, at) = stale.get(path)?;
        (at.elapsed() < self.stale_if_error).then(|| {
            tracing::warn!(%path, age_secs = at.elapsed().as_secs(), "central API unreachable; serving the last known value");
            v.clone()
        })
    }

    async fn fetch(&self, path: &SecretPath) -> Result<Arc<Fetched>, CentralError> {
        let epoch = self.value_epoch();
        let slot = self.slot_for(path)?;
        let guard = slot.token.read().await;
        // A token past its life reads nothing: its slot counts as holding none.
        let token = guard.as_ref().filter(|t| t.expires_at > Instant::now()).ok_or_else(|| {
            if let Some(denial) = slot.denial() {
                CentralError::ApprovalDenied {
                    path: path.to_string(),
                    approval_id: denial.approval_id,
                    reason: denial.reason,
                    retry_in: denial.until.saturating_duration_since(Instant::now()),
                }
            } else if slot.needs_approval {
                CentralError::AwaitingApproval(path.to_string())
            } else {
                CentralError::NoToken(path.to_string())
            }
        })?;
        let url = format!("/v1/secrets/{}", encode_path(path.as_str()));
        let (status, mut resp) = self.call(reqwest::Method::GET, &url, &token.value, None).await?;
        match status {
            200 => {}
            404 => return Err(CentralError::NotFound(path.to_string())),
            _ => return Err(refused(status, &resp)),
        }
        let value = match resp.get_mut("value").map(Value::take) {
            Some(Value::String(s)) => SecretValue::new(s),
            _ => return Err(CentralError::Protocol("secret response without a value".into())),
        };
        let now = Instant::now();
        let mut fresh_until = (now + self.value_ttl).min(token.expires_at);
        if let Some(expiry) = resp["expires_at"].as_str().and_then(|s| parse_rfc3339(s).ok()) {
            let left = Duration::from_millis(expiry.saturating_sub(now_ms()).max(0) as u64);
            fresh_until = fresh_until.min(now + left);
        }
        let fetched = Arc::new(Fetched {
            path: path.clone(),
            value,
            version: resp["version"].as_i64().unwrap_or(0),
            allowed_hosts: serde_json::from_value(resp["allowed_hosts"].take()).unwrap_or_default(),
            fresh_until,
            epoch,
        });
        // Checked under the lock `forget` takes after it records the invalidation: a value
        // fetched before it is not kept as the last good one (and `value` fetches again).
        let mut stale = self.stale.lock().expect("stale lock poisoned");
        if self.outdated(&fetched) {
            return Ok(fetched);
        }
        if stale.len() >= 10_000 {
            stale.clear();
        }
        stale.insert(path.to_string(), (fetched.clone(), now));
        Ok(fetched)
    }

    fn slot_for(&self, path: &SecretPath) -> Result<Arc<Slot>, CentralError> {
        let policy = self.policy();
        let grant = policy.grant_for(path).ok_or_else(|| CentralError::NotFound(path.to_string()))?;
        let scope = read_scope(&grant.secrets.to_string());
        self.slots()
            .iter()
            .find(|s| s.scopes.contains(&scope))
            .cloned()
            .ok_or_else(|| CentralError::NotFound(path.to_string()))
    }

    /// Drops a cached value at once (and its stale copy): it changed or was deleted.
    pub async fn forget(&self, path: &str) {
        self.values.invalidate(path).await;
        self.forget_hot(Some(path));
        self.stale.lock().expect("stale lock poisoned").remove(path);
    }

    fn forget_hot(&self, path: Option<&str>) {
        let mut hot = self.hot.write().expect("hot cache lock poisoned");
        match path {
            Some(path) => drop(hot.remove(path)),
            None => hot.clear(),
        }
        let epoch = self.value_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let mut forgotten = self.forgotten.lock().expect("forgotten lock poisoned");
        match path {
            // (Past 10,000 paths, everything counts as invalidated: safe, and bounded.)
            Some(path) if forgotten.1.len() < 10_000 => drop(forgotten.1.insert(path.to_owned(), epoch)),
            _ => *forgotten = (epoch, Default::default()),
        }
    }

    async fn forget_all(&self) {
        self.invalidate_values();
        self.stale.lock().expect("stale lock poisoned").clear();
    }

    /// Empties both caches; the front one last, so a lookup racing this cannot put back
    /// what the back one held.
    fn invalidate_values(&self) {
        self.values.invalidate_all();
        self.forget_hot(None);
    }

    /// Posts access events with the agent key.
    /// Posts a batch of access events, given as the JSON body `{"events":[…]}` already
    /// assembled from the spool's lines.
    pub async fn report(&self, body: Vec<u8>) -> Result<(), CentralError> {
        let body = bytes::Bytes::from(body);
        self.on_any(|base| {
            let body = body.clone();
            async move {
                let unreachable = |e: reqwest::Error| CentralError::Unreachable {
                    url: base.clone(),
                    reason: e.without_url().to_string(),
                };
                let resp = self
                    .http
                    .post(format!("{base}/v1/access-events"))
                    .bearer_auth(self.agent_key.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(unreachable)?;
                let status = resp.status().as_u16();
                if status == 202 {
                    return Ok(());
                }
                let bytes = resp.bytes().await.map_err(unreachable)?;
                Err(refused(status, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
            }
        })
        .await
    }

    /// The address in use.
    fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Runs `attempt` against the address in use and, while the answer is that it cannot
    /// be reached, against each other address in turn; the first that answers is used from
    /// then on (a replica on the same database).
    async fn on_any<T, F, Fut>(&self, attempt: F) -> Result<T, CentralError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, CentralError>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut unreachable = None;
        for step in 0..self.bases.len() {
            let at = (start + step) % self.bases.len();
            match attempt(self.bases[at].clone()).await {
                Err(e @ CentralError::Unreachable { .. }) => unreachable = Some(e),
                answered => {
                    if step > 0
                        && self.current.compare_exchange(start, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                    {
                        let (from, to) = (&self.bases[start % self.bases.len()], &self.bases[at]);
                        tracing::warn!(%from, %to, "the central API address in use did not answer; using another");
                        metrics::counter!("airlock_proxy_central_failovers_total").increment(1);
                    }
                    return answered;
                }
            }
        }
        Err(unreachable.expect("at least one address"))
    }

    /// Moves off the address in use (its change stream ended or went silent), to the next.
    /// Moves off address `from` to the next, unless a request has already moved off it (to
    /// one that answered: moving again would go back towards the one that failed).
    fn move_on(&self, from: usize) {
        let next = (from + 1) % self.bases.len();
        if next != from && self.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(to = %self.bases[next], "trying the next central API address");
        }
    }

    /// Follows `GET /v1/events` and invalidates at once; reconnects with backoff, also when
    /// the stream has been silent for `silence` (the server sends keep-alives, so silence
    /// means a partition that closed nothing). While disconnected, the cache TTL bounds how
    /// stale a value can be.
    pub async fn watch(self: Arc<Self>, silence: Duration) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            let from = self.current.load(Ordering::Relaxed) % self.bases.len();
            let ended = self.follow_events(silence).await;
            if ended.is_ok() {
                backoff.reset();
            }
            let wait = backoff.next_wait();
            if let Err(e) = ended {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "change stream interrupted");
                if matches!(e, CentralError::Unreachable { .. }) {
                    self.move_on(from);
                }
            }
            // Whatever changed while we were not listening is unknown: refetch when possible.
            // (The last known values stay available for stale-if-error.)
            self.invalidate_values();
            tokio::time::sleep(wait).await;
        }
    }

    async fn follow_events(self: &Arc<Self>, silence: Duration) -> Result<(), CentralError> {
        let base = self.base().to_owned();
        let url = format!("{base}/v1/events");
        let unreachable =
            |e: reqwest::Error| CentralError::Unreachable { url: base.clone(), reason: e.without_url().to_string() };
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().map_err(unreachable)?;
        let mut resp = http.get(&url).bearer_auth(self.agent_key.as_str()).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if refuses_the_agent(status) {
            // The agent or its key is gone (deleted while the stream was down): reading the
            // policy is refused too, which closes the proxy.
            self.refresh_policy().await?;
        }
        if status != 200 {
            return Err(CentralError::Refused { status, code: "events".into(), message: String::new() });
        }
        tracing::info!("following the central API's change stream");
        // Subscribed first, then read: a policy change made while the stream was down (or
        // before it first came up) is seen here, and any later one arrives as an event.
        self.refresh_policy().await?;
        let mut buf = Vec::new();
        let mut event = String::new();
        loop {
            let Ok(chunk) = tokio::time::timeout(silence, resp.chunk()).await else {
                metrics::counter!("airlock_proxy_change_stream_reconnects_total", "reason" => "silent").increment(1);
                return Err(CentralError::Unreachable {
                    url: base.clone(),
                    reason: format!(
                        "the change stream was silent for {} s (keep-alives stopped)",
                        silence.as_secs_f64()
                    ),
                });
            };
            let Some(chunk) = chunk.map_err(unreachable)? else { break };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                    self.on_change(&event, &data).await?;
                }
            }
        }
        Ok(())
    }

    /// Acts on one change. An error (the updated policy could not be read) ends the stream,
    /// so it reconnects with backoff and reads the policy again.
    async fn on_change(self: &Arc<Self>, kind: &str, data: &Value) -> Result<(), CentralError> {
        tracing::debug!(kind, path = ?data["path"].as_str(), "change received");
        match kind {
            "secret.updated" | "secret.rotated" | "secret.deleted" => {
                if let Some(path) = data["path"].as_str() {
                    self.forget(path).await;
                }
            }
            // A deleted agent has no policy any more: reading it again closes the proxy.
            "token.revoked" if self.on_revoked(data).await => self.refresh_policy().await?,
            "policy.updated" => self.refresh_policy().await?,
            // Events were lost: any of them could have been a policy change.
            "resync" => {
                self.forget_all().await;
                self.refresh_policy().await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Drops the revoked token (or, when the agent was deleted, every token) and the values
    /// fetched with it; returns whether the agent was deleted.
    async fn on_revoked(&self, data: &Value) -> bool {
        // Deleting the agent names it; revoking its key through `/v1/keys/{id}` names the key,
        // whose id is the agent's.
        let agent_gone = (data["agent_id"].as_str() == Some(self.agent_id.as_str()) && data["token_id"].is_null())
            || data["token_id"].as_str() == Some(self.agent_id.as_str());
        let mut hit = agent_gone;
        for slot in self.slots().iter() {
            let mut token = slot.token.write().await;
            let ours = token.as_ref().is_some_and(|t| Some(t.id.as_str()) == data["token_id"].as_str());
            if ours || agent_gone {
                *token = None;
                slot.remint.notify_one();
                hit = true;
            }
        }
        if hit {
            tracing::warn!(agent_deleted = agent_gone, "a credential of this proxy was revoked; cached values dropped");
            self.forget_all().await;
        }
        agent_gone
    }

    /// Reads the agent's policy and puts it in place if it changed. When the central API
    /// refuses (the agent, its key or its policy is gone), a policy that allows no egress
    /// takes its place: the proxy fails closed. When it cannot answer, the current policy
    /// stays and the error goes to the caller, which asks again.
    async fn refresh_policy(self: &Arc<Self>) -> Result<(), CentralError> {
        let (policy, closed) = match self
            .on_any(|base| async move { fetch_policy(&self.http, &base, &self.agent_key).await })
            .await
        {
            Ok(policy) => (policy, false),
            Err(CentralError::Refused { status, code, message }) if refuses_the_agent(status) => {
                tracing::error!(status, %code, %message, "the central API refused this agent its policy; allowing no egress");
                (closed_policy(&self.policy(), &code), true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the agent's policy; keeping the current one until it can");
                return Err(e);
            }
        };
        let current = self.policy();
        if current.source == policy.source && current.text == policy.text {
            return Ok(());
        }
        self.replace_slots(&policy).await;
        // A new policy ends every denial's cool-down (the keepers, woken by the generation
        // below, ask again).
        for slot in self.slots().iter() {
            slot.set_denial(None);
        }
        *self.policy.write().expect("policy lock poisoned") = Arc::new(policy);
        let generation = self.policy_generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.policy_changed.send_replace(generation);
        self.forget_all().await;
        // Ready again once the token for the grants that need no approval is in hand (its
        // keeper says so when it mints); a closed proxy is not ready.
        let minted = self.slots().iter().all(|s| s.needs_approval || s.token.try_read().is_ok_and(|t| t.is_some()));
        self.ready.store(!closed && minted, Ordering::Relaxed);
        tracing::info!("policy updated from the central API");
        Ok(())
    }

    /// The token slots `policy` needs: a slot whose scopes and approval are unchanged keeps
    /// its token; a new one without approval is minted before it is put in place (so a
    /// changed grant does not leave requests without a token meanwhile); slots the policy
    /// no longer has are retired (their keepers drop the token and stop).
    async fn replace_slots(self: &Arc<Self>, policy: &Policy) {
        let current = self.slots();
        let mut next = Vec::new();
        for wanted in slots_for(policy) {
            let kept = current.iter().find(|s| s.scopes == wanted.scopes && s.needs_approval == wanted.needs_approval);
            if let Some(kept) = kept {
                next.push(kept.clone());
                continue;
            }
            if !wanted.needs_approval {
                match self.mint(&wanted).await {
                    Ok(token) => *wanted.token.write().await = Some(token),
                    Err(e) => tracing::warn!(error = %e, "cannot mint the token for the updated grants yet; retrying"),
                }
            }
            self.keep(wanted.clone());
            next.push(wanted);
        }
        for old in current.iter().filter(|old| !next.iter().any(|s| Arc::ptr_eq(s, old))) {
            old.retire();
        }
        *self.slots.write().expect("slots lock poisoned") = Arc::new(next);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CentralError> {
        self.on_any(|base| {
            let method = method.clone();
            async move {
                let mut req = self.http.request(method, format!("{base}{path}")).bearer_auth(bearer);
                if let Some(b) = body {
                    req = req.json(b);
                }
                let unreachable = |e: reqwest::Error| CentralError::Unreachable {
                    url: base.clone(),
                    reason: e.without_url().to_string(),
                };
                let resp = req.send().await.map_err(unreachable)?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(unreachable)?;
                let value =
                    if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
                Ok((status, value))
            }
        })
        .await
    }
}

async fn fetch_policy(http: &reqwest::Client, base: &str, agent_key: &str) -> Result<Policy, CentralError> {
    let url = format!("{base}/v1/agents/self/policy");
    let unreachable =
        |e: reqwest::Error| CentralError::Unreachable { url: base.to_owned(), reason: e.without_url().to_string() };
    let resp = http.get(&url).bearer_auth(agent_key).send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(unreachable)?;
    if status != 200 {
        return Err(refused(status, &serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    let raw: Value = serde_json::from_str(&text).map_err(|e| CentralError::Protocol(format!("policy: {e}")))?;
    let (source, toml) = (raw["source"].as_str().unwrap_or("policy"), raw["text"].as_str().unwrap_or(""));
    Policy::parse(source, toml).map_err(|e| CentralError::Protocol(format!("policy: {e}")))
}

/// See `Central::watch_policy`.
pub struct PolicyWatch {
    changed: tokio::sync::watch::Receiver<u64>,
    central: Arc<Central>,
}

impl PolicyWatch {
    /// Resolves once a policy update no longer passes `allowed` (never, if none does): for
    /// connections that outlive one request (tunnels, WebSockets).
    pub async fn until_disallowed(mut self, allowed: impl Fn(&Policy) -> bool) {
        while self.changed.changed().await.is_ok() {
            if !allowed(&self.central.policy()) {
                return;
            }
        }
        std::future::pending().await
    }
}

/// A client error other than "too many requests": the central API will not serve this agent
/// (deleted, key revoked, no policy), as opposed to being unable to for now.
fn refuses_the_agent(status: u16) -> bool {
    status != 429 && (400..500).contains(&status)
}

/// What a proxy enforces once the central API refuses the agent its policy: `current`
/// with no egress, no grants, no inject rules and no routes.
fn closed_policy(current: &Policy, why: &str) -> Policy {
    let mut closed = current.clone();
    closed.egress.allow.clear();
    closed.egress.passthrough.clear();
    closed.grants.clear();
    closed.injects.clear();
    closed.routes.clear();
    closed.source = format!("(no policy: {why})");
    closed.text = String::new();
    closed
}

async fn fetch_agent_id(http: &reqwest::Client, base: &str, agent_key: &str) -> Result<String, CentralError> {
    let unreachable =
        |e: reqwest::Error| CentralError::Unreachable { url: base.to_owned(), reason: e.without_url().to_string() };
    let resp = http.get(format!("{base}/v1/tokens/self")).bearer_auth(agent_key).send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(refused(status, &body));
    }
    Ok(body["agent"]["id"].as_str().unwrap_or_default().to_owned())
}

fn read_scope(glob: &str) -> String {
    format!("secrets:read:{glob}")
}

/// Grants that need no approval share one token; each approval-gated grant gets its own,
/// so one pending approval does not hold up the rest.
fn slots_for(policy: &Policy) -> Vec<Arc<Slot>> {
    let open: Vec<String> =
        policy.grants.iter().filter(|g| !g.approval).map(|g| read_scope(&g.secrets.to_string())).collect();
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    if !open.is_empty() {
        slots.push(Slot::new(open, false));
    }
    for g in policy.grants.iter().filter(|g| g.approval) {
        slots.push(Slot::new(vec![read_scope(&g.secrets.to_string())], true));
    }
    slots
}

fn token_from(resp: &Value) -> Result<Token, CentralError> {
    let value =
        resp["value"].as_str().ok_or_else(|| CentralError::Protocol("token response without a value".into()))?;
    let ttl = resp["ttl_seconds"].as_u64().unwrap_or(60).max(1);
    let lifetime = Duration::from_secs(ttl);
    let id = resp["id"].as_str().unwrap_or_default().to_owned();
    Ok(Token { id, value: Zeroizing::new(value.to_owned()), expires_at: Instant::now() + lifetime, lifetime })
}

fn refused(status: u16, body: &Value) -> CentralError {
    CentralError::Refused {
        status,
        code: body["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
        message: body["error"]["message"].as_str().unwrap_or("").to_owned(),
    }
}

fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use axum::extract::{Path, State};
    use axum::routing::{get, post};

    use super::*;

    /// A central API that answers what a proxy asks at start-up, and serves one secret whose
    /// reads can be held open until the test lets them go.
    #[derive(Clone)]
    struct Fake {
        value: Arc<Mutex<String>>,
        reads: Arc<AtomicUsize>,
        hold: Arc<tokio::sync::Semaphore>,
    }

    const POLICY: &str = "[agent]\nname = \"t\"\n\n[egress]\nallow = [\"api.example\"]\n\n[[grant]]\nsecrets = \"prod/*\"\nhosts = [\"api.example\"]\n";

    async fn serve(fake: Fake) -> String {
        let app = axum::Router::new()
            .route(
                "/v1/agents/self/policy",
                get(|| async { axum::Json(json!({ "source": "t.toml", "text": POLICY })) }),
            )
            .route("/v1/tokens/self", get(|| async { axum::Json(json!({ "agent": { "id": "agt_t" } })) }))
            .route(
                "/v1/tokens",
                post(|| async {
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(json!({ "id": "tok_t", "value": "t", "ttl_seconds": 600 })),
                    )
                }),
            )
            .route(
                "/v1/secrets/{path}",
                get(|State(fake): State<Fake>, Path(_): Path<String>| async move {
                    let value = fake.value.lock().unwrap().clone();
                    fake.reads.fetch_add(1, Ordering::SeqCst);
                    fake.hold.acquire().await.unwrap().forget();
                    axum::Json(json!({ "value": value, "version": 1, "allowed_hosts": [] }))
                }),
            )
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A started `Central` on a fake API whose secret reads wait for `hold` permits.
    async fn started() -> (Fake, Arc<Central>) {
        let fake = Fake {
            value: Arc::new(Mutex::new("old-value".into())),
            reads: Default::default(),
            hold: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        crate::install_crypto_provider();
        let base = serve(fake.clone()).await;
        let central = Central::connect(&[base], Zeroizing::new("key".into()), Duration::from_secs(60)).await.unwrap();
        central.start();
        while !central.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (fake, central)
    }

    #[tokio::test]
    async fn a_read_in_flight_when_its_secret_changes_does_not_put_the_old_value_back() {
        let (fake, central) = started().await;
        let path: SecretPath = "prod/key".parse().unwrap();
        let reading = tokio::spawn({
            let (central, path) = (central.clone(), path.clone());
            async move { central.value(&path).await.map(|v| v.value.expose().to_owned()) }
        });
        while fake.reads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The secret is rotated while the read is on its way back; the change event comes in.
        *fake.value.lock().unwrap() = "new-value".into();
        central.forget(path.as_str()).await;
        fake.hold.add_permits(100);
        // The read that began before the change is read again rather than answered with
        // what may predate it, and nothing keeps the old value afterwards.
        assert_eq!(reading.await.unwrap().unwrap(), "new-value");
        assert_eq!(fake.reads.load(Ordering::SeqCst), 2);
        assert_eq!(central.value(&path).await.unwrap().value.expose(), "new-value");
        assert_eq!(central.cached(&path).unwrap().value.expose(), "new-value");
        assert_eq!(central.stale_value(path.as_str()).unwrap().value.expose(), "new-value");
    }

    #[tokio::test]
    async fn the_agent_key_revoked_by_its_key_id_counts_as_the_agent_deleted() {
        let (fake, central) = started().await;
        fake.hold.add_permits(100);
        let path: SecretPath = "prod/key".parse().unwrap();
        central.value(&path).await.unwrap();
        assert!(!central.on_revoked(&json!({ "token_id": "tok_other" })).await);
        assert!(central.cached(&path).is_some(), "another credential's revocation keeps the values");
        assert!(central.on_revoked(&json!({ "token_id": "agt_t" })).await);
        assert!(central.cached(&path).is_none());
        assert!(central.on_revoked(&json!({ "agent_id": "agt_t" })).await);
    }
}
