//! The proxy's side of the central API. The agent key is exchanged for scoped tokens (one
//! for the grants that need no approval, one per approval-gated set, which waits for a
//! human), renewed at two thirds of their life; the agent's policy is fetched with the key;
//! secret values are fetched with the token that covers them and cached in memory with
//! single-flight misses and a TTL no longer than the secret's or the token's life.
//!
//! The jobs live apart: `api` (calls to the central API, its errors, trying each address),
//! `tokens` (the token slots and their renewal), `values` (the value cache), `events` (the
//! change stream) and `policy` (refreshing the policy). `Central` holds their shared state.

mod api;
mod events;
mod policy;
mod tokens;
mod values;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::domain::policy::Policy;

pub use api::{CentralError, reason_text};
use api::{fetch_agent_id, fetch_policy};
pub use policy::PolicyWatch;
pub use tokens::DEFAULT_DENIAL_COOLDOWN;
use tokens::{Slot, slots_for};
use values::FreshUntil;
pub use values::{DEFAULT_STALE_IF_ERROR, DEFAULT_VALUE_TTL, HeldValue};

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
    values: moka::future::Cache<String, Arc<HeldValue>>,
    /// In front of `values`: fresh entries any request can read under a shared lock, so a
    /// cache hit costs a map lookup. Filled from `values`, emptied with it.
    hot: std::sync::RwLock<std::collections::HashMap<String, Arc<HeldValue>>>,
    /// Last good value per path, served while the central API is unreachable.
    stale: std::sync::Mutex<std::collections::HashMap<String, (Arc<HeldValue>, Instant)>>,
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

