//! `/v1/providers` and `/v1/provider-configs` on a real server, on both backends: configs
//! that name a credential anywhere are refused whole, the rest is stored, changed, made
//! default, deleted and audited; health checks reach a real OpenBao with the server's own
//! credentials.

use serde_json::{Value, json};

use crate::both_backends;
use crate::providers::Bao;
use crate::support::{Backend, MARKER, Server, assert_error, secret_value};

both_backends!(
    configs_are_stored_changed_and_audited,
    credentials_in_a_config_are_refused_and_nothing_is_written,
    an_address_the_operator_did_not_list_is_refused,
);

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    s.admin("POST", path, Some(&body.to_string()))
}

fn configs(s: &Server) -> Vec<Value> {
    let (status, body) = s.admin("GET", "/v1/provider-configs", None);
    assert_eq!(status, 200, "{body}");
    body["provider_configs"].as_array().unwrap().clone()
}

fn audit_count(s: &Server, kind: &str) -> usize {
    let (status, body) = s.admin("GET", &format!("/v1/audit?type={kind}"), None);
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().len()
}

/// A server whose operator lets provider configs name `addresses` (AIRLOCK_PROVIDER_ADDRESSES).
fn listing(backend: Backend, addresses: &str) -> Server {
    let mut s = Server::start(backend);
    s.env = vec![("AIRLOCK_PROVIDER_ADDRESSES".into(), addresses.into())];
    s.kill9();
    s.spawn();
    s
}

const LISTED: &str = "http://h, https://bao.internal:8200,https://BAO2.internal:8200/";

