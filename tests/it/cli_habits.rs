//! The CLI's habits: `--json` on every command that prints data (one document on stdout),
//! `airlock doctor` on a working and a broken setup, `airlock k8s inject`, empty values, and
//! the audit trail's text naming who did what.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{BIN, Backend, Server, until};

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Stdout is exactly one JSON document.
fn one_document(args: &[&str], out: &Output) -> Value {
    let text = stdout_ok(out);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("airlock {}: not one JSON document ({e}):\n{text}", args.join(" ")))
}

#[test]
fn every_command_that_prints_data_prints_one_json_document_with_json() {
    let srv = Server::start(Backend::Sqlite);
    srv.create("production/db/password", &crate::support::secret_value("json"));
    let key = srv.admin_key.clone();
    let args = ["agent", "add", "json-agent", "--description", "for --json", "--json"];
    let added = one_document(&args, &srv.cli(&key, &args));
    assert!(added["key"].as_str().unwrap().starts_with("ak_"), "{added}");
    assert_eq!(added["name"], "json-agent");
    let commands: &[&[&str]] = &[
        &["secret", "ls", "--json"],
        &["secret", "get", "production/db/password", "--json"],
        &["secret", "versions", "production/db/password", "--json"],
        &["agent", "ls", "--json"],
        &["token", "whoami", "--json"],
        &["approval", "ls", "--json"],
        &["audit", "tail", "--json"],
        &["audit", "verify", "--json"],
        &["provider", "ls", "--json"],
        &["provider", "ls", "--types", "--json"],
        &["provider", "health", "--json"],
    ];
    for args in commands {
        let doc = one_document(args, &srv.cli(&key, args));
        assert!(doc.is_object() || doc.is_array(), "airlock {}: {doc}", args.join(" "));
    }
    let agents = one_document(&["agent", "ls"], &srv.cli(&key, &["agent", "ls", "--json"]));
    assert_eq!(agents["agents"][0]["name"], "json-agent", "{agents}");
    let tail = one_document(&["audit", "tail"], &srv.cli(&key, &["audit", "tail", "--json", "--limit", "5"]));
    assert_eq!(tail.as_array().unwrap().len(), 5, "{tail}");
    let versions =
        one_document(&["secret"], &srv.cli(&key, &["secret", "versions", "production/db/password", "--json"]));
    assert_eq!(versions["versions"][0]["state"], "current", "{versions}");

    // policy check, offline: a document for a valid file and for an invalid one (exit 1).
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, crate::sidecar::policy("")).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\nname = 7\n").unwrap();
    let check =
        |file: &std::path::Path| Command::new(BIN).args(["policy", "check", "--json"]).arg(file).output().unwrap();
    let valid = one_document(&["policy", "check"], &check(&good));
    assert_eq!(valid["valid"], true, "{valid}");
    let out = check(&bad);
    assert!(!out.status.success());
    let invalid: Value = serde_json::from_slice(&out.stdout).expect("one JSON document even when invalid");
    assert_eq!(invalid["valid"], false);
    assert_eq!(invalid["errors"][0]["line"], 2, "{invalid}");

    // doctor too: a document even when a check fails (no proxy here: skipped).
    let mut doctor = Command::new(BIN);
    doctor.args(["doctor", "--json"]).env("AIRLOCK_ADDR", &srv.addr).env("AIRLOCK_TOKEN", &key);
    let out = clean_env(&mut doctor).output().unwrap();
    let report = one_document(&["doctor"], &out);
    assert_eq!(report["ok"], true, "{report}");
}

