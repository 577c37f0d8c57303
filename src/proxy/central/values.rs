//! The value cache: values fetched with the token that covers them, held in memory (a
//! front map any request reads under a shared lock, before a single-flight cache) for a TTL
//! no longer than the secret's or the token's life, dropped at once when they change, and
//! the last good copy of each served for a while when the central API cannot be reached.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Central;
use super::api::{CentralError, central_refusal, decode};
use super::tokens::{MINT_WAIT, Slot, read_scope};
use crate::api::secrets::SecretRead;
use crate::domain::time::{now_ms, parse_rfc3339};
use crate::domain::{SecretPath, SecretValue};

/// How long a fetched value is served from memory at most.
pub const DEFAULT_VALUE_TTL: Duration = Duration::from_secs(60);
/// How long a value may still be served while the central API is unreachable.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(300);

/// At most this many paths in the front cache (the back one holds up to 10,000).
const HOT_CAPACITY: usize = 1024;

/// A value as the proxy holds it; zeroized when the last reference goes.
pub struct HeldValue {
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

impl HeldValue {
    /// A copy of its own (its reference count on memory no other copy shares):
    /// what a worker thread keeps (`proxy::local`). The value is copied into a zeroizing buffer.
    pub fn private_copy(&self) -> HeldValue {
        HeldValue {
            path: self.path.clone(),
            value: self.value.clone(),
            version: self.version,
            allowed_hosts: self.allowed_hosts.clone(),
            fresh_until: self.fresh_until,
            epoch: self.epoch,
        }
    }
}

impl HeldValue {
    /// A value the proxy made itself from fetched ones (an OAuth2 access token), recorded
    /// against `path` at `version` and held until `fresh_until`; it goes to any host a rule
    /// sends it to, so it has no `allowed_hosts` of its own, and never joins the value cache.
    pub fn derived(path: SecretPath, value: SecretValue, version: i64, fresh_until: Instant) -> HeldValue {
        HeldValue { path, value, version, allowed_hosts: Vec::new(), fresh_until, epoch: 0 }
    }
}

#[cfg(test)]
impl HeldValue {
    /// A value as if fetched at epoch 0, fresh until `fresh_until`.
    pub fn for_tests(path: &str, value: &str, fresh_until: Instant) -> HeldValue {
        HeldValue {
            path: path.parse().expect("a valid path"),
            value: SecretValue::new(value.to_owned()),
            version: 1,
            allowed_hosts: Vec::new(),
            fresh_until,
            epoch: 0,
        }
    }
}

impl std::fmt::Debug for HeldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldValue").field("path", &self.path).field("version", &self.version).finish_non_exhaustive()
    }
}

pub(super) struct FreshUntil;

impl moka::Expiry<String, Arc<HeldValue>> for FreshUntil {
    fn expire_after_create(&self, _: &String, v: &Arc<HeldValue>, now: Instant) -> Option<Duration> {
        Some(v.fresh_until.saturating_duration_since(now))
    }
}

impl Central {
    /// How many invalidations there have been: a copy of a value taken at one epoch is not
    /// used at another.
    pub fn value_epoch(&self) -> u64 {
        self.value_epoch.load(Ordering::Acquire)
    }

    /// A fresh value from the front cache, without waiting: what most requests need.
    pub fn cached(&self, path: &SecretPath) -> Option<Arc<HeldValue>> {
        let hot = self.hot.read().expect("hot cache lock poisoned");
        hot.get(path.as_str()).filter(|v| v.fresh_until > Instant::now()).cloned()
    }

    /// The value of `path`: from memory when fresh, else from the central API (one fetch
    /// however many requests miss at once).
    pub async fn value(&self, path: &SecretPath) -> Result<Arc<HeldValue>, Arc<CentralError>> {
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
                // The central API cannot be reached, or the provider an external secret is
                // read from is down: the last good copy stands in, for `stale_if_error`.
                Err(e) if matches!(*e, CentralError::Unreachable { .. } | CentralError::Provider { .. }) => {
                    return self.stale_value(path.as_str()).ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Arc::new(CentralError::Protocol(format!("secret '{path}' changed again while it was being read"))))
    }

    /// Whether `v` was fetched before its path (or everything) was last invalidated.
    fn outdated(&self, v: &HeldValue) -> bool {
        let forgotten = self.forgotten.lock().expect("forgotten lock poisoned");
        v.epoch < forgotten.0 || forgotten.1.get(v.path.as_str()).is_some_and(|at| v.epoch < *at)
    }

    pub(super) fn stale_value(&self, path: &str) -> Option<Arc<HeldValue>> {
        let stale = self.stale.lock().expect("stale lock poisoned");
        let (v, at) = stale.get(path)?;
        (at.elapsed() < self.stale_if_error).then(|| {
            tracing::warn!(%path, age_secs = at.elapsed().as_secs(), "central API unreachable; serving the last known value");
            v.clone()
        })
    }

    async fn fetch(&self, path: &SecretPath) -> Result<Arc<HeldValue>, CentralError> {
        let epoch = self.value_epoch();
        let slot = self.slot_for(path)?;
        let guard = slot.token_within(MINT_WAIT).await;
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
        let (status, resp) = self.call(reqwest::Method::GET, &url, &token.value, None).await?;
        match status {
            200 => {}
            404 => return Err(not_found(path, &resp)),
            502 => {
                return Err(match central_refusal(status, &resp) {
                    CentralError::Refused { code, message, .. } if code == "provider_error" => {
                        CentralError::Provider { path: path.to_string(), message }
                    }
                    other => other,
                });
            }
            _ => return Err(central_refusal(status, &resp)),
        }
        let endpoint = format!("GET {url}");
        let read: SecretRead = decode(&endpoint, &resp)?;
        let now = Instant::now();
        let mut fresh_until = (now + self.value_ttl).min(token.expires_at);
        if let Some(expires_at) = &read.expires_at {
            let expiry = parse_rfc3339(expires_at)
                .map_err(|e| CentralError::Protocol(format!("{endpoint}: field `expires_at`: {e}")))?;
            let left = Duration::from_millis(expiry.saturating_sub(now_ms()).max(0) as u64);
            fresh_until = fresh_until.min(now + left);
        }
        let fetched = Arc::new(HeldValue {
            path: path.clone(),
            value: read.value,
            version: read.version,
            allowed_hosts: read.allowed_hosts,
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
        let scope = read_scope(&grant.secrets().to_string());
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

    pub(super) async fn forget_all(&self) {
        self.invalidate_values();
        self.stale.lock().expect("stale lock poisoned").clear();
    }

    /// Empties both caches; the front one last, so a lookup racing this cannot put back
    /// what the back one held.
    pub(super) fn invalidate_values(&self) {
        self.values.invalidate_all();
        self.forget_hot(None);
    }
}

/// A 404 of a value read: with the API's `reason` (disabled, archived, the provider does not
/// hold it) when it gives one, so the agent is told why.
fn not_found(path: &SecretPath, body: &[u8]) -> CentralError {
    match crate::api::decode::<crate::api::errors::ErrorBody>("HTTP 404", body) {
        Ok(b) => match b.error.extra.get("reason").and_then(|r| r.as_str()) {
            Some(reason) => CentralError::Unavailable {
                path: path.to_string(),
                reason: reason.to_owned(),
                message: b.error.message,
            },
            None => CentralError::NotFound(path.to_string()),
        },
        Err(_) => CentralError::NotFound(path.to_string()),
    }
}

fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string()
}
