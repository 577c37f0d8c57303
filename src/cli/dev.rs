//! `airlock dev`: the two-minute quickstart. One command initialises `./.airlock/` (SQLite),
//! runs the central API, a proxy for a demo agent with the example policies, and an offline
//! demo upstream pinned as `demo.airlock.local`, then prints what to paste. Ctrl-C stops all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::server::{RunArgs, StorageArgs, initialise, state_from};
use crate::api::agents::{AgentCreated, CreateAgent};
use crate::api::secrets::{CreateSecret, SecretCreated};
use crate::client::Client;
use crate::domain::{SecretPath, SecretValue};

const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    ("research-agent.toml", include_str!("../../policies/research-agent.toml")),
    ("payments-agent.toml", include_str!("../../policies/payments-agent.toml")),
    ("demo-agent.toml", DEMO_POLICY),
];

/// The demo agent: one secret, bound to the demo upstream, reachable by route and by proxy.
const DEMO_POLICY: &str = r#"# The demo agent of `airlock dev`: its one secret may only go to demo.airlock.local.
[agent]
name = "demo-agent"
token_ttl = "15m"

[egress]
allow = ["demo.airlock.local"]

[[grant]]
secrets = "demo/*"
hosts = ["demo.airlock.local"]

# Route mode: http://127.0.0.1:7879/r/demo/... goes to the demo upstream. It speaks plain
# http on this machine only, which is why the route names http:// on purpose.
[[route]]
name = "demo"
upstream = "http://demo.airlock.local"

# Proxy mode (HTTP_PROXY) works too: every request to the demo host also gets the key as
# X-Api-Key, without the agent naming it.
[[inject]]
host = "demo.airlock.local"
header = "x-api-key"
value = "{{secret:demo/api-key}}"
"#;

#[derive(Args, Debug)]
pub struct DevCommand {
    /// Where everything lives
    #[arg(long, default_value = ".airlock")]
    dir: PathBuf,
    /// Central API address
    #[arg(long, default_value = "127.0.0.1:7878")]
    server_listen: SocketAddr,
    /// Proxy address
    #[arg(long, default_value = "127.0.0.1:7879")]
    proxy_listen: SocketAddr,
}

pub async fn run(cmd: DevCommand) -> anyhow::Result<()> {
    let dir = &cmd.dir;
    let admin_key = admin_key(dir).await?;
    let policies = write_policies(dir)?;
    let server_url = format!("http://{}", cmd.server_listen);
    port_free(cmd.server_listen, "--server-listen", &server_url).await?;
    port_free(cmd.proxy_listen, "--proxy-listen", &format!("http://{}/_airlock", cmd.proxy_listen)).await?;
    let state = state_from(RunArgs::dev(dir.clone(), cmd.server_listen, policies)).await?;
    // One metrics registry per process: the proxy's /_airlock/metrics shows it too.
    let metrics = state.metrics.clone();
    let server = tokio::spawn(crate::server::serve(state));
    wait_healthy(&server_url).await?;
    let admin = Client::new(&server_url, &admin_key)?;
    let agent_key = demo_agent(&admin, dir).await?;
    let upstream = demo_upstream().await?;
    let proxy = start_proxy(&cmd, &server_url, agent_key, upstream, metrics).await?;
    banner(&cmd, &admin_key, &proxy, upstream);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
        r = server => r??,
    }
    println!("\nairlock dev stopped.");
    Ok(())
}

async fn terminated() {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        term.recv().await;
    }
}

