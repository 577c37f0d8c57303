//! Reading through provider configs with a cache: one client per config (rebuilt when the
//! config changes, so an AppRole login is reused), values kept for the config's TTL,
//! concurrent misses of one reference coalesced into one provider read, and a value whose
//! provider is unavailable served stale for at most `stale_if_error`, flagged as such.
//! Values are `SecretValue`s: wiped when the last copy goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Environment, ExternalRef, Provider, ProviderError, ProviderKind, VersionRef};
use crate::domain::value::SecretValue;

/// What the resolver needs of a stored provider config.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    pub id: String,
    pub kind: ProviderKind,
    pub config: serde_json::Value,
    /// Changes whenever the config does: a new client is built then.
    pub updated_at: i64,
    /// The config's cache TTL; the resolver's default when `None`.
    pub cache_ttl: Option<Duration>,
}

/// A value as served, and whether it is a stale copy (its provider is unavailable).
pub struct Served {
    pub value: SecretValue,
    pub version: Option<String>,
    pub stale: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("version", &self.version).field("stale", &self.stale).finish_non_exhaustive()
    }
}

struct Entry {
    value: SecretValue,
    version: Option<String>,
    fresh_until: Instant,
}

struct FreshUntil;

/// A config's client and the `updated_at` of the config it was built from.
type Client = (i64, Arc<dyn Provider>);

impl moka::Expiry<String, Arc<Entry>> for FreshUntil {
    fn expire_after_create(&self, _: &String, v: &Arc<Entry>, now: Instant) -> Option<Duration> {
        Some(v.fresh_until.saturating_duration_since(now))
    }
}

pub struct Resolver {
    /// The environment credentials come from; the process's when `None`.
    env: Option<Environment>,
    clients: Mutex<HashMap<String, Client>>,
    fresh: moka::future::Cache<String, Arc<Entry>>,
    /// The last value read of every reference, for `stale_if_error`.
    last: moka::future::Cache<String, Arc<Entry>>,
    default_ttl: Duration,
}

impl Resolver {
    pub fn new(default_ttl: Duration, stale_if_error: Duration, env: Option<Environment>) -> Resolver {
        Resolver {
            env,
            clients: Mutex::new(HashMap::new()),
            fresh: moka::future::Cache::builder()
                .max_capacity(10_000)
                .expire_after(FreshUntil)
                .support_invalidation_closures()
                .build(),
            last: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(stale_if_error)
                .support_invalidation_closures()
                .build(),
            default_ttl,
        }
    }

    fn client(&self, c: &ConfigHandle) -> Result<Arc<dyn Provider>, ProviderError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, client)) = clients.get(&c.id)
            && *at == c.updated_at
        {
            return Ok(client.clone());
        }
        let env = match &self.env {
            Some(env) => env.clone(),
            None => {
                let names = super::config_env_names(c.kind, &c.config);
                Environment::from_process(&names.iter().map(String::as_str).collect::<Vec<_>>())
            }
        };
        let client = super::build(c.kind, &c.config, &env)?;
        clients.insert(c.id.clone(), (c.updated_at, client.clone()));
        Ok(client)
    }

    /// The value `r` names at `version`, from the cache while fresh, else from the provider.
    pub async fn resolve(
        &self,
        config: &ConfigHandle,
        r: &ExternalRef,
        version: Option<&VersionRef>,
    ) -> Result<Served, ProviderError> {
        let key = format!(
            "{}\u{0}{}\u{0}{r}\u{0}{}",
            config.id,
            config.updated_at,
            version.map(ToString::to_string).unwrap_or_default()
        );
        let ttl = config.cache_ttl.unwrap_or(self.default_ttl);
        let fetch = async {
            let client = self.client(config)?;
            let got = client.resolve(r, version).await?;
            let entry = Arc::new(Entry { value: got.value, version: got.version, fresh_until: Instant::now() + ttl });
            self.last.insert(key.clone(), entry.clone()).await;
            Ok::<_, ProviderError>(entry)
        };
        match self.fresh.try_get_with(key.clone(), fetch).await {
            Ok(e) => Ok(Served { value: e.value.clone(), version: e.version.clone(), stale: false }),
            Err(e) if e.is_unavailable() => match self.last.get(&key).await {
                Some(old) => {
                    tracing::warn!(provider = %config.kind, config = %config.id, reference = %r, error = %e,
                        "provider unavailable; serving the last value read");
                    Ok(Served { value: old.value.clone(), version: old.version.clone(), stale: true })
                }
                None => Err((*e).clone()),
            },
            Err(e) => Err((*e).clone()),
        }
    }

    /// Forgets every value read through `config_id` (after the config changed or was deleted).
    pub fn forget(&self, config_id: &str) {
        let prefix = format!("{config_id}\u{0}");
        let matches = move |k: &String, _: &Arc<Entry>| k.starts_with(&prefix);
        let _ = self.fresh.invalidate_entries_if(matches.clone());
        let _ = self.last.invalidate_entries_if(matches);
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(config_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::providers::{Health, Listing, Resolved};

    /// Counts reads; fails as unavailable once `down` is set.
    struct Counting {
        reads: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Provider for Counting {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Vault
        }
        async fn resolve(&self, _: &ExternalRef, _: Option<&VersionRef>) -> Result<Resolved, ProviderError> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(ProviderError::Unavailable { provider: ProviderKind::Vault, reason: "down".into() });
            }
            Ok(Resolved { value: SecretValue::new(format!("v{n}")), version: None })
        }
        async fn list(&self, _: Option<&str>, _: usize, _: Option<&str>) -> Result<Listing, ProviderError> {
            Ok(Listing::default())
        }
        async fn health(&self) -> Health {
            Health { ok: true, message: "ok".into(), latency_ms: 0 }
        }
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_read_and_errors_are_not_cached() {
        let fake = Arc::new(Counting { reads: AtomicUsize::new(0), down: false.into() });
        let resolver = Resolver::new(Duration::from_secs(60), Duration::from_secs(300), Some(Environment::default()));
        resolver.clients.lock().unwrap().insert("pcf".into(), (1, fake.clone() as Arc<dyn Provider>));
        let config = ConfigHandle {
            id: "pcf".into(),
            kind: ProviderKind::Vault,
            config: serde_json::json!({}),
            updated_at: 1,
            cache_ttl: Some(Duration::from_millis(100)),
        };
        let r = ExternalRef::parse("vault+kv2://secret/a#f").unwrap();
        let all = futures_util::future::join_all((0..20).map(|_| resolver.resolve(&config, &r, None))).await;
        assert!(all.iter().all(|s| s.as_ref().unwrap().value.expose() == "v1"));
        assert_eq!(fake.reads.load(Ordering::SeqCst), 1, "twenty concurrent misses, one provider read");

        tokio::time::sleep(Duration::from_millis(150)).await;
        fake.down.store(true, Ordering::SeqCst);
        let stale = resolver.resolve(&config, &r, None).await.unwrap();
        assert!(stale.stale && stale.value.expose() == "v1");
        assert!(!format!("{stale:?}").contains("v1"), "Debug shows no value");
        fake.down.store(false, Ordering::SeqCst);
        let back = resolver.resolve(&config, &r, None).await.unwrap();
        assert!(!back.stale, "the failure was not cached");
        assert_eq!(fake.reads.load(Ordering::SeqCst), 3);
    }
}
