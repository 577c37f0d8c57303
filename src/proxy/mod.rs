//! The sidecar proxy (`airlock proxy`): the agent sends its HTTP(S) traffic here with
//! placeholders where credentials belong; the proxy injects the real values only toward
//! the hosts they are bound to, redacts them from responses and reports every use.
//! `pipeline` holds the per-request sequence; the other modules are its parts.

mod backoff;
mod body;
mod bounded;
pub mod central;
mod codec;
pub mod credentials;
mod echoes;
pub mod egress;
mod error;
mod forms;
mod h1;
mod io;
mod limits;
mod listen;
mod local;
mod meters;
mod ops;
pub mod pipeline;
pub mod redact;
pub mod report;
mod request;
mod sharded;
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

pub use error::{ErrorCode, Fault, ProxyError};

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
    /// The central API's change stream sends a keep-alive every 15 s: a stream silent this
    /// long is taken as lost (a partition that closed nothing) and opened again.
    pub change_stream_silence: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            upstream_connect: Duration::from_secs(10),
            upstream_first_byte: Duration::from_secs(300),
            change_stream_silence: Duration::from_secs(45),
        }
    }
}

/// Who may use a proxy: with it, every process that reaches the listener can have the
/// agent's values injected toward the hosts they are bound to.
#[derive(Clone)]
pub enum Callers {
    /// Only callers that present this key: as the password of `Proxy-Authorization: Basic`
    /// (any user name), or, in route mode, as the bearer token or `x-api-key`.
    SessionKey(Zeroizing<String>),
    /// Any process that can reach the listener, which must then be on loopback: what
    /// `airlock proxy --allow-any-local-caller` and `airlock dev` choose.
    AnyLocal,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callers::SessionKey(_) => f.write_str("SessionKey(***)"),
            Callers::AnyLocal => f.write_str("AnyLocal"),
        }
    }
}

/// Validated settings of one proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The central API's addresses (replicas on one database), tried in turn.
    pub servers: Vec<String>,
    pub agent_key: Zeroizing<String>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub callers: Callers,
    pub upstream_ca: Option<PathBuf>,
    pub pins: Vec<egress::Pin>,
    pub value_ttl: Duration,
    /// How long a denied approval stands before the proxy asks again (`central::DEFAULT_DENIAL_COOLDOWN`).
    pub approval_denied_cooldown: Duration,
    pub timeouts: Timeouts,
    /// The access-event spool's size past which injections are refused (`spool_full`).
    pub spool_max_bytes: u64,
}

impl ProxyConfig {
    /// Refuses what no flag alone can: a proxy that serves any caller listening beyond loopback.
    pub fn check(&self) -> Result<(), StartError> {
        if matches!(self.callers, Callers::AnyLocal) && !self.listen.ip().is_loopback() {
            return Err(StartError::OpenBeyondLoopback(self.listen));
        }
        Ok(())
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("servers", &self.servers)
            .field("agent_key", &"***")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("callers", &self.callers)
            .field("upstream_ca", &self.upstream_ca)
            .field("pins", &self.pins)
            .field("value_ttl", &self.value_ttl)
            .field("approval_denied_cooldown", &self.approval_denied_cooldown)
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
    meters: meters::Meters,
    timeouts: Timeouts,
    /// The values each upstream host has been sent (`echoes`).
    echoes: echoes::Echoes,
    /// Access tokens of the policy's `[[oauth2]]` rules.
    tokens: credentials::oauth2::Tokens,
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
        self.proxy.central.policy().routes().iter().map(|r| r.name().to_owned()).collect()
    }

    /// Events of this proxy's uses, for `Reporter::close` on the way out.
    pub fn reporter(&self) -> report::Reporter {
        self.proxy.reporter.clone()
    }

    /// Serves until the task is dropped, on one worker thread per core.
    pub async fn serve(self) {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        listen::serve(self.proxy, self.listener, workers).await
    }
}

/// What `bind` does while the central API cannot be reached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Fail at once (`airlock run`, `airlock dev`: a person is waiting).
    FailFast,
    /// Listen meanwhile, answer 503 with the reason (readyz included), and keep trying with
    /// backoff; only a refusal of the agent (bad key, no policy) is fatal (`airlock proxy`,
    /// which may start before its server).
    Wait,
}

/// Why the proxy could not start: its configuration, its CA or TLS settings, its listener,
/// the central API's answer, or its spool.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "a proxy without a session key serves any caller that reaches it, so it listens on loopback only \
         (127.0.0.1 or ::1), not on {0}: anything that reaches that address could have this agent's values \
         injected; listen on loopback, or give callers a session key (--session-key-file FILE)"
    )]
    OpenBeyondLoopback(SocketAddr),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    /// The central API refused the agent, or (failing fast) could not be reached.
    #[error("{0}")]
    Central(central::CentralError),
    #[error("the waiting listener failed: {0}")]
    Waiting(tokio::task::JoinError),
    /// The access-event spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] std::io::Error),
}

