//! Who a credential is, everywhere it is checked: an agent's `allowed_ips` on every
//! endpoint, IPv4 clients of a dual-stack listener, access events attributed by the
//! credential, and a change stream that follows its credential and shows only what its
//! caller may see.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agents::{add_agent, mint, policies_dir, server_with};
use crate::both_backends;
use crate::support::{Backend, Server, assert_error, secret_value};

fn policy(agent: &str, grant: &str, allowed_ips: &str) -> String {
    format!(
        "[agent]\nname = \"{agent}\"\ntoken_ttl = \"10m\"\nallowed_ips = [{allowed_ips}]\n\n[egress]\nallow = [\"api.example.com\"]\n\n\
         [[grant]]\nsecrets = \"{grant}\"\nhosts = [\"api.example.com\"]\n"
    )
}

fn reload(srv: &Server) {
    let (status, body) = srv.admin("POST", "/v1/policies/reload", None);
    assert_eq!(status, 200, "{body}");
}

fn event(id: &str, agent: Option<&str>, path: &str) -> Value {
    let mut e = json!({
        "id": id, "path": path, "version": 1, "host": "api.example.com", "method": "GET", "url_path": "/",
        "outcome": "injected", "status": 200, "timestamp": "2026-12-07T10:00:00Z",
    });
    if let Some(agent) = agent {
        e["agent"] = json!(agent);
    }
    e
}

fn report(srv: &Server, key: &str, events: Value) -> (u16, Value) {
    srv.call("POST", "/v1/access-events", key, Some(&json!({ "events": events }).to_string()))
}

fn audit_of_kind(srv: &Server, kind: &str) -> Vec<Value> {
    let (status, page) = srv.admin("GET", &format!("/v1/audit?type={kind}&limit=100"), None);
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

fn an_agent_reports_only_its_own_uses_of_what_it_is_granted(backend: Backend) {
    let dir =
        policies_dir(&[("a.toml", &policy("agent-a", "team/a/*", "")), ("b.toml", &policy("agent-b", "team/b/*", ""))]);
    let srv = server_with(backend, dir.path());
    srv.create("team/a/key", &secret_value("a"));
    srv.create("team/b/key", &secret_value("b"));
    let (a_id, a_key) = add_agent(&srv, "agent-a");
    add_agent(&srv, "agent-b");

    // Agent A cannot speak as agent B: the body's name must be the credential's.
    let resp = report(&srv, &a_key, json!([event("forged1", Some("agent-b"), "team/b/key")]));
    assert_error(&resp, 400, "invalid_request");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("events[0].agent"), "{}", resp.1);

    // Nor claim a use of B's secret under its own name: kept as a refused report.
    let (status, body) = report(&srv, &a_key, json!([event("forged2", None, "team/b/key")]));
    assert_eq!((status, &body), (202, &json!({ "accepted": 1, "duplicates": 0, "refused": 1 })));
    let (_, uses) = srv.admin("GET", "/v1/secrets/team%2Fb%2Fkey/access-events", None);
    // The secret's trail shows the attempt as a refusal (an exfiltration attempt is worth
    // seeing there), never as a use.
    let events = uses["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["success"] == json!(false) && e["type"] == "access.refused"), "{uses}");
    let refused = audit_of_kind(&srv, "access.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"], json!(a_id), "attributed to the credential that sent it: {}", refused[0]);
    assert_eq!(refused[0]["success"], json!(false));

    // Its own use of its own secret is a use, described as itself.
    let (status, body) = report(&srv, &a_key, json!([event("mine1", Some("agent-a"), "team/a/key")]));
    assert_eq!((status, &body), (202, &json!({ "accepted": 1, "duplicates": 0, "refused": 0 })));
    let (_, uses) = srv.admin("GET", "/v1/secrets/team%2Fa%2Fkey/access-events", None);
    let uses = uses["events"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!((&uses[0]["actor"], &uses[0]["actor_description"]), (&json!(a_id), &json!("agent-a")));
    assert!(uses[0]["detail"].get("kind").is_none(), "a header use has no kind: {}", uses[0]);

    // A use's kind (a value written into a body field) is kept; a kind the server does not
    // know is refused, nothing recorded.
    let mut body_field = event("mine2", None, "team/a/key");
    body_field["kind"] = json!("body_field");
    let mut unknown = event("mine3", None, "team/a/key");
    unknown["kind"] = json!("carrier-pigeon");
    let resp = report(&srv, &a_key, json!([body_field.clone(), unknown]));
    assert_error(&resp, 422, "validation_error");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("kind 'carrier-pigeon'"), "{}", resp.1);
    let (status, body) = report(&srv, &a_key, json!([body_field]));
    assert_eq!((status, &body), (202, &json!({ "accepted": 1, "duplicates": 0, "refused": 0 })));
    let (_, uses) = srv.admin("GET", "/v1/secrets/team%2Fa%2Fkey/access-events", None);
    assert_eq!(uses["events"][0]["detail"]["kind"], "body_field", "{uses}");
}

