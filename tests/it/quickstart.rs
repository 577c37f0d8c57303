//! What the quickstart trial tripped on (issue 21): the start command `server init` prints,
//! one server per SQLite data dir, exact lines in config errors, the standalone proxy's
//! merged CA bundle.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Backend, Server};

#[test]
fn server_init_prints_a_start_command_with_policies() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["server", "init", "--data-dir"]).arg(dir.path().join("data")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.lines().find(|l| l.starts_with("Start the server:")).expect("a start line");
    assert!(start.contains("airlock server --data-dir") && start.contains("--policies "), "{start}");
}

#[test]
fn a_second_server_on_the_same_sqlite_data_dir_is_refused() {
    let srv = Server::start(Backend::Sqlite);
    let mut second = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(srv.data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second server started on the same SQLite data dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another airlock server already serves the SQLite database"), "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    // The first one still serves.
    assert_eq!(srv.admin("GET", "/v1/secrets", None).0, 200);
}

#[test]
fn server_config_errors_name_the_exact_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"127.0.0.1:0\"\n\nnot_a_setting = 1\n", 3),
        ("# settings\nrate_limit = 5\n", 2),
        ("listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n[policies]\n", 3),
    ];
    for (text, line) in cases {
        let config = dir.path().join("server.toml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&format!("server.toml:{line}: ")), "{text:?} → {stderr}");
    }
}

#[test]
fn a_standalone_proxy_writes_the_merged_bundle_beside_its_ca() {
    let sc = crate::sidecar::Sidecar::start();
    let data = sc.dir.path().join("proxy");
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let merged = std::fs::read_to_string(data.join("ca-bundle.pem")).unwrap();
    assert!(merged.trim_end().ends_with(ca.trim_end()), "the bundle ends with the proxy's CA");
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert!(merged.matches("BEGIN CERTIFICATE").count() > 1, "the system roots are in the bundle");
    }
}