fn configs_are_stored_changed_and_audited(backend: Backend) {
    let s = listing(backend, LISTED);
    let (status, body) = s.admin("GET", "/v1/providers", None);
    assert_eq!(status, 200, "{body}");
    let types: Vec<&str> = body["providers"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["local_encrypted", "vault", "aws_secrets_manager", "gcp_secret_manager"]);

    let vault = json!({ "type": "vault", "name": "bao-main", "config": { "address": "https://bao.internal:8200",
        "token_file": "/run/airlock/bao-token" }, "cache_ttl_seconds": 60 });
    let (status, a) = post(&s, "/v1/provider-configs", vault.clone());
    assert_eq!(status, 201, "{a}");
    assert_eq!(
        (a["type"].as_str(), a["name"].as_str(), a["is_default"].as_bool()),
        (Some("vault"), Some("bao-main"), Some(false))
    );
    assert_eq!(a["config"], vault["config"]);
    let id = a["id"].as_str().unwrap().to_owned();
    assert_error(&post(&s, "/v1/provider-configs", vault), 409, "conflict");

    let aws = json!({ "type": "aws_secrets_manager", "name": "aws", "config": { "region": "eu-west-1" }, "is_default": true });
    let (status, b) = post(&s, "/v1/provider-configs", aws);
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["is_default"], true);

    // Bad settings: 422, and the message says what to fix.
    for (body, says) in [
        (json!({ "type": "vault", "name": "x", "config": { "address": "ftp://h" } }), "address"),
        (json!({ "type": "vault", "name": "x", "config": {} }), "address"),
        (
            json!({ "type": "vault", "name": "x", "config": { "address": "http://h", "token_env": "HOME" } }),
            "token_env",
        ),
        (json!({ "type": "vault", "name": "x", "config": { "address": "http://h", "extra": 1 } }), "extra"),
        (json!({ "type": "s3", "name": "x" }), "type must be one of"),
        (json!({ "type": "gcp_secret_manager", "name": "x", "config": { "endpoint": "ftp://h" } }), "endpoint"),
        (json!({ "type": "vault", "name": "a b", "config": { "address": "http://h" } }), "name"),
        (json!({ "type": "aws_secrets_manager", "name": "x", "cache_ttl_seconds": -1 }), "cache_ttl_seconds"),
        (json!({ "type": "aws_secrets_manager", "name": "x", "config": [] }), "object"),
    ] {
        let resp = post(&s, "/v1/provider-configs", body.clone());
        assert_error(&resp, 422, "validation_error");
        assert!(resp.1["error"]["message"].as_str().unwrap().contains(says), "{body}: {}", resp.1);
    }
    assert_eq!(configs(&s).len(), 2);

    let (status, got) = s.admin("GET", &format!("/v1/provider-configs/{id}"), None);
    assert_eq!((status, &got["name"]), (200, &json!("bao-main")));
    let patch = json!({ "name": "bao-primary", "cache_ttl_seconds": null, "config": { "address": "https://bao2.internal:8200" } });
    let (status, patched) = s.admin("PATCH", &format!("/v1/provider-configs/{id}"), Some(&patch.to_string()));
    assert_eq!(status, 200, "{patched}");
    assert_eq!((&patched["name"], &patched["cache_ttl_seconds"]), (&json!("bao-primary"), &Value::Null));
    assert_eq!(patched["config"]["address"], "https://bao2.internal:8200");
    let bad = json!({ "config": { "address": "nope" } });
    assert_error(
        &s.admin("PATCH", &format!("/v1/provider-configs/{id}"), Some(&bad.to_string())),
        422,
        "validation_error",
    );
    assert_error(&s.admin("PATCH", "/v1/provider-configs/pcf_nope", Some("{}")), 404, "not_found");

    // One default per type: a second vault config made default clears the first.
    let (_, c) = post(
        &s,
        "/v1/provider-configs",
        json!({ "type": "vault", "name": "bao-dr", "config": { "address": "http://h" } }),
    );
    let c_id = c["id"].as_str().unwrap();
    let (status, _) = post(&s, &format!("/v1/provider-configs/{id}/default"), json!({}));
    assert_eq!(status, 200);
    let (status, made) = post(&s, &format!("/v1/provider-configs/{c_id}/default"), json!({}));
    assert_eq!((status, &made["is_default"]), (200, &json!(true)));
    let defaults: Vec<(String, bool)> = configs(&s)
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["is_default"].as_bool().unwrap()))
        .collect();
    assert_eq!(defaults, [("bao-primary".into(), false), ("aws".into(), true), ("bao-dr".into(), true)]);

    assert_eq!(s.admin("DELETE", &format!("/v1/provider-configs/{c_id}"), None).0, 204);
    assert_error(&s.admin("GET", &format!("/v1/provider-configs/{c_id}"), None), 404, "not_found");
    assert_error(&s.admin("DELETE", &format!("/v1/provider-configs/{c_id}"), None), 404, "not_found");

    assert_eq!(audit_count(&s, "provider_config.create"), 3);
    assert_eq!(audit_count(&s, "provider_config.update"), 1);
    assert_eq!(audit_count(&s, "provider_config.default"), 2);
    assert_eq!(audit_count(&s, "provider_config.delete"), 1);

    // Another tenant sees none of them, and may use the same names.
    let (status, tenant) = post(&s, "/v1/tenants", json!({ "name": "tenant-b" }));
    assert_eq!(status, 201, "{tenant}");
    let b_key = tenant["admin_key"].as_str().unwrap();
    let (_, b_list) = s.call("GET", "/v1/provider-configs", b_key, None);
    assert_eq!(b_list["provider_configs"], json!([]));
    for (method, path) in [
        ("GET", format!("/v1/provider-configs/{id}")),
        ("DELETE", format!("/v1/provider-configs/{id}")),
        ("POST", format!("/v1/provider-configs/{id}/default")),
        ("POST", format!("/v1/provider-configs/{id}/health")),
    ] {
        assert_error(&s.call(method, &path, b_key, Some("{}")), 404, "not_found");
    }
    assert_error(
        &s.call("PATCH", &format!("/v1/provider-configs/{id}"), b_key, Some(r#"{"name":"mine"}"#)),
        404,
        "not_found",
    );
    assert_eq!(post(&s, &format!("/v1/provider-configs/{id}/default"), json!({})).0, 200);
    let same =
        json!({ "type": "vault", "name": "bao-primary", "config": { "address": "http://h" }, "is_default": true });
    assert_eq!(s.call("POST", "/v1/provider-configs", b_key, Some(&same.to_string())).0, 201);
    assert_eq!(configs(&s).len(), 2);
    assert_eq!(configs(&s)[0]["is_default"], true, "tenant B's default leaves tenant A's configs alone");

    // Scopes: a reader key may list provider types, not configs.
    let (_, key) = post(&s, "/v1/keys", json!({ "name": "ro", "role": "reader" }));
    let reader = key["key"].as_str().unwrap();
    assert_eq!(s.call("GET", "/v1/providers", reader, None).0, 200);
    assert_error(&s.call("GET", "/v1/provider-configs", reader, None), 403, "permission_denied");
    assert_error(&s.call("GET", &format!("/v1/provider-configs/{id}"), reader, None), 403, "permission_denied");
    let body = json!({ "type": "aws_secrets_manager", "name": "r" }).to_string();
    assert_error(&s.call("POST", "/v1/provider-configs", reader, Some(&body)), 403, "permission_denied");
    assert_error(&s.call("GET", "/v1/providers/health", reader, None), 403, "permission_denied");
}

fn credentials_in_a_config_are_refused_and_nothing_is_written(backend: Backend) {
    let s = listing(backend, LISTED);
    let planted = secret_value("in-config");
    for (body, key) in [
        (
            json!({ "type": "vault", "name": "t", "config": { "address": "http://h", "token": planted } }),
            "config.token",
        ),
        (
            json!({ "type": "vault", "name": "t", "config": { "address": "http://h", "auth": { "AppRole": { "Secret_ID": planted } } } }),
            "config.auth.AppRole.Secret_ID",
        ),
        (
            json!({ "type": "aws_secrets_manager", "name": "t", "config": { "SECRET_ACCESS_KEY": planted } }),
            "config.SECRET_ACCESS_KEY",
        ),
        (
            json!({ "type": "aws_secrets_manager", "name": "t", "config": { "list": [{ "private-key": planted }] } }),
            "config.list[0].private-key",
        ),
        (
            json!({ "type": "vault", "name": "t", "config": { "address": "http://h" }, "password": planted }),
            "'password'",
        ),
        (
            json!({ "type": "vault", "name": "t", "config": { "address": "http://h", "clientSecret": planted } }),
            "config.clientSecret",
        ),
    ] {
        let resp = post(&s, "/v1/provider-configs", body);
        assert_error(&resp, 422, "validation_error");
        let message = resp.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(key), "{key}: {message}");
        assert!(!resp.1.to_string().contains(MARKER), "{}", resp.1);
    }
    assert!(configs(&s).is_empty());
    assert_eq!(audit_count(&s, "provider_config.create"), 0);

    // Nor through a change.
    let (status, made) =
        post(&s, "/v1/provider-configs", json!({ "type": "vault", "name": "t", "config": { "address": "http://h" } }));
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    let patch = json!({ "config": { "address": "http://h", "nested": { "vault_token": planted } } });
    let resp = s.admin("PATCH", &format!("/v1/provider-configs/{id}"), Some(&patch.to_string()));
    assert_error(&resp, 422, "validation_error");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("config.nested.vault_token"), "{}", resp.1);
    assert_eq!(configs(&s)[0]["config"], json!({ "address": "http://h" }));
    assert!(
        !s.database_dump().windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "a planted value reached the database"
    );
}

