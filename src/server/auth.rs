//! Who is calling: bearer credentials (API keys `ak_…`, scoped tokens `at_…`) are looked up
//! by their SHA-256, checked for revocation and expiry, rate-limited per credential, and
//! turned into a `Caller` that handlers ask for scopes and audit drafts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::rate::Rate;
use crate::domain::time::now_ms;
use crate::domain::{Scope, ScopeSet, SecretAction, SecretPath};
use crate::store::{Credential, CredentialKind};

/// The chain that records failures no tenant can be named for (unknown credentials).
pub const SYSTEM_TENANT: &str = "_system";

/// A new credential's secret: `<prefix>_` and 48 hex characters of OS randomness.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new credential of `kind` with its one-time secret; callers fill in what else applies
/// (role, agent, minter, limits). Only the secret's hash is in the row.
pub fn issue(kind: CredentialKind, tenant: &str, name: &str, scopes: Vec<String>) -> (Credential, String) {
    let (id_prefix, secret_prefix) = match kind {
        CredentialKind::UserKey => ("key", "ak"),
        CredentialKind::AgentKey => ("agt", "ak"),
        CredentialKind::Token => ("tok", "at"),
    };
    let secret = new_secret(secret_prefix);
    let credential = Credential {
        id: new_id(id_prefix),
        tenant_id: tenant.to_owned(),
        kind,
        name: name.to_owned(),
        role: None,
        scopes,
        secret_hash: hash_secret(&secret),
        agent_id: None,
        minted_by: None,
        description: None,
        allowed_ips: Vec::new(),
        max_uses: None,
        uses: 0,
        created_at: now_ms(),
        expires_at: None,
        revoked_at: None,
    };
    (credential, secret)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// The agent a credential acts for: an agent key, or a token minted by or for one.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub id: String,
    pub name: String,
}

/// The agent `c` acts for: an agent key is its agent; a token minted by or for an agent
/// carries the agent's id and, as its name, the agent's name.
pub fn agent_of(c: &Credential) -> Option<AgentRef> {
    match (c.kind, &c.agent_id) {
        (CredentialKind::AgentKey, _) => Some(AgentRef { id: c.id.clone(), name: c.name.clone() }),
        (CredentialKind::Token, Some(agent)) => Some(AgentRef { id: agent.clone(), name: c.name.clone() }),
        _ => None,
    }
}

/// The authenticated caller of one request.
#[derive(Debug)]
pub struct Caller {
    pub credential: Credential,
    pub scopes: ScopeSet,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

impl Caller {
    pub fn tenant(&self) -> &str {
        &self.credential.tenant_id
    }

    pub fn agent(&self) -> Option<AgentRef> {
        agent_of(&self.credential)
    }

    pub fn can(&self, action: SecretAction, path: &SecretPath) -> bool {
        self.scopes.allows_secret(action, path)
    }

    pub fn has(&self, scope: &Scope) -> bool {
        self.scopes.has(scope)
    }

    /// An audit record of this caller doing `kind`, successful unless marked otherwise.
    pub fn draft(&self, kind: &'static str, path: Option<&str>) -> AuditDraft {
        AuditDraft {
            id: new_id("evt"),
            kind,
            path: path.map(str::to_owned),
            actor: self.credential.id.clone(),
            actor_description: Some(self.credential.name.clone()),
            ip: Some(self.ip.to_string()),
            user_agent: self.user_agent.clone(),
            timestamp_ms: now_ms(),
            success: true,
            detail: serde_json::json!({}),
        }
    }
}

/// The extractor handlers take: the caller that `authenticate` admitted.
pub struct Authed(pub Arc<Caller>);

impl std::ops::Deref for Authed {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Caller>>()
            .cloned()
            .map(Authed)
            .ok_or_else(|| ApiError::unauthorized("this endpoint needs an Authorization: Bearer credential"))
    }
}

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Per-credential request budget (GCRA), reported in `X-RateLimit-*` headers.
pub struct RateLimits {
    limiter: KeyedLimiter,
    rate: Rate,
}

struct Budget {
    remaining: u32,
    reset_secs: u64,
}

impl RateLimits {
    pub fn new(rate: Rate) -> RateLimits {
        let quota = Quota::with_period(rate.interval()).expect("rate interval is never zero").allow_burst(rate.count());
        RateLimits { limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(), rate }
    }

