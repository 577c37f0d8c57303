//! Agents and their policies: minting within the policy, strict reloads that keep the old
//! set on a typo, and the approval flow through the CLI.

use std::path::Path;

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, Server, assert_error, secret_value};

const RESEARCH: &str = r#"
[agent]
name = "research-agent"
token_ttl = "10m"

[egress]
allow = ["api.openai.com", "api.github.com"]

[[grant]]
secrets = "production/openai/*"
hosts = ["api.openai.com"]
"#;

const PAYMENTS: &str = r#"
[agent]
name = "payments-agent"
token_ttl = "5m"
allowed_ips = ["127.0.0.1/32"]

[egress]
allow = ["api.stripe.com"]

[[grant]]
secrets = "production/stripe/*"
hosts = ["api.stripe.com"]
approval = true
"#;

pub(crate) fn policies_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

pub(crate) fn server_with(backend: Backend, dir: &Path) -> Server {
    Server::start_with(backend, &["--policies", dir.to_str().unwrap()])
}

pub(crate) fn add_agent(srv: &Server, name: &str) -> (String, String) {
    let (status, body) = srv.admin("POST", "/v1/agents", Some(&json!({ "name": name }).to_string()));
    assert_eq!(status, 201, "{body}");
    (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned())
}

pub(crate) fn mint(srv: &Server, key: &str, body: Value) -> (u16, Value) {
    srv.call("POST", "/v1/tokens", key, Some(&body.to_string()))
}

fn an_agent_mints_only_within_its_policy(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH)]);
    let srv = server_with(backend, dir.path());
    srv.create("production/openai/api-key", &secret_value("openai"));
    srv.create("production/stripe/key", &secret_value("stripe"));
    let (_, key) = add_agent(&srv, "research-agent");

    // The agent key itself reads nothing; it mints.
    assert_error(&srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", &key, None), 403, "permission_denied");
    let (status, t) = mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*" }));
    assert_eq!((status, t["ttl_seconds"].as_u64()), (201, Some(600)), "the policy's token_ttl is the default: {t}");
    let token = t["value"].as_str().unwrap();
    let (status, read) = srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", token, None);
    assert_eq!((status, read["value"].as_str()), (200, Some(secret_value("openai").as_str())));

    for scope in ["secrets:read:production/stripe/*", "secrets:read:production/**", "secrets:write:production/openai/*"]
    {
        let resp = mint(&srv, &key, json!({ "scope": scope }));
        assert_error(&resp, 403, "permission_denied");
    }
    assert_error(
        &mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*", "ttl_seconds": 601 })),
        422,
        "validation_error",
    );

    let (status, policy) = srv.call("GET", "/v1/agents/self/policy", token, None);
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["agent"]["name"], "research-agent");
    let (_, denied) = srv.admin("GET", "/v1/audit?type=token.denied", None);
    assert!(denied["events"].as_array().unwrap().len() >= 4, "refused mints are audited: {denied}");
}

fn an_agent_without_a_policy_mints_nothing(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH)]);
    let srv = server_with(backend, dir.path());
    let (_, key) = add_agent(&srv, "stranger");
    let resp = mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*" }));
    assert_error(&resp, 403, "permission_denied");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("no policy"), "{}", resp.1);
}

