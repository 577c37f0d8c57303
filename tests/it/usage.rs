//! `GET /v1/secrets/{path}/usage` and `airlock secret usage`: which agents' policies grant a
//! secret, through which grant, inject rules and routes, and when each last used it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::agents::{add_agent, policies_dir, server_with};
use crate::both_backends;
use crate::sidecar::{OPENAI_KEY_PATH, Sidecar, access_events, uses};
use crate::support::{Backend, assert_error, enc, until};

both_backends!(last_use_is_each_agents_latest_injected_access_event);

const INJECT: &str = "[[inject]]\nhost = \"api.openai.com\"\nheader = \"authorization\"\n\
                      value = \"Bearer {{secret:production/openai/api-key}}\"\n";

/// A second agent whose policy grants the same secret through another glob, to another
/// host, in another place, with approval.
const BILLING: &str = r#"
[agent]
name = "billing-agent"

[egress]
allow = ["billing.example.com"]

[[grant]]
secrets = "production/*/api-key"
hosts = ["billing.example.com"]
headers = ["x-api-key"]
query = true
approval = true
"#;

fn usage(sc: &Sidecar, path: &str) -> Value {
    let (status, body) = sc.server.admin("GET", &format!("/v1/secrets/{}/usage", enc(path)), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn agent<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["agents"].as_array().unwrap().iter().find(|a| a["agent"] == name).unwrap_or_else(|| panic!("{name}: {body}"))
}

#[test]
fn a_secret_granted_to_two_agents_lists_both_and_each_ones_last_use() {
    let sc = Sidecar::start_with(INJECT, &[]);
    std::fs::write(sc.policy_file().with_file_name("billing.toml"), BILLING).unwrap();
    assert_eq!(sc.server.admin("POST", "/v1/policies/reload", None).0, 200);
    let (status, billing) =
        sc.server.admin("POST", "/v1/agents", Some(&json!({ "name": "billing-agent" }).to_string()));
    assert_eq!(status, 201, "{billing}");
    let (_, agents) = sc.server.admin("GET", "/v1/agents", None);
    let research_id =
        agents["agents"].as_array().unwrap().iter().find(|a| a["name"] == "research-agent").unwrap()["id"].clone();

    let body = usage(&sc, OPENAI_KEY_PATH);
    assert_eq!(body["path"], OPENAI_KEY_PATH);
    let names: Vec<&str> = body["agents"].as_array().unwrap().iter().map(|a| a["agent"].as_str().unwrap()).collect();
    assert_eq!(names, ["billing-agent", "research-agent"], "ordered by name: {body}");
    let research = agent(&body, "research-agent");
    assert_eq!(research["agent_id"], research_id);
    assert_eq!(research["policy"], "research.toml");
    assert_eq!(research["grant"], "production/openai/*");
    assert_eq!(research["hosts"], json!(["api.openai.com"]));
    assert_eq!(research["approval_required"], false);
    assert_eq!(research["injects"], json!([{ "host": "api.openai.com", "header": "authorization" }]));
    assert_eq!(research["routes"], json!([{ "name": "openai", "upstream": "https://api.openai.com/v1" }]));
    assert_eq!(research["last_used"], Value::Null);
    let billing_usage = agent(&body, "billing-agent");
    assert_eq!(billing_usage["agent_id"], billing["id"]);
    assert_eq!(billing_usage["grant"], "production/*/api-key");
    assert_eq!(billing_usage["hosts"], json!(["billing.example.com"]));
    assert_eq!(billing_usage["placement"], json!({ "headers": ["x-api-key"], "query": true }));
    assert_eq!(billing_usage["approval_required"], true);
    assert_eq!((&billing_usage["injects"], &billing_usage["routes"]), (&json!([]), &json!([])));
    assert_eq!(billing_usage["last_used"], Value::Null);

    // The proxy injects the value (the agent writes no placeholder) and reports the use.
    let (status, out) = sc.curl(&["https://api.openai.com/v1/models"]);
    assert_eq!(status, 200, "{out}");
    assert!(until(Duration::from_secs(15), || uses(&access_events(&sc)) >= 1), "the use was never reported");
    let body = usage(&sc, OPENAI_KEY_PATH);
    let last_used = agent(&body, "research-agent")["last_used"].as_str().expect("the use is on record").to_owned();
    assert!(last_used.starts_with("20") && last_used.ends_with('Z'), "{last_used}");
    assert_eq!(agent(&body, "billing-agent")["last_used"], Value::Null, "billing-agent never used it");

    // Another secret only the broader glob grants; a path nobody grants lists nothing.
    let other = usage(&sc, "production/stripe/api-key");
    let names: Vec<&str> = other["agents"].as_array().unwrap().iter().map(|a| a["agent"].as_str().unwrap()).collect();
    assert_eq!(names, ["billing-agent"]);
    assert_eq!(usage(&sc, "staging/nobody/token"), json!({ "path": "staging/nobody/token", "agents": [] }));

    // The CLI: a table naming both agents, their inject rules and routes; --json is the API's answer.
    let out = sc.server.cli(&sc.server.admin_key, &["secret", "usage", OPENAI_KEY_PATH]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("AGENT "), "{text}");
    let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    assert!(line("billing-agent ").contains("x-api-key,query"), "{text}");
    assert!(line("billing-agent ").contains(" yes "), "{text}");
    assert!(line("research-agent ").contains(&last_used), "{text}");
    assert!(text.contains("research-agent: inject authorization on api.openai.com"), "{text}");
    assert!(text.contains("research-agent: route /r/openai/ -> https://api.openai.com/v1"), "{text}");
    let out = sc.server.cli(&sc.server.admin_key, &["secret", "usage", OPENAI_KEY_PATH, "--json"]);
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), body);
    let out = sc.server.cli(&sc.server.admin_key, &["secret", "usage", "staging/nobody/token"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent's policy grants staging/nobody/token"));
}

#[test]
fn usage_is_refused_to_callers_without_read_metadata_on_the_path() {
    let sc = Sidecar::start();
    let url = format!("/v1/secrets/{}/usage", enc(OPENAI_KEY_PATH));
    // The agent's own key may mint tokens, not read secrets' metadata.
    let agent_key = std::fs::read_to_string(sc.dir.path().join("agent.key")).unwrap();
    let refused = sc.server.call("GET", &url, agent_key.trim(), None);
    assert_error(&refused, 403, "permission_denied");
    assert_eq!(refused.1["error"]["required_scope"], format!("secrets:read_metadata:{OPENAI_KEY_PATH}"));
    assert_error(&sc.server.call("GET", &url, "ak_not_a_key", None), 401, "unauthorized");
    // Another tenant's admin sees its own tenant's policies only: none grants the path there.
    let (status, tenant) = sc.server.admin("POST", "/v1/tenants", Some(r#"{"name":"tenant-b"}"#));
    assert_eq!(status, 201, "{tenant}");
    let (status, body) = sc.server.call("GET", &url, tenant["admin_key"].as_str().unwrap(), None);
    assert_eq!((status, &body["agents"]), (200, &json!([])), "{body}");
    // A bad path is a 422, not a 500.
    assert_error(&sc.server.admin("GET", "/v1/secrets/a%2F..%2Fb/usage", None), 422, "validation_error");
    // The endpoint takes no query parameters.
    assert_eq!(sc.server.admin("GET", &format!("{url}?x=1"), None).0, 400);
}

const RESEARCH: &str = r#"
[agent]
name = "research-agent"

[egress]
allow = ["api.openai.com"]

[[grant]]
secrets = "production/openai/*"
hosts = ["api.openai.com"]
"#;

/// On each backend: an agent's last use is its latest access event for the path with outcome
/// `injected` (a denied or failed use is not a use), and another agent's uses are its own.
fn last_use_is_each_agents_latest_injected_access_event(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH), ("billing.toml", BILLING)]);
    let srv = server_with(backend, dir.path());
    let (_, research_key) = add_agent(&srv, "research-agent");
    let (_, billing_key) = add_agent(&srv, "billing-agent");
    let event = |id: &str, path: &str, outcome: &str, at: &str| {
        json!({ "id": id, "path": path, "host": "api.openai.com", "method": "GET", "url_path": "/v1/models",
                "outcome": outcome, "timestamp": at })
    };
    let report = |key: &str, events: Value| {
        let (status, body) = srv.call("POST", "/v1/access-events", key, Some(&json!({ "events": events }).to_string()));
        assert_eq!(status, 202, "{body}");
    };
    report(
        &research_key,
        json!([
            event("r1", OPENAI_KEY_PATH, "injected", "2026-11-23T10:00:00Z"),
            event("r2", OPENAI_KEY_PATH, "injected", "2026-11-23T12:30:00Z"),
            event("r3", OPENAI_KEY_PATH, "denied", "2026-11-23T13:00:00Z"),
            event("r4", OPENAI_KEY_PATH, "error", "2026-11-23T14:00:00Z"),
            event("r5", "production/openai/other", "injected", "2026-11-23T15:00:00Z"),
        ]),
    );
    report(&billing_key, json!([event("b1", "production/stripe/api-key", "injected", "2026-11-23T16:00:00Z")]));
    let (status, body) = srv.admin("GET", &format!("/v1/secrets/{}/usage", enc(OPENAI_KEY_PATH)), None);
    assert_eq!(status, 200, "{body}");
    let last: Vec<(&str, &Value)> =
        body["agents"].as_array().unwrap().iter().map(|a| (a["agent"].as_str().unwrap(), &a["last_used"])).collect();
    assert_eq!(last, [("billing-agent", &Value::Null), ("research-agent", &json!("2026-11-23T12:30:00Z"))]);
    let (_, body) = srv.admin("GET", &format!("/v1/secrets/{}/usage", enc("production/stripe/api-key")), None);
    assert_eq!(body["agents"][0]["last_used"], "2026-11-23T16:00:00Z", "{body}");
}