/// Removes the proxy and CA variables a developer's shell may have set.
fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "AIRLOCK_PROXY",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn doctor_passes_on_a_working_sidecar_setup() {
    let sc = crate::sidecar::Sidecar::start();
    let agent_key = std::fs::read_to_string(sc.dir.path().join("agent.key")).unwrap();
    let ca = std::fs::read_to_string(sc.ca_path()).unwrap();
    let bundle = sc.dir.path().join("bundle.pem");
    // Another certificate first: the CA is found anywhere in a bundle.
    let other = rcgen::generate_simple_self_signed(vec!["other.example".to_owned()]).unwrap().cert.pem();
    std::fs::write(&bundle, format!("{other}{ca}")).unwrap();
    let run = || {
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd)
            .args(["doctor", "--proxy", &format!("http://{}", sc.proxy_addr)])
            .env("AIRLOCK_ADDR", &sc.server.addr)
            .env("AIRLOCK_TOKEN", agent_key.trim())
            .env("SSL_CERT_FILE", &bundle)
            .env("REQUESTS_CA_BUNDLE", &bundle)
            .env("CURL_CA_BUNDLE", &bundle)
            .env("NODE_EXTRA_CA_CERTS", sc.ca_path())
            .output()
            .unwrap()
    };
    // The proxy is ready once it holds its token.
    let mut last = None;
    until(Duration::from_secs(15), || {
        let out = run();
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    let text = stdout_ok(last.as_ref().unwrap());
    for check in ["server", "clock", "key", "policy", "proxy", "ca:openssl", "ca:python", "ca:node", "ca:curl"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("✓ {check} "))), "{check} did not pass:\n{text}");
    }
    assert!(text.contains("agent research-agent"), "whose key: {text}");
    assert!(!text.contains(agent_key.trim()), "the key is never printed");
    assert!(!text.contains('✗'), "{text}");

    // The same setup with a bundle that lacks the CA: that variable fails, with the fix.
    std::fs::write(&bundle, other).unwrap();
    let out = run();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✗ ca:openssl") && text.contains("does not hold the Airlock CA"), "{text}");
    assert!(text.contains("fix: export SSL_CERT_FILE="), "{text}");
}

#[test]
fn doctor_fails_with_a_wrong_key_and_with_the_server_down() {
    let mut srv = Server::start(Backend::Sqlite);
    let doctor = |addr: &str, key: &str, json: bool| {
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd).arg("doctor").env("AIRLOCK_ADDR", addr).env("AIRLOCK_TOKEN", key);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let wrong = "ak_0000000000000000000000000000000000000000";
    let out = doctor(&srv.addr, wrong, false);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✓ server") && text.contains("✗ key"), "{text}");
    assert!(text.contains("fix: the key is unknown, revoked or expired"), "{text}");
    assert!(!text.contains(wrong), "the key is never printed: {text}");
    let report: Value = serde_json::from_slice(&doctor(&srv.addr, wrong, true).stdout).unwrap();
    assert_eq!(report["ok"], false);
    let key = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "key").unwrap();
    assert_eq!(key["status"], "fail", "{report}");

    let addr = srv.addr.clone();
    srv.kill9();
    let out = doctor(&addr, &srv.admin_key, false);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✗ server") && text.contains("not reachable"), "{text}");
    assert!(text.contains("fix: start the server"), "{text}");
}

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: airlock
spec:
  replicas: 1
  selector:
    matchLabels:
      app: shop
  template:
    metadata:
      labels:
        app: shop
    spec:
      containers:
        - name: shop
          image: python:3.12-slim
          env:
            - name: NO_PROXY
              value: db.internal
---
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: airlock
spec:
  selector:
    app: shop
  ports:
    - port: 80
";

