//! The sidecar proxy (`airlock proxy`): the agent sends its HTTP(S) traffic here with
//! placeholders where credentials belong; the proxy injects the real values only toward
//! the hosts they are bound to, redacts them from responses and reports every use.
//! `pipeline` holds the per-request sequence; the other modules are its parts.

mod body;
pub mod central;
mod codec;
pub mod egress;
mod error;
mod forms;
mod h1;
mod limits;
mod listen;
mod local;
mod ops;
pub mod pipeline;
pub mod redact;
pub mod report;
pub mod substitute;
pub mod tls;
mod upstream;
mod websocket;

/// What the fuzz targets in `fuzz/` call (re-exported as `crate::fuzzing`); built only with
/// `--cfg fuzzing` (as cargo-fuzz builds) and for this crate's tests.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    pub use super::codec::fuzzing::*;
    pub use super::forms::fuzzing::*;
    pub use super::substitute::fuzzing::*;
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

pub use error::{Fault, ProxyError};

/// How long the proxy waits on a peer that has gone quiet before it gives up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An agent's request head, from its first byte to its last.
    pub header_read: Duration,
    /// An agent connection with no request in flight.
    pub idle: Duration,
    /// Dialling an upstream (TCP and TLS), passthrough tunnels included.
    pub upstream_connect: Duration,
    /// From a request sent upstream to its response head.
    pub upstream_first_byte: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            upstream_connect: Duration::from_secs(10),
            upstream_first_byte: Duration::from_secs(300),
        }
    }
}

/// Validated settings of one proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    pub server: String,
    pub agent_key: Zeroizing<String>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub session_key: Option<Zeroizing<String>>,
    pub upstream_ca: Option<PathBuf>,
    pub pins: Vec<egress::Pin>,
    pub value_ttl: Duration,
    pub timeouts: Timeouts,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("server", &self.server)
            .field("agent_key", &"***")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("session_key", &self.session_key.as_ref().map(|_| "***"))
            .field("upstream_ca", &self.upstream_ca)
            .field("pins", &self.pins)
            .field("value_ttl", &self.value_ttl)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

pub struct Proxy {
    central: Arc<central::Central>,
    resolver: Arc<egress::Resolver>,
    upstreams: upstream::Upstreams,
    dialer: upstream::Dialer,
    ca: tls::LocalCa,
    session_key: Option<Zeroizing<String>>,
    /// Rate limits built from the policy of the generation they carry.
    limits: std::sync::RwLock<(u64, Arc<limits::Limits>)>,
    reporter: report::Reporter,
    metrics: Option<PrometheusHandle>,
    meters: pipeline::Meters,
    timeouts: Timeouts,
}

impl Proxy {
    /// The rate limits of the current policy (rebuilt when the policy changed).
    fn limits(&self) -> Arc<limits::Limits> {
        let generation = self.central.policy_generation.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(l) = self.limits.read().ok().filter(|l| l.0 == generation).map(|l| l.1.clone()) {
            return l;
        }
        // Built under the lock, so two threads that see the new generation at once share one
        // set of limits (two would each allow the full rate).
        let mut limits = self.limits.write().expect("limits lock poisoned");
        if limits.0 >= generation {
            return limits.1.clone();
        }
        let fresh = Arc::new(limits::Limits::from_policy(&self.central.policy()));
        *limits = (generation, fresh.clone());
        fresh
    }
}

/// A proxy bound to its port, not yet serving.
pub struct Bound {
    proxy: Arc<Proxy>,
    listener: TcpListener,
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn ca_pem(&self) -> &str {
        self.proxy.ca.ca_pem()
    }

    /// The agent's routes (`/r/<name>/`), for `<NAME>_BASE_URL`.
    pub fn route_names(&self) -> Vec<String> {
        self.proxy.central.policy().routes.iter().map(|r| r.name.clone()).collect()
    }

    /// Serves until the task is dropped, on one worker thread per core.
    pub async fn serve(self) {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        listen::serve(self.proxy, self.listener, workers).await
    }
}

/// Connects to the central API (policy, tokens), prepares the CA and binds the listener.
pub async fn bind(config: ProxyConfig, metrics: Option<PrometheusHandle>) -> anyhow::Result<Bound> {
    let ca = tls::LocalCa::load_or_create(&config.data_dir)?;
    let central = central::Central::connect(&config.server, config.agent_key.clone(), config.value_ttl)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = central.policy();
    tracing::info!(agent = %policy.agent.name, grants = policy.grants.len(), routes = policy.routes.len(), "policy loaded");
    central.start();
    tokio::spawn(central.clone().watch());
    let reporter = report::start(&config.data_dir.join("spool"), central.clone())?;
    let resolver = Arc::new(egress::Resolver::new(config.pins.clone()));
    let dialer =
        upstream::Dialer::new(resolver.clone(), config.upstream_ca.as_deref(), config.timeouts.upstream_connect)?;
    let upstreams = upstream::client(dialer.clone());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let proxy = Proxy {
        limits: std::sync::RwLock::new((0, Arc::new(limits::Limits::from_policy(&policy)))),
        reporter,
        central,
        resolver,
        upstreams,
        dialer,
        ca,
        session_key: config.session_key.clone(),
        metrics,
        meters: pipeline::Meters::register(),
        timeouts: config.timeouts,
    };
    Ok(Bound { proxy: Arc::new(proxy), listener })
}
