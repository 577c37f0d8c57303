//! A running sidecar: a central server with the agent's policy, a recording TLS upstream
//! that presents certificates for api.openai.com and api.evil.example, and an
//! `airlock proxy` process pinned to it, logging at trace level.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::support::{BIN, Backend, MARKER, Server, secret_value, until_ready};
use crate::upstream::Upstream;

pub const OPENAI_KEY_PATH: &str = "production/openai/api-key";

pub fn policy(extra: &str) -> String {
    format!(
        r#"
[agent]
name = "research-agent"
token_ttl = "15m"

[egress]
allow = ["api.openai.com", "api.evil.example", "ws.local", "127.0.0.1", "169.254.169.254", "10.0.0.1", "192.168.1.1"]
deny_private_networks = true
per_host_rate = {{ "api.evil.example" = "3/min" }}

[[grant]]
secrets = "production/openai/*"
hosts = ["api.openai.com"]

[[grant]]
secrets = "production/multi/*"
hosts = ["api.openai.com"]
headers = ["authorization", "x-api-key"]
query = true

[[route]]
name = "openai"
upstream = "https://api.openai.com/v1"
{extra}
"#
    )
}

pub struct Sidecar {
    pub server: Server,
    pub upstream: Upstream,
    pub proxy_addr: String,
    pub dir: tempfile::TempDir,
    /// Where api.openai.com is pinned instead of the recording upstream: a port on 127.0.0.1
    /// and the CA its certificate is signed by (`start_against`).
    openai_at: Option<(u16, PathBuf)>,
    /// The central API's address as the proxy is given it, when not the server's own (a
    /// relay in between: `restart_via`).
    server_via: Option<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Sidecar {
    pub fn start() -> Sidecar {
        Sidecar::start_with("", &[])
    }

    /// `extra` is appended to the policy; `extra_args` go to `airlock proxy`.
    pub fn start_with(extra: &str, extra_args: &[&str]) -> Sidecar {
        Sidecar::start_custom(&policy(extra), extra_args)
    }

    /// Starts with api.openai.com pinned to `port` on 127.0.0.1, whose certificate `ca_pem`
    /// signed (a hostile upstream); api.evil.example stays on the recording upstream.
    pub fn start_against(extra: &str, extra_args: &[&str], port: u16, ca_pem: &std::path::Path) -> Sidecar {
        Sidecar::start_pinned(&policy(extra), extra_args, Some((port, ca_pem.to_owned())))
    }

    /// Starts with this exact policy text and api.openai.com pinned to `port` on 127.0.0.1,
    /// whose certificate `ca_pem` signed.
    pub fn start_custom_against(
        policy_text: &str,
        extra_args: &[&str],
        port: u16,
        ca_pem: &std::path::Path,
    ) -> Sidecar {
        Sidecar::start_pinned(policy_text, extra_args, Some((port, ca_pem.to_owned())))
    }

    /// Starts with this exact policy text.
    pub fn start_custom(policy_text: &str, extra_args: &[&str]) -> Sidecar {
        Sidecar::start_pinned(policy_text, extra_args, None)
    }

    /// Starts with the server on `backend` (PostgreSQL: replicas can join it).
    pub fn start_on(backend: Backend) -> Sidecar {
        Sidecar::start_full(backend, &policy(""), &[], None, None)
    }

    /// Starts with the server on `backend` and `extra_args` for `airlock proxy`.
    pub fn start_on_with(backend: Backend, extra_args: &[&str]) -> Sidecar {
        Sidecar::start_full(backend, &policy(""), extra_args, None, None)
    }

    /// Starts with the central API on HTTPS (`tls`'s certificate and key), which the proxy
    /// checks against `tls`'s CA (`--server-ca`).
    pub fn start_https(tls: &crate::upstream::PemFiles) -> Sidecar {
        Sidecar::start_full(Backend::Sqlite, &policy(""), &[], None, Some(tls))
    }

    fn start_pinned(policy_text: &str, extra_args: &[&str], openai_at: Option<(u16, PathBuf)>) -> Sidecar {
        Sidecar::start_full(Backend::Sqlite, policy_text, extra_args, openai_at, None)
    }

    fn start_full(
        backend: Backend,
        policy_text: &str,
        extra_args: &[&str],
        openai_at: Option<(u16, PathBuf)>,
        tls: Option<&crate::upstream::PemFiles>,
    ) -> Sidecar {
        let upstream = Upstream::start_tls(&["api.openai.com", "api.evil.example"]);
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("research.toml"), policy_text).unwrap();
        let mut server_args = vec!["--policies", policies.to_str().unwrap()];
        let server = match tls {
            None => Server::start_with(backend, &server_args),
            Some(tls) => {
                server_args.extend(["--tls-cert", tls.cert.to_str().unwrap(), "--tls-key", tls.key.to_str().unwrap()]);
                Server::start_https(backend, &server_args, &tls.ca)
            }
        };
        server.create(OPENAI_KEY_PATH, &secret_value("openai"));
        let (status, agent) =
            server.admin("POST", "/v1/agents", Some(&json!({ "name": "research-agent" }).to_string()));
        assert_eq!(status, 201, "{agent}");
        std::fs::write(dir.path().join("agent.key"), agent["key"].as_str().unwrap()).unwrap();
        let mut sidecar =
            Sidecar { server, upstream, proxy_addr: String::new(), dir, openai_at, server_via: None, child: None };
        let server_ca: Vec<&str> = tls.map(|t| vec!["--server-ca", t.ca.to_str().unwrap()]).unwrap_or_default();
        sidecar.spawn(&[extra_args, &server_ca].concat());
        sidecar
    }

