//! `airlock server`, `airlock server init` and `airlock server rekey`: settings from flags,
//! the environment and an optional TOML file (flags win), validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::crypto::{CryptoError, Keyring};
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::rate::Rate;
use crate::domain::time::now_ms;
use crate::domain::{Role, Scope};
use crate::server::auth::new_id;
use crate::server::{AppState, MasterKeys, ServerConfig};
use crate::store::{Engine, SqlStore, Store, Tenant};

const DEFAULT_DATA_DIR: &str = ".airlock";
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
const DEFAULT_RATE_LIMIT: &str = "6000/min";
const DEFAULT_AUTH_FAILURE_LIMIT: &str = "60/min";
const DEFAULT_ACCESS_REFUSAL_LIMIT: &str = "120/min";
const DEFAULT_TENANT: &str = "default";
const DEFAULT_MAX_PENDING_APPROVALS_PER_AGENT: u32 = 20;
const MASTER_KEY_FILE: &str = "master.key";
/// The advisory lock that keeps a second server off a SQLite data dir.
const LOCK_FILE: &str = "server.lock";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    action: Option<ServerAction>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum ServerAction {
    /// Create the data dir, master key, default tenant and first admin key (printed once)
    Init(InitArgs),
    /// Add a new master key and re-wrap every data key under it, while the server runs
    Rekey(StorageArgs),
}

#[derive(Args, Debug, Clone)]
pub(super) struct StorageArgs {
    /// Directory for the master key and the SQLite database
    #[arg(long, env = "AIRLOCK_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of SQLite in the data dir
    #[arg(long, env = "AIRLOCK_DATABASE_URL", hide_env_values = true)]
    pub(super) database_url: Option<String>,
}

#[derive(Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Print {"admin_key","tenant","data_dir"} as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// TOML file with any of: listen, data_dir, database_url, policies, rate_limit, auth_failure_limit, access_refusal_limit, soft_delete_retention_days, shutdown_grace, audit_checkpoint_interval, max_pending_approvals_per_agent, tls_cert, tls_key, public_url, approval_webhooks, approval_webhook_secret_file, console_session_idle
    #[arg(long, env = "AIRLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7878]
    #[arg(long, env = "AIRLOCK_LISTEN")]
    listen: Option<String>,
    /// Directory of policy files (*.toml)
    #[arg(long, env = "AIRLOCK_POLICIES")]
    policies: Option<PathBuf>,
    /// Requests per credential, like 6000/min or 100/s [default: 6000/min]
    #[arg(long, env = "AIRLOCK_RATE_LIMIT")]
    rate_limit: Option<String>,
    /// Authentication failures per client address before it is refused for a while [default: 60/min]
    #[arg(long, env = "AIRLOCK_AUTH_FAILURE_LIMIT")]
    auth_failure_limit: Option<String>,
    /// Refusals (access events for secrets not granted, or denied) recorded one by one per
    /// agent, like 120/min; more are counted in one access.over_limit record per report
    /// [default: 120/min]
    #[arg(long, env = "AIRLOCK_ACCESS_REFUSAL_LIMIT")]
    access_refusal_limit: Option<String>,
    /// Days a soft-deleted secret stays recoverable [default: 30]
    #[arg(long, env = "AIRLOCK_SOFT_DELETE_RETENTION_DAYS")]
    soft_delete_retention_days: Option<u32>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before the server exits anyway,
    /// like 10s [default: 10s]
    #[arg(long, env = "AIRLOCK_SHUTDOWN_GRACE")]
    shutdown_grace: Option<String>,
    /// How often to write the signed checkpoint of the audit chains to audit-checkpoints.json
    /// in the data dir (also written on shutdown), like 60s [default: 60s]
    #[arg(long, env = "AIRLOCK_AUDIT_CHECKPOINT_INTERVAL")]
    audit_checkpoint_interval: Option<String>,
    /// Approval requests one agent may have pending; a new one beyond it is refused with 429
    /// too_many_pending_approvals (an identical pending request is answered, not counted) [default: 20]
    #[arg(long, env = "AIRLOCK_MAX_PENDING_APPROVALS_PER_AGENT")]
    max_pending_approvals_per_agent: Option<u32>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Both files
    /// are read again on SIGHUP
    #[arg(long, env = "AIRLOCK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "AIRLOCK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The server's URL as operators reach it (https://airlock.example.com): approval links
    /// in 202 answers and webhook notifications start with it
    #[arg(long, env = "AIRLOCK_PUBLIC_URL")]
    public_url: Option<String>,
    /// POST each new approval request as JSON to this http(s) URL (repeatable); Slack and
    /// Mattermost incoming webhooks show its `text` as is
    #[arg(long = "approval-webhook", value_name = "URL", env = "AIRLOCK_APPROVAL_WEBHOOK")]
    approval_webhooks: Vec<String>,
    /// File holding the key (16 bytes or more) that signs each webhook POST with an
    /// X-Airlock-Signature header
    #[arg(long, env = "AIRLOCK_APPROVAL_WEBHOOK_SECRET_FILE")]
    approval_webhook_secret_file: Option<PathBuf>,
    /// How long a web console session (/console) lasts without a request, like 30m; sessions
    /// are kept in this process's memory [default: 30m]
    #[arg(long, env = "AIRLOCK_CONSOLE_SESSION_IDLE")]
    console_session_idle: Option<String>,
}

