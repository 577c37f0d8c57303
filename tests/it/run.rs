//! `airlock run -- CMD`: an in-process proxy, the trust-store variables, the agent key kept
//! from the command, signals forwarded and the exit code passed through.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::{BIN, secret_value};

fn run_cmd(sc: &Sidecar, script: &str) -> Command {
    let mut cmd = Command::new(BIN);
    let pin = format!("api.openai.com=127.0.0.1:{}", sc.upstream.port);
    cmd.args(["run", "--server", &sc.server.addr, "--resolve", &pin])
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .arg("--data-dir")
        .arg(sc.dir.path().join("run"))
        .arg("--upstream-ca")
        .arg(&sc.upstream.ca_pem)
        .args(["--", "python3", "-c", script])
        .env("AIRLOCK_AGENT_KEY", "ak_should_not_leak")
        .env("AIRLOCK_LOG", "warn");
    cmd
}

#[test]
fn run_injects_over_https_hides_the_agent_key_and_returns_the_exit_code() {
    let sc = Sidecar::start();
    let script = r#"
import os, sys, requests
r = requests.get("https://api.openai.com/v1/echo", headers={"Authorization": "Bearer {{secret:production/openai/api-key}}"})
print(r.status_code, r.headers.get("x-echo-authorization"))
print("agent key visible:", any(k in os.environ for k in ("AIRLOCK_AGENT_KEY", "AIRLOCK_TOKEN", "AIRLOCK_ADDR")))
print("openai base:", os.environ.get("OPENAI_BASE_URL", "")[:17])
sys.exit(7)
"#;
    let out = run_cmd(&sc, script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("200 Bearer {{secret:production/openai/api-key}}"), "{stdout}");
    assert!(stdout.contains("agent key visible: False"), "{stdout}");
    assert!(stdout.contains("openai base: http://127.0.0.1:"), "{stdout}");
    assert!(!stdout.contains(&secret_value("openai")));
    let got = sc.requests_to("api.openai.com");
    assert_eq!(
        got.last().unwrap().header("authorization"),
        Some(format!("Bearer {}", secret_value("openai")).as_str())
    );
}

#[test]
fn sigterm_to_airlock_run_reaches_the_command() {
    let sc = Sidecar::start();
    let script = r#"
import signal, sys, time
def stop(*_):
    print("child got SIGTERM", flush=True)
    sys.exit(42)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(30)
"#;
    let mut child = run_cmd(&sc, script).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(lines.next().unwrap().unwrap(), "child got SIGTERM");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}