    /// The budget left after this request, or (spent) the budget to report with the 429.
    fn check(&self, key: &str) -> Result<Budget, Budget> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.rate.count().get() - remaining;
                let reset = self.rate.interval() * used;
                Ok(Budget { remaining, reset_secs: reset.as_secs_f64().ceil() as u64 })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Budget { remaining: 0, reset_secs: wait.as_secs_f64().ceil().max(1.0) as u64 })
            }
        }
    }

    fn headers(&self, headers: &mut HeaderMap, budget: &Budget) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.rate.count().get()));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(budget.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(budget.reset_secs));
    }

    /// Forgets credentials that have not been seen for a while.
    pub fn shrink(&self) {
        self.limiter.retain_recent();
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get("authorization").ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send 'Authorization: Bearer <key or token>'")
    })?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must use the Bearer scheme"))?;
    Ok(token.trim())
}

/// Middleware on every `/v1` route.
pub async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let user_agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // On a dual-stack listener an IPv4 client is `::ffff:a.b.c.d`: every check, throttle and
    // audit record sees the address it is, `a.b.c.d`.
    let ip = peer.ip().to_canonical();
    let caller = match identify(&state, req.headers(), ip, user_agent).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let budget = match state.rate_limits.check(&caller.credential.id) {
        Ok(budget) => budget,
        Err(spent) => {
            // The 429 says how long (`Retry-After`) and carries the budget headers too.
            let mut resp = ApiError::rate_limited(spent.reset_secs).into_response();
            state.rate_limits.headers(resp.headers_mut(), &spent);
            return resp;
        }
    };
    req.extensions_mut().insert(Arc::new(caller));
    let mut resp = next.run(req).await;
    state.rate_limits.headers(resp.headers_mut(), &budget);
    resp
}

async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
    user_agent: Option<String>,
) -> Result<Caller, ApiError> {
    identify_secret(state, bearer(headers)?, ip, user_agent).await
}

/// The caller a credential's secret stands for, as `authenticate` checks it: throttled per
/// address, failures audited. (The console's sign-in form uses it too.)
pub(super) async fn identify_secret(
    state: &AppState,
    secret: &str,
    ip: IpAddr,
    user_agent: Option<String>,
) -> Result<Caller, ApiError> {
    if let Some(wait) = state.auth_failures.blocked(ip) {
        let mut e = ApiError::rate_limited(wait);
        e.message = format!("too many failed authentications from {ip}; retry in {wait} s");
        return Err(e);
    }
    let hash = hash_secret(secret);
    let found = lookup(state, &hash).await?;
    let credential = match found {
        Some(c) if bool::from(c.secret_hash.as_bytes().ct_eq(hash.as_bytes())) => c,
        _ => {
            let failure = auth_failure(None, "unknown credential", ip, user_agent);
            return Err(refuse(state, SYSTEM_TENANT, failure, "unknown API key or token").await);
        }
    };
    let mut problem = unusable(state, &credential, ip).await?;
    if problem.is_none() && credential.max_uses.is_some() && !state.store.consume_use(&credential.id).await? {
        problem = Some("this token has no uses left".to_owned());
    }
    if let Some(problem) = problem {
        let failure = auth_failure(Some(&credential), &problem, ip, user_agent);
        return Err(refuse(state, &credential.tenant_id, failure, &problem).await);
    }
    let scopes = ScopeSet::parse_list(&credential.scopes).map_err(|e| ApiError::internal(&e))?;
    Ok(Caller { credential: Credential::clone(&credential), scopes, ip, user_agent })
}

/// The credential whose secret hashes to `hash`, from the short-lived cache or the store.
async fn lookup(state: &AppState, hash: &str) -> Result<Option<Arc<Credential>>, ApiError> {
    if let Some(c) = state.credentials.get(hash).await {
        return Ok(Some(c));
    }
    let c = state.store.credential_by_hash(hash).await?.map(Arc::new);
    if let Some(c) = &c {
        state.credentials.insert(hash.to_owned(), c.clone()).await;
    }
    Ok(c)
}

/// Why a known credential may not be used now, from `ip`, if it may not: revoked, expired,
/// outside the token's `allowed_ips`, or (for an agent key and every token of an agent)
/// outside the agent policy's `allowed_ips`. Every authenticated request asks this, and an
/// open change stream asks it again for as long as it runs (`still_admitted`).
async fn unusable(state: &AppState, c: &Credential, ip: IpAddr) -> Result<Option<String>, ApiError> {
    if c.revoked_at.is_some() {
        return Ok(Some(match c.kind {
            CredentialKind::Token => "this token was revoked".into(),
            _ => "this key was revoked".into(),
        }));
    }
    if c.expires_at.is_some_and(|t| t <= now_ms()) {
        return Ok(Some("this token has expired; mint a new one".into()));
    }
    let nets: Vec<ipnet::IpNet> = c.allowed_ips.iter().filter_map(|n| n.parse().ok()).collect();
    if !c.allowed_ips.is_empty() && !nets.iter().any(|n| n.contains(&ip)) {
        return Ok(Some(format!("this token may not be used from {ip}")));
    }
    if let Some(agent) = agent_of(c)
        && !state.agent_allows_ip(&c.tenant_id, &agent.name, ip).await?
    {
        return Ok(Some(format!(
            "the policy of agent '{}' does not allow calls from {ip} (agent.allowed_ips)",
            agent.name
        )));
    }
    Ok(None)
}

