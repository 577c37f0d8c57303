//! The README's first command, as a new user runs it: `airlock dev` in a subprocess, its
//! printed export lines pasted into the environment, and every example agent run through it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::BIN;

const PLACEHOLDER: &str = "{{secret:demo/api-key}}";

struct Dev {
    child: Child,
    env: HashMap<String, String>,
    /// The `airlock run …` command dev prints, its continuation lines joined.
    run_line: String,
    proxy: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dev.log");
        let (server, proxy) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let mut child = Command::new(BIN)
            .args(["--log-level", "trace", "dev", "--server-listen", &server, "--proxy-listen", &proxy])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut env = HashMap::new();
        let mut run_line = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(assignments) = line.strip_prefix("export ") {
                for kv in assignments.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap();
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
            if line.contains(" run --server ") || !run_line.is_empty() {
                run_line.push_str(line.trim_end_matches('\\'));
                if !line.ends_with('\\') {
                    break;
                }
            }
        }
        assert!(env.contains_key("AIRLOCK_TOKEN") && env.contains_key("HTTP_PROXY"), "exports: {env:?}");
        Dev { child, env, run_line, proxy, log, _dir: dir }
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> String {
        let out = Command::new(program).args(args).envs(&self.env).current_dir(cwd).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{program} {args:?}: {text}");
        text
    }

    /// The demo key's value, read as the operator would (admin key from the exports).
    fn demo_value(&self) -> String {
        let out = Command::new(BIN).args(["secret", "get", "demo/api-key"]).envs(&self.env).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn fingerprint(credential: &str) -> String {
    hex::encode(&Sha256::digest(credential.as_bytes())[..6])
}

#[test]
fn airlock_dev_runs_every_example_agent() {
    let dev = Dev::start();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["http_proxy", "https_proxy", "no_proxy", "NODE_EXTRA_CA_CERTS"] {
        assert!(dev.env.contains_key(name), "dev exports no {name}: {:?}", dev.env);
    }
    assert!(dev.env["NODE_EXTRA_CA_CERTS"].starts_with('/') && dev.env["SSL_CERT_FILE"].starts_with('/'));
    let value = dev.demo_value();
    assert!(value.starts_with("sk-demo_"), "{value}");
    let upstream_saw = fingerprint(&format!("Bearer {value}"));

    let requests = dev.run("python3", &["examples/python/requests_proxy.py"], repo);
    assert!(requests.starts_with("200"), "{requests}");
    assert!(requests.contains(&format!("\"received_authorization\": \"Bearer {PLACEHOLDER}\"")), "{requests}");
    assert!(requests.contains(&upstream_saw), "the upstream received the real value: {requests}");
    assert!(requests.contains(&format!("\"received_x_api_key\": \"{PLACEHOLDER}\"")), "inject rule: {requests}");

    let openai = dev.run("python3", &["examples/python/openai_route.py"], repo);
    assert_eq!(openai.trim(), format!("demo upstream saw Authorization: Bearer {PLACEHOLDER}"));

    let node = dev.run("node", &["examples/node/fetch_route.mjs"], repo);
    assert!(node.contains(&upstream_saw) && node.contains(PLACEHOLDER), "{node}");

    if repo.join("examples/node/node_modules/undici").exists() {
        let undici = dev.run("node", &["examples/node/undici_proxy.mjs"], repo);
        assert!(undici.contains(&upstream_saw), "{undici}");
    } else {
        eprintln!("notice: examples/node/node_modules is missing (run npm install there); skipping the undici example");
    }

    let curl = dev.run("bash", &["examples/curl.sh"], repo);
    assert_eq!(curl.matches(&upstream_saw).count(), 1, "{curl}");

    for out in [&requests, &openai, &node, &curl] {
        assert!(!out.contains(&value), "an example printed the value");
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&dev.log).unwrap();
    assert!(!log.contains(&value), "the value reached airlock dev's log");
}

/// Quickstart trial items 1 and 6: the `airlock run` line dev prints works as printed, from
/// another directory and a shell with nothing of dev's exports; and the proxy's metrics are
/// not empty under dev.
#[test]
fn airlock_dev_prints_an_airlock_run_line_that_works_and_serves_metrics() {
    let dev = Dev::start();
    assert!(dev.run_line.contains("--agent-key-file /"), "{}", dev.run_line);
    let value = dev.demo_value();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .args(["-c", &dev.run_line])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout}{}", dev.run_line, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("\"received_authorization\":\"Bearer {PLACEHOLDER}\"")), "{stdout}");
    assert!(stdout.contains(&fingerprint(&format!("Bearer {value}"))), "the upstream got the real value: {stdout}");
    assert!(!stdout.contains(&value));

    let url = format!("http://{}/_airlock/metrics", dev.proxy);
    let metrics =
        String::from_utf8(Command::new("curl").args(["-sS", "--noproxy", "*", &url]).output().unwrap().stdout).unwrap();
    assert!(metrics.contains("airlock_http_requests_total"), "{metrics}");
}

#[test]
fn airlock_dev_on_a_taken_port_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = taken.local_addr().unwrap().to_string();
    let proxy = format!("127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["dev", "--server-listen", &server, "--proxy-listen", &proxy])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {server}")) && stderr.contains("--server-listen"), "{stderr}");
}

/// The policy embedded in `file` as the block scalar under the line ending in `marker`.
fn embedded_policy(file: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.trim_end().ends_with(marker)).skip(1);
    let first = lines.clone().find(|l| !l.trim().is_empty()).expect("a block under the marker");
    let indent = &first[..first.len() - first.trim_start().len()];
    let mut out = String::new();
    for line in lines.by_ref() {
        if !line.trim().is_empty() && !line.starts_with(indent) {
            break;
        }
        out.push_str(line.strip_prefix(indent).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// What a policy says, without where it came from and the one setting the copies leave out
/// on purpose (`agent.allowed_ips`: loopback in the original, any address in a container).
fn meaning(file: &str, text: &str) -> serde_json::Value {
    let policy = airlock::domain::policy::Policy::parse(file, text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut value = serde_json::to_value(&policy).unwrap();
    for key in ["source", "text"] {
        value.as_object_mut().unwrap().remove(key);
    }
    value["agent"].as_object_mut().unwrap().remove("allowed_ips");
    value
}

/// Quickstart trial item 4: the compose file and the Kubernetes ConfigMap carry their own
/// copies of policies/research-agent.toml; they must say what it says.
#[test]
fn the_compose_and_kubernetes_policies_match_the_policy_file() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let original = std::fs::read_to_string(repo.join("policies/research-agent.toml")).unwrap();
    let want = meaning("research-agent.toml", &original);
    assert!(original.contains("upstream = \"https://api.openai.com/v1\""), "the SDKs' paths start after /v1");
    for (file, marker) in [
        ("examples/docker-compose.yml", "content: |"),
        ("examples/kubernetes/10-server.yaml", "research-agent.toml: |"),
    ] {
        let copy = embedded_policy(file, marker);
        assert_eq!(meaning(file, &copy), want, "{file} differs from policies/research-agent.toml");
    }
}