/// The optional `--config` file; every key is optional and unknown keys are errors.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    policies: Option<PathBuf>,
    rate_limit: Option<String>,
    auth_failure_limit: Option<String>,
    access_refusal_limit: Option<String>,
    soft_delete_retention_days: Option<u32>,
    shutdown_grace: Option<String>,
    audit_checkpoint_interval: Option<String>,
    max_pending_approvals_per_agent: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_url: Option<String>,
    approval_webhooks: Option<Vec<String>>,
    approval_webhook_secret_file: Option<PathBuf>,
    console_session_idle: Option<String>,
}

impl ConfigFile {
    fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(&text, s.start));
            anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
        })
    }
}

/// Line (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    match args.action {
        Some(ServerAction::Init(a)) => init(a).await,
        Some(ServerAction::Rekey(s)) => rekey(s).await,
        None => serve(args.run).await,
    }
}

struct Storage {
    data_dir: PathBuf,
    url: String,
}

impl Storage {
    fn resolve(args: &StorageArgs, file: &ConfigFile) -> anyhow::Result<Storage> {
        let data_dir = args.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let url = match args.database_url.clone().or(file.database_url.clone()) {
            Some(url) if Engine::of_url(&url) == Some(Engine::Postgres) => url,
            Some(url) => bail!(
                "--database-url must start with postgres:// (got '{}'); leave it out to use SQLite in the data dir",
                crate::store::redact_url(&url)
            ),
            None => Engine::sqlite_url(&data_dir),
        };
        Ok(Storage { data_dir, url })
    }

    fn key_file(&self) -> PathBuf {
        self.data_dir.join(MASTER_KEY_FILE)
    }

    fn master_keys(&self) -> anyhow::Result<MasterKeys> {
        if let Ok(value) = std::env::var("AIRLOCK_MASTER_KEY") {
            return Ok(MasterKeys::from_env(&value)?);
        }
        let file = self.key_file();
        if !file.exists() {
            bail!(
                "no master key at {}; run `airlock server init --data-dir {}` first (or set AIRLOCK_MASTER_KEY)",
                file.display(),
                self.data_dir.display()
            );
        }
        Ok(MasterKeys::from_file(file)?)
    }

