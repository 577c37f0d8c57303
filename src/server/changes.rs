//! The change stream, `GET /v1/events` (server-sent events): secret, token and policy
//! changes with paths and ids, never values. Proxies subscribe and invalidate at once.
//! Within one process a broadcast channel carries changes to every subscriber; on
//! PostgreSQL every change is also sent with `NOTIFY`, and each replica `LISTEN`s and
//! passes on the changes of the others, so a proxy may follow any replica.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use std::sync::Arc;

use super::AppState;
use super::auth::{Authed, Caller, still_admitted};
use crate::api::changes::{
    ChangeEvent, POLICY_UPDATED, RESYNC, Resync, SECRET_DELETED, SECRET_ROTATED, SECRET_UPDATED, TOKEN_REVOKED,
};
use crate::domain::time::{now_ms, to_rfc3339};
use crate::domain::{Scope, SecretAction, SecretPath};

/// Every tenant sees changes published for this one (policy reloads are server-wide).
pub const ALL_TENANTS: &str = "*";

/// A change as the server publishes it: for one tenant (or `ALL_TENANTS`); subscribers are
/// sent its `ChangeEvent`.
#[derive(Debug, Clone)]
pub struct Change {
    pub tenant: String,
    pub kind: &'static str,
    pub path: Option<String>,
    pub version: Option<i64>,
    pub token_id: Option<String>,
    pub agent_id: Option<String>,
    /// Unix milliseconds.
    pub timestamp: i64,
}

const KINDS: [&str; 6] = [SECRET_UPDATED, SECRET_ROTATED, SECRET_DELETED, TOKEN_REVOKED, POLICY_UPDATED, RESYNC];

/// A change as it travels between replicas: which replica made it, and for which tenant.
#[derive(Serialize, Deserialize)]
struct Wire {
    origin: String,
    tenant: String,
    kind: String,
    path: Option<String>,
    version: Option<i64>,
    token_id: Option<String>,
    agent_id: Option<String>,
}

impl Wire {
    fn of(origin: &str, c: &Change) -> Wire {
        Wire {
            origin: origin.to_owned(),
            tenant: c.tenant.clone(),
            kind: c.kind.to_owned(),
            path: c.path.clone(),
            version: c.version,
            token_id: c.token_id.clone(),
            agent_id: c.agent_id.clone(),
        }
    }

    fn into_change(self) -> Option<Change> {
        let kind = KINDS.iter().find(|k| **k == self.kind).copied()?;
        let mut c = Change::new(&self.tenant, kind);
        (c.path, c.version, c.token_id, c.agent_id) = (self.path, self.version, self.token_id, self.agent_id);
        Some(c)
    }
}

const CHANNEL: &str = "airlock_changes";

impl Change {
    pub fn new(tenant: &str, kind: &'static str) -> Change {
        Change {
            tenant: tenant.to_owned(),
            kind,
            path: None,
            version: None,
            token_id: None,
            agent_id: None,
            timestamp: now_ms(),
        }
    }
    /// What a subscriber is sent.
    pub fn event(&self) -> ChangeEvent {
        ChangeEvent {
            kind: self.kind.to_owned(),
            path: self.path.clone(),
            version: self.version,
            token_id: self.token_id.clone(),
            agent_id: self.agent_id.clone(),
            timestamp: to_rfc3339(self.timestamp),
        }
    }
    pub fn path(mut self, path: &str) -> Change {
        self.path = Some(path.to_owned());
        self
    }
    pub fn version(mut self, version: i64) -> Change {
        self.version = Some(version);
        self
    }
    pub fn token(mut self, id: &str) -> Change {
        self.token_id = Some(id.to_owned());
        self
    }
    pub fn agent(mut self, id: &str) -> Change {
        self.agent_id = Some(id.to_owned());
        self
    }
}

pub struct Changes {
    tx: broadcast::Sender<Change>,
    /// Set on PostgreSQL: changes to announce to the other replicas.
    notify: Option<tokio::sync::mpsc::UnboundedSender<Change>>,
    /// Becomes true when the server shuts down: every stream ends.
    closing: tokio::sync::watch::Sender<bool>,
    /// The streams open on this process now (the console's agents page shows them).
    following: Arc<std::sync::Mutex<Following>>,
}

