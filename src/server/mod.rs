//! The central secret API (`airlock server`): axum routes over the `Store`, with
//! authentication and per-credential rate limits in front of every `/v1` route, metrics
//! around everything, and background upkeep (keyring refresh, retention sweep, signed
//! checkpoints of the audit chains).

pub mod access;
mod agents;
mod approvals;
pub mod auth;
pub mod changes;
pub mod checkpoint;
pub mod console;
mod error;
mod extract;
mod master_keys;
mod minting;
pub mod notify;
pub mod openapi;
mod ops;
pub mod policies;
mod providers;
mod secrets;
mod tenancy;
pub mod tls;
mod tokens;
mod trail;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use error::{ApiError, ErrorCode};
use openapi::Routes;

use crate::api::approvals::{ApproveBody, DenyBody};
use crate::api::tokens::{MintedToken, PendingApproval};
pub use master_keys::MasterKeys;
pub use tenancy::user_key;

use crate::domain::audit::kind;
use crate::domain::rate::Rate;
use crate::store::Store;

/// Validated settings of one server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub rate_limit: Rate,
    /// Authentication failures one address may make before it is refused for a while.
    pub auth_failure_limit: Rate,
    /// How long a soft-deleted secret can be undeleted.
    pub soft_delete_retention: Duration,
    /// How long in-flight requests may take after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Approval requests one agent may have pending; beyond it a new one is refused (429).
    pub max_pending_approvals_per_agent: u32,
    /// HTTPS: the certificate chain and key files (`None`: plain HTTP).
    pub tls: Option<tls::TlsFiles>,
    /// The server's address as people reach it (`--public-url`), for links in approval
    /// requests and notifications.
    pub public_url: Option<String>,
    /// How long a console session lasts without a request (`--console-session-idle`).
    pub console_session_idle: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<MasterKeys>,
    pub rate_limits: Arc<auth::RateLimits>,
    pub auth_failures: Arc<auth::FailureThrottle>,
    /// Refusals each agent may have recorded one by one (`--access-refusal-limit`).
    pub refusal_budget: Arc<access::RefusalBudget>,
    pub policies: Arc<policies::Policies>,
    pub tenant_names: Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>,
    pub metrics: Option<PrometheusHandle>,
    pub changes: Arc<changes::Changes>,
    /// Credentials by hash, for a few seconds: most requests then skip the lookup. Revoking
    /// on this server empties it at once; another replica's revocation shows within the TTL.
    pub credentials: moka::future::Cache<String, Arc<crate::store::Credential>>,
    pub config: Arc<ServerConfig>,
    /// Signed checkpoints of the audit chains, beside the master key.
    pub checkpoints: Arc<checkpoint::Checkpoints>,
    /// Where new approval requests are announced (`--approval-webhook`).
    pub webhooks: Arc<notify::Webhooks>,
    /// The web console's sessions, in this process's memory.
    pub console: Arc<console::Sessions>,
    /// Reads external secrets through their provider configs, with each config's cache TTL.
    /// It serves no stale copy: a provider that is down is a 502 here, and proxies keep
    /// their own last good copy.
    pub resolver: Arc<crate::providers::resolver::Resolver>,
}

/// The cache TTL of a provider config that sets none.
pub const DEFAULT_PROVIDER_CACHE_TTL: Duration = Duration::from_secs(60);

/// The server's resolver: each config's TTL, no stale copies, credentials from the process.
pub fn provider_resolver() -> Arc<crate::providers::resolver::Resolver> {
    Arc::new(crate::providers::resolver::Resolver::new(DEFAULT_PROVIDER_CACHE_TTL, Duration::ZERO, None))
}

/// How long a looked-up credential is trusted without asking the database again.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(2);

pub fn credential_cache() -> moka::future::Cache<String, Arc<crate::store::Credential>> {
    moka::future::Cache::builder().max_capacity(10_000).time_to_live(CREDENTIAL_CACHE_TTL).build()
}

impl AppState {
    /// The policy of `agent` in `tenant` (by id), or a 403 that says which file is missing.
    pub async fn policy_for(&self, tenant: &str, agent: &str) -> Result<crate::domain::policy::Policy, ApiError> {
        let tenant_name = self.tenant_name(tenant).await?;
        self.policies.current().get(&tenant_name, agent).cloned().ok_or_else(|| {
            let mut e = ApiError::permission_denied(None, "a policy for this agent");
            e.message = format!("no policy names agent '{agent}' in tenant '{tenant_name}'; add one to the policies directory and reload");
            e
        })
    }