/// Connects to the central API (policy, tokens), prepares the CA and binds the listener.
pub async fn bind(
    config: ProxyConfig,
    metrics: Option<PrometheusHandle>,
    startup: Startup,
) -> Result<Bound, StartError> {
    config.check()?;
    let ca = tls::LocalCa::load_or_create(&config.data_dir)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|error| StartError::Listen { addr: config.listen, error })?;
    let (central, listener) = connect_central(&config, listener, startup).await?;
    let policy = central.policy();
    tracing::info!(agent = %policy.agent().name, grants = policy.grants().len(), routes = policy.routes().len(), "policy loaded");
    central.set_denial_cooldown(config.approval_denied_cooldown);
    central.start();
    tokio::spawn(central.clone().watch(config.timeouts.change_stream_silence));
    let reporter = report::start(&config.data_dir.join("spool"), central.clone(), config.spool_max_bytes)?;
    let resolver = Arc::new(egress::Resolver::new(config.pins.clone()));
    let dialer =
        upstream::Dialer::new(resolver.clone(), config.upstream_ca.as_deref(), config.timeouts.upstream_connect)?;
    let upstreams = upstream::client(dialer.clone());
    let proxy = Proxy {
        limits: std::sync::RwLock::new((0, Arc::new(limits::Limits::from_policy(&policy)))),
        reporter,
        central,
        resolver,
        upstreams,
        dialer,
        ca,
        session_key: match &config.callers {
            Callers::SessionKey(key) => Some(key.clone()),
            Callers::AnyLocal => None,
        },
        metrics,
        meters: meters::Meters::register(),
        timeouts: config.timeouts,
        echoes: echoes::Echoes::default(),
        tokens: credentials::oauth2::Tokens::default(),
    };
    Ok(Bound { proxy: Arc::new(proxy), listener })
}

/// The central API's first answer (policy, agent). With `Startup::Wait`, the listener answers
/// every request 503 with the reason meanwhile, and attempts go on with backoff until one
/// succeeds or the API refuses the agent.
async fn connect_central(
    config: &ProxyConfig,
    listener: TcpListener,
    startup: Startup,
) -> Result<(Arc<central::Central>, TcpListener), StartError> {
    let connect = || central::Central::connect(&config.servers, config.agent_key.clone(), config.value_ttl);
    let first = connect().await;
    let error = match first {
        Ok(central) => return Ok((central, listener)),
        Err(e) if startup == Startup::FailFast || e.refuses_the_agent() => return Err(StartError::Central(e)),
        Err(e) => e,
    };
    let reason = Arc::new(std::sync::Mutex::new(error.to_string()));
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let waiting = tokio::spawn(not_ready(listener, reason.clone(), stopped));
    let mut backoff = backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let central = loop {
        let wait = backoff.next_wait();
        tracing::warn!(error = %reason.lock().expect("reason lock poisoned"), retry_in_ms = wait.as_millis() as u64, "the central API cannot be reached yet; answering 503 until it can");
        tokio::time::sleep(wait).await;
        match connect().await {
            Ok(central) => break central,
            Err(e) if e.refuses_the_agent() => return Err(StartError::Central(e)),
            Err(e) => *reason.lock().expect("reason lock poisoned") = e.to_string(),
        }
    };
    let _ = stop.send(());
    let listener = waiting.await.map_err(StartError::Waiting)?;
    tracing::info!("the central API answered");
    Ok((central, listener))
}

/// Answers each connection one 503 (JSON, with `reason`) until told to stop; gives the
/// listener back.
async fn not_ready(
    listener: TcpListener,
    reason: Arc<std::sync::Mutex<String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> TcpListener {
    loop {
        tokio::select! {
            _ = &mut stop => return listener,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let why = reason.lock().expect("reason lock poisoned").clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut head = [0u8; 4096];
                    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut head)).await;
                    // Alive, if not ready: a liveness probe must not restart a proxy that waits.
                    if matches!(read, Ok(Ok(n)) if head[..n].starts_with(b"GET /_airlock/healthz ")) {
                        let ok = r#"{"status":"ok"}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ok}",
                            ok.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    let unavailable = ErrorCode::CentralUnavailable;
                    let (code, fault, status) = (unavailable.as_str(), unavailable.fault().as_str(), unavailable.status());
                    let body = serde_json::json!({
                        "status": "not_ready",
                        "error": { "code": code, "fault": fault, "message": why },
                    })
                    .to_string();
                    let answer = format!(
                        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-airlock-error: {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        status.as_str(),
                        status.canonical_reason().unwrap_or_default(),
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
