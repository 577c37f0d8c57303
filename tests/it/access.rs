//! Who may do what: roles, tenant isolation, revoked keys and per-credential rate limits.

use crate::both_backends;
use crate::support::{Backend, Server, assert_error, secret_value};

fn new_key(srv: &Server, name: &str, role: &str) -> String {
    let (status, body) = srv.admin("POST", "/v1/keys", Some(&format!(r#"{{"name":"{name}","role":"{role}"}}"#)));
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

fn reader_sees_metadata_but_gets_403_on_values(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("production/openai/api-key", &secret_value(1));
    let reader = new_key(&srv, "auditor", "reader");
    let resp = srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", &reader, None);
    assert_error(&resp, 403, "permission_denied");
    assert_eq!(resp.1["error"]["required_scope"], "secrets:read:production/openai/api-key");
    assert_eq!(resp.1["error"]["path"], "production/openai/api-key");
    let (status, list) = srv.call("GET", "/v1/secrets", &reader, None);
    assert_eq!((status, list["total"].as_i64()), (200, Some(1)));
    let body = format!(r#"{{"path":"x/y","value":"{}"}}"#, secret_value(2));
    assert_error(&srv.call("POST", "/v1/secrets", &reader, Some(&body)), 403, "permission_denied");
    let (_, audit) = srv.admin("GET", "/v1/audit?type=secret.read", None);
    let denied =
        audit["events"].as_array().unwrap().iter().find(|e| e["success"] == false).expect("the refusal is audited");
    assert_eq!(denied["detail"]["error"], "permission_denied");
}

fn another_tenant_gets_404_not_403(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("production/openai/api-key", &secret_value(1));
    let (status, tenant) = srv.admin("POST", "/v1/tenants", Some(r#"{"name":"tenant-b"}"#));
    assert_eq!(status, 201, "{tenant}");
    let b_key = tenant["admin_key"].as_str().unwrap();
    assert_error(&srv.call("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", b_key, None), 404, "not_found");
    let (_, list) = srv.call("GET", "/v1/secrets", b_key, None);
    assert_eq!(list["total"], 0);
    // Tenant B may use the same path for its own secret.
    let body = format!(r#"{{"path":"production/openai/api-key","value":"{}"}}"#, secret_value("b"));
    assert_eq!(srv.call("POST", "/v1/secrets", b_key, Some(&body)).0, 201);
    let (_, a) = srv.admin("GET", "/v1/secrets/production%2Fopenai%2Fapi-key", None);
    assert_eq!(a["value"].as_str(), Some(secret_value(1).as_str()));
    assert_error(&srv.call("POST", "/v1/tenants", b_key, Some(r#"{"name":"tenant-c"}"#)), 403, "permission_denied");
    assert_error(&srv.admin("POST", "/v1/tenants", Some(r#"{"name":"tenant-b"}"#)), 409, "conflict");
}

fn revoked_key_is_refused_and_audited(backend: Backend) {
    let srv = Server::start(backend);
    let deployer = new_key(&srv, "ci", "deployer");
    let body = format!(r#"{{"path":"ci/token","value":"{}"}}"#, secret_value(1));
    assert_eq!(srv.call("POST", "/v1/secrets", &deployer, Some(&body)).0, 201);
    let (_, keys) = srv.admin("GET", "/v1/keys", None);
    let id =
        keys["keys"].as_array().unwrap().iter().find(|k| k["name"] == "ci").unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.admin("DELETE", &format!("/v1/keys/{id}"), None).0, 204);
    assert_error(&srv.call("GET", "/v1/secrets/ci%2Ftoken", &deployer, None), 401, "unauthorized");
    let (_, audit) = srv.admin("GET", "/v1/audit?type=auth.failure", None);
    assert_eq!(audit["events"][0]["actor"], id.as_str(), "{audit}");
    assert_error(&srv.admin("DELETE", &format!("/v1/keys/{id}"), None), 404, "not_found");
}

fn rate_limit_gives_429_with_retry_after(backend: Backend) {
    let srv = Server::start_with(backend, &["--rate-limit", "5/min"]);
    let other = new_key(&srv, "other", "reader"); // spends one of the admin key's five
    for i in 0..4 {
        let resp = srv.raw("GET", "/v1/secrets", &srv.admin_key, None);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], (3 - i).to_string().as_str());
        assert!(resp.headers().contains_key("x-ratelimit-reset"));
    }
    let resp = srv.raw("GET", "/v1/secrets", &srv.admin_key, None);
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "one request comes back every 12 s: {retry}");
    // The 429 carries the budget too: none left, full again when Retry-After says.
    assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(resp.headers()["x-ratelimit-reset"], retry.to_string().as_str());
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(srv.call("GET", "/v1/secrets", &other, None).0, 200, "another credential has its own budget");
}

both_backends!(
    reader_sees_metadata_but_gets_403_on_values,
    another_tenant_gets_404_not_403,
    revoked_key_is_refused_and_audited,
    rate_limit_gives_429_with_retry_after,
);
