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
