//! Scoped tokens: minting within the minter's scopes, and expiry, revocation, IP binding and
//! use counts enforced on every use.

use std::sync::{Arc, Barrier};

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, Server, assert_error, secret_value};

fn mint(srv: &Server, key: &str, body: Value) -> (u16, Value) {
    srv.call("POST", "/v1/tokens", key, Some(&body.to_string()))
}

fn token(srv: &Server, key: &str, body: Value) -> String {
    let (status, resp) = mint(srv, key, body);
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["approval_status"], "approved");
    assert!(resp["value"].as_str().unwrap().starts_with("at_"));
    resp["value"].as_str().unwrap().to_owned()
}

fn minting_never_widens_the_minters_scopes(backend: Backend) {
    let srv = Server::start(backend);
    let rows: &[(&[&str], &str, bool)] = &[
        (&["secrets:read:production/**"], "secrets:read:production/openai/api-key", true),
        (&["secrets:read:production/**"], "secrets:read:production/openai/*", true),
        (&["secrets:read:production/**"], "secrets:read:production/**", true),
        (&["secrets:read:production/**"], "secrets:read:**", false),
        (&["secrets:read:production/**"], "secrets:read_metadata:production/x", true),
        (&["secrets:read:production/**"], "secrets:write:production/x", false),
        (&["secrets:read:prod/x"], "secrets:read:production/x", false),
        (&["secrets:read:prod/*"], "secrets:read:production/a", false),
        (&["secrets:read:production/openai/*"], "secrets:read:production/openai/x/y", false),
        (&["secrets:read:production/openai/*"], "secrets:read:production/**", false),
        (&["secrets:read:production/openai/*"], "secrets:read:production/*/api-key", false),
        (&["secrets:read:production/*/api-key"], "secrets:read:production/openai/api-key", true),
        (&["secrets:read:production/openai/*"], "audit:read", false),
        (&["secrets:read:production/openai/*"], "tokens:create", true),
    ];
    for (held, requested, allowed) in rows {
        let mut scopes: Vec<&str> = held.to_vec();
        scopes.push("tokens:create");
        let minter = token(&srv, &srv.admin_key, json!({ "scope": scopes, "ttl_seconds": 60 }));
        let (status, resp) = mint(&srv, &minter, json!({ "scope": requested, "ttl_seconds": 30 }));
        let expected = if *allowed { 201 } else { 403 };
        assert_eq!(status, expected, "held {held:?}, requested {requested}: {resp}");
        if !allowed {
            assert_eq!(resp["error"]["code"], "permission_denied");
            assert_eq!(resp["error"]["required_scope"], *requested);
        }
    }
    let (status, resp) = mint(&srv, &srv.admin_key, json!({ "scope": "secrets:peek:**" }));
    assert_eq!((status, resp["error"]["code"].as_str()), (422, Some("validation_error")), "{resp}");
    let (status, _) = mint(&srv, &srv.admin_key, json!({ "scope": "secrets:read:**", "ttl_seconds": 86_401 }));
    assert_eq!(status, 422);
}

fn a_token_reads_only_what_its_scope_names(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("production/openai/api-key", &secret_value("openai"));
    srv.create("production/stripe/key", &secret_value("stripe"));
    let t = token(&srv, &srv.admin_key, json!({ "scope": "secrets:read:production/openai/*", "ttl_seconds": 60 }));
    let (status, body) = srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", &t, None);
    assert_eq!((status, body["value"].as_str()), (200, Some(secret_value("openai").as_str())));
    assert_error(&srv.call("GET", "/v1/secrets/production%2Fstripe%2Fkey", &t, None), 403, "permission_denied");
    let (_, me) = srv.call("GET", "/v1/tokens/self", &t, None);
    assert_eq!(me["scope"], "secrets:read:production/openai/*", "{me}");
    let (_, audit) = srv.admin("GET", "/v1/audit?type=secret.read&limit=10", None);
    let actor = audit["events"][0]["actor"].as_str().unwrap();
    assert_eq!(actor, me["id"].as_str().unwrap(), "reads are attributed to the token");
}

fn a_one_use_token_admits_exactly_one_of_fifty_concurrent_reads(backend: Backend) {
    let srv = Arc::new(Server::start(backend));
    srv.create("once/key", &secret_value("once"));
    let t = token(&srv, &srv.admin_key, json!({ "scope": "secrets:read:once/*", "ttl_seconds": 60, "max_uses": 1 }));
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (srv, t, barrier) = (srv.clone(), t.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                srv.call("GET", "/v1/secrets/once%2Fkey", &t, None).0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 49, "{statuses:?}");
}

fn expired_revoked_and_wrong_address_tokens_are_refused_and_audited(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("t/key", &secret_value("t"));
    let scope = "secrets:read:t/*";
    let short = token(&srv, &srv.admin_key, json!({ "scope": scope, "ttl_seconds": 1 }));
    let revoked = {
        let (_, resp) = mint(&srv, &srv.admin_key, json!({ "scope": scope, "ttl_seconds": 60 }));
        assert_eq!(srv.admin("DELETE", &format!("/v1/tokens/{}", resp["id"].as_str().unwrap()), None).0, 204);
        resp["value"].as_str().unwrap().to_owned()
    };
    let elsewhere =
        token(&srv, &srv.admin_key, json!({ "scope": scope, "ttl_seconds": 60, "allowed_ips": ["10.0.0.0/8"] }));
    let here = token(&srv, &srv.admin_key, json!({ "scope": scope, "ttl_seconds": 60, "allowed_ips": ["127.0.0.1"] }));
    assert_eq!(srv.call("GET", "/v1/secrets/t%2Fkey", &here, None).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    for (t, why) in [(&short, "expired"), (&revoked, "revoked"), (&elsewhere, "127.0.0.1")] {
        let resp = srv.call("GET", "/v1/secrets/t%2Fkey", t, None);
        assert_error(&resp, 401, "unauthorized");
        assert!(resp.1["error"]["message"].as_str().unwrap().contains(why), "{}", resp.1);
    }
    let (_, audit) = srv.admin("GET", "/v1/audit?type=token.denied", None);
    let reasons: Vec<String> =
        audit["events"].as_array().unwrap().iter().map(|e| e["detail"]["reason"].to_string()).collect();
    for why in ["expired", "revoked", "127.0.0.1"] {
        assert!(reasons.iter().any(|r| r.contains(why)), "{why} not audited: {reasons:?}");
    }
    let (_, revokes) = srv.admin("GET", "/v1/audit?type=token.revoke", None);
    assert_eq!(revokes["events"].as_array().unwrap().len(), 1);
}

fn repeated_auth_failures_from_one_address_are_throttled(backend: Backend) {
    let srv = Server::start_with(backend, &["--auth-failure-limit", "3/min"]);
    for _ in 0..4 {
        assert_eq!(srv.call("GET", "/v1/secrets", "ak_guess", None).0, 401);
    }
    let resp = srv.raw("GET", "/v1/secrets", "ak_guess", None);
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // While blocked, even a valid key from that address waits: guessing gains nothing.
    assert_eq!(srv.admin("GET", "/v1/secrets", None).0, 429);
}

both_backends!(
    minting_never_widens_the_minters_scopes,
    a_token_reads_only_what_its_scope_names,
    a_one_use_token_admits_exactly_one_of_fifty_concurrent_reads,
    expired_revoked_and_wrong_address_tokens_are_refused_and_audited,
    repeated_auth_failures_from_one_address_are_throttled,
);