    /// What `f` says of the current policy of `agent` in `tenant` (`None`: it has none).
    async fn with_policy<R>(
        &self,
        tenant: &str,
        agent: &str,
        f: impl FnOnce(Option<&crate::domain::policy::Policy>) -> R,
    ) -> Result<R, ApiError> {
        let tenant_name = self.tenant_name(tenant).await?;
        Ok(f(self.policies.current().get(&tenant_name, agent)))
    }

    /// Whether the policy of `agent` (if it has one) lets it call from `ip`.
    pub async fn agent_allows_ip(&self, tenant: &str, agent: &str, ip: std::net::IpAddr) -> Result<bool, ApiError> {
        self.with_policy(tenant, agent, |p| p.is_none_or(|p| p.allows_ip(ip))).await
    }

    /// Whether the policy of `agent` grants `path`.
    pub async fn agent_grants(
        &self,
        tenant: &str,
        agent: &str,
        path: &crate::domain::SecretPath,
    ) -> Result<bool, ApiError> {
        self.with_policy(tenant, agent, |p| p.is_some_and(|p| p.grant_for(path).is_some())).await
    }

    async fn tenant_name(&self, tenant: &str) -> Result<String, ApiError> {
        if let Some(name) = self.tenant_names.read().expect("tenant cache poisoned").get(tenant) {
            return Ok(name.clone());
        }
        let name = self.store.tenant_name(tenant).await?.ok_or_else(|| ApiError::not_found("no such tenant"))?;
        self.tenant_names.write().expect("tenant cache poisoned").insert(tenant.to_owned(), name.clone());
        Ok(name)
    }
}

