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

/// How long a fetched value is served from memory at most.
pub const DEFAULT_VALUE_TTL: Duration = Duration::from_secs(60);

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
    #[error("unexpected answer from the central API: {0}")]
    Protocol(String),
}

/// A value as the proxy holds it; zeroized when the last reference goes.
pub struct Fetched {
    pub path: SecretPath,
    pub value: SecretValue,
    pub version: i64,
    pub allowed_hosts: Vec<String>,
    /// When this entry must leave the cache.
    pub fresh_until: Instant,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched").field("path", &self.path).field("version", &self.version).finish_non_exhaustive()
    }
}

struct Token {
    value: Zeroizing<String>,
    expires_at: Instant,
    lifetime: Duration,
}

/// One token covering a set of grants.
struct Slot {
    scopes: Vec<String>,
    needs_approval: bool,
    token: RwLock<Option<Token>>,
}

pub struct Central {
    http: reqwest::Client,
    base: String,
    agent_key: Zeroizing<String>,
    policy: std::sync::RwLock<Arc<Policy>>,
    slots: Vec<Arc<Slot>>,
    values: moka::future::Cache<String, Arc<Fetched>>,
    value_ttl: Duration,
    ready: AtomicBool,
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
        base: &str,
        agent_key: Zeroizing<String>,
        value_ttl: Duration,
    ) -> Result<Arc<Central>, CentralError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("airlock-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CentralError::Protocol(e.to_string()))?;
        let base = base.trim_end_matches('/').to_owned();
        let policy = fetch_policy(&http, &base, &agent_key).await?;
        let slots = slots_for(&policy);
        let values = moka::future::Cache::builder().max_capacity(10_000).expire_after(FreshUntil).build();
        Ok(Arc::new(Central {
            http,
            base,
            agent_key,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            slots,
            values,
            value_ttl,
            ready: AtomicBool::new(false),
        }))
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Mints every token once (waiting for approvals in the background) and keeps them
    /// renewed. Ready once the tokens that need no approval are in hand.
    pub fn start(self: &Arc<Self>) {
        for slot in &self.slots {
            let central = self.clone();
            let slot = slot.clone();
            tokio::spawn(async move { central.keep_token(&slot).await });
        }
        if self.slots.iter().all(|s| s.needs_approval) {
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    async fn keep_token(&self, slot: &Slot) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.mint(slot).await {
                Ok(token) => {
                    let renew_in = token.lifetime * 2 / 3;
                    tracing::info!(scopes = ?slot.scopes, renew_in_secs = renew_in.as_secs(), "proxy token minted");
                    *slot.token.write().await = Some(token);
                    if !slot.needs_approval {
                        self.ready.store(true, Ordering::Relaxed);
                    }
                    backoff = Duration::from_millis(500);
                    tokio::time::sleep(renew_in).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot mint the proxy token");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn mint(&self, slot: &Slot) -> Result<Token, CentralError> {
        let body = json!({ "scope": slot.scopes, "description": "airlock proxy" });
        let (status, resp) = self.call(reqwest::Method::POST, "/v1/tokens", &self.agent_key, Some(&body)).await?;
        match status {
            201 => token_from(&resp),
            202 => self.await_approval(&resp).await,
            _ => Err(refused(status, &resp)),
        }
    }

    async fn await_approval(&self, pending: &Value) -> Result<Token, CentralError> {
        let id = pending["approval_request_id"].as_str().unwrap_or_default().to_owned();
        tracing::warn!(approval_request_id = %id, "proxy token waits for approval: approve it with `airlock approval approve {id}`");
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
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
                    return Err(CentralError::Refused {
                        status: 403,
                        code: "approval_denied".into(),
                        message: id.clone(),
                    });
                }
                _ => {}
            }
        }
    }

    /// The value of `path`: from memory when fresh, else from the central API (one fetch
    /// however many requests miss at once).
    pub async fn value(&self, path: &SecretPath) -> Result<Arc<Fetched>, Arc<CentralError>> {
        self.values.try_get_with(path.as_str().to_owned(), self.fetch(path)).await
    }

    async fn fetch(&self, path: &SecretPath) -> Result<Arc<Fetched>, CentralError> {
        let slot = self.slot_for(path)?;
        let guard = slot.token.read().await;
        let token = guard.as_ref().ok_or_else(|| CentralError::AwaitingApproval(path.to_string()))?;
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
        Ok(Arc::new(Fetched {
            path: path.clone(),
            value,
            version: resp["version"].as_i64().unwrap_or(0),
            allowed_hosts: serde_json::from_value(resp["allowed_hosts"].take()).unwrap_or_default(),
            fresh_until,
        }))
    }

    fn slot_for(&self, path: &SecretPath) -> Result<&Arc<Slot>, CentralError> {
        let policy = self.policy();
        let grant = policy.grant_for(path).ok_or_else(|| CentralError::NotFound(path.to_string()))?;
        let scope = read_scope(&grant.secrets.to_string());
        self.slots.iter().find(|s| s.scopes.contains(&scope)).ok_or_else(|| CentralError::NotFound(path.to_string()))
    }

    pub fn forget(&self, path: &str) {
        let values = self.values.clone();
        let path = path.to_owned();
        tokio::spawn(async move { values.invalidate(&path).await });
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CentralError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| CentralError::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, value))
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

fn read_scope(glob: &str) -> String {
    format!("secrets:read:{glob}")
}

/// Grants that need no approval share one token; each approval-gated grant gets its own,
/// so one pending approval does not hold up the rest.
fn slots_for(policy: &Policy) -> Vec<Arc<Slot>> {
    let slot =
        |scopes: Vec<String>, needs_approval| Arc::new(Slot { scopes, needs_approval, token: RwLock::new(None) });
    let open: Vec<String> =
        policy.grants.iter().filter(|g| !g.approval).map(|g| read_scope(&g.secrets.to_string())).collect();
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    if !open.is_empty() {
        slots.push(slot(open, false));
    }
    for g in policy.grants.iter().filter(|g| g.approval) {
        slots.push(slot(vec![read_scope(&g.secrets.to_string())], true));
    }
    slots
}

fn token_from(resp: &Value) -> Result<Token, CentralError> {
    let value =
        resp["value"].as_str().ok_or_else(|| CentralError::Protocol("token response without a value".into()))?;
    let ttl = resp["ttl_seconds"].as_u64().unwrap_or(60).max(1);
    let lifetime = Duration::from_secs(ttl);
    Ok(Token { value: Zeroizing::new(value.to_owned()), expires_at: Instant::now() + lifetime, lifetime })
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