/// Health with the server's own credentials against a real OpenBao: green, then red with a
/// wrong token file and when the server is stopped.
#[test]
fn health_checks_reach_a_real_openbao() {
    let Some(bao) = Bao::start() else { return };
    let mut s = Server::start(Backend::Sqlite);
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("token"), format!("{}\n", bao.root)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("token"), format!("{}\n", bao.root)).unwrap();
    s.env = vec![
        ("BAO_TOKEN".into(), bao.root.clone()),
        ("AIRLOCK_PROVIDER_CREDENTIALS_DIR".into(), creds.path().display().to_string()),
        ("AIRLOCK_PROVIDER_ADDRESSES".into(), format!("{},http://127.0.0.1:9", bao.addr)),
    ];
    s.kill9();
    s.spawn();

    let create = |name: &str, config: Value| {
        let (status, made) =
            post(&s, "/v1/provider-configs", json!({ "type": "vault", "name": name, "config": config }));
        assert_eq!(status, 201, "{made}");
        made["id"].as_str().unwrap().to_owned()
    };
    let by_env = create("env", json!({ "address": bao.addr }));
    let by_file = create("file", json!({ "address": bao.addr, "token_file": creds.path().join("token") }));
    let outside = create("outside", json!({ "address": bao.addr, "token_file": elsewhere.path().join("token") }));
    let aws = {
        let (status, made) = post(
            &s,
            "/v1/provider-configs",
            json!({ "type": "aws_secrets_manager", "name": "aws",
            "config": { "region": "us-east-1", "endpoint": "http://127.0.0.1:9" } }),
        );
        assert_eq!(status, 201, "{made}");
        made["id"].as_str().unwrap().to_owned()
    };

    let health = |id: &str| {
        let (status, body) = post(&s, &format!("/v1/provider-configs/{id}/health"), json!({}));
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(health(&by_env)["ok"], true, "{}", health(&by_env));
    assert_eq!(health(&by_file)["ok"], true, "{}", health(&by_file));
    let h = health(&outside);
    assert!(h["ok"] == false && h["message"].as_str().unwrap().contains("not inside"), "{h}");
    assert_eq!(health(&aws)["ok"], false);
    let (status, all) = s.admin("GET", "/v1/providers/health", None);
    assert_eq!(status, 200, "{all}");
    assert_eq!((all["ok"].clone(), all["providers"].as_array().unwrap().len()), (json!(false), 4));

    // A config tried before it is saved: nothing is stored.
    let (status, tried) = post(
        &s,
        "/v1/provider-configs/discovery/preview",
        json!({ "type": "vault", "config": { "address": bao.addr } }),
    );
    assert_eq!((status, &tried["ok"]), (200, &json!(true)), "{tried}");
    let (status, tried) = post(
        &s,
        "/v1/provider-configs/discovery/preview",
        json!({ "type": "vault", "config": { "address": bao.addr, "token_env": "VAULT_NOT_SET" } }),
    );
    assert_eq!((status, &tried["ok"]), (200, &json!(false)), "{tried}");
    assert!(tried["message"].as_str().unwrap().contains("VAULT_NOT_SET"), "{tried}");
    let refused = post(
        &s,
        "/v1/provider-configs/discovery/preview",
        json!({ "type": "vault", "config": { "address": bao.addr, "token": "x" } }),
    );
    assert_error(&refused, 422, "validation_error");
    assert_eq!(configs(&s).len(), 4);

    // The CLI: list, health of one (exit 0) and of all (exit 1: some are red), add, remove.
    let cli = |args: &[&str]| {
        let out = s.cli(&s.admin_key, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = cli(&["provider", "ls"]);
    assert!(ok && out.contains("env") && out.contains("aws_secrets_manager"), "{out}");
    let (ok, out, _) = cli(&["provider", "health", &by_env]);
    assert!(ok && out.contains("ok"), "{out}");
    let (ok, out, err) = cli(&["provider", "health"]);
    assert!(!ok && out.contains("FAIL") && err.contains("2 of 4"), "{out}{err}");
    let (ok, out, err) =
        cli(&["provider", "add", "cli-aws", "--type", "aws_secrets_manager", "--set", "region=eu-west-1"]);
    assert!(ok && out.contains("added provider config"), "{out}{err}");
    let (ok, _, err) =
        cli(&["provider", "add", "bad", "--type", "vault", "--config", r#"{"address":"http://h","token":"x"}"#]);
    assert!(!ok && err.contains("config.token"), "{err}");
    let added = configs(&s).iter().find(|c| c["name"] == "cli-aws").unwrap()["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = cli(&["provider", "rm", &added]);
    assert!(ok, "{err}");

    drop(bao.process);
    let h = health(&by_env);
    assert!(h["ok"] == false && h["message"].as_str().unwrap().contains("unavailable"), "{h}");
    assert!(!s.log().contains(&bao.root), "the token reached the server log");
}

/// The server's own provider credentials go to a config's address, and a tenant admin writes
/// configs: an address the operator did not list is refused, at create and at update.
fn an_address_the_operator_did_not_list_is_refused(backend: Backend) {
    let s = listing(backend, "https://bao.internal:8200");
    for address in ["https://attacker.example", "https://bao.internal:8201", "http://bao.internal:8200"] {
        let body = json!({ "type": "vault", "name": "x", "config": { "address": address } });
        let resp = post(&s, "/v1/provider-configs", body);
        assert_error(&resp, 422, "validation_error");
        assert!(resp.1.to_string().contains("AIRLOCK_PROVIDER_ADDRESSES"), "{}", resp.1);
        let aws = json!({ "type": "aws_secrets_manager", "name": "y", "config": { "endpoint": address } });
        assert_error(&post(&s, "/v1/provider-configs", aws), 422, "validation_error");
    }
    assert!(configs(&s).is_empty(), "nothing was stored");
    let ok = json!({ "type": "vault", "name": "bao", "config": { "address": "https://BAO.internal:8200/" } });
    let (status, made) = post(&s, "/v1/provider-configs", ok);
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    let moved = json!({ "config": { "address": "https://attacker.example" } });
    let (status, body) = s.admin("PATCH", &format!("/v1/provider-configs/{id}"), Some(&moved.to_string()));
    assert_eq!(status, 422, "{body}");
    assert_eq!(configs(&s)[0]["config"]["address"], "https://BAO.internal:8200/", "unchanged");
    // AWS's own endpoint (no `endpoint` in the config) needs no listing.
    let aws = json!({ "type": "aws_secrets_manager", "name": "aws", "config": { "region": "eu-west-1" } });
    assert_eq!(post(&s, "/v1/provider-configs", aws).0, 201);
}
