//! `airlock run [proxy flags] -- CMD ARGS…`: an in-process proxy on a free port with a fresh
//! session key, and CMD started with the proxy and trust-store variables set (like
//! `op run` / `doppler run`). The agent key and the central API's address are removed from
//! CMD's environment; signals are forwarded; the exit code is CMD's.
//!
//! CMD runs as the same user, so the process is made non-dumpable before the key is read
//! (CMD cannot read this process's environment or memory), and a warning names what it
//! can still reach: a key file its user may read, or everything when it runs as root.

use std::process::ExitStatus;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

use super::proxy::{CLOSE_WITHIN, KeySource, ProxyArgs, protect_process};

#[derive(Args, Debug)]
pub struct RunCommand {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// The command to run, after `--`
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Variables CMD must not see: they would hand it the agent key or the central API.
const WITHHELD: &[&str] = &["AIRLOCK_AGENT_KEY", "AIRLOCK_TOKEN", "AIRLOCK_ADDR"];

pub async fn run(cmd: RunCommand) -> anyhow::Result<std::process::ExitCode> {
    protect_process()?;
    let agent_key = cmd.proxy.agent_key()?;
    for warning in warnings(&agent_key.source) {
        eprintln!("warning: {warning}");
    }
    let session = Zeroizing::new(crate::server::auth::new_secret("sk_airlock"));
    let callers = crate::proxy::Callers::SessionKey(session.clone());
    let config = cmd.proxy.config("127.0.0.1:0".parse()?, agent_key.key, callers)?;
    let data_dir = config.data_dir.clone();
    let bound = crate::proxy::bind(config, None, crate::proxy::Startup::FailFast).await?;
    let addr = bound.local_addr()?;
    let bundles = super::proxy::write_bundles(&data_dir, bound.ca_pem())?;
    let routes: Vec<String> = bound.route_names();
    let reporter = bound.reporter();
    tokio::spawn(bound.serve());
    tracing::info!(%addr, "airlock proxy for the command is listening");

    let proxy_url = format!("http://airlock:{}@{addr}", session.as_str());
    let mut child = tokio::process::Command::new(&cmd.command[0]);
    child.args(&cmd.command[1..]);
    for name in WITHHELD {
        child.env_remove(name);
    }
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"] {
        child.env(name, &proxy_url);
    }
    child.env("NO_PROXY", "localhost,127.0.0.1,::1").env("no_proxy", "localhost,127.0.0.1,::1");
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"] {
        child.env(name, &bundles.merged);
    }
    child.env("NODE_EXTRA_CA_CERTS", &bundles.ca);
    if agent_key.source == KeySource::Stdin {
        // Standard input was read to its end for the key; a regular file given as standard
        // input could be rewound by CMD, so CMD gets none.
        child.stdin(std::process::Stdio::null());
    }
    for route in &routes {
        let var = route.to_ascii_uppercase().replace('-', "_");
        child.env(format!("{var}_BASE_URL"), format!("http://{addr}/r/{route}"));
        child.env(format!("{var}_API_KEY"), session.as_str());
    }
    let mut child = child.spawn().with_context(|| format!("cannot start '{}'", cmd.command[0]))?;
    let status = wait_forwarding_signals(&mut child).await?;
    // However short the command was, its uses are recorded: in the spool at least, and
    // delivered unless the central API does not answer in time.
    reporter.close(CLOSE_WITHIN).await;
    Ok(exit_code(status))
}

/// What CMD can reach that would give it the agent key: one line each.
fn warnings(source: &KeySource) -> Vec<String> {
    let mut out = Vec::new();
    if let KeySource::File(path) = source {
        // access() checks the real user without capabilities: CMD's view of the file.
        if rustix::fs::access(path, rustix::fs::Access::READ_OK).is_ok() {
            out.push(format!(
                "the agent key file {} can be read by the command airlock run starts (same user), so a \
                 prompt-injected command can read the key and mint its own tokens; keep the key where the \
                 command's user cannot read it and pass it with --agent-key-file - or --agent-key-fd N, or use the \
                 sidecar deployment (README: Threat model)",
                path.display()
            ));
        }
    }
    if rustix::process::geteuid().is_root() {
        out.push(
            "airlock run is running as root, so the command starts as root and can read the agent key from \
             airlock's memory or any file; run it as an unprivileged user or use the sidecar deployment \
             (README: Threat model)"
                .to_owned(),
        );
    }
    out
}

async fn wait_forwarding_signals(child: &mut tokio::process::Child) -> anyhow::Result<ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) else {
        bail!("the command exited before it could be watched");
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let forward = tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = term.recv() => rustix::process::Signal::TERM,
            _ = int.recv() => rustix::process::Signal::INT,
            _ = hup.recv() => rustix::process::Signal::HUP,
        };
        tracing::debug!(signal = ?forward, "forwarding signal to the command");
        let _ = rustix::process::kill_process(pid, forward);
    }
}

fn exit_code(status: ExitStatus) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