/// The admin key: made on first run and kept (0600) so later runs can print it again.
async fn admin_key(dir: &Path) -> anyhow::Result<Zeroizing<String>> {
    let file = dir.join("admin.key");
    if let Ok(key) = std::fs::read_to_string(&file) {
        return Ok(Zeroizing::new(key.trim().to_owned()));
    }
    let key = initialise(&StorageArgs { data_dir: Some(dir.to_path_buf()), database_url: None }).await?;
    write_private(&file, &key)?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The example policies, written on first run; the user's edits are kept after that.
fn write_policies(dir: &Path) -> anyhow::Result<PathBuf> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    for (name, text) in EXAMPLE_POLICIES {
        let path = policies.join(name);
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(policies)
}

/// Fails, saying who holds it, when `addr` is taken: another Airlock (an earlier `airlock
/// dev` still running, whose keys this one's would not match) or another program.
async fn port_free(addr: SocketAddr, flag: &str, probe: &str) -> anyhow::Result<()> {
    let Err(e) = std::net::TcpListener::bind(addr) else { return Ok(()) };
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build()?;
    let airlock = match http.get(format!("{probe}/healthz")).send().await {
        Ok(resp) => resp.text().await.is_ok_and(|t| t.replace(' ', "").contains(r#""status":"ok""#)),
        Err(_) => false,
    };
    if airlock {
        anyhow::bail!(
            "{addr} is taken by another Airlock (an earlier `airlock dev` or `airlock server` still running?): stop \
             it, or start this one on other ports with {flag} ADDR"
        );
    }
    anyhow::bail!(
        "cannot listen on {addr} ({e}): another program uses it; stop it, or pick another address with {flag} ADDR"
    )
}

async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("the central API did not come up at {url}")
}

/// The demo secret and agent, created once.
async fn demo_agent(admin: &Client, dir: &Path) -> anyhow::Result<Zeroizing<String>> {
    let file = dir.join("demo-agent.key");
    if let Ok(key) = std::fs::read_to_string(&file) {
        return Ok(Zeroizing::new(key.trim().to_owned()));
    }
    let value = Zeroizing::new(crate::server::auth::new_secret("sk-demo"));
    let secret = CreateSecret {
        path: SecretPath::parse("demo/api-key")?,
        value: Some(SecretValue::new(value.to_string())),
        managed_mode: None,
        external_ref: None,
        provider_version_ref: None,
        provider_config_id: None,
        tier: None,
        description: Some("airlock dev demo key".into()),
        tags: None,
        allowed_hosts: None,
        owner: None,
        expires_at: None,
        not_before: None,
        allow_empty: false,
    };
    admin.call::<_, SecretCreated>(reqwest::Method::POST, "/v1/secrets", &secret).await?;
    let body = CreateAgent { name: "demo-agent".into(), description: None };
    let agent: AgentCreated = admin.call(reqwest::Method::POST, "/v1/agents", &body).await?;
    let key = Zeroizing::new(agent.key.expose().to_owned());
    write_private(&file, &key)?;
    Ok(key)
}

/// An offline stand-in for an API: echoes what it received (the proxy redacts the value on
/// the way back) and answers `/v1/chat/completions` in OpenAI's shape.
async fn demo_upstream() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                service_fn(|req: Request<Incoming>| async move { Ok::<_, std::convert::Infallible>(echo(req).await) });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    let _ = body.collect().await;
    let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (auth, api_key) = (header("authorization"), header("x-api-key"));
    let fingerprint = hex::encode(&Sha256::digest(auth.as_bytes())[..6]);
    tracing::info!(path = %head.uri.path(), credential_len = auth.len(), credential_sha256 = %fingerprint, "demo upstream received a request");
    let body: Value = if head.uri.path().ends_with("/chat/completions") {
        json!({
            "id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": "airlock-demo",
            "choices": [{ "index": 0, "finish_reason": "stop",
                "message": { "role": "assistant", "content": format!("demo upstream saw Authorization: {auth}") } }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
        })
    } else {
        json!({
            "upstream": "demo.airlock.local",
            "path": head.uri.path(),
            "received_authorization": auth,
            "received_length": auth.len(),
            "received_sha256_prefix": fingerprint,
            "received_x_api_key": api_key,
        })
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    resp
}

struct DevProxy {
    addr: SocketAddr,
    ca: PathBuf,
}

async fn start_proxy(
    cmd: &DevCommand,
    server: &str,
    agent_key: Zeroizing<String>,
    upstream: SocketAddr,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<DevProxy> {
    let data_dir = cmd.dir.join("proxy");
    let config = crate::proxy::ProxyConfig {
        servers: vec![server.to_owned()],
        agent_key,
        listen: cmd.proxy_listen,
        data_dir: data_dir.clone(),
        // Any local caller, on loopback (`bind` refuses another address): the quickstart's
        // agent key and admin key sit in ./.airlock, readable by every process of this user,
        // so a session key would keep none of them out; and the examples run as pasted.
        callers: crate::proxy::Callers::AnyLocal,
        upstream_ca: None,
        pins: vec![crate::proxy::egress::Pin {
            host: "demo.airlock.local".into(),
            ip: upstream.ip(),
            port: Some(upstream.port()),
        }],
        value_ttl: crate::proxy::central::DEFAULT_VALUE_TTL,
        approval_denied_cooldown: crate::proxy::central::DEFAULT_DENIAL_COOLDOWN,
        timeouts: crate::proxy::Timeouts::default(),
        spool_max_bytes: crate::proxy::report::DEFAULT_SPOOL_MAX_BYTES,
    };
    let bound = crate::proxy::bind(config, metrics, crate::proxy::Startup::FailFast).await?;
    let addr = bound.local_addr()?;
    let bundles = super::proxy::write_bundles(&data_dir, bound.ca_pem())?;
    tokio::spawn(bound.serve());
    Ok(DevProxy { addr, ca: bundles.merged })
}

fn banner(cmd: &DevCommand, admin_key: &str, proxy: &DevProxy, upstream: SocketAddr) {
    let ca = std::fs::canonicalize(&proxy.ca).unwrap_or_else(|_| proxy.ca.clone());
    let ca_only = ca.with_file_name("ca.pem");
    let key_file = cmd.dir.join("demo-agent.key");
    let key_file = std::fs::canonicalize(&key_file).unwrap_or(key_file);
    let p = proxy.addr;
    println!(
        r#"
Airlock is running (Ctrl-C stops everything).

  central API   http://{server}   (data in {dir})
  proxy         http://{p}   (demo agent: demo-agent; any local process may use it)
  admin key     {admin_key}

Paste into a shell:

export AIRLOCK_ADDR=http://{server}
export AIRLOCK_TOKEN={admin_key}
export AIRLOCK_PROXY=http://{p}
export HTTP_PROXY=http://{p} HTTPS_PROXY=http://{p} NO_PROXY=localhost,127.0.0.1
export http_proxy=http://{p} https_proxy=http://{p} no_proxy=localhost,127.0.0.1
export REQUESTS_CA_BUNDLE={ca} SSL_CERT_FILE={ca} CURL_CA_BUNDLE={ca} NODE_EXTRA_CA_CERTS={ca_only}

First request: the proxy puts the real key in, the demo upstream echoes it, and the proxy
redacts it on the way back, so you see the placeholder and how long the real value was:

curl -s http://{p}/r/demo/echo -H 'Authorization: Bearer {{{{secret:demo/api-key}}}}'

Or give one command a proxy of its own, as `airlock run` does for an agent (it warns that the
command could read the demo key file: fine for the demo, not for a real agent):

{run}
"#,
        server = cmd.server_listen,
        dir = cmd.dir.display(),
        ca = ca.display(),
        ca_only = ca_only.display(),
        run = run_line(cmd, &key_file, upstream),
    );
}

/// An `airlock run` line that works as printed, from any directory: the demo agent's key
/// file by its absolute path, and the demo host pinned to the demo upstream.
fn run_line(cmd: &DevCommand, key_file: &Path, upstream: SocketAddr) -> String {
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.is_absolute())
        .map_or_else(|| "airlock".into(), |p| p.display().to_string());
    format!(
        "{exe} run --server http://{server} --agent-key-file {key} --data-dir {data} \\\n  \
         --resolve demo.airlock.local={upstream} -- \\\n  \
         sh -c 'curl -s \"$DEMO_BASE_URL/echo\" -H \"x-api-key: $DEMO_API_KEY\" -H \"Authorization: Bearer {{{{secret:demo/api-key}}}}\"'",
        server = cmd.server_listen,
        key = key_file.display(),
        data = key_file.with_file_name("run").display(),
    )
}