fn inject(input: &str, args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["k8s", "inject"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    stdout_ok(&child.wait_with_output().unwrap())
}

#[test]
fn k8s_inject_adds_the_native_sidecar_once() {
    let args = ["--image", "registry.example/airlock:1", "--agent-key-secret", "shop-key"];
    let once = inject(APP, &args);
    assert_eq!(inject(&once, &args), once, "injecting twice is injecting once");
    assert!(once.contains("restartPolicy: Always"), "{once}");
    assert!(once.contains("image: registry.example/airlock:1"), "{once}");
    assert!(once.contains("secretName: shop-key"), "{once}");
    assert!(once.contains("/_airlock/readyz"), "{once}");
    assert!(once.contains("db.internal,localhost,127.0.0.1,::1"), "{once}");
    assert!(once.contains("kind: Service"), "{once}");

    let bad = {
        let mut child = Command::new(BIN)
            .args(["k8s", "inject"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"kind: Pod\nspec: {containers: []}\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("metadata.name"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn an_empty_value_is_refused_unless_allowed() {
    let srv = Server::start(Backend::Sqlite);
    let (status, body) = srv.admin("POST", "/v1/secrets", Some(r#"{"path": "a/empty", "value": ""}"#));
    crate::support::assert_error(&(status, body.clone()), 422, "validation_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("allow_empty"), "{body}");
    let (status, _) = srv.admin("GET", "/v1/secrets/a%2Fempty", None);
    assert_eq!(status, 404, "nothing was stored");
    let (status, body) =
        srv.admin("POST", "/v1/secrets", Some(r#"{"path": "a/empty", "value": "", "allow_empty": true}"#));
    assert_eq!(status, 201, "{body}");
    let (status, _) = srv.admin("PUT", "/v1/secrets/a%2Fempty", Some(r#"{"value": ""}"#));
    assert_eq!(status, 422);
    let (status, _) = srv.admin("POST", "/v1/secrets/a%2Fempty/rotate", Some(r#"{"new_value": ""}"#));
    assert_eq!(status, 422);

    // The CLI: an empty stdin (an unset variable piped in) is refused; --allow-empty stores it.
    let put = |extra: &[&str]| {
        let mut child = Command::new(BIN)
            .args(["secret", "put", "b/empty", "--stdin"])
            .args(extra)
            .env("AIRLOCK_ADDR", &srv.addr)
            .env("AIRLOCK_TOKEN", &srv.admin_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = put(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("allow_empty"));
    stdout_ok(&put(&["--allow-empty"]));
    assert_eq!(stdout_ok(&srv.cli(&srv.admin_key, &["secret", "get", "b/empty"])), "\n");
}

#[test]
fn audit_tail_names_the_actor() {
    let srv = Server::start(Backend::Sqlite);
    stdout_ok(&srv.cli(&srv.admin_key, &["agent", "add", "named-agent"]));
    let (_, page) = srv.admin("GET", "/v1/audit?limit=1&type=agent.create", None);
    let record = &page["events"][0];
    let name = record["actor_description"].as_str().expect("the record names its actor");
    let tail = stdout_ok(&srv.cli(&srv.admin_key, &["audit", "tail", "--type", "agent.create"]));
    assert!(tail.contains(&format!(" {name} ok")), "{tail}");
    assert!(!tail.contains(record["actor"].as_str().unwrap()) || name == record["actor"], "{tail}");
}

#[test]
fn doctor_says_when_the_servers_certificate_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let made =
        Command::new(BIN).args(["ca", "server-cert", "--host", "127.0.0.1", "--out-dir"]).arg(&out).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (ca, cert, key) = (out.join("ca.pem"), out.join("server.pem"), out.join("server-key.pem"));
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let srv = Server::start_https(Backend::Sqlite, &args, &ca);
    let doctor = |server_ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd).arg("doctor").env("AIRLOCK_ADDR", &srv.addr).env("AIRLOCK_TOKEN", &srv.admin_key);
        cmd.env_remove("AIRLOCK_SERVER_CA");
        if let Some(ca) = server_ca {
            cmd.env("AIRLOCK_SERVER_CA", ca);
        }
        cmd.output().unwrap()
    };
    let untrusted = doctor(None);
    assert!(!untrusted.status.success());
    let text = String::from_utf8_lossy(&untrusted.stdout);
    assert!(text.contains("✗ server") && text.contains("TLS certificate not trusted"), "{text}");
    assert!(text.contains("fix: give the CA of the server's certificate: export AIRLOCK_SERVER_CA="), "{text}");
    let trusted = doctor(Some(&ca));
    let text = stdout_ok(&trusted);
    assert!(text.contains("✓ server") && text.contains("TLS certificate trusted"), "{text}");
}
