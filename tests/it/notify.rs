//! Approval webhooks (`--approval-webhook`): a receiver on 127.0.0.1 gets each new approval
//! request, signed so it can check it; a failing receiver is retried, a dead one audited.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::agents::{add_agent, mint, policies_dir};
use crate::support::{Backend, MARKER, Server, until};

const PAYMENTS: &str = r#"
[agent]
name = "payments-agent"
token_ttl = "5m"

[egress]
allow = ["api.stripe.com"]

[[grant]]
secrets = "production/stripe/*"
hosts = ["api.stripe.com"]
approval = true
"#;

/// The signing key; it carries the marker, so the fixture fails if it reaches the log.
fn key() -> String {
    format!("whk-{MARKER}-0123456789abcdef")
}

/// One POST as the receiver saw it.
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A receiver on 127.0.0.1 that answers each POST with the next of `statuses` (then 200).
/// Returns its URL, with the marker in its path as a webhook's credential would be.
fn receiver(statuses: &[u16]) -> (String, Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/T0-{MARKER}-x", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    let mut statuses = std::collections::VecDeque::from(statuses.to_vec());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("POST /hooks/"), "{line}");
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((name, value)) = line.trim_end().split_once(':') else { break };
                headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
            }
            let len: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = statuses.pop_front().unwrap_or(200);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx.send(Delivery { headers, body }).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn server(url: &str) -> (Server, tempfile::TempDir) {
    server_with(url, &[])
}

fn server_with(url: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, format!("{}\n", key())).unwrap();
    let args = [
        "--policies",
        dir.path().to_str().unwrap(),
        "--approval-webhook",
        url,
        "--approval-webhook-secret-file",
        key_file.to_str().unwrap(),
    ];
    (Server::start_with(Backend::Sqlite, &[&args[..], extra].concat()), dir)
}

fn ask(srv: &Server, key: &str, ttl: u64) -> Value {
    let (status, body) = mint(srv, key, json!({ "scope": "secrets:read:production/stripe/*", "ttl_seconds": ttl }));
    assert_eq!(status, 202, "{body}");
    body
}

/// Whether the signature header verifies with the key, as a receiver checks it.
fn signature_ok(delivery: &Delivery) -> bool {
    let header = &delivery.headers["x-airlock-signature"];
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t.parse().unwrap()) < 60, "{header}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key().as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&delivery.body);
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

fn verify(delivery: &Delivery) -> Value {
    assert!(signature_ok(delivery), "the signature does not verify with the key");
    serde_json::from_slice(&delivery.body).unwrap()
}

#[test]
fn a_new_approval_request_is_posted_signed_and_a_repeat_is_not() {
    let (url, rx) = receiver(&[]);
    let (srv, _dir) = server_with(&url, &["--public-url", "https://airlock.example.test/"]);
    let (_, agent) = add_agent(&srv, "payments-agent");
    let pending = ask(&srv, &agent, 60);
    let id = pending["approval_request_id"].as_str().unwrap();
    assert_eq!(pending["approve_url"], format!("https://airlock.example.test/console/approvals/{id}"));
    let message = pending["message"].as_str().unwrap();
    assert!(message.contains("1 approval webhook(s) will be notified"), "{message}");

    let delivery = rx.recv_timeout(Duration::from_secs(10)).expect("the receiver got the POST");
    assert_eq!(delivery.headers["content-type"], "application/json");
    let body = verify(&delivery);
    assert_eq!(body["approval_request_id"], pending["approval_request_id"], "{body}");
    assert_eq!(body["agent"], "payments-agent");
    assert_eq!(body["grant"], json!(["production/stripe/*"]));
    assert_eq!(body["hosts"], json!(["api.stripe.com"]));
    assert_eq!(body["ttl_seconds"], 60);
    assert_eq!(body["approve_url"], pending["approve_url"]);
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("payments-agent") && text.contains(pending["approval_request_id"].as_str().unwrap()));

    // A body altered in transit no longer verifies.
    let mut forged = Delivery { headers: delivery.headers.clone(), body: delivery.body.clone() };
    forged.body[1] ^= 1;
    assert!(!signature_ok(&forged));

    // The same request again is the pending one: nobody is told twice.
    let again = ask(&srv, &agent, 60);
    assert_eq!(again["approval_request_id"], pending["approval_request_id"]);
    assert!(!again["message"].as_str().unwrap().contains("webhook"), "{again}");
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "a repeated request was announced again");
}