    async fn open(&self) -> anyhow::Result<Arc<SqlStore>> {
        if Engine::of_url(&self.url) == Some(Engine::Sqlite) && !self.data_dir.exists() {
            bail!(
                "data dir {} does not exist; run `airlock server init --data-dir {}` first",
                self.data_dir.display(),
                self.data_dir.display()
            );
        }
        SqlStore::open(&self.url)
            .await
            .with_context(|| format!("cannot open the database at {}", crate::store::redact_url(&self.url)))
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let secret = initialise(&args.storage).await?;
    let storage = Storage::resolve(&args.storage, &ConfigFile::default())?;
    let data_dir = storage.data_dir.display().to_string();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "admin_key": secret.as_str(), "tenant": DEFAULT_TENANT, "data_dir": data_dir })
        );
    } else {
        println!("Initialised Airlock in {data_dir} (tenant '{DEFAULT_TENANT}').\n");
        println!("Admin key, shown only this once; keep it in a password manager:\n\n    {}\n", secret.as_str());
        println!("Start the server:   airlock server --data-dir {data_dir} --policies policies/");
        println!(
            "                    (--policies: the directory of agent policy files; without it no agent can mint a token)"
        );
        println!("Then, in a shell:   export AIRLOCK_ADDR=http://{DEFAULT_LISTEN} AIRLOCK_TOKEN={}", secret.as_str());
    }
    Ok(())
}

/// Creates the data dir, master key, default tenant and first admin key; returns the key.
pub(super) async fn initialise(storage: &StorageArgs) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let storage = Storage::resolve(storage, &ConfigFile::default())?;
    create_private_dir(&storage.data_dir)?;
    if std::env::var("AIRLOCK_MASTER_KEY").is_err() {
        match Keyring::create_file(&storage.key_file()) {
            Ok(_) => {}
            Err(CryptoError::AlreadyExists(p)) => {
                bail!("already initialised: {} exists. The admin key was printed when it was created.", p.display())
            }
            Err(e) => return Err(e.into()),
        }
    }
    let store = storage.open().await?;
    if store.tenant_by_name(DEFAULT_TENANT).await?.is_some() {
        bail!("already initialised: the database already has the '{DEFAULT_TENANT}' tenant");
    }
    let tenant = Tenant { id: new_id("ten"), name: DEFAULT_TENANT.into(), created_at: now_ms() };
    let (admin, secret) = crate::server::user_key(&tenant.id, "admin", Role::Admin, &[Scope::TenantsCreate]);
    let audit = AuditDraft {
        id: new_id("evt"),
        kind: kind::TENANT_CREATE,
        path: None,
        actor: "airlock-init".into(),
        actor_description: Some("airlock server init".into()),
        ip: None,
        user_agent: None,
        timestamp_ms: now_ms(),
        success: true,
        detail: serde_json::json!({ "tenant_id": tenant.id, "name": DEFAULT_TENANT, "admin_key_id": admin.id }),
    };
    store.create_tenant(&tenant, &admin, audit).await?;
    Ok(zeroize::Zeroizing::new(secret))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    Ok(crate::server::serve(state_from(args).await?).await?)
}

impl RunArgs {
    /// Settings for the server `airlock dev` runs in-process.
    pub(super) fn dev(data_dir: PathBuf, listen: SocketAddr, policies: PathBuf) -> RunArgs {
        RunArgs {
            storage: StorageArgs { data_dir: Some(data_dir), database_url: None },
            config: None,
            listen: Some(listen.to_string()),
            policies: Some(policies),
            rate_limit: None,
            auth_failure_limit: None,
            access_refusal_limit: None,
            soft_delete_retention_days: None,
            shutdown_grace: None,
            audit_checkpoint_interval: None,
            max_pending_approvals_per_agent: None,
            tls_cert: None,
            tls_key: None,
            public_url: None,
            approval_webhooks: Vec::new(),
            approval_webhook_secret_file: None,
            console_session_idle: None,
        }
    }
}

