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
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(assignments) = line.strip_prefix("export ") {
                for kv in assignments.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap();
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
            if line.starts_with("curl ") {
                break;
            }
        }
        assert!(env.contains_key("AIRLOCK_TOKEN") && env.contains_key("HTTP_PROXY"), "exports: {env:?}");
        Dev { child, env, log, _dir: dir }
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