impl Central {
    /// Fetches the agent's policy with its key and prepares a token slot per grant group.
    pub async fn connect(
        bases: &[String],
        agent_key: Zeroizing<String>,
        value_ttl: Duration,
    ) -> Result<Arc<Central>, CentralError> {
        let http = crate::trust::central_client()
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
        let agent_name = policy.agent().name.clone();
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

    /// The agent's name, without the policy lock (every injection's access event names it).
    pub fn agent_name(&self) -> &str {
        &self.agent_name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use axum::extract::{Path, State};
    use axum::routing::{get, post};

    use serde_json::json;

    use super::*;
    use crate::domain::SecretPath;

    /// A central API that answers what a proxy asks at start-up, and serves one secret whose
    /// reads can be held open until the test lets them go.
    #[derive(Clone)]
    struct Fake {
        value: Arc<Mutex<String>>,
        reads: Arc<AtomicUsize>,
        hold: Arc<tokio::sync::Semaphore>,
        /// Mints answer only once a permit is given (`started` gives them freely).
        mints: Arc<tokio::sync::Semaphore>,
    }

    const POLICY: &str = "[agent]\nname = \"t\"\n\n[egress]\nallow = [\"api.example\"]\n\n[[grant]]\nsecrets = \"prod/*\"\nhosts = [\"api.example\"]\n";

    async fn serve(fake: Fake) -> String {
        let app = axum::Router::new()
            .route(
                "/v1/agents/self/policy",
                get(|| async { axum::Json(json!({ "source": "t.toml", "text": POLICY })) }),
            )
            .route(
                "/v1/tokens/self",
                get(|| async {
                    axum::Json(json!({
                        "id": "agt_t", "kind": "agent_key", "scope": "tokens:create",
                        "agent": { "id": "agt_t", "name": "t" }, "description": null, "allowed_ips": [],
                        "max_uses": null, "uses": 0, "created_at": "2026-01-15T10:30:00Z", "expires_at": null,
                    }))
                }),
            )
            .route(
                "/v1/tokens",
                post(|State(fake): State<Fake>| async move {
                    fake.mints.acquire().await.unwrap().forget();
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(json!({
                            "id": "tok_t", "value": "t", "scope": "secrets:read:prod/*", "ttl_seconds": 600,
                            "expires_at": "2026-01-15T10:40:00Z", "approval_status": "approved",
                            "approval_request_id": null,
                        })),
                    )
                }),
            )
            .route(
                "/v1/secrets/{path}",
                get(|State(fake): State<Fake>, Path(_): Path<String>| async move {
                    let value = fake.value.lock().unwrap().clone();
                    fake.reads.fetch_add(1, Ordering::SeqCst);
                    fake.hold.acquire().await.unwrap().forget();
                    axum::Json(json!({
                        "path": "prod/key", "version": 1, "tier": "standard", "description": null, "tags": {},
                        "allowed_hosts": [], "owner": null, "created_at": "2026-01-15T10:30:00Z",
                        "updated_at": "2026-01-15T10:30:00Z", "accessed_at": null, "expires_at": null,
                        "not_before": null,
                        "managed_mode": "airlock_managed", "status": "active", "provider": null, "provider_config_id": null, "external_ref": null,
                        "provider_version_ref": null, "last_rotated_at": null, "last_resolved_at": null, "value": value,
                    }))
                }),
            )
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A `token.revoked` change event with the ids of `ids`.
    fn revoked(mut ids: serde_json::Value) -> crate::api::changes::ChangeEvent {
        ids["type"] = "token.revoked".into();
        ids["timestamp"] = "2026-01-15T10:30:00Z".into();
        serde_json::from_value(ids).unwrap()
    }

    /// A started `Central` on a fake API whose secret reads wait for `hold` permits.
    async fn started() -> (Fake, Arc<Central>) {
        let (fake, central) = connected().await;
        fake.mints.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
        central.start();
        while !central.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (fake, central)
    }

    /// A `Central` connected to a fake API that holds every mint until the test lets it go.
    async fn connected() -> (Fake, Arc<Central>) {
        let fake = Fake {
            value: Arc::new(Mutex::new("old-value".into())),
            reads: Default::default(),
            hold: Arc::new(tokio::sync::Semaphore::new(0)),
            mints: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        crate::install_crypto_provider();
        let base = serve(fake.clone()).await;
        let central = Central::connect(&[base], Zeroizing::new("key".into()), Duration::from_secs(60)).await.unwrap();
        (fake, central)
    }

    #[tokio::test]
    async fn a_read_that_comes_before_the_first_mint_waits_for_it() {
        // The proxy listens from the moment it starts; its token is minted in the background.
        let (fake, central) = connected().await;
        central.start();
        fake.hold.add_permits(1);
        let path: SecretPath = "prod/key".parse().unwrap();
        let reading = tokio::spawn({
            let (central, path) = (central.clone(), path.clone());
            async move { central.value(&path).await.map(|v| v.value.expose().to_owned()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!reading.is_finished(), "the read did not wait for the mint");
        fake.mints.add_permits(1);
        let value = tokio::time::timeout(Duration::from_secs(5), reading).await.unwrap().unwrap();
        assert_eq!(value.map_err(|e| e.to_string()).unwrap(), "old-value");
    }

    #[tokio::test]
    async fn a_read_refused_after_the_mint_wait_says_no_token_could_be_minted() {
        let (_fake, central) = connected().await;
        central.start();
        let path: SecretPath = "prod/key".parse().unwrap();
        let e = central.value(&path).await.expect_err("no token was ever minted");
        assert!(matches!(*e, api::CentralError::NoToken(_)), "{e}");
        assert!(e.to_string().contains("none could be minted in time"), "{e}");
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

    /// The shared layers' part of the invariant written at the top of `proxy::local`: every
    /// invalidation moves the epoch (which drops the per-thread copies) and empties the hot
    /// map; a change drops the last good copy too, a lost change stream keeps it.
    #[tokio::test]
    async fn every_invalidation_moves_the_epoch_and_empties_the_front_map() {
        let (fake, central) = started().await;
        fake.hold.add_permits(100);
        let path: SecretPath = "prod/key".parse().unwrap();

        central.value(&path).await.unwrap();
        let before = central.value_epoch();
        central.invalidate_values(); // the change stream was lost
        assert!(central.value_epoch() > before);
        assert!(central.cached(&path).is_none());
        assert!(central.stale_value(path.as_str()).is_some(), "kept for stale-if-error");

        central.value(&path).await.unwrap();
        let before = central.value_epoch();
        central.forget(path.as_str()).await; // the secret changed
        assert!(central.value_epoch() > before);
        assert!(central.cached(&path).is_none());
        assert!(central.stale_value(path.as_str()).is_none());

        central.value(&path).await.unwrap();
        let before = central.value_epoch();
        central.forget_all().await; // a policy update, a revocation, a resync
        assert!(central.value_epoch() > before);
        assert!(central.cached(&path).is_none());
        assert!(central.stale_value(path.as_str()).is_none());
    }

    #[tokio::test]
    async fn the_agent_key_revoked_by_its_key_id_counts_as_the_agent_deleted() {
        let (fake, central) = started().await;
        fake.hold.add_permits(100);
        let path: SecretPath = "prod/key".parse().unwrap();
        central.value(&path).await.unwrap();
        assert!(!central.on_revoked(&revoked(json!({ "token_id": "tok_other" }))).await);
        assert!(central.cached(&path).is_some(), "another credential's revocation keeps the values");
        assert!(central.on_revoked(&revoked(json!({ "token_id": "agt_t" }))).await);
        assert!(central.cached(&path).is_none());
        assert!(central.on_revoked(&revoked(json!({ "agent_id": "agt_t" }))).await);
    }
}
