//! `airlock proxy`: flags into a validated `ProxyConfig`, then serve until a signal.
//! The same flags (but `--listen`) serve `airlock run`, which takes from here what the two
//! share (the flags, the agent key and its source, `protect_process`, `CLOSE_WITHIN`);
//! nothing here comes from `run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::proxy::egress::Pin;
use crate::proxy::{Callers, ProxyConfig, Timeouts};

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Central API address; repeat it or give a comma list for replicas on one database (the
    /// proxy fails over between them)
    #[arg(long, env = "AIRLOCK_ADDR", default_value = "http://127.0.0.1:7878", value_delimiter = ',')]
    pub server: Vec<String>,
    /// File holding the agent key, or `-` for standard input, read to its end (or set AIRLOCK_AGENT_KEY)
    #[arg(long, value_name = "FILE", conflicts_with = "agent_key_fd", env = "AIRLOCK_AGENT_KEY_FILE")]
    pub agent_key_file: Option<PathBuf>,
    /// Inherited file descriptor (a pipe) to read the agent key from, to its end
    #[arg(long, value_name = "N", env = "AIRLOCK_AGENT_KEY_FD")]
    pub agent_key_fd: Option<i32>,
    /// Directory for the proxy's CA and event spool
    #[arg(long, default_value = ".airlock/proxy", env = "AIRLOCK_PROXY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// File holding the session key callers must present: the password of Proxy-Authorization
    /// (HTTPS_PROXY=http://airlock:KEY@127.0.0.1:7879), or a route's bearer token or x-api-key
    #[arg(long, value_name = "FILE", env = "AIRLOCK_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// PEM bundle of extra trust roots for upstreams
    #[arg(long, env = "AIRLOCK_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Pin HOST=IP[:PORT] (repeatable); pinned hosts are exempt from the private-address check
    #[arg(long = "resolve", env = "AIRLOCK_RESOLVE")]
    pub resolve: Vec<Pin>,
    /// Longest time a fetched value is served from memory, in seconds
    #[arg(long, default_value_t = 60, env = "AIRLOCK_VALUE_TTL_SECONDS")]
    pub value_ttl_seconds: u64,
    /// After an operator denies the proxy's approval request, how long requests needing that
    /// grant get 403 approval_denied before the proxy asks again (a policy change ends it sooner)
    #[arg(long, value_parser = timeout, default_value = "5m", env = "AIRLOCK_APPROVAL_DENIED_COOLDOWN")]
    pub approval_denied_cooldown: Duration,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Largest the access-event spool may grow (bytes) while the central API does not take
    /// events; past it, requests that would inject are refused (503 spool_full) rather than
    /// inject unrecorded
    #[arg(long, default_value_t = crate::proxy::report::DEFAULT_SPOOL_MAX_BYTES, env = "AIRLOCK_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: u64,
}

/// How long the proxy waits on a quiet peer (durations like 500ms, 30s, 5m, 1h).
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// Longest time an agent may take to send a request head, from its first byte
    #[arg(long, value_parser = timeout, default_value = "30s", env = "AIRLOCK_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Duration,
    /// An agent connection with no request in flight is closed after this long
    #[arg(long, value_parser = timeout, default_value = "75s", env = "AIRLOCK_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Longest time to dial an upstream (TCP, then TLS), passthrough tunnels included
    #[arg(long, value_parser = timeout, default_value = "10s", env = "AIRLOCK_UPSTREAM_CONNECT_TIMEOUT")]
    pub upstream_connect_timeout: Duration,
    /// Longest wait from a request sent upstream to its response head (then 504 upstream_timeout)
    #[arg(long, value_parser = timeout, default_value = "300s", env = "AIRLOCK_UPSTREAM_FIRST_BYTE_TIMEOUT")]
    pub upstream_first_byte_timeout: Duration,
    /// A change stream from the central API silent this long (it sends a keep-alive every 15 s)
    /// is taken as lost: opened again, and the policy read again
    #[arg(long, value_parser = timeout, default_value = "45s", env = "AIRLOCK_CHANGE_STREAM_TIMEOUT")]
    pub change_stream_timeout: Duration,
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
            change_stream_silence: self.change_stream_timeout,
        }
    }
}