/// One change stream open on this process: who follows it, from where, since when.
#[derive(Debug, Clone)]
pub struct Follower {
    pub tenant: String,
    pub credential_id: String,
    /// The agent the credential acts for, if any.
    pub agent: Option<String>,
    pub ip: std::net::IpAddr,
    pub user_agent: Option<String>,
    pub since_ms: i64,
}

#[derive(Default)]
struct Following {
    next: u64,
    open: std::collections::HashMap<u64, Follower>,
}

/// Holds a stream's place in `Changes::followers` until the stream ends.
struct Registration {
    id: u64,
    following: Arc<std::sync::Mutex<Following>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut f) = self.following.lock() {
            f.open.remove(&self.id);
        }
    }
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: broadcast::channel(1024).0,
            notify: None,
            closing: tokio::sync::watch::Sender::new(false),
            following: Default::default(),
        }
    }
}

impl Changes {
    /// The change streams open on this process (not those of other replicas), oldest first.
    pub fn followers(&self, tenant: &str) -> Vec<Follower> {
        let f = self.following.lock().expect("followers lock poisoned");
        let mut out: Vec<Follower> = f.open.values().filter(|x| x.tenant == tenant).cloned().collect();
        out.sort_by_key(|x| x.since_ms);
        out
    }

    fn register(&self, caller: &Caller) -> Registration {
        let mut f = self.following.lock().expect("followers lock poisoned");
        f.next += 1;
        let id = f.next;
        f.open.insert(
            id,
            Follower {
                tenant: caller.tenant().to_owned(),
                credential_id: caller.credential.id.clone(),
                agent: caller.agent().map(|a| a.name),
                ip: caller.ip,
                user_agent: caller.user_agent.clone(),
                since_ms: now_ms(),
            },
        );
        Registration { id, following: self.following.clone() }
    }

    /// Ends every change stream (the server is shutting down; proxies reconnect).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn publish(&self, change: Change) {
        tracing::debug!(kind = change.kind, path = ?change.path, "change published");
        if let Some(notify) = &self.notify {
            let _ = notify.send(change.clone());
        }
        let _ = self.tx.send(change);
    }

    /// Changes shared with every replica on the same PostgreSQL database.
    pub fn across_replicas(database_url: &str) -> Changes {
        let (tx, _) = broadcast::channel(1024);
        let (notify, outbox) = tokio::sync::mpsc::unbounded_channel();
        let origin = crate::server::auth::new_id("srv");
        tokio::spawn(announce(database_url.to_owned(), origin.clone(), outbox));
        tokio::spawn(listen(database_url.to_owned(), origin, tx.clone()));
        Changes {
            tx,
            notify: Some(notify),
            closing: tokio::sync::watch::Sender::new(false),
            following: Default::default(),
        }
    }
}

async fn announce(url: String, origin: String, mut outbox: tokio::sync::mpsc::UnboundedReceiver<Change>) {
    let mut conn: Option<sqlx::PgConnection> = None;
    while let Some(change) = outbox.recv().await {
        let payload = serde_json::to_string(&Wire::of(&origin, &change)).unwrap_or_default();
        for _attempt in 0..2 {
            if conn.is_none() {
                conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            match sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(&mut *c).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot announce a change to other replicas");
                    conn = None;
                }
            }
        }
    }
}