    /// The agent's policy file, which the server reads at start and on every reload.
    pub fn policy_file(&self) -> PathBuf {
        self.dir.path().join("policies").join("research.toml")
    }

    /// Rewrites the agent's policy to `text` and has the server reload it.
    pub fn reload_policy(&self, text: &str) {
        std::fs::write(self.policy_file(), text).unwrap();
        assert_eq!(self.server.admin("POST", "/v1/policies/reload", None).0, 200);
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("proxy").join("ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for the proxy to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the proxy is running");
        let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        child.wait().unwrap()
    }

    /// Starts the proxy again with the same data dir (CA and spool) on a new port.
    pub fn restart(&mut self) {
        self.spawn(&[]);
    }

    /// Stops the proxy and starts it again talking to the central API at `addr` (a relay
    /// in front of the server), with `extra_args`.
    pub fn restart_via(&mut self, addr: &str, extra_args: &[&str]) {
        self.kill9();
        self.server_via = Some(addr.to_owned());
        self.spawn(extra_args);
    }

    /// Starts the proxy on a fresh port and waits until it is ready; a port taken by another
    /// test between `free_port` and the proxy's bind costs a retry on another one.
    fn spawn(&mut self, extra_args: &[&str]) {
        for _ in 0..3 {
            if self.try_spawn(free_port(), extra_args) {
                return;
            }
        }
        panic!("proxy did not become ready on three ports; log:\n{}", self.log());
    }

    /// Whether the proxy became ready on `port` (a process that did not is gone).
    fn try_spawn(&mut self, port: u16, extra_args: &[&str]) -> bool {
        self.proxy_addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let pin = |host: &str| match &self.openai_at {
            Some((port, _)) if host == "api.openai.com" => format!("{host}=127.0.0.1:{port}"),
            _ => format!("{host}=127.0.0.1:{}", self.upstream.port),
        };
        let upstream_ca = self.openai_at.as_ref().map_or(&self.upstream.ca_pem, |(_, ca)| ca);
        // Callers need no session key unless the test gives one (`airlock proxy` refuses to
        // start with neither).
        let callers: &[&str] =
            if extra_args.contains(&"--session-key-file") { &[] } else { &["--allow-any-local-caller"] };
        let child = Command::new(BIN)
            .args(["--log-level", "trace", "proxy", "--server", self.server_via.as_ref().unwrap_or(&self.server.addr)])
            .args(["--listen", &self.proxy_addr])
            .arg("--agent-key-file")
            .arg(self.dir.path().join("agent.key"))
            .arg("--data-dir")
            .arg(self.dir.path().join("proxy"))
            .arg("--upstream-ca")
            .arg(upstream_ca)
            .args(["--resolve", &pin("api.openai.com"), "--resolve", &pin("api.evil.example")])
            .args(callers)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ready = format!("http://{}/_airlock/readyz", self.proxy_addr);
        self.child = until_ready(child, &reqwest::blocking::Client::new(), &ready);
        self.child.is_some()
    }

    /// curl through the proxy with the Airlock CA; returns (status, headers+body text).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-i",
                "-g",
                "--max-time",
                "20",
                "--proxy",
                &format!("http://{}", self.proxy_addr),
                "--cacert",
            ])
            .arg(self.ca_path())
            .args(["-w", "\n%{http_code} %{http_connect}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, codes) = text.rsplit_once('\n').unwrap_or((&text, "0 0"));
        // A refused CONNECT has no response code of its own, only the CONNECT's.
        let status = codes.split_whitespace().filter_map(|c| c.parse::<u16>().ok()).find(|c| *c != 0).unwrap_or(0);
        (status, format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
    }

    pub fn requests_to(&self, host: &str) -> Vec<crate::upstream::Recorded> {
        self.upstream.requests().into_iter().filter(|r| r.host.starts_with(host)).collect()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let log = self.log();
            assert!(!log.is_empty(), "the proxy wrote no log at trace level");
            if let Some(line) = log.lines().find(|l| l.contains(MARKER)) {
                panic!("a secret value reached the proxy log: {line}");
            }
        }
    }
}

/// Whether a read on a connection the proxy should have closed saw it closed (EOF or reset),
/// rather than time out on a connection left open.
pub fn saw_closed(read: &std::io::Result<usize>) -> bool {
    matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// The access events recorded for the secret every sidecar test injects.
pub fn access_events(sc: &Sidecar) -> Vec<serde_json::Value> {
    let (_, page) = sc.server.admin("GET", "/v1/secrets/production%2Fopenai%2Fapi-key/access-events?limit=1000", None);
    page["events"].as_array().cloned().unwrap_or_default()
}

/// The uses the recorded events stand for (an event may fold identical uses: `count`);
/// refusals, which are in the secret's trail too, are not uses.
pub fn uses(events: &[serde_json::Value]) -> usize {
    events
        .iter()
        .filter(|e| e["detail"]["outcome"] == "injected")
        .map(|e| e["detail"]["count"].as_u64().expect("every access event has a count") as usize)
        .sum()
}