/// Validates the settings and opens everything the server needs.
pub(super) async fn state_from(args: RunArgs) -> anyhow::Result<AppState> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let storage = Storage::resolve(&args.storage, &file)?;
    let listen = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr =
        listen.parse().map_err(|_| anyhow::anyhow!("--listen '{listen}' is not an address like 127.0.0.1:7878"))?;
    let rate = args.rate_limit.or(file.rate_limit).unwrap_or_else(|| DEFAULT_RATE_LIMIT.into());
    let rate_limit: Rate = rate.parse().map_err(|e: String| anyhow::anyhow!("--rate-limit: {e}"))?;
    let retention_days = args.soft_delete_retention_days.or(file.soft_delete_retention_days).unwrap_or(30);
    let failures =
        args.auth_failure_limit.or(file.auth_failure_limit).unwrap_or_else(|| DEFAULT_AUTH_FAILURE_LIMIT.into());
    let auth_failure_limit: Rate =
        failures.parse().map_err(|e: String| anyhow::anyhow!("--auth-failure-limit: {e}"))?;
    let refusals =
        args.access_refusal_limit.or(file.access_refusal_limit).unwrap_or_else(|| DEFAULT_ACCESS_REFUSAL_LIMIT.into());
    let access_refusal_limit: Rate =
        refusals.parse().map_err(|e: String| anyhow::anyhow!("--access-refusal-limit: {e}"))?;
    let grace = args.shutdown_grace.or(file.shutdown_grace).unwrap_or_else(|| "10s".into());
    let shutdown_grace = crate::domain::time::parse_duration(&grace).ok_or_else(|| {
        anyhow::anyhow!("--shutdown-grace '{grace}': use a number followed by ms, s, m or h (like 10s)")
    })?;
    let every = args.audit_checkpoint_interval.or(file.audit_checkpoint_interval);
    let checkpoint_interval = match every.as_deref().map(|s| (s, crate::domain::time::parse_duration(s))) {
        None => crate::server::checkpoint::DEFAULT_INTERVAL,
        Some((_, Some(d))) if !d.is_zero() => d,
        Some((s, _)) => {
            bail!("--audit-checkpoint-interval '{s}': use a number above 0 followed by ms, s, m or h (like 60s)")
        }
    };
    let max_pending_approvals_per_agent = args
        .max_pending_approvals_per_agent
        .or(file.max_pending_approvals_per_agent)
        .unwrap_or(DEFAULT_MAX_PENDING_APPROVALS_PER_AGENT);
    if max_pending_approvals_per_agent == 0 {
        bail!(
            "--max-pending-approvals-per-agent must be 1 or more: with 0 no grant that needs approval could be asked for"
        );
    }
    let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(crate::server::tls::TlsFiles { cert, key }),
        (None, None) => {
            if !listen.ip().is_loopback() {
                tracing::warn!(
                    %listen,
                    "serving plain HTTP on a non-loopback address: agent keys, tokens and secret values cross the network in clear; give --tls-cert and --tls-key"
                );
            }
            None
        }
        _ => bail!("--tls-cert and --tls-key go together: give both files, or neither for plain HTTP"),
    };
    let webhook_urls = if args.approval_webhooks.is_empty() {
        file.approval_webhooks.unwrap_or_default()
    } else {
        args.approval_webhooks
    };
    let secret_file = args.approval_webhook_secret_file.or(file.approval_webhook_secret_file);
    let webhooks = crate::server::notify::Webhooks::new(&webhook_urls, secret_file.as_deref())?;
    if !webhooks.is_empty() {
        tracing::info!(webhooks = ?webhooks, "approval requests are announced to webhooks");
    }
    let public_url = match args.public_url.or(file.public_url) {
        Some(url) => Some(crate::client::parse_base_url(&url).map_err(|e| anyhow::anyhow!("--public-url: {e}"))?),
        None => None,
    };
    let console_session_idle = match args.console_session_idle.or(file.console_session_idle) {
        None => crate::server::console::DEFAULT_IDLE,
        Some(s) => match crate::domain::time::parse_duration(&s) {
            Some(d) if !d.is_zero() => d,
            _ => bail!("--console-session-idle '{s}': use a number above 0 followed by ms, s, m or h (like 30m)"),
        },
    };
    let policy_dir = args.policies.or(file.policies);
    let policies = crate::server::policies::Policies::load(policy_dir.clone())?;
    match &policy_dir {
        Some(dir) => tracing::info!(dir = %dir.display(), policies = policies.current().len(), "policies loaded"),
        None => tracing::warn!("no --policies directory: agents cannot mint tokens until one is configured"),
    }
    let keys = storage.master_keys()?;
    if Engine::of_url(&storage.url) == Some(Engine::Sqlite) && storage.data_dir.is_dir() {
        lock_data_dir(&storage.data_dir)?;
    }
    let store = storage.open().await?;
    let checkpoints = crate::server::checkpoint::Checkpoints::new(&storage.data_dir, checkpoint_interval);
    if !storage.data_dir.is_dir() {
        tracing::warn!(
            file = %checkpoints.path().display(),
            "the data dir does not exist, so no audit checkpoint can be written; create it (mode 0700) on storage the database's writers cannot reach"
        );
    }
    tracing::info!(engine = store.engine().name(), data_dir = %storage.data_dir.display(), "database ready");
    let metrics = super::install_metrics();
    let config = ServerConfig {
        listen,
        rate_limit,
        auth_failure_limit,
        soft_delete_retention: Duration::from_secs(u64::from(retention_days) * 86_400),
        shutdown_grace,
        max_pending_approvals_per_agent,
        tls,
        public_url,
        console_session_idle,
    };
    let state = AppState {
        store,
        keys: Arc::new(keys),
        rate_limits: Arc::new(crate::server::auth::RateLimits::new(rate_limit)),
        auth_failures: Arc::new(crate::server::auth::FailureThrottle::new(auth_failure_limit)),
        refusal_budget: Arc::new(crate::server::access::RefusalBudget::new(access_refusal_limit)),
        policies: Arc::new(policies),
        tenant_names: Default::default(),
        changes: Arc::new(match Engine::of_url(&storage.url) {
            Some(Engine::Postgres) => crate::server::changes::Changes::across_replicas(&storage.url),
            _ => crate::server::changes::Changes::default(),
        }),
        credentials: crate::server::credential_cache(),
        metrics,
        config: Arc::new(config),
        checkpoints: Arc::new(checkpoints),
        webhooks: Arc::new(webhooks),
        console: Arc::new(crate::server::console::Sessions::new(console_session_idle)),
        resolver: crate::server::provider_resolver(),
    };
    Ok(state)
}