/// Every `/v1` endpoint: the router and the OpenAPI document are both made from this table
/// (`openapi`), so each route is documented from its handler's types.
fn v1_routes() -> Routes {
    use http::Method as M;
    Routes::v1()
        .op(M::POST, "/secrets", "Create a secret", secrets::create)
        .op(M::GET, "/secrets", "List the secrets the caller may see (metadata only)", secrets::list)
        .op(
            M::POST,
            "/secrets/remote-import/preview",
            "List what a provider config holds, classified for import",
            secrets::remote_import_preview,
        )
        .op(M::POST, "/secrets/remote-import", "Import provider secrets as external references", secrets::remote_import)
        .op(M::GET, "/secrets/search", "Search secrets' metadata within the caller's scopes", secrets::search)
        .op(
            M::POST,
            "/secrets/bulk",
            "Up to 100 operations, each under its own scope; atomic or best effort",
            secrets::bulk,
        )
        .op(M::POST, "/secrets/copy", "Copy a secret's current value to a new path, sealed anew", secrets::copy)
        .also::<crate::api::secrets::SecretCopied>(200)
        .op(M::POST, "/secrets/move", "Move a secret and its history to a new path", secrets::r#move)
        .op(M::GET, "/secrets/{path}", "Read a secret's value and metadata", secrets::read)
        .op(M::PUT, "/secrets/{path}", "Write a new version, or create the secret (create or replace)", secrets::update)
        .also::<crate::api::secrets::SecretUpdated>(201)
        .op(M::PATCH, "/secrets/{path}", "Change a secret's metadata", secrets::patch)
        .op(M::DELETE, "/secrets/{path}", "Delete a secret (soft, or `?permanent=true`)", secrets::delete)
        .op(
            M::POST,
            "/secrets/{path}/rotate",
            "Rotate: a new value, the old one kept for a grace period",
            secrets::rotate,
        )
        .op(M::GET, "/secrets/{path}/versions", "A secret's versions and their states", secrets::versions)
        .op(M::POST, "/secrets/{path}/undelete", "Restore a soft-deleted secret", secrets::undelete)
        .op(M::POST, "/secrets/{path}/destroy", "Wipe versions' ciphertext for good", secrets::destroy)
        .op(M::GET, "/secrets/{path}/access-events", "Uses of a secret reported by proxies", access::list)
        .op(
            M::GET,
            "/secrets/{path}/usage",
            "Which agents' policies grant a secret, and when each last used it",
            usage::usage,
        )
        .op(M::POST, "/keys", "Create an API key", tenancy::create_key)
        .op(M::GET, "/keys", "List API keys", tenancy::list_keys)
        .op(M::DELETE, "/keys/{id}", "Revoke an API key", tenancy::revoke_key)
        .op(M::POST, "/tenants", "Create a tenant and its first admin key", tenancy::create_tenant)
        .op(M::POST, "/agents", "Register an agent and make its key", agents::create)
        .op(M::GET, "/agents", "List agents", agents::list)
        .op(M::GET, "/agents/self/policy", "The calling agent's policy", agents::self_policy)
        .op(M::DELETE, "/agents/{id}", "Remove an agent and revoke its key and tokens", agents::delete)
        .op(M::POST, "/policies/reload", "Reload the policy files", agents::reload)
        .op(M::POST, "/tokens", "Mint a scoped token (or open an approval request)", tokens::mint)
        .responds::<MintedToken>(&[201])
        .also::<PendingApproval>(202)
        .op(M::GET, "/tokens/self", "Introspect the calling credential", tokens::introspect)
        .op(M::DELETE, "/tokens/{id}", "Revoke a token", tokens::revoke)
        .op(M::GET, "/approvals", "List approval requests", approvals::list)
        .op(M::GET, "/approvals/{id}", "One approval request", approvals::get)
        .op(M::POST, "/approvals/{id}/approve", "Approve a request", approvals::approve)
        .body::<ApproveBody>(false)
        .op(M::POST, "/approvals/{id}/deny", "Deny a request", approvals::deny)
        .body::<DenyBody>(false)
        .op(M::GET, "/events", "The change stream (server-sent events)", changes::stream)
        .op(M::POST, "/access-events", "Report uses of secrets (proxies)", access::report)
        .op(M::GET, "/audit", "The audit trail", trail::list)
        .op(M::GET, "/audit/verify", "Verify the audit chain", trail::verify)
        .op(M::GET, "/providers", "The provider types this server supports", providers::types)
        .op(M::GET, "/providers/health", "Health of every provider config", providers::health_all)
        .op(M::POST, "/provider-configs", "Create a provider config", providers::create)
        .op(M::GET, "/provider-configs", "List provider configs", providers::list)
        .op(M::GET, "/provider-configs/{id}", "One provider config", providers::get)
        .op(M::PATCH, "/provider-configs/{id}", "Change a provider config", providers::patch)
        .op(M::DELETE, "/provider-configs/{id}", "Delete a provider config", providers::delete)
        .op(M::POST, "/provider-configs/discovery/preview", "List what a provider config can reach", providers::preview)
        .op(M::POST, "/provider-configs/{id}/default", "Make a config its kind's default", providers::make_default)
        .op(M::POST, "/provider-configs/{id}/health", "Check one provider config", providers::health)
}

/// The endpoints that need no credential.
fn open_routes() -> Routes {
    use http::Method as M;
    Routes::open()
        .op(M::GET, "/v1/openapi.json", "This document", openapi::serve)
        .responds::<serde_json::Value>(&[200])
        .op(M::GET, "/healthz", "Liveness", ops::healthz)
        .op(M::GET, "/readyz", "Readiness: the database answers", ops::readyz)
        .responds::<serde_json::Value>(&[200, 503])
        .op(M::GET, "/metrics", "Prometheus metrics", ops::metrics)
        .text()
}

/// The OpenAPI 3.1 document of every route `router` serves but the console's pages.
pub fn api_document() -> serde_json::Value {
    openapi::document(v1_routes(), open_routes())
}

pub fn router(state: AppState) -> Router {
    let v1 = v1_routes().router().route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .nest("/v1", v1)
        .merge(open_routes().router())
        // The console's HTML pages are for people, not API clients: they are not in the
        // OpenAPI document (docs/api.md says so).
        .merge(console::router(state.clone()))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn(to_completion))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Every request that may write runs to its end in a task of its own, so a client that
/// disconnects (or times out) never stops a handler between its steps: a rotation that has
/// committed still announces itself on the change stream, so proxies drop the old value.
/// (A transaction cancelled while it began is the store's to handle: `SqlStore::begin`.)
/// Reads write only through the audit writer, which no request can cancel, and skip the
/// extra task.
async fn to_completion(req: Request, next: Next) -> Response {
    if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        // The payload is not logged: a panic message is not vetted for what it quotes.
        Err(_) => ApiError::internal(&"a request handler panicked").into_response(),
    }
}