/// How long `airlock run` waits, after its command ends, for the command's access events to
/// be delivered (what is not stays in the spool for the next start). `airlock proxy` waits
/// as long when it stops on a signal.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// Longest key text accepted from any source; keys are tens of bytes.
const MAX_KEY_BYTES: usize = 64 * 1024;

/// Where the agent key came from: `airlock run` warns about the sources its command can
/// reach, and gives the command no standard input when the key was read from it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    File(PathBuf),
    Stdin,
    Fd(i32),
    Env,
}

pub struct AgentKey {
    pub key: Zeroizing<String>,
    pub source: KeySource,
}

/// Reads `from` to its end into one buffer allocated up front (no reallocation leaves a
/// partial copy behind) and returns the trimmed text; `what` names the source in errors.
fn read_key(mut from: impl std::io::Read, what: &str) -> anyhow::Result<Zeroizing<String>> {
    use std::io::Read;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_BYTES + 1));
    (&mut from)
        .take(MAX_KEY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() > MAX_KEY_BYTES {
        bail!("{what} holds more than {MAX_KEY_BYTES} bytes; a key is one short line");
    }
    let Ok(text) = std::str::from_utf8(&bytes) else { bail!("{what} is not UTF-8 text") };
    let key = text.trim();
    if key.is_empty() {
        bail!("{what} is empty");
    }
    if key.contains(['\n', '\r']) {
        bail!(
            "{what} holds more than one line; a key is one line. If it holds the whole output of `airlock agent \
             add`, keep only the key (the indented line after \"agent key, shown only this once\")"
        );
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{what} holds spaces or characters that are not printable ASCII; a key is one word, with nothing around it"
        );
    }
    Ok(Zeroizing::new(key.to_owned()))
}

fn read_key_file(path: &PathBuf, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    read_key(file, &format!("the {what} file {}", path.display()))
}

/// Standard input, unbuffered (a duplicate of descriptor 0, so std's buffer never holds a
/// copy of the key), to its end.
fn read_key_stdin() -> anyhow::Result<Zeroizing<String>> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().context("cannot read the agent key from standard input")?;
    read_key(std::fs::File::from(fd), "the agent key on standard input (--agent-key-file -)")
}

/// Descriptor `n`, which must be a pipe, read to its end.
///
/// The crate forbids `unsafe`, and taking ownership of a descriptor by its number
/// (`OwnedFd::from_raw_fd`) or closing one (`close`) is unsafe, so descriptor `n` itself is
/// never touched: the key is read through `/proc/self/fd/n`, which opens the same pipe
/// anew. A pipe read to its end is empty and has no writer left, so the command that
/// `airlock run` starts inherits descriptor `n` but can read nothing from it. A regular
/// file is refused because the command could seek back through the inherited descriptor
/// and read the key again.
fn read_key_fd(n: i32) -> anyhow::Result<Zeroizing<String>> {
    use rustix::fs::{FileType, Mode, OFlags};
    let what = format!("--agent-key-fd {n}");
    if n < 0 {
        bail!("{what}: a file descriptor is a number from 0 up");
    }
    let path = format!("{}/{n}", fd_dir());
    // Non-blocking, so that a named FIFO without a writer does not hold the open.
    let fd = match rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => bail!("{what}: file descriptor {n} is not open"),
        Err(rustix::io::Errno::NXIO) => bail!("{what}: file descriptor {n} is a socket, not a pipe"),
        Err(e) => bail!("{what}: cannot open {path}: {e}"),
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).with_context(|| format!("{what}: cannot stat"))?.st_mode);
    if kind != FileType::Fifo {
        bail!(
            "{what}: file descriptor {n} is a {}, not a pipe: a command that airlock run starts inherits the \
             descriptor and could seek back to the key; pipe the key in (3< <(…)) or use --agent-key-file",
            file_type_name(kind)
        );
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).with_context(|| format!("{what}: cannot make the read blocking"))?;
    read_key(std::fs::File::from(fd), &format!("the agent key on file descriptor {n} (--agent-key-fd {n})"))
}

#[cfg(target_os = "linux")]
fn fd_dir() -> &'static str {
    "/proc/self/fd"
}

