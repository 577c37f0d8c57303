//! The tokens the proxy reads values with: one slot per group of the policy's grants (those
//! that need no approval share one; each approval-gated grant has its own, which waits for
//! a human), each kept by a task that mints its token, renews it at two thirds of its life,
//! and stands down for a cool-down after an operator denies the approval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use zeroize::Zeroizing;

use super::Central;
use super::api::{CentralError, central_refusal, decode, encode, reason_text};
use crate::api::approvals::Approval;
use crate::api::tokens::{MintRequest, MintedToken, OneOrMany, PendingApproval};
use crate::domain::policy::Policy;
use crate::proxy::backoff::Backoff;

/// After an operator denies the proxy's approval request for a grant, how long requests that
/// need the grant get 403 `approval_denied` before the proxy files a new request; a policy
/// change ends it sooner. `--approval-denied-cooldown`.
pub const DEFAULT_DENIAL_COOLDOWN: Duration = Duration::from_secs(5 * 60);

const MINT: &str = "POST /v1/tokens";

/// The longest wait between two looks at a pending approval.
const APPROVAL_POLL: Duration = Duration::from_secs(1);

/// How long a read waits for a slot's keeper to mint a token it does not hold yet (the
/// proxy serves from the moment it listens, before its first mint has come back; a revoked
/// token is re-minted at once) before it is refused.
pub(super) const MINT_WAIT: Duration = Duration::from_secs(3);

pub(super) struct Token {
    pub(super) id: String,
    pub(super) value: Zeroizing<String>,
    pub(super) expires_at: Instant,
    pub(super) lifetime: Duration,
}

/// A denied approval request, in force for a slot until `until` (or a policy change).
#[derive(Clone)]
pub(super) struct Denial {
    pub(super) approval_id: String,
    pub(super) reason: Option<String>,
    pub(super) until: Instant,
}

/// One token covering a set of grants.
pub(super) struct Slot {
    pub(super) scopes: Vec<String>,
    pub(super) needs_approval: bool,
    pub(super) token: RwLock<Option<Token>>,
    /// Set while a denial of this slot's approval request is in force: its keeper files no
    /// new request, and reads that need its token are refused as `approval_denied`.
    pub(super) denied: std::sync::Mutex<Option<Denial>>,
    /// Wakes the slot's keeper to mint again now (its token was revoked), or to stop.
    pub(super) remint: tokio::sync::Notify,
    /// Wakes the reads waiting for a token (`Slot::token_within`): one was minted, or the
    /// slot was retired.
    minted: tokio::sync::Notify,
    /// The policy no longer has this slot's grants: its keeper drops the token and stops.
    pub(super) retired: AtomicBool,
}

impl Slot {
    pub(super) fn new(scopes: Vec<String>, needs_approval: bool) -> Arc<Slot> {
        Arc::new(Slot {
            scopes,
            needs_approval,
            token: RwLock::new(None),
            denied: std::sync::Mutex::new(None),
            remint: tokio::sync::Notify::new(),
            minted: tokio::sync::Notify::new(),
            retired: AtomicBool::new(false),
        })
    }

    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.remint.notify_one();
        self.minted.notify_waiters();
    }

    /// Puts a newly minted token in place and wakes the reads waiting for one.
    pub(super) async fn set_token(&self, token: Token) {
        *self.token.write().await = Some(token);
        self.minted.notify_waiters();
    }

    /// The slot's token, once it holds a live one. A slot that holds none while no human is
    /// in the loop (no approval to wait for, no denial in force) is being minted: the read
    /// waits up to `wait` for its keeper rather than fail a request that came in a moment
    /// too early. What it returns may still hold no live token; the caller says why.
    pub(super) async fn token_within(&self, wait: Duration) -> tokio::sync::RwLockReadGuard<'_, Option<Token>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the look, so a mint between the two is not missed.
            let minted = self.minted.notified();
            tokio::pin!(minted);
            minted.as_mut().enable();
            let guard = self.token.read().await;
            let live = guard.as_ref().is_some_and(|t| t.expires_at > Instant::now());
            if live || self.needs_approval || self.is_retired() || self.denial().is_some() {
                return guard;
            }
            drop(guard);
            if tokio::time::timeout_at(deadline, minted).await.is_err() {
                return self.token.read().await;
            }
        }
    }

    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The denial in force, if its cool-down has not ended.
    pub(super) fn denial(&self) -> Option<Denial> {
        let denied = self.denied.lock().expect("denial lock poisoned");
        denied.as_ref().filter(|d| d.until > Instant::now()).cloned()
    }

    pub(super) fn set_denial(&self, denial: Option<Denial>) {
        *self.denied.lock().expect("denial lock poisoned") = denial;
    }
}