async fn unknown_route() -> ApiError {
    ApiError::not_found(
        "no such endpoint; secret paths go in one URL segment, encoded: /v1/secrets/production%2Fopenai%2Fapi-key",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that HTTP method")
}

/// Request metrics labelled by route template (never by a concrete secret path).
async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("airlock_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("airlock_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Why the server could not listen, or stopped serving with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves until SIGINT or SIGTERM; then ends the change streams (their proxies reconnect,
/// to another replica when there is one), lets other in-flight requests finish within the
/// shutdown grace, writes an audit checkpoint, and returns.
pub async fn serve(state: AppState) -> Result<(), ServeError> {
    let certs = state.config.tls.clone().map(tls::Certs::load).transpose()?;
    let listener = TcpListener::bind(state.config.listen)
        .await
        .map_err(|error| ServeError::Listen { addr: state.config.listen, error })?;
    let addr = listener.local_addr()?;
    tokio::spawn(upkeep(state.clone()));
    tokio::spawn(reload_on_sighup(state.clone(), certs.clone()));
    tokio::spawn(checkpoint::keep(state.clone()));
    // The policy files may have changed while the server was down. (A server started with
    // no policies at all is left alone: more likely a missing flag than every grant removed.)
    if !state.policies.current().is_empty() {
        let at_start = state.clone();
        tokio::spawn(async move { approvals::cancel_lapsed(&at_start, "server_start").await });
    }
    let scheme = if certs.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "airlock server listening");
    let (changes, grace) = (state.changes.clone(), state.config.shutdown_grace);
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signalled = async move {
        shutdown_signal().await;
        changes.close();
        let _ = stopping.send(true);
    };
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match &certs {
        None => Box::pin(axum::serve(listener, app).with_graceful_shutdown(signalled).into_future()),
        // `tap_io` (doing nothing) gives the TLS listener the peer-address `ConnectInfo`
        // that axum provides for any listener wrapped so.
        Some(certs) => Box::pin(
            axum::serve(tls::TlsListener::new(listener, certs)?.tap_io(|_| ()), app)
                .with_graceful_shutdown(signalled)
                .into_future(),
        ),
    };
    tokio::select! {
        served = server => served?,
        () = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_s = grace.as_secs_f64(), "shutdown grace over; exiting with requests still in flight"),
    }
    checkpoint::on_shutdown(&state).await;
    tracing::info!("airlock server stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// SIGHUP: the policy files and, when serving HTTPS, the certificate are read again.
async fn reload_on_sighup(state: AppState, certs: Option<Arc<tls::Certs>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        if let Some(certs) = &certs {
            match certs.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded on SIGHUP"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload on SIGHUP failed; keeping the one in use")
                }
            }
        }
        match state.policies.reload() {
            Ok(_) => {
                state.changes.publish(changes::Change::new(changes::ALL_TENANTS, "policy.updated"));
                approvals::cancel_lapsed(&state, "policy_reload").await;
            }
            Err(e) => tracing::error!(error = %e, "policy reload on SIGHUP failed"),
        }
    }
}

/// Periodic work: pick up a rotated keyring, forget idle rate-limit state, and purge
/// secrets whose soft-delete retention has run out.
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        if let Err(e) = state.keys.refresh_if_changed() {
            tracing::error!(error = %e, "cannot reload the master keyring; keeping the loaded one");
        }
        if ticks.is_multiple_of(30) {
            state.rate_limits.shrink();
            state.auth_failures.shrink();
            state.refusal_budget.shrink();
            state.console.sweep();
            purge_expired_deletions(&state).await;
        }
    }
}

async fn purge_expired_deletions(state: &AppState) {
    let cutoff = crate::domain::time::now_ms() - state.config.soft_delete_retention.as_millis() as i64;
    let due = match state.store.deleted_before(cutoff).await {
        Ok(due) => due,
        Err(e) => return tracing::error!(error = %e, "retention sweep failed"),
    };
    for (tenant, path) in due {
        let mut draft = auth_free_draft(kind::SECRET_DESTROY, &path);
        draft.detail = serde_json::json!({ "reason": "soft-delete retention expired", "permanent": true });
        match state.store.purge_secret(&tenant, &path, draft).await {
            Ok(()) => tracing::info!(%tenant, %path, "purged soft-deleted secret after retention"),
            Err(e) => tracing::error!(%tenant, %path, error = %e, "could not purge soft-deleted secret"),
        }
    }
}

/// An audit draft for work the server does on its own.
fn auth_free_draft(kind: &'static str, path: &str) -> crate::domain::audit::AuditDraft {
    crate::domain::audit::AuditDraft {
        id: auth::new_id("evt"),
        kind,
        path: Some(path.to_owned()),
        actor: "airlock-server".into(),
        actor_description: Some("retention sweep".into()),
        ip: None,
        user_agent: None,
        timestamp_ms: crate::domain::time::now_ms(),
        success: true,
        detail: serde_json::json!({}),
    }
}
