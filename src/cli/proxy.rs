//! `airlock proxy`: flags into a validated `ProxyConfig`, then serve until a signal.
//! The same flags (but `--listen`) serve `airlock run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::proxy::egress::Pin;
use crate::proxy::{ProxyConfig, Timeouts};

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Central API address
    #[arg(long, env = "AIRLOCK_ADDR", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// File holding the agent key (or set AIRLOCK_AGENT_KEY)
    #[arg(long)]
    pub agent_key_file: Option<PathBuf>,
    /// Directory for the proxy's CA and event spool
    #[arg(long, default_value = ".airlock/proxy")]
    pub data_dir: PathBuf,
    /// File holding a session key callers must present (Proxy-Authorization, or a route's bearer key)
    #[arg(long)]
    pub session_key_file: Option<PathBuf>,
    /// PEM bundle of extra trust roots for upstreams
    #[arg(long)]
    pub upstream_ca: Option<PathBuf>,
    /// Pin HOST=IP[:PORT] (repeatable); pinned hosts are exempt from the private-address check
    #[arg(long = "resolve")]
    pub resolve: Vec<Pin>,
    /// Longest time a fetched value is served from memory, in seconds
    #[arg(long, default_value_t = 60)]
    pub value_ttl_seconds: u64,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

/// How long the proxy waits on a quiet peer (durations like 500ms, 30s, 5m, 1h).
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// Longest time an agent may take to send a request head, from its first byte
    #[arg(long, value_parser = timeout, default_value = "30s")]
    pub header_read_timeout: Duration,
    /// An agent connection with no request in flight is closed after this long
    #[arg(long, value_parser = timeout, default_value = "75s")]
    pub idle_timeout: Duration,
    /// Longest time to dial an upstream (TCP, then TLS), passthrough tunnels included
    #[arg(long, value_parser = timeout, default_value = "10s")]
    pub upstream_connect_timeout: Duration,
    /// Longest wait from a request sent upstream to its response head (then 504 upstream_timeout)
    #[arg(long, value_parser = timeout, default_value = "300s")]
    pub upstream_first_byte_timeout: Duration,
}

fn timeout(s: &str) -> Result<Duration, String> {
    match crate::domain::time::parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("a timeout must be longer than zero".into()),
        None => Err("use a number followed by ms, s, m or h (like 30s)".into()),
    }
}

impl TimeoutArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            upstream_connect: self.upstream_connect_timeout,
            upstream_first_byte: self.upstream_first_byte_timeout,
        }
    }
}

fn read_key_file(path: &PathBuf, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let key = text.trim();
    if key.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(Zeroizing::new(key.to_owned()))
}

impl ProxyArgs {
    pub fn agent_key(&self) -> anyhow::Result<Zeroizing<String>> {
        match (&self.agent_key_file, std::env::var("AIRLOCK_AGENT_KEY")) {
            (Some(path), _) => read_key_file(path, "agent key"),
            (None, Ok(key)) if !key.trim().is_empty() => Ok(Zeroizing::new(key.trim().to_owned())),
            _ => bail!(
                "no agent key: pass --agent-key-file FILE or set AIRLOCK_AGENT_KEY (create one with `airlock agent add NAME`)"
            ),
        }
    }

    pub fn config(&self, listen: SocketAddr, session_key: Option<Zeroizing<String>>) -> anyhow::Result<ProxyConfig> {
        let session_key = match (&self.session_key_file, session_key) {
            (_, Some(k)) => Some(k),
            (Some(path), None) => Some(read_key_file(path, "session key")?),
            (None, None) => None,
        };
        Ok(ProxyConfig {
            server: self.server.clone(),
            agent_key: self.agent_key()?,
            listen,
            data_dir: self.data_dir.clone(),
            session_key,
            upstream_ca: self.upstream_ca.clone(),
            pins: self.resolve.clone(),
            value_ttl: Duration::from_secs(self.value_ttl_seconds.max(1)),
            timeouts: self.timeouts.timeouts(),
        })
    }
}

#[derive(Args, Debug)]
pub struct ProxyCommand {
    #[command(flatten)]
    pub common: ProxyArgs,
    /// Address to listen on
    #[arg(long, env = "AIRLOCK_PROXY_LISTEN", default_value = "127.0.0.1:7879")]
    pub listen: SocketAddr,
}

pub async fn run(cmd: ProxyCommand) -> anyhow::Result<()> {
    let config = cmd.common.config(cmd.listen, None)?;
    let metrics = super::install_metrics();
    let bound = crate::proxy::bind(config, metrics).await?;
    tracing::info!(addr = %bound.local_addr()?, "airlock proxy listening");
    tokio::select! {
        _ = bound.serve() => {}
        _ = shutdown() => tracing::info!("airlock proxy stopped"),
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
