//! The operator CLI end to end against a real server, configured by AIRLOCK_ADDR/AIRLOCK_TOKEN.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{BIN, Backend, Server, secret_value};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn secret_commands_cover_the_lifecycle() {
    let srv = Server::start(Backend::Sqlite);
    let key = srv.admin_key.clone();
    let (v1, v2) = (secret_value("cli1"), secret_value("cli2"));

    // The value comes in on stdin, so it never sits in shell history or `ps`.
    let mut put = Command::new(BIN)
        .args(["secret", "put", "production/github/token", "--stdin", "--tag", "team=platform"])
        .env("AIRLOCK_ADDR", &srv.addr)
        .env("AIRLOCK_TOKEN", &key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin.take().unwrap().write_all(format!("{v1}\n").as_bytes()).unwrap();
    let said = ok(put.wait_with_output().unwrap());
    assert!(said.contains("version 1"), "{said}");

    assert_eq!(ok(srv.cli(&key, &["secret", "get", "production/github/token"])), format!("{v1}\n"));
    let said = ok(srv.cli(&key, &["secret", "put", "production/github/token", &v2]));
    assert!(said.contains("version 2"), "{said}");
    let listing = ok(srv.cli(&key, &["secret", "ls", "production"]));
    assert!(listing.contains("production/github/token") && !listing.contains(&v2), "{listing}");
    let said =
        ok(srv.cli(&key, &["secret", "rotate", "production/github/token", &secret_value("cli3"), "--grace", "60"]));
    assert!(said.contains('2') && said.contains('3'), "{said}");
    assert_eq!(ok(srv.cli(&key, &["secret", "get", "production/github/token", "--version", "2"])), format!("{v2}\n"));
    let versions = ok(srv.cli(&key, &["secret", "versions", "production/github/token"]));
    assert!(versions.contains("grace") && versions.contains("current"), "{versions}");
    ok(srv.cli(&key, &["secret", "rm", "production/github/token"]));
    let missing = srv.cli(&key, &["secret", "get", "production/github/token"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    ok(srv.cli(&key, &["secret", "undelete", "production/github/token"]));
    let tail = ok(srv.cli(&key, &["audit", "tail", "--limit", "50"]));
    for kind in ["secret.create", "secret.update", "secret.rotate", "secret.delete", "secret.undelete"] {
        assert!(tail.contains(kind), "{kind} missing from:\n{tail}");
    }
    assert!(!tail.contains("SeCrEt"));
}

#[test]
fn cli_without_a_token_says_what_to_set() {
    let out = Command::new(BIN).args(["secret", "ls"]).env_remove("AIRLOCK_TOKEN").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AIRLOCK_TOKEN"));
}

/// `airlock ca export` gives an operator the certificate agents must trust: the one a proxy
/// on that data dir serves, or, before any proxy ran, a CA the proxy will then use.
#[test]
fn ca_export_prints_the_ca_the_proxy_serves_and_can_make_it_before_the_first_start() {
    let sc = crate::sidecar::Sidecar::start();
    let served = reqwest::blocking::get(format!("http://{}/_airlock/ca.pem", sc.proxy_addr)).unwrap().text().unwrap();
    let data_dir = sc.dir.path().join("proxy");
    let exported = ok(Command::new(BIN).args(["ca", "export", "--data-dir"]).arg(&data_dir).output().unwrap());
    assert!(exported.starts_with("-----BEGIN CERTIFICATE-----"), "{exported}");
    assert_eq!(exported, served, "the exported CA is the one the running proxy serves");

    // A fresh data dir: the CA is made (key 0600), written with --out, and kept.
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().join("proxy");
    let out = fresh.path().join("agent-ca.pem");
    ok(Command::new(BIN).args(["ca", "export", "--data-dir"]).arg(&dir).arg("--out").arg(&out).output().unwrap());
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let again = ok(Command::new(BIN).args(["ca", "export", "--data-dir"]).arg(&dir).output().unwrap());
    assert_eq!(again, first, "a second export gives the same CA");

    // A key that does not belong to the certificate: a clear error, and nothing replaced.
    std::fs::write(dir.join("ca.key"), "not a key").unwrap();
    let bad = Command::new(BIN).args(["ca", "export", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("ca.key") && err.contains("not a usable private key"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), first, "the certificate was left as it was");
}

#[test]
fn agent_add_out_writes_only_the_key_0600_and_rm_takes_a_name() {
    let srv = Server::start(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("research.key");
    let out = ok(srv.cli(&srv.admin_key, &["agent", "add", "research-agent", "--out", file.to_str().unwrap()]));
    let key = std::fs::read_to_string(&file).unwrap();
    let key = key.trim_end();
    assert!(key.starts_with("ak_"), "the file holds the key alone: {key:?}");
    assert!(!out.contains(key), "the key was printed too: {out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(srv.call("GET", "/v1/tokens/self", key, None).0, 200, "the written key works");

    // A file in the way is refused before an agent is made.
    let again = srv.cli(&srv.admin_key, &["agent", "add", "other-agent", "--out", file.to_str().unwrap()]);
    assert!(!again.status.success());
    let (_, agents) = srv.admin("GET", "/v1/agents", None);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1, "{agents}");

    // rm by name; an unknown name says so and deletes nothing.
    let missing = srv.cli(&srv.admin_key, &["agent", "rm", "no-such-agent"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no agent named 'no-such-agent'"));
    ok(srv.cli(&srv.admin_key, &["agent", "rm", "research-agent"]));
    assert_eq!(srv.call("GET", "/v1/tokens/self", key, None).0, 401, "the key is revoked");
}