fn an_agents_allowed_ips_bind_its_key_and_tokens_on_every_endpoint(backend: Backend) {
    let dir = policies_dir(&[("a.toml", &policy("agent-a", "team/a/*", "\"127.0.0.1/32\""))]);
    let srv = server_with(backend, dir.path());
    srv.create("team/a/key", &secret_value("ips"));
    let (_, key) = add_agent(&srv, "agent-a");
    let (status, t) = mint(&srv, &key, json!({ "scope": "secrets:read:team/a/*" }));
    assert_eq!(status, 201, "{t}");
    let token = t["value"].as_str().unwrap().to_owned();
    assert_eq!(srv.call("GET", "/v1/agents/self/policy", &key, None).0, 200);

    // The policy now names another address: from here, neither the key nor the token it
    // minted may do anything at all.
    std::fs::write(dir.path().join("a.toml"), policy("agent-a", "team/a/*", "\"10.1.2.3/32\"")).unwrap();
    reload(&srv);
    let events = json!({ "events": [event("ipcheck1", None, "team/a/key")] }).to_string();
    for credential in [&key, &token] {
        for (method, path, body) in [
            ("GET", "/v1/agents/self/policy", None),
            ("POST", "/v1/access-events", Some(events.as_str())),
            ("GET", "/v1/events", None),
            ("GET", "/v1/tokens/self", None),
            ("GET", "/v1/secrets/team%2Fa%2Fkey", None),
            ("POST", "/v1/tokens", Some(r#"{"scope":"secrets:read:team/a/*"}"#)),
        ] {
            let resp = srv.call(method, path, credential, body);
            assert_error(&resp, 401, "unauthorized");
            let message = resp.1["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("agent.allowed_ips") && message.contains("127.0.0.1"),
                "{method} {path}: {message}"
            );
        }
    }
    let (_, uses) = srv.admin("GET", "/v1/secrets/team%2Fa%2Fkey/access-events", None);
    assert_eq!(uses["events"], json!([]), "nothing was written from outside the policy's addresses");
}

fn a_dual_stack_listener_sees_ipv4_clients_as_ipv4(backend: Backend) {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("notice: no IPv6 on this machine; skipping the dual-stack test");
        return;
    }
    let srv = Server::start_dual_stack(backend);
    srv.create("team/a/key", &secret_value("v6"));
    let (status, t) = srv.admin(
        "POST",
        "/v1/tokens",
        Some(&json!({ "scope": "secrets:read:team/a/*", "allowed_ips": ["127.0.0.1/32"] }).to_string()),
    );
    assert_eq!(status, 201, "{t}");
    let (status, read) = srv.call("GET", "/v1/secrets/team%2Fa%2Fkey", t["value"].as_str().unwrap(), None);
    assert_eq!((status, read["value"].as_str()), (200, Some(secret_value("v6").as_str())), "{read}");
    let (_, audit) = srv.admin("GET", "/v1/audit?limit=1", None);
    assert!(audit.to_string().contains("\"127.0.0.1\""), "audit records show the IPv4 address: {audit}");
}

/// A subscriber of `GET /v1/events`: its lines as they arrive, and whether the server
/// ended the stream.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Subscriber {
    fn open(srv: &Server, credential: &str) -> Subscriber {
        let mut child = Command::new("curl")
            .args(["-sN", "--max-time", "60", "-H", &format!("Authorization: Bearer {credential}")])
            .arg(srv.url("/v1/events"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The subscription is in place once the server answered the request.
        std::thread::sleep(Duration::from_millis(700));
        Subscriber { child, lines, seen: Vec::new() }
    }

    /// Collects what arrives within `wait`; true if the server ended the stream.
    fn ended_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    fn paths(&self) -> Vec<String> {
        let data = self.seen.iter().filter_map(|l| l.strip_prefix("data:"));
        data.filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .filter_map(|v| v["path"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_change_stream_ends_when_its_credential_stops_being_valid(backend: Backend) {
    let dir = policies_dir(&[("a.toml", &policy("agent-a", "team/a/*", ""))]);
    let srv = server_with(backend, dir.path());
    srv.create("team/a/key", &secret_value("stream"));

    // Revoked.
    let (_, t) = srv.admin("POST", "/v1/tokens", Some(r#"{"scope":"secrets:read:team/a/*","ttl_seconds":600}"#));
    let mut revoked = Subscriber::open(&srv, t["value"].as_str().unwrap());
    assert!(!revoked.ended_within(Duration::from_millis(300)), "the stream is open: {:?}", revoked.seen);
    assert_eq!(srv.admin("DELETE", &format!("/v1/tokens/{}", t["id"].as_str().unwrap()), None).0, 204);
    assert!(revoked.ended_within(Duration::from_secs(10)), "a revoked token's stream ends");

    // Expired.
    let (_, t) = srv.admin("POST", "/v1/tokens", Some(r#"{"scope":"secrets:read:team/a/*","ttl_seconds":3}"#));
    let mut expiring = Subscriber::open(&srv, t["value"].as_str().unwrap());
    assert!(expiring.ended_within(Duration::from_secs(10)), "an expired token's stream ends");

    // Its agent deleted: the agent key's stream and its token's stream.
    let (id, key) = add_agent(&srv, "agent-a");
    let (_, t) = mint(&srv, &key, json!({ "scope": "secrets:read:team/a/*" }));
    let mut by_key = Subscriber::open(&srv, &key);
    let mut by_token = Subscriber::open(&srv, t["value"].as_str().unwrap());
    assert!(!by_key.ended_within(Duration::from_millis(300)));
    assert_eq!(srv.admin("DELETE", &format!("/v1/agents/{id}"), None).0, 204);
    assert!(by_key.ended_within(Duration::from_secs(10)), "a deleted agent's stream ends");
    assert!(by_token.ended_within(Duration::from_secs(10)), "a deleted agent's token's stream ends");
    assert!(by_key.seen.iter().any(|l| l.contains("token.revoked")), "the agent was told first: {:?}", by_key.seen);
}

fn a_change_stream_shows_only_what_its_caller_may_see(backend: Backend) {
    let dir = policies_dir(&[("a.toml", &policy("agent-a", "team/a/*", ""))]);
    let srv = server_with(backend, dir.path());
    srv.create("team/b/other", &secret_value("b"));
    srv.create("team/a/key", &secret_value("a"));
    let (_, agent_key) = add_agent(&srv, "agent-a");
    let (_, t) = srv.admin("POST", "/v1/tokens", Some(r#"{"scope":"secrets:read:team/a/*"}"#));
    let mut scoped = Subscriber::open(&srv, t["value"].as_str().unwrap());
    let mut agent = Subscriber::open(&srv, &agent_key);
    let mut admin = Subscriber::open(&srv, &srv.admin_key);
    for path in ["team%2Fb%2Fother", "team%2Fa%2Fkey"] {
        let (status, body) = srv.admin("PUT", &format!("/v1/secrets/{path}"), Some(r#"{"value":"v2"}"#));
        assert_eq!(status, 200, "{body}");
    }
    reload(&srv);
    for s in [&mut scoped, &mut agent, &mut admin] {
        s.ended_within(Duration::from_secs(2));
    }
    assert_eq!(admin.paths(), ["team/b/other", "team/a/key"], "an admin sees every change");
    for s in [&scoped, &agent] {
        assert_eq!(s.paths(), ["team/a/key"], "only the path it may see: {:?}", s.seen);
        assert!(s.seen.iter().any(|l| l == "event: policy.updated"), "server-wide notices still arrive: {:?}", s.seen);
    }
}

both_backends!(
    an_agent_reports_only_its_own_uses_of_what_it_is_granted,
    an_agents_allowed_ips_bind_its_key_and_tokens_on_every_endpoint,
    a_dual_stack_listener_sees_ipv4_clients_as_ipv4,
    a_change_stream_ends_when_its_credential_stops_being_valid,
    a_change_stream_shows_only_what_its_caller_may_see,
);