async fn listen(url: String, origin: String, tx: broadcast::Sender<Change>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            tracing::info!("following other replicas' changes (LISTEN {CHANNEL})");
            loop {
                let n = listener.recv().await?;
                let Ok(wire) = serde_json::from_str::<Wire>(n.payload()) else { continue };
                if wire.origin != origin
                    && let Some(change) = wire.into_change()
                {
                    let _ = tx.send(change);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "replica change listener interrupted");
        }
        // Changes may have been missed: every subscriber drops its caches.
        let _ = tx.send(Change::new(ALL_TENANTS, "resync"));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// How often an open stream asks again whether its credential may still be used (also at
/// once after a revocation or a policy change, and at the credential's expiry).
const RECHECK: Duration = Duration::from_secs(5);

pub async fn stream(
    State(state): State<AppState>,
    caller: Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let expiry = caller.credential.expires_at.map_or(far, |at| {
        let left = u64::try_from(at - now_ms()).unwrap_or(0);
        tokio::time::Instant::now() + Duration::from_millis(left)
    });
    let follower = Subscriber {
        _registration: state.changes.register(&caller),
        rx: state.changes.tx.subscribe(),
        closing: state.changes.closing.subscribe(),
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK),
        expiry: Box::pin(tokio::time::sleep_until(expiry)),
        due: false,
        caller: caller.0,
        state,
    };
    let events = futures_util::stream::unfold(follower, |mut f| async move { Some((Ok(f.next().await?), f)) });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One open change stream: what its caller may be told, for as long as its credential may
/// be used.
struct Subscriber {
    /// Removes it from the followers list when the stream ends.
    _registration: Registration,
    state: AppState,
    caller: Arc<Caller>,
    rx: broadcast::Receiver<Change>,
    closing: tokio::sync::watch::Receiver<bool>,
    recheck: tokio::time::Interval,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The credential is to be checked again before the next event.
    due: bool,
}

impl Subscriber {
    /// The next event for this subscriber; `None` ends the stream (the server is closing,
    /// or the credential was revoked, expired, or lost its agent or its address).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if std::mem::take(&mut self.due) && !self.admitted().await {
                return None;
            }
            let received = tokio::select! {
                received = self.rx.recv() => received,
                _ = self.closing.wait_for(|c| *c) => return None,
                _ = &mut self.expiry => return None,
                _ = self.recheck.tick() => {
                    self.due = true;
                    continue;
                }
            };
            match received {
                Ok(c) => {
                    // Either may have taken this credential's power away.
                    self.due |= matches!(c.kind, "token.revoked" | "policy.updated");
                    if self.may_see(&c).await {
                        return Some(Event::default().event(c.kind).json_data(c.event()).unwrap_or_default());
                    }
                }
                // A subscriber that fell behind is told to resynchronise (drop its caches).
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(Event::default().event(RESYNC).json_data(Resync { missed: n }).unwrap_or_default());
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    async fn admitted(&self) -> bool {
        match still_admitted(&self.state, &self.caller).await {
            Ok(admitted) => {
                if !admitted {
                    tracing::info!(credential = %self.caller.credential.id, "change stream ended: its credential may no longer be used");
                }
                admitted
            }
            // The store cannot say now: the stream (which carries no values, only notices
            // to drop them) goes on, and the next check asks again.
            Err(_) => true,
        }
    }

    /// Whether the caller may be told of `c`: server-wide notices (`resync`, a policy
    /// reload) go to all; a secret's change only to a caller that may see that secret's
    /// metadata (or, for an agent, whose policy grants it); a revocation only to its
    /// holder, its agent, or a key manager.
    async fn may_see(&self, c: &Change) -> bool {
        let caller = &self.caller;
        if c.tenant == ALL_TENANTS {
            return true;
        }
        if c.tenant != caller.tenant() {
            return false;
        }
        let agent = caller.agent();
        match c.kind {
            "resync" | "policy.updated" => true,
            "token.revoked" => {
                let mine = |id: &Option<String>| {
                    id.as_deref()
                        .is_some_and(|id| id == caller.credential.id || agent.as_ref().is_some_and(|a| a.id == id))
                };
                caller.has(&Scope::KeysManage) || mine(&c.token_id) || mine(&c.agent_id)
            }
            _ => {
                let Some(path) = c.path.as_deref().and_then(|p| SecretPath::parse(p).ok()) else { return false };
                if caller.can(SecretAction::ReadMetadata, &path) {
                    return true;
                }
                match agent {
                    Some(agent) => self.state.agent_grants(caller.tenant(), &agent.name, &path).await.unwrap_or(false),
                    None => false,
                }
            }
        }
    }
}