#[cfg(not(target_os = "linux"))]
fn fd_dir() -> &'static str {
    "/dev/fd"
}

fn file_type_name(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::CharacterDevice => "character device (a terminal?)",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        _ => "file of another kind",
    }
}

/// Makes this process non-dumpable (Linux): no core dumps, and a process of the same user
/// can no longer ptrace it or read its `/proc/PID/environ`, `mem` or `fd/` (those become
/// root's). Called before the agent key is read, by every command that holds it.
pub fn protect_process() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE)")?;
    Ok(())
}

impl ProxyArgs {
    /// The agent key from `--agent-key-file FILE`, `--agent-key-file -` (standard input),
    /// `--agent-key-fd N`, or `AIRLOCK_AGENT_KEY`, in that order.
    pub fn agent_key(&self) -> anyhow::Result<AgentKey> {
        let (key, source) = match (&self.agent_key_file, self.agent_key_fd) {
            (Some(path), _) if path.as_os_str() == "-" => (read_key_stdin()?, KeySource::Stdin),
            (Some(path), _) => (read_key_file(path, "agent key")?, KeySource::File(path.clone())),
            (None, Some(n)) => (read_key_fd(n)?, KeySource::Fd(n)),
            (None, None) => match std::env::var("AIRLOCK_AGENT_KEY") {
                Ok(key) if !key.trim().is_empty() => (Zeroizing::new(key.trim().to_owned()), KeySource::Env),
                _ => bail!(
                    "no agent key: pass --agent-key-file FILE (or - for standard input), --agent-key-fd N, or set \
                     AIRLOCK_AGENT_KEY (create one with `airlock agent add NAME`)"
                ),
            },
        };
        Ok(AgentKey { key, source })
    }