impl Central {
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

    pub(super) fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
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
                    slot.set_token(token).await;
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
        let body = MintRequest {
            scope: OneOrMany::Many(slot.scopes.clone()),
            ttl_seconds: None,
            description: Some("airlock proxy".to_owned()),
            allowed_ips: None,
            max_uses: None,
        };
        let (status, resp) =
            self.call(reqwest::Method::POST, "/v1/tokens", &self.agent_key, Some(encode(&body)?)).await?;
        match status {
            201 => Ok(token_from(decode(MINT, &resp)?)),
            202 => self.await_approval(slot, decode::<PendingApproval>(MINT, &resp)?.approval_request_id).await,
            _ => Err(central_refusal(status, &resp)),
        }
    }

    async fn await_approval(&self, slot: &Slot, id: String) -> Result<Token, CentralError> {
        tracing::warn!(approval_request_id = %id, "proxy token waits for approval: approve it with `airlock approval approve {id}`");
        // Polled every 0.5–1 s, jittered like every other wait on the central API, so an
        // approved grant is injected within about a second of the approval.
        let mut poll = Backoff::new(APPROVAL_POLL, APPROVAL_POLL);
        loop {
            tokio::time::sleep(poll.next_wait()).await;
            if slot.is_retired() {
                return Err(CentralError::Protocol(format!("approval {id}: no longer needed (policy changed)")));
            }
            let url = format!("/v1/approvals/{id}");
            let (status, resp) = self.call(reqwest::Method::GET, &url, &self.agent_key, None).await?;
            if status != 200 {
                return Err(central_refusal(status, &resp));
            }
            let approval: Approval = decode(&format!("GET {url}"), &resp)?;
            match (approval.status.as_str(), approval.token) {
                ("approved", Some(token)) => return Ok(token_from(token)),
                ("approved", None) => {
                    return Err(CentralError::Protocol(format!("approval {id}: token already collected")));
                }
                ("denied", _) => return Err(CentralError::Denied { approval_id: id, reason: approval.note }),
                _ => {}
            }
        }
    }

    /// The token slots `policy` needs: a slot whose scopes and approval are unchanged keeps
    /// its token; a new one without approval is minted before it is put in place (so a
    /// changed grant does not leave requests without a token meanwhile); slots the policy
    /// no longer has are retired (their keepers drop the token and stop).
    pub(super) async fn replace_slots(self: &Arc<Self>, policy: &Policy) {
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
                    Ok(token) => wanted.set_token(token).await,
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
}

pub(super) fn read_scope(glob: &str) -> String {
    format!("secrets:read:{glob}")
}

/// Grants that need no approval share one token; each approval-gated grant gets its own,
/// so one pending approval does not hold up the rest.
pub(super) fn slots_for(policy: &Policy) -> Vec<Arc<Slot>> {
    let open: Vec<String> =
        policy.grants().iter().filter(|g| !g.approval()).map(|g| read_scope(&g.secrets().to_string())).collect();
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    if !open.is_empty() {
        slots.push(Slot::new(open, false));
    }
    for g in policy.grants().iter().filter(|g| g.approval()) {
        slots.push(Slot::new(vec![read_scope(&g.secrets().to_string())], true));
    }
    slots
}

fn token_from(minted: MintedToken) -> Token {
    let lifetime = Duration::from_secs(minted.ttl_seconds.max(1));
    let value = Zeroizing::new(minted.value.expose().to_owned());
    Token { id: minted.id, value, expires_at: Instant::now() + lifetime, lifetime }
}
