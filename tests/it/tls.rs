//! The central API over HTTPS: `airlock server --tls-cert --tls-key`, checked by the proxy,
//! the CLI and curl against a CA the test makes (`--server-ca`, `AIRLOCK_SERVER_CA`), the
//! certificate replaced on SIGHUP, and settings that cannot work refused at start.

use std::process::Command;
use std::time::Duration;

use crate::sidecar::{OPENAI_KEY_PATH, Sidecar};
use crate::support::{BIN, Backend, Server, secret_value, until};
use crate::upstream::PemFiles;

const HOSTS: &[&str] = &["localhost", "127.0.0.1"];

fn curl_healthz(url: &str, ca: &std::path::Path) -> bool {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg(format!("{url}/healthz"))
        .output()
        .unwrap();
    out.stdout == b"200"
}

/// `airlock secret get` against the server with `ca` as its `--server-ca` (none: the
/// system's roots only).
fn cli_get(server: &Server, ca: Option<&std::path::Path>) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["secret", "get", OPENAI_KEY_PATH])
        .env("AIRLOCK_ADDR", &server.addr)
        .env("AIRLOCK_TOKEN", &server.admin_key);
    cmd.env_remove("AIRLOCK_SERVER_CA");
    if let Some(ca) = ca {
        cmd.arg("--server-ca").arg(ca);
    }
    cmd.output().unwrap()
}

#[test]
fn the_proxy_and_the_cli_reach_the_central_api_over_https_and_check_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = PemFiles::write(dir.path(), "", HOSTS);
    let sc = Sidecar::start_https(&tls);
    assert!(sc.server.addr.starts_with("https://"), "{}", sc.server.addr);
    let value = secret_value("openai");

    // The proxy minted its token and fetched the value over HTTPS, and injects it.
    let (status, out) = sc.curl(&[
        "-H",
        "Authorization: Bearer {{secret:production/openai/api-key}}",
        "https://api.openai.com/v1/echo",
    ]);
    assert_eq!(status, 200, "{out}");
    let got = sc.requests_to("api.openai.com");
    let auth = got[0].headers.iter().find(|(n, _)| n == "authorization").map(|(_, v)| v.clone());
    assert_eq!(auth, Some(format!("Bearer {value}")), "the upstream got the value");
    assert!(!out.contains(&value), "{out}");

    // The CLI, trusting the test CA, reads the secret; without it, the certificate is refused
    // and nothing is read.
    let ok = cli_get(&sc.server, Some(&tls.ca));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&value));
    let refused = cli_get(&sc.server, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "an unknown issuer was accepted");
    assert!(stderr.contains("cannot reach the Airlock server"), "{stderr}");
    assert!(!String::from_utf8_lossy(&refused.stdout).contains(&value));

    // curl with the CA completes the handshake; plain HTTP on the same port gets no answer.
    assert!(curl_healthz(&sc.server.addr, &tls.ca));
    let plain = sc.server.addr.replace("https://", "http://");
    assert!(reqwest::blocking::get(format!("{plain}/healthz")).is_err(), "plain HTTP was answered");

    // A CA file that holds no certificate is refused with its name, before anything is sent.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = cli_get(&sc.server, Some(&junk));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.pem"), "{}", String::from_utf8_lossy(&out.stderr));

    for log in [sc.server.log(), sc.log()] {
        assert!(!log.contains(&value), "a value in a trace-level log");
    }
}

#[test]
fn sighup_makes_the_server_present_its_new_certificate_and_a_broken_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let first = PemFiles::write(dir.path(), "first-", HOSTS);
    let live = PemFiles { ca: first.ca.clone(), cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let args = ["--tls-cert", live.cert.to_str().unwrap(), "--tls-key", live.key.to_str().unwrap()];
    let mut server = Server::start_https(Backend::Sqlite, &args, &first.ca);
    assert!(curl_healthz(&server.addr, &first.ca));

    // A renewed certificate from another CA, put in place and announced with SIGHUP.
    let second = PemFiles::write(dir.path(), "second-", HOSTS);
    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    let hup = |server: &Server| {
        assert!(Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap().success());
    };
    hup(&server);
    assert!(until(Duration::from_secs(10), || curl_healthz(&server.addr, &second.ca)), "{}", server.log());
    assert!(!curl_healthz(&server.addr, &first.ca), "the old certificate is still served");

    // A half-written renewal (a key that is not the certificate's) is refused on SIGHUP; the
    // certificate in use stays.
    std::fs::copy(&first.key, &live.key).unwrap();
    hup(&server);
    assert!(until(Duration::from_secs(10), || server.log().contains("TLS certificate reload on SIGHUP failed")));
    assert!(curl_healthz(&server.addr, &second.ca), "{}", server.log());
    assert!(server.signal_and_wait("TERM", Duration::from_secs(15)).is_some_and(|s| s.success()));
}

#[test]
fn tls_settings_that_cannot_work_stop_the_server_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(BIN).args(["server", "init", "--data-dir"]).arg(&data).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let good = PemFiles::write(dir.path(), "good-", HOSTS);
    let other = PemFiles::write(dir.path(), "other-", HOSTS);
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();

    let cases: Vec<(Vec<&std::path::Path>, &str)> = vec![
        (vec![&missing, &good.key], "missing.pem"),
        (vec![&junk, &good.key], "junk.pem"),
        (vec![&good.cert, &good.ca], "good-ca.pem"),
        (vec![&good.cert, &other.key], "does not belong to the certificate"),
    ];
    for (files, named) in cases {
        let out = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(files[0])
            .arg("--tls-key")
            .arg(files[1])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{named}: the server started");
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "key material in the message: {stderr}");
    }
    // One of the pair alone is a usage error.
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&good.cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn airlock_ca_server_cert_makes_files_the_server_and_its_clients_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let make = |extra: &[&str]| {
        Command::new(BIN)
            .args(["ca", "server-cert", "--host", "localhost", "--host", "127.0.0.1", "--out-dir"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let made = make(&[]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (ca, cert, key) = (out.join("ca.pem"), out.join("server.pem"), out.join("server-key.pem"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let server = Server::start_https(Backend::Sqlite, &args, &ca);
    assert!(curl_healthz(&server.addr, &ca));
    server.create(OPENAI_KEY_PATH, "sk-made-by-server-cert");
    let got = cli_get(&server, Some(&ca));
    assert!(String::from_utf8_lossy(&got.stdout).contains("sk-made-by-server-cert"));

    // Existing files are kept unless replacing them is asked for.
    let before = std::fs::read(&cert).unwrap();
    let again = make(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(make(&["--if-missing"]).status.success());
    assert_eq!(std::fs::read(&cert).unwrap(), before, "--if-missing changed the certificate");
    assert!(make(&["--force"]).status.success());
    assert_ne!(std::fs::read(&cert).unwrap(), before);
}