    pub fn config(
        &self,
        listen: SocketAddr,
        agent_key: Zeroizing<String>,
        callers: Callers,
    ) -> anyhow::Result<ProxyConfig> {
        let servers: Vec<String> =
            self.server.iter().map(|s| crate::client::parse_base_url(s)).collect::<Result<_, _>>()?;
        for server in servers.iter().filter(|s| crate::client::in_clear_over_network(s)) {
            tracing::warn!(
                %server,
                "the central API is reached over plain HTTP across the network: the agent key, tokens and secret values cross it in clear; serve it with --tls-cert/--tls-key and give an https:// URL"
            );
        }
        Ok(ProxyConfig {
            servers,
            agent_key,
            listen,
            data_dir: self.data_dir.clone(),
            callers,
            upstream_ca: self.upstream_ca.clone(),
            pins: self.resolve.clone(),
            value_ttl: Duration::from_secs(self.value_ttl_seconds.max(1)),
            approval_denied_cooldown: self.approval_denied_cooldown,
            timeouts: self.timeouts.timeouts(),
            spool_max_bytes: self.spool_max_bytes,
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
    /// Serve every process that can reach the listener, without a session key (the listener
    /// must be on loopback): only where each such process may use this agent's secrets, as in
    /// a pod whose only other container is the agent
    #[arg(long, conflicts_with = "session_key_file", env = "AIRLOCK_ALLOW_ANY_LOCAL_CALLER")]
    pub allow_any_local_caller: bool,
}

impl ProxyCommand {
    /// Who may use the proxy: callers with the session key from `--session-key-file`, or,
    /// only when asked for by name, any local process.
    fn callers(&self) -> anyhow::Result<Callers> {
        match (&self.common.session_key_file, self.allow_any_local_caller) {
            (Some(path), _) => Ok(Callers::SessionKey(read_key_file(path, "session key")?)),
            (None, true) => Ok(Callers::AnyLocal),
            (None, false) => bail!(
                "no session key: without one, every process that can reach {} could have this agent's secrets \
                 injected toward their hosts. Pass --session-key-file FILE (a random line, e.g. from `openssl rand \
                 -hex 32`; callers present it as the proxy password, HTTPS_PROXY=http://airlock:KEY@{}, or as a \
                 route's bearer token), or --allow-any-local-caller if every process that can reach the listener \
                 may use the agent's secrets (a pod whose only other container is the agent). `airlock run` makes \
                 a session key itself",
                self.listen,
                self.listen
            ),
        }
    }
}

pub async fn run(cmd: ProxyCommand) -> anyhow::Result<()> {
    protect_process()?;
    let callers = cmd.callers()?;
    let agent_key = cmd.common.agent_key()?.key;
    let config = cmd.common.config(cmd.listen, agent_key, callers)?;
    config.check()?;
    // Where the key is (never the key), so whoever sets up the agent knows what it must
    // present; said before the central API is reached, which may take a while.
    match &cmd.common.session_key_file {
        Some(file) => tracing::info!(
            session_key_file = %file.display(),
            "callers must present the session key in {} (the password of Proxy-Authorization, or a route's \
             bearer token or x-api-key)",
            file.display()
        ),
        None => tracing::warn!(
            "any local caller may use this proxy (--allow-any-local-caller): every process that can reach {} can \
             have this agent's secrets injected toward their hosts",
            cmd.listen
        ),
    }
    let metrics = super::install_metrics();
    let data_dir = config.data_dir.clone();
    let bound = crate::proxy::bind(config, metrics, crate::proxy::Startup::Wait).await?;
    // For clients whose trust-store variable replaces the system roots (SSL_CERT_FILE,
    // REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE): the system roots plus this proxy's CA.
    let bundles = write_bundles(&data_dir, bound.ca_pem())?;
    tracing::info!(ca = %bundles.ca.display(), bundle = %bundles.merged.display(), "CA certificate and merged bundle written");
    tracing::info!(addr = %bound.local_addr()?, "airlock proxy listening");
    let reporter = bound.reporter();
    tokio::select! {
        _ = bound.serve() => {}
        _ = shutdown() => {
            // The listener is closed (serving stopped with the select); the uses so far go
            // to the spool and, if the central API answers in time, are delivered.
            reporter.close(CLOSE_WITHIN).await;
            tracing::info!("airlock proxy stopped");
        }
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

/// Where the merged bundle starts from: the system trust store.
const SYSTEM_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

pub(super) struct Bundles {
    pub merged: PathBuf,
    pub ca: PathBuf,
}

/// The CA alone (for NODE_EXTRA_CA_CERTS, which adds to Node's roots) and a bundle of the
/// system roots plus the CA (for the variables that replace the trust store).
/// Both paths are absolute, so a child that changes directory still finds them.
pub(super) fn write_bundles(data_dir: &Path, ca_pem: &str) -> anyhow::Result<Bundles> {
    let data_dir = &std::fs::canonicalize(data_dir).with_context(|| format!("cannot find {}", data_dir.display()))?;
    let ca = data_dir.join("ca.pem");
    let system = SYSTEM_BUNDLES.iter().find_map(|p| std::fs::read_to_string(p).ok()).unwrap_or_else(|| {
        tracing::warn!("no system CA bundle found; the merged bundle holds only the Airlock CA");
        String::new()
    });
    let merged = data_dir.join("ca-bundle.pem");
    std::fs::write(&merged, format!("{system}\n{ca_pem}"))
        .with_context(|| format!("cannot write {}", merged.display()))?;
    Ok(Bundles { merged, ca })
}

#[cfg(test)]
mod tests {
    /// Quickstart trial item 5: a key file holding the whole `airlock agent add` output once
    /// gave "builder error"; the message now says what to keep, and never quotes the key.
    #[test]
    fn a_key_file_holding_more_than_a_key_says_what_to_keep() {
        let output = "agent research-agent (agt_1)\nagent key, shown only this once:\n\n    ak_SeCrEt\n";
        let lines = super::read_key(output.as_bytes(), "the agent key file k").unwrap_err().to_string();
        assert!(lines.contains("more than one line") && lines.contains("airlock agent add"), "{lines}");
        let spaced = super::read_key("key: ak_SeCrEt".as_bytes(), "the agent key file k").unwrap_err().to_string();
        assert!(spaced.contains("spaces"), "{spaced}");
        assert!(!lines.contains("SeCrEt") && !spaced.contains("SeCrEt"));
        assert_eq!(super::read_key("  ak_x\n".as_bytes(), "k").unwrap().as_str(), "ak_x");
    }
}