/// The caller of a console session: the credential whose secret hashes to `hash`, if it may
/// still be used from `ip` (revoked, expired, its agent deleted: `None`).
pub(super) async fn caller_by_hash(
    state: &AppState,
    hash: &str,
    ip: IpAddr,
    user_agent: Option<String>,
) -> Result<Option<Caller>, ApiError> {
    let Some(c) = lookup(state, hash).await? else { return Ok(None) };
    if unusable(state, &c, ip).await?.is_some() {
        return Ok(None);
    }
    let scopes = ScopeSet::parse_list(&c.scopes).map_err(|e| ApiError::internal(&e))?;
    Ok(Some(Caller { credential: Credential::clone(&c), scopes, ip, user_agent }))
}

/// The per-credential rate limit, for requests that are not `/v1` (the console's pages).
pub(super) fn within_rate(state: &AppState, credential_id: &str) -> Result<(), ApiError> {
    state.rate_limits.check(credential_id).map(|_| ()).map_err(|spent| ApiError::rate_limited(spent.reset_secs))
}

/// Whether the credential a change stream was opened with may still be used, as it stands
/// in the store now (revoked, expired, its agent deleted or its policy's addresses changed
/// since the stream was opened: no).
pub async fn still_admitted(state: &AppState, caller: &Caller) -> Result<bool, ApiError> {
    let Some(c) = lookup(state, &caller.credential.secret_hash).await? else { return Ok(false) };
    Ok(unusable(state, &c, caller.ip).await?.is_none())
}

fn auth_failure(c: Option<&Credential>, reason: &str, ip: IpAddr, user_agent: Option<String>) -> AuditDraft {
    let is_token = c.is_some_and(|c| c.kind == CredentialKind::Token);
    AuditDraft {
        id: new_id("evt"),
        kind: if is_token { kind::TOKEN_DENIED } else { kind::AUTH_FAILURE },
        path: None,
        actor: c.map_or_else(|| "unknown".to_owned(), |c| c.id.clone()),
        actor_description: c.map(|c| c.name.clone()),
        ip: Some(ip.to_string()),
        user_agent,
        timestamp_ms: now_ms(),
        success: false,
        detail: serde_json::json!({ "reason": reason }),
    }
}

/// Records the failure (fail closed: if it cannot be recorded the answer is 500) and
/// returns the 401 to send.
async fn refuse(state: &AppState, tenant: &str, failure: AuditDraft, message: &str) -> ApiError {
    if let Some(ip) = failure.ip.as_deref().and_then(|ip| ip.parse().ok()) {
        state.auth_failures.note(ip);
    }
    match state.store.record(tenant, failure, None).await {
        Ok(()) => ApiError::unauthorized(message),
        Err(e) => ApiError::internal(&e),
    }
}

/// Slows down guessing: an address that fails authentication more often than the budget
/// allows is refused outright (429) until its budget comes back.
pub struct FailureThrottle {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>,
    blocked: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

impl FailureThrottle {
    pub fn new(rate: Rate) -> FailureThrottle {
        let quota = Quota::with_period(rate.interval()).expect("rate interval is never zero").allow_burst(rate.count());
        FailureThrottle { limiter: RateLimiter::keyed(quota), blocked: Default::default() }
    }

    /// Seconds to wait if `ip` is blocked now.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let mut blocked = self.blocked.lock().expect("throttle lock poisoned");
        let until = *blocked.get(&ip)?;
        let now = std::time::Instant::now();
        if until <= now {
            blocked.remove(&ip);
            return None;
        }
        Some((until - now).as_secs_f64().ceil().max(1.0) as u64)
    }

    fn note(&self, ip: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::warn!(%ip, wait_secs = wait.as_secs(), "too many authentication failures; blocking this address");
            self.blocked.lock().expect("throttle lock poisoned").insert(ip, std::time::Instant::now() + wait);
        }
    }

    pub fn shrink(&self) {
        self.limiter.retain_recent();
        let now = std::time::Instant::now();
        self.blocked.lock().expect("throttle lock poisoned").retain(|_, until| *until > now);
    }
}