fn deleting_an_agent_revokes_its_key_and_tokens(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH)]);
    let srv = server_with(backend, dir.path());
    srv.create("production/openai/api-key", &secret_value("openai"));
    let (id, key) = add_agent(&srv, "research-agent");
    let (_, t) = mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*" }));
    let token = t["value"].as_str().unwrap();
    assert_eq!(srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", token, None).0, 200);
    assert_eq!(srv.admin("DELETE", &format!("/v1/agents/{id}"), None).0, 204);
    assert_error(&srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", token, None), 401, "unauthorized");
    assert_error(&mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*" })), 401, "unauthorized");
}

fn a_policy_typo_fails_the_reload_and_keeps_the_old_policy(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH)]);
    let srv = server_with(backend, dir.path());
    let (_, key) = add_agent(&srv, "research-agent");
    let github = json!({ "scope": "secrets:read:production/github/*" });
    assert_error(&mint(&srv, &key, github.clone()), 403, "permission_denied");

    let typo = RESEARCH.replace("hosts = [\"api.openai.com\"]", "hostz = [\"api.openai.com\"]");
    std::fs::write(dir.path().join("research.toml"), &typo).unwrap();
    let resp = srv.admin("POST", "/v1/policies/reload", None);
    assert_error(&resp, 422, "validation_error");
    let message = resp.1["error"]["message"].as_str().unwrap();
    let line = typo.lines().position(|l| l.starts_with("hostz")).unwrap() + 1;
    assert!(message.contains(&format!("research.toml:{line}")), "names file and line {line}: {message}");
    assert_eq!(mint(&srv, &key, json!({ "scope": "secrets:read:production/openai/*" })).0, 201, "old policy applies");

    let widened = format!("{RESEARCH}\n[[grant]]\nsecrets = \"production/github/*\"\nhosts = [\"api.github.com\"]\n");
    std::fs::write(dir.path().join("research.toml"), &widened).unwrap();
    let (status, body) = srv.admin("POST", "/v1/policies/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(mint(&srv, &key, github.clone()).0, 201, "the edit applies without a restart");

    // SIGHUP reloads too.
    std::fs::write(dir.path().join("research.toml"), RESEARCH).unwrap();
    let pid = srv.pid();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mint(&srv, &key, github.clone()).0 == 201 {
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload the policies");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 17 item 9: `production/**` without approval next to `production/stripe/*` with it
/// once let a token for `production/stripe/*` be minted without approval when the broad
/// grant came first. Such a file is refused (on reload, in either order, with the previous
/// policy kept; and at start), naming both grants with their lines.
fn a_broad_grant_that_would_shadow_an_approval_grant_is_refused(backend: Backend) {
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let srv = server_with(backend, dir.path());
    let (_, key) = add_agent(&srv, "payments-agent");
    let stripe = json!({ "scope": "secrets:read:production/stripe/*" });
    assert_eq!(mint(&srv, &key, stripe.clone()).0, 202, "the stripe grant waits for approval");

    let broad = "\n[[grant]]\nsecrets = \"production/**\"\nhosts = [\"api.stripe.com\"]\n";
    let (head, narrow) = PAYMENTS.split_at(PAYMENTS.find("[[grant]]").unwrap());
    let line_of = |text: &str, secrets: &str| text.lines().position(|l| l == secrets).unwrap() + 1;
    for (text, later, earlier) in [
        (format!("{head}{broad}\n{narrow}"), "production/stripe/*", "production/**"),
        (format!("{PAYMENTS}{broad}"), "production/**", "production/stripe/*"),
    ] {
        std::fs::write(dir.path().join("payments.toml"), &text).unwrap();
        let resp = srv.admin("POST", "/v1/policies/reload", None);
        assert_error(&resp, 422, "validation_error");
        let message = resp.1["error"]["message"].as_str().unwrap();
        let expected = format!(
            "payments.toml:{}: grant '{later}' overlaps grant '{earlier}' (line {}) but differs in approval",
            line_of(&text, &format!("secrets = \"{later}\"")),
            line_of(&text, &format!("secrets = \"{earlier}\"")),
        );
        assert!(message.contains(&expected), "{message}\nwanted: {expected}");
        let (status, body) = mint(&srv, &key, stripe.clone());
        assert_eq!(status, 202, "the previous policy stays, approval and all: {body}");
        assert!(body["value"].is_null(), "{body}");
        assert_error(&mint(&srv, &key, json!({ "scope": "secrets:read:production/other" })), 403, "permission_denied");
    }

    // A server does not start on such a file.
    let mut srv = srv;
    srv.kill9();
    let mut server = std::process::Command::new(crate::support::BIN);
    server
        .args(["server", "--listen", "127.0.0.1:0", "--policies", dir.path().to_str().unwrap(), "--data-dir"])
        .arg(srv.data_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = &srv.database_url {
        server.args(["--database-url", url]);
    }
    let mut child = server.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server started on a policy whose grants shadow each other");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("grant 'production/**' overlaps grant 'production/stripe/*'"), "{stderr}");
}

fn ok_stdout(out: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stderr: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn the_approval_flow_works_end_to_end_through_the_cli(backend: Backend) {
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let srv = server_with(backend, dir.path());
    srv.create("production/stripe/key", &secret_value("stripe"));
    let admin = srv.admin_key.clone();
    let agent_out = ok_stdout(srv.cli(&admin, &["agent", "add", "payments-agent"]));
    let agent_key = agent_out.split_whitespace().find(|w| w.starts_with("ak_")).unwrap().to_owned();
    let scope = "secrets:read:production/stripe/*";

    // A request the admin denies.
    let first = ok_stdout(srv.cli(&agent_key, &["token", "create", "--scope", scope])).trim().to_owned();
    assert!(first.starts_with("apr_"), "202 gives an approval id: {first}");
    let pending = ok_stdout(srv.cli(&admin, &["approval", "ls"]));
    assert!(pending.contains(&first), "{pending}");
    ok_stdout(srv.cli(&admin, &["approval", "deny", &first, "--reason", "not during the freeze"]));
    let denied = ok_stdout(srv.cli(&agent_key, &["approval", "get", &first]));
    assert!(denied.contains("denied") && !denied.contains("at_"), "{denied}");

    // Nobody approves their own request; the agent cannot decide at all.
    let second = ok_stdout(srv.cli(&agent_key, &["token", "create", "--scope", scope])).trim().to_owned();
    let own = srv.cli(&agent_key, &["approval", "approve", &second]);
    assert!(!own.status.success(), "an agent approved its own request");
    assert!(String::from_utf8_lossy(&own.stderr).contains("permission_denied"));

    // Approved: the requester collects the token once, and it reads the secret.
    ok_stdout(srv.cli(&admin, &["approval", "approve", &second, "--comment", "batch run 4821"]));
    let collected = ok_stdout(srv.cli(&agent_key, &["approval", "get", &second]));
    let token =
        collected.split_whitespace().find(|w| w.starts_with("at_")).expect("the token is handed out").to_owned();
    let again = ok_stdout(srv.cli(&agent_key, &["approval", "get", &second]));
    assert!(!again.contains("at_"), "the value is handed out only once: {again}");
    let (status, body) = srv.call("GET", "/v1/secrets/production%2Fstripe%2Fkey", &token, None);
    assert_eq!((status, body["value"].as_str()), (200, Some(secret_value("stripe").as_str())));
    let (_, audit) = srv.admin("GET", "/v1/audit?limit=100", None);
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in ["approval.request", "approval.deny", "approval.approve", "token.create"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
}

fn a_decision_is_made_once_by_someone_other_than_the_requester(backend: Backend) {
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let srv = server_with(backend, dir.path());
    let (_, agent_key) = add_agent(&srv, "payments-agent");
    let (status, pending) = mint(&srv, &agent_key, json!({ "scope": "secrets:read:production/stripe/*" }));
    assert_eq!(status, 202, "{pending}");
    assert!(pending["approve_url"].as_str().unwrap().ends_with(pending["approval_request_id"].as_str().unwrap()));
    // Give the agent's own credential the power to decide: it still may not decide its own request.
    let (_, decider) = srv.admin("POST", "/v1/tokens", Some(r#"{"scope":["approvals:decide"],"ttl_seconds":60}"#));
    let id = pending["approval_request_id"].as_str().unwrap();
    assert_eq!(
        srv.call("POST", &format!("/v1/approvals/{id}/approve"), decider["value"].as_str().unwrap(), None).0,
        200
    );
    let resp = srv.call("POST", &format!("/v1/approvals/{id}/deny"), &srv.admin_key, None);
    assert_error(&resp, 409, "conflict");
}

const STRIPE: &str = "secrets:read:production/stripe/*";

/// A token request of `key` for the Stripe grant (which needs approval), `ttl` seconds.
fn ask(srv: &Server, key: &str, ttl: u64) -> (u16, Value) {
    mint(srv, key, json!({ "scope": STRIPE, "ttl_seconds": ttl }))
}

fn pending_id(resp: &(u16, Value)) -> String {
    assert_eq!(resp.0, 202, "{}", resp.1);
    assert_eq!(resp.1["approval_status"], "pending", "{}", resp.1);
    resp.1["approval_request_id"].as_str().unwrap().to_owned()
}

fn audit_kinds(srv: &Server) -> Vec<(String, Value)> {
    let (_, audit) = srv.admin("GET", "/v1/audit?limit=500", None);
    audit["events"].as_array().unwrap().iter().map(|e| (e["type"].as_str().unwrap().to_owned(), e.clone())).collect()
}

/// Issue 24 item 4: 200 identical token requests once left 200 pending approvals, and
/// `approval ls` showed the newest 50, so a request filed before the flood vanished from view.
fn a_flood_of_identical_requests_is_one_request_and_each_agent_has_a_cap(backend: Backend) {
    let billing = PAYMENTS.replace("payments-agent", "billing-agent");
    let dir = policies_dir(&[("payments.toml", PAYMENTS), ("billing.toml", &billing)]);
    let srv = server_with(backend, dir.path());
    let (_, payments) = add_agent(&srv, "payments-agent");
    let (_, billing) = add_agent(&srv, "billing-agent");
    let genuine = pending_id(&ask(&srv, &payments, 60));

    // The flood: each identical request is answered with the one pending request, as a new one would be.
    let flood = pending_id(&ask(&srv, &payments, 120));
    for _ in 0..200 {
        let again = ask(&srv, &payments, 120);
        assert_eq!(pending_id(&again), flood, "an identical request filed a new one");
        assert!(again.1["approve_url"].as_str().unwrap().ends_with(&flood), "{}", again.1);
    }
    assert_eq!(pending_id(&ask(&srv, &payments, 60)), genuine);

    // The cap (by default 20) counts distinct pending requests per agent.
    for ttl in 1..=18 {
        pending_id(&ask(&srv, &payments, ttl));
    }
    let refused = ask(&srv, &payments, 240);
    assert_error(&refused, 429, "too_many_pending_approvals");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("payments-agent") && message.contains("--max-pending-approvals-per-agent 20"),
        "{message}"
    );
    assert_eq!(refused.1["error"]["pending"], 20);
    assert_eq!(pending_id(&ask(&srv, &payments, 120)), flood, "an identical request is still answered at the cap");
    pending_id(&ask(&srv, &billing, 240));

    // The operator sees every request, the genuine one first filed included.
    let ls = ok_stdout(srv.cli(&srv.admin_key, &["approval", "ls"]));
    assert_eq!(ls.matches("apr_").count(), 21, "{ls}");
    assert!(ls.contains(&genuine), "{ls}");

    // A decision makes room; the refusal was audited.
    assert_eq!(srv.admin("POST", &format!("/v1/approvals/{genuine}/deny"), None).0, 200);
    pending_id(&ask(&srv, &payments, 240));
    let denied = audit_kinds(&srv).into_iter().filter(|(k, _)| k == "token.denied").collect::<Vec<_>>();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].1["detail"]["error"], "too_many_pending_approvals");
    let requests = audit_kinds(&srv).into_iter().filter(|(k, _)| k == "approval.request").count();
    assert_eq!(requests, 22, "only the requests filed are recorded as filed");
}

/// Issue 24 item 4: `approval ls` pages through every request, not the newest 50.
fn approval_ls_lists_every_request_however_many(backend: Backend) {
    let names: Vec<String> = (0..7).map(|i| format!("agent-{i}")).collect();
    let files: Vec<(String, String)> =
        names.iter().map(|n| (format!("{n}.toml"), PAYMENTS.replace("payments-agent", n))).collect();
    let dir = policies_dir(&files.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect::<Vec<_>>());
    let srv = server_with(backend, dir.path());
    let mut ids = Vec::new();
    for name in &names {
        let (_, key) = add_agent(&srv, name);
        // 19 each (the cap is 20): 133 in all.
        ids.extend((1..=19).map(|ttl| pending_id(&ask(&srv, &key, ttl))));
    }
    let genuine = ids[0].clone();
    let ls = ok_stdout(srv.cli(&srv.admin_key, &["approval", "ls"]));
    assert_eq!(ls.matches("apr_").count(), 133, "{ls}");
    assert!(ids.iter().all(|id| ls.contains(id.as_str())), "{ls}");
    assert!(ls.contains(&genuine), "the request filed before the others is listed: {ls}");

    // The API pages by cursor and says how many there are.
    let (status, page) = srv.admin("GET", "/v1/approvals?status=pending&limit=100", None);
    assert_eq!((status, page["total"].as_i64()), (200, Some(133)), "{page}");
    assert_eq!(page["approvals"].as_array().unwrap().len(), 100);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = srv.admin("GET", &format!("/v1/approvals?status=pending&limit=100&cursor={cursor}"), None);
    let mut seen: Vec<&str> = page["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    seen.extend(rest["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()));
    assert_eq!(rest["next_cursor"], Value::Null, "{rest}");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 133);
    assert_error(&srv.admin("GET", "/v1/approvals?cursor=nonsense", None), 400, "invalid_request");
}

/// Issue 24 item 5: an approved request, or one approved after its grant was removed from
/// the policy, once still yielded a token reading what the policy no longer granted.
fn an_approval_does_not_outlive_its_grant(backend: Backend) {
    let dir = policies_dir(&[("payments.toml", PAYMENTS)]);
    let mut srv = server_with(backend, dir.path());
    srv.create("production/stripe/key", &secret_value("stripe"));
    let (_, agent) = add_agent(&srv, "payments-agent");
    let pending = pending_id(&ask(&srv, &agent, 60));
    let approved = pending_id(&ask(&srv, &agent, 120));
    assert_eq!(srv.admin("POST", &format!("/v1/approvals/{approved}/approve"), None).0, 200);

    // The grant goes.
    let without = PAYMENTS.replace("production/stripe/*", "production/other/*");
    std::fs::write(dir.path().join("payments.toml"), &without).unwrap();
    let (status, reloaded) = srv.admin("POST", "/v1/policies/reload", None);
    assert_eq!(status, 200, "{reloaded}");

    // The approved request yields no token: it is cancelled when the agent comes for it.
    for _ in 0..2 {
        let resp = srv.call("GET", &format!("/v1/approvals/{approved}"), &agent, None);
        assert_error(&resp, 409, "conflict");
        assert_eq!(resp.1["error"]["approval_status"], "cancelled");
        assert!(resp.1["error"]["message"].as_str().unwrap().contains("no token"), "{}", resp.1);
        assert!(!resp.1.to_string().contains("at_"), "{}", resp.1);
    }
    let (_, seen) = srv.admin("GET", &format!("/v1/approvals/{approved}"), None);
    assert_eq!((seen["status"].as_str(), &seen["token_id"]), (Some("cancelled"), &Value::Null), "{seen}");
    let got = srv.cli(&agent, &["approval", "get", &approved]);
    assert!(!got.status.success() && String::from_utf8_lossy(&got.stderr).contains("cancelled"), "{got:?}");

    // The pending one was cancelled by the reload, and can no longer be approved.
    assert_eq!(reloaded["cancelled_approvals"], 1, "{reloaded}");
    let (_, seen) = srv.admin("GET", &format!("/v1/approvals/{pending}"), None);
    assert_eq!(seen["status"], "cancelled", "{seen}");
    assert!(seen["note"].as_str().unwrap().contains(STRIPE), "the note says what the policy no longer grants: {seen}");
    assert_error(&srv.admin("POST", &format!("/v1/approvals/{pending}/approve"), None), 409, "conflict");

    // Approving after the grant went: the grant back, a request filed, then the server
    // restarted without any policy (nothing swept at start): the approval is refused.
    std::fs::write(dir.path().join("payments.toml"), PAYMENTS).unwrap();
    assert_eq!(srv.admin("POST", "/v1/policies/reload", None).0, 200);
    let late = pending_id(&ask(&srv, &agent, 180));
    srv.kill9();
    srv.extra_args.clear();
    srv.spawn();
    let refused = srv.admin("POST", &format!("/v1/approvals/{late}/approve"), None);
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("cancelled"), "{}", refused.1);
    assert_eq!(srv.admin("GET", &format!("/v1/approvals/{late}"), None).1["status"], "cancelled");

    let kinds = audit_kinds(&srv);
    let cancels: Vec<&str> = kinds
        .iter()
        .filter(|(k, _)| k == "approval.cancel")
        .map(|(_, e)| e["detail"]["on"].as_str().unwrap())
        .collect();
    assert_eq!(cancels, ["approve", "collect", "policy_change"], "each cancellation audited, newest first");
    assert!(!kinds.iter().any(|(k, _)| k == "token.create"), "no token was minted: {kinds:?}");
}

/// What a proxy reports: each event once by id, folded uses counted, bad counts refused
/// with nothing written, and the events readable per secret and in the audit trail.
fn access_events_are_recorded_once_with_their_counts(backend: Backend) {
    let dir = policies_dir(&[("research.toml", RESEARCH)]);
    let srv = server_with(backend, dir.path());
    srv.create("production/openai/api-key", &secret_value("events"));
    let (_, agent_key) = add_agent(&srv, "research-agent");
    let event = |id: &str, count: Option<u64>| {
        let mut e = json!({
            "id": id, "agent": "research-agent", "path": "production/openai/api-key", "version": 1,
            "host": "api.openai.com", "method": "POST", "url_path": "/v1/chat/completions",
            "outcome": "injected", "status": 200, "latency_ms": 1.5, "timestamp": "2026-11-23T10:00:00Z",
        });
        if let Some(n) = count {
            e["count"] = json!(n);
        }
        e
    };
    let report = |events: Value| {
        srv.call("POST", "/v1/access-events", &agent_key, Some(&json!({ "events": events }).to_string()))
    };
    let (status, body) = report(json!([event("01JEVENTA", Some(40)), event("01JEVENTB", None)]));
    assert_eq!((status, &body), (202, &json!({ "accepted": 2, "duplicates": 0, "refused": 0 })));
    let (status, body) = report(json!([event("01JEVENTA", Some(40)), event("01JEVENTC", Some(2))]));
    assert_eq!((status, &body), (202, &json!({ "accepted": 1, "duplicates": 1, "refused": 0 })));

    assert_error(&report(json!([event("01JEVENTD", Some(0))])), 422, "validation_error");
    assert_error(&report(json!([event("01JEVENTE", Some(2_000_000_000))])), 422, "validation_error");
    let mut unknown = event("01JEVENTF", None);
    unknown["extra"] = json!(true);
    assert!(report(json!([unknown])).0 >= 400);

    let (status, page) = srv.admin("GET", "/v1/secrets/production%2Fopenai%2Fapi-key/access-events", None);
    assert_eq!(status, 200, "{page}");
    let mut counts: Vec<(String, u64)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["detail"]["count"].as_u64().unwrap()))
        .collect();
    counts.sort();
    let want = [("acc_01JEVENTA", 40), ("acc_01JEVENTB", 1), ("acc_01JEVENTC", 2)].map(|(i, n)| (i.to_owned(), n));
    assert_eq!(counts, want, "each event once, with its count; refused ones absent");
    let (_, audit) = srv.admin("GET", "/v1/audit?type=access", None);
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(3), "{audit}");
}

both_backends!(
    access_events_are_recorded_once_with_their_counts,
    an_agent_mints_only_within_its_policy,
    an_agent_without_a_policy_mints_nothing,
    deleting_an_agent_revokes_its_key_and_tokens,
    a_policy_typo_fails_the_reload_and_keeps_the_old_policy,
    the_approval_flow_works_end_to_end_through_the_cli,
    a_decision_is_made_once_by_someone_other_than_the_requester,
    a_broad_grant_that_would_shadow_an_approval_grant_is_refused,
    a_flood_of_identical_requests_is_one_request_and_each_agent_has_a_cap,
    approval_ls_lists_every_request_however_many,
    an_approval_does_not_outlive_its_grant,
);