/// One server per SQLite data dir: an advisory lock on `D/server.lock`, held until the
/// process exits (the kernel releases it then, even after `kill -9`).
fn lock_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another airlock server already serves the SQLite database in {} (it holds {}); two servers on one \
             SQLite file would each serve a view the other changes behind its back. Stop the other one, or, for \
             several replicas, use PostgreSQL (--database-url)",
            dir.display(),
            path.display()
        ),
        Err(e) => bail!("cannot lock {}: {e}", path.display()),
    }
    // Held for the life of the process: the lock goes with the descriptor.
    std::mem::forget(file);
    Ok(())
}

/// Adds a master key, makes it active, and re-wraps every data key under it in batches.
/// A running server notices the new keyring file within seconds; a last pass after that
/// catches versions it wrote under the old key in the meantime.
async fn rekey(args: StorageArgs) -> anyhow::Result<()> {
    let storage = Storage::resolve(&args, &ConfigFile::default())?;
    if std::env::var("AIRLOCK_MASTER_KEY").is_ok() {
        bail!("rekey needs a keyring file; with AIRLOCK_MASTER_KEY set, rotate the variable's value yourself");
    }
    let file = storage.key_file();
    let ring = Keyring::load_file(&file)?.rotated();
    ring.write_file(&file)?;
    tracing::info!(active = ring.active_kid(), "new master key written; re-wrapping data keys");
    let store = storage.open().await?;
    let mut total = rewrap_all(store.as_ref(), &ring).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    total += rewrap_all(store.as_ref(), &ring).await?;
    println!("rekeyed: {total} data keys re-wrapped under {}", ring.active_kid());
    Ok(())
}

async fn rewrap_all(store: &dyn Store, ring: &Keyring) -> anyhow::Result<u64> {
    let mut done = 0u64;
    loop {
        let batch = store.wrapped_not_under(ring.active_kid(), 500).await?;
        if batch.is_empty() {
            return Ok(done);
        }
        for v in &batch {
            let binding = crate::crypto::Binding { tenant: &v.tenant_id, path: &v.path, version: v.version };
            let new = ring.rewrap(&binding, &v.sealed)?;
            if store.replace_wrap(v, &new).await? {
                done += 1;
            }
        }
        tracing::info!(done, "re-wrapping data keys");
    }
}