#[test]
fn a_receiver_that_fails_twice_gets_it_on_the_third_try() {
    let (url, rx) = receiver(&[500, 500]);
    let (srv, _dir) = server(&url);
    let (_, agent) = add_agent(&srv, "payments-agent");
    let id = ask(&srv, &agent, 60)["approval_request_id"].clone();
    for _ in 0..3 {
        let delivery = rx.recv_timeout(Duration::from_secs(10)).expect("another try");
        let body = verify(&delivery);
        assert_eq!(body["approval_request_id"], id);
        // Without --public-url the link is the path alone: never a host the requester's
        // `Host` header named.
        assert_eq!(body["approve_url"], format!("/console/approvals/{}", id.as_str().unwrap()));
    }
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "tried again after a 200");
    assert!(notify_failures(&srv).is_empty());
}

fn notify_failures(srv: &Server) -> Vec<Value> {
    let (status, audit) = srv.admin("GET", "/v1/audit?limit=500", None);
    assert_eq!(status, 200, "{audit}");
    audit["events"].as_array().unwrap().iter().filter(|e| e["type"] == "approval.notify_failed").cloned().collect()
}

#[test]
fn a_dead_receiver_is_audited_by_host_after_the_last_try() {
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks/T0-{MARKER}-x", listener.local_addr().unwrap())
    };
    let (srv, _dir) = server(&url);
    let (_, agent) = add_agent(&srv, "payments-agent");
    let id = ask(&srv, &agent, 60)["approval_request_id"].clone();
    assert!(until(Duration::from_secs(20), || !notify_failures(&srv).is_empty()), "no approval.notify_failed");
    let failures = notify_failures(&srv);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let detail = &failures[0]["detail"];
    assert_eq!(detail["approval_request_id"], id, "{detail}");
    assert_eq!(detail["host"], "127.0.0.1");
    assert_eq!(detail["attempts"], 5);
    assert!(!failures[0].to_string().contains(MARKER), "the audit record quotes the URL: {}", failures[0]);
}

#[test]
fn a_bad_webhook_url_or_short_key_stops_the_server_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abc\n").unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--approval-webhook", "https://user:SeCrEt@hooks.example/x"], "user or password"),
        (&["--approval-webhook", "ftp://hooks.example/x"], "http:// or https://"),
        (
            &[
                "--approval-webhook",
                "https://hooks.example/x",
                "--approval-webhook-secret-file",
                short.to_str().unwrap(),
            ],
            "at least 16 bytes",
        ),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(crate::support::BIN)
            .args(["server", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(MARKER), "{stderr}");
    }
}

#[test]
fn webhooks_can_come_from_the_config_file() {
    let (url, rx) = receiver(&[]);
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, key()).unwrap();
    let config = tempfile::tempdir().unwrap();
    let config_file = config.path().join("server.toml");
    let text = format!(
        "policies = {:?}\napproval_webhooks = [{url:?}]\napproval_webhook_secret_file = {:?}\n",
        dir.path().to_str().unwrap(),
        key_file.to_str().unwrap()
    );
    std::fs::write(&config_file, text).unwrap();
    let srv = Server::start_with(Backend::Sqlite, &["--config", config_file.to_str().unwrap()]);
    let (_, agent) = add_agent(&srv, "payments-agent");
    let pending = ask(&srv, &agent, 30);
    let delivery = rx.recv_timeout(Duration::from_secs(10)).expect("the receiver got the POST");
    assert_eq!(verify(&delivery)["approval_request_id"], pending["approval_request_id"]);
}
