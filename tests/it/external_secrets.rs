//! Secrets by reference against real stores: a KV2 secret written in OpenBao (`bao server
//! -dev`) and an AWS Secrets Manager secret in moto, referenced by an Airlock secret, read
//! through the API and through the proxy (injected upstream, scrubbed back), a new provider
//! version seen after the config's cache TTL, a pinned version, remote import of a folder, a
//! store that goes down (502 `provider_error` on a direct read, the proxy's stale copy), and
//! secret status (a disabled secret is refused with its reason and stays listed). No value
//! reaches the database file, the audit trail or a log at trace level.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::providers::{Bao, Moto};
use crate::sidecar::Sidecar;
use crate::support::{Backend, MARKER, Server, assert_error, enc, secret_value};

both_backends!(
    openbao_references_through_the_api_and_the_proxy,
    aws_references_on_moto,
    aws_references_through_the_proxy,
);

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    s.admin("POST", path, Some(&body.to_string()))
}

fn read(s: &Server, path: &str) -> (u16, Value) {
    s.admin("GET", &format!("/v1/secrets/{}", enc(path)), None)
}

fn value_of(s: &Server, path: &str) -> String {
    let (status, body) = read(s, path);
    assert_eq!(status, 200, "{path}: {body}");
    body["value"].as_str().unwrap().to_owned()
}

/// Restarts the server on its port with `env` (the provider credentials and the addresses
/// they may be sent to), as an operator would start it.
fn with_env(s: &mut Server, env: &[(&str, &str)]) {
    s.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    s.kill9();
    s.restart_same_port();
}

fn header<'a>(r: &'a crate::upstream::Recorded, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The value the upstream last received as the bearer token.
fn last_bearer(sc: &Sidecar) -> String {
    let got = sc.requests_to("api.openai.com");
    header(got.last().expect("a request reached the upstream"), "authorization").unwrap_or_default().to_owned()
}

fn curl_with(sc: &Sidecar, path: &str) -> (u16, String) {
    sc.curl(&["-H", &format!("Authorization: Bearer {{{{secret:{path}}}}}"), "https://api.openai.com/v1/echo"])
}

fn no_value_stored(s: &Server, values: &[String]) {
    let dump = s.database_dump();
    for v in values {
        assert!(!dump.windows(v.len()).any(|w| w == v.as_bytes()), "an external value reached the database");
    }
    let log = s.log();
    assert!(!log.contains(MARKER), "a value reached the server log");
    let (_, audit) = s.admin("GET", "/v1/audit?limit=1000", None);
    assert!(!audit.to_string().contains(MARKER), "a value reached the audit trail");
}

fn openbao_references_through_the_api_and_the_proxy(backend: Backend) {
    let Some(mut bao) = Bao::start() else { return };
    // The proxy keeps a value 1 s, so the stale copy is what serves once the store is down.
    let mut sc = Sidecar::start_on_with(backend, &["--value-ttl-seconds", "1"]);
    with_env(&mut sc.server, &[("BAO_TOKEN", &bao.root), ("AIRLOCK_PROVIDER_ADDRESSES", &bao.addr)]);
    let s = &sc.server;
    bao.put("app/api", json!({ "token": secret_value("bao-v1"), "user": "svc" }));

    // No config yet: an external secret has nothing to read through.
    let external =
        |path: &str, r: &str| json!({ "path": path, "managed_mode": "external_reference", "external_ref": r });
    let resp = post(s, "/v1/secrets", external("production/openai/bao-key", "vault+kv2://secret/app/api#token"));
    assert_error(&resp, 422, "validation_error");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("no default vault provider config"), "{}", resp.1);
    let (status, config) = post(
        s,
        "/v1/provider-configs",
        json!({ "type": "vault", "name": "bao", "config": { "address": bao.addr }, "is_default": true,
                "cache_ttl_seconds": 1 }),
    );
    assert_eq!(status, 201, "{config}");
    let config_id = config["id"].as_str().unwrap().to_owned();

    // What a create must and must not carry.
    for (body, status, says) in [
        (
            json!({ "path": "x/a", "managed_mode": "external_reference", "external_ref": "vault+kv2://secret/app/api#token",
                 "value": secret_value("nope") }),
            422,
            "'value' cannot be set",
        ),
        (json!({ "path": "x/a", "managed_mode": "external_reference" }), 422, "'external_ref' is required"),
        (external("x/a", "vault+kv2://secret/../api"), 422, "external_ref"),
        (external("x/a", "s3://bucket/key"), 422, "external_ref"),
        (
            json!({ "path": "x/a", "managed_mode": "external_reference", "external_ref": "vault+kv2://secret/app/api",
                 "provider_config_id": "pcf_nope" }),
            404,
            "pcf_nope",
        ),
        (
            json!({ "path": "x/a", "managed_mode": "external_reference", "external_ref": "vault+kv2://secret/app/api",
                 "provider_version_ref": "v2" }),
            422,
            "provider_version_ref",
        ),
        (
            json!({ "path": "x/a", "managed_mode": "external_reference", "external_ref": "aws-sm://db",
                 "provider_config_id": config_id }),
            422,
            "provider_config_id",
        ),
        (json!({ "path": "x/a" }), 422, "'value' is required"),
        (json!({ "path": "x/a", "value": "v", "external_ref": "vault+kv2://secret/app/api" }), 422, "external_ref"),
        (json!({ "path": "x/a", "managed_mode": "somewhere" }), 422, "managed_mode"),
    ] {
        let resp = post(s, "/v1/secrets", body.clone());
        assert_eq!(resp.0, status, "{body}: {}", resp.1);
        assert!(resp.1["error"]["message"].as_str().unwrap().contains(says), "{body}: {}", resp.1);
    }
    assert_eq!(read(s, "x/a").0, 404, "nothing was written");

    let (status, created) =
        post(s, "/v1/secrets", external("production/openai/bao-key", "vault+kv2://secret/app/api#token"));
    assert_eq!(status, 201, "{created}");
    let (status, got) = read(s, "production/openai/bao-key");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["value"], secret_value("bao-v1"));
    assert_eq!(
        (&got["managed_mode"], &got["provider"], &got["external_ref"], &got["provider_config_id"], &got["status"]),
        (
            &json!("external_reference"),
            &json!("vault"),
            &json!("vault+kv2://secret/app/api#token"),
            &json!(config_id),
            &json!("active")
        )
    );
    assert!(got["last_resolved_at"].is_string() && got["last_rotated_at"].is_null(), "{got}");

    // Through the proxy: injected upstream, scrubbed back.
    let (status, out) = curl_with(&sc, "production/openai/bao-key");
    assert_eq!(status, 200, "{out}");
    assert_eq!(last_bearer(&sc), format!("Bearer {}", secret_value("bao-v1")));
    assert!(!out.contains(&secret_value("bao-v1")) && out.contains("{{secret:production/openai/bao-key}}"), "{out}");

    // A new version in OpenBao shows once the config's cache TTL (1 s) has passed.
    bao.put("app/api", json!({ "token": secret_value("bao-v2"), "user": "svc" }));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(value_of(s, "production/openai/bao-key"), secret_value("bao-v2"));

    // Pinned to version 1, then moved to version 2 by a rotation (a new Airlock version).
    let mut pinned = external("production/openai/bao-pinned", "vault+kv2://secret/app/api#token");
    pinned["provider_version_ref"] = "1".into();
    assert_eq!(post(s, "/v1/secrets", pinned).0, 201);
    assert_eq!(value_of(s, "production/openai/bao-pinned"), secret_value("bao-v1"));
    let url = format!("/v1/secrets/{}/rotate", enc("production/openai/bao-pinned"));
    assert_error(&post(s, &url, json!({ "new_value": "x" })), 422, "validation_error");
    let (status, rotated) = post(s, &url, json!({ "provider_version_ref": "2", "grace_period_seconds": 60 }));
    assert_eq!((status, &rotated["new_version"]), (200, &json!(2)), "{rotated}");
    let (_, meta) = read(s, "production/openai/bao-pinned");
    assert_eq!((&meta["value"], &meta["provider_version_ref"]), (&json!(secret_value("bao-v2")), &json!("2")));
    assert!(meta["last_rotated_at"].is_string(), "{meta}");
    let (_, old) = s.admin("GET", &format!("/v1/secrets/{}?version=1", enc("production/openai/bao-pinned")), None);
    assert_eq!(old["value"], secret_value("bao-v1"), "the old version still reads its pin");
    // A reference OpenBao does not hold: 404 with the reason.
    assert_eq!(post(s, "/v1/secrets", external("x/missing", "vault+kv2://secret/app/none#token")).0, 201);
    let resp = read(s, "x/missing");
    assert_error(&resp, 404, "not_found");
    assert_eq!(resp.1["error"]["reason"], "provider_not_found", "{}", resp.1);

    // Every provider read is audited with the provider and the config, never the value.
    let (_, reads) = s.admin("GET", "/v1/audit?type=secret.read&limit=100", None);
    let provider_reads: Vec<&Value> =
        reads["events"].as_array().unwrap().iter().filter(|e| e["detail"]["provider"] == "vault").collect();
    assert!(provider_reads.len() >= 4, "{reads}");
    assert!(provider_reads.iter().all(|e| e["detail"]["provider_config_id"] == json!(config_id)), "{reads}");

    // Remote import of a folder of five.
    for i in 1..=5 {
        bao.put(&format!("team/s{i}"), json!({ "key": secret_value(format!("team-{i}")) }));
    }
    let preview = json!({ "provider_config_id": config_id, "query": "secret/team" });
    let (status, page) = post(s, "/v1/secrets/remote-import/preview", preview.clone());
    assert_eq!(status, 200, "{page}");
    let candidates = page["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5, "{page}");
    assert!(candidates.iter().all(|c| c["status"] == "ready"), "{page}");
    assert_eq!(
        (&candidates[0]["path"], &candidates[0]["external_ref"]),
        (&json!("team/s1"), &json!("vault+kv2://secret/team/s1"))
    );
    let secrets: Vec<Value> = candidates.iter().map(|c| json!({ "external_ref": c["external_ref"] })).collect();
    let (status, done) =
        post(s, "/v1/secrets/remote-import", json!({ "provider_config_id": config_id, "secrets": secrets }));
    assert_eq!(status, 200, "{done}");
    assert_eq!((&done["imported"], &done["skipped"], &done["errored"]), (&json!(5), &json!(0), &json!(0)), "{done}");
    assert_eq!(value_of(s, "team/s3"), secret_value("team-3"));
    let (_, again) = post(s, "/v1/secrets/remote-import/preview", preview);
    assert!(again["candidates"].as_array().unwrap().iter().all(|c| c["status"] == "duplicate"), "{again}");
    // A path that holds another secret is a conflict.
    bao.put("team2/taken", json!({ "key": "k" }));
    bao.put("team2/free", json!({ "key": "k" }));
    s.create("team2/taken", &secret_value("local"));
    let (_, page) = post(
        s,
        "/v1/secrets/remote-import/preview",
        json!({ "provider_config_id": config_id, "query": "secret/team2" }),
    );
    let status_of: Vec<(&str, &str)> = page["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(status_of, [("team2/free", "ready"), ("team2/taken", "conflict")], "{page}");
    // The CLI previews and imports what is ready.
    let out =
        s.cli(&s.admin_key, &["secret", "import", "--provider-config", &config_id, "--query", "secret/team2", "--yes"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("imported 1, skipped 0, failed 0") && said.contains("conflict"), "{said}");

    // Status: a disabled secret stays listed but does not resolve, nor through the proxy.
    let patch = |path: &str, status: &str| {
        s.admin("PATCH", &format!("/v1/secrets/{}", enc(path)), Some(&json!({ "status": status }).to_string()))
    };
    assert_error(&patch("team/s1", "paused"), 422, "validation_error");
    let (status, meta) = patch("team/s1", "disabled");
    assert_eq!((status, &meta["status"]), (200, &json!("disabled")), "{meta}");
    let resp = read(s, "team/s1");
    assert_error(&resp, 404, "not_found");
    assert_eq!(resp.1["error"]["reason"], "disabled");
    let (_, listed) = s.admin("GET", "/v1/secrets?namespace=team&status=disabled", None);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["path"], "team/s1");
    let (_, all) = s.admin("GET", "/v1/secrets?namespace=team", None);
    assert_eq!(all["items"].as_array().unwrap().len(), 5, "still listed: {all}");
    let (_, audit) = s.admin("GET", "/v1/audit?type=secret.update&limit=100", None);
    assert!(audit["events"].as_array().unwrap().iter().any(|e| e["detail"]["status"] == "disabled"), "{audit}");
    let out = s.cli(&s.admin_key, &["secret", "status", "production/openai/api-key", "archived"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(until_refused(&sc, "production/openai/api-key", "archived"), "the proxy passes the reason on");
    let out = s.cli(&s.admin_key, &["secret", "ls", "--status", "archived"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("production/openai/api-key") && said.contains("archived"), "{said}");
    assert!(s.cli(&s.admin_key, &["secret", "status", "production/openai/api-key", "active"]).status.success());

    // OpenBao goes down: a direct read is 502 provider_error; the proxy serves its copy.
    let (status, _) = curl_with(&sc, "production/openai/bao-key");
    assert_eq!(status, 200);
    bao.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let resp = read(s, "production/openai/bao-key");
    assert_error(&resp, 502, "provider_error");
    assert_eq!((&resp.1["error"]["fault"], &resp.1["error"]["provider"]), (&json!("provider"), &json!("vault")));
    assert!(!resp.1.to_string().contains(MARKER), "{}", resp.1);
    let (status, out) = curl_with(&sc, "production/openai/bao-key");
    assert_eq!(status, 200, "the proxy's stale copy: {out}");
    assert_eq!(last_bearer(&sc), format!("Bearer {}", secret_value("bao-v2")));
    // A secret the proxy never read has no copy: 502 provider_error, fault provider.
    let (status, out) = curl_with(&sc, "production/openai/bao-pinned");
    assert_eq!(status, 502, "{out}");
    assert!(out.contains("provider_error") && out.contains("\"fault\":\"provider\""), "{out}");
    let (_, failures) = s.admin("GET", "/v1/audit?type=secret.read&limit=100", None);
    assert!(
        failures["events"].as_array().unwrap().iter().any(|e| e["success"] == false
            && e["detail"]["error"] == "provider_error"
            && e["detail"]["provider"] == "vault"),
        "{failures}"
    );

    let values: Vec<String> = ["bao-v1", "bao-v2", "team-1", "team-3"].iter().map(secret_value).collect();
    no_value_stored(s, &values);
}

/// Whether the proxy refuses `path` with 403 and `reason` in its message, within 10 s (the
/// change reaches the proxy through its change stream).
fn until_refused(sc: &Sidecar, path: &str, reason: &str) -> bool {
    crate::support::until(Duration::from_secs(10), || {
        let (status, out) = curl_with(sc, path);
        status == 403 && out.contains("secret_not_granted") && out.contains(reason)
    })
}

fn aws_references_on_moto(backend: Backend) {
    let Some(moto) = Moto::start() else { return };
    let mut s = Server::start(backend);
    with_env(
        &mut s,
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AIRLOCK_PROVIDER_ADDRESSES", &moto.endpoint),
        ],
    );
    let v1 = json!({ "password": secret_value("aws-v1"), "user": "svc" }).to_string();
    moto.call("CreateSecret", json!({ "Name": "prod/db", "SecretString": v1 }));
    let (status, config) = post(
        &s,
        "/v1/provider-configs",
        json!({ "type": "aws_secrets_manager", "name": "moto", "is_default": true, "cache_ttl_seconds": 0,
                "config": { "region": "us-east-1", "endpoint": moto.endpoint } }),
    );
    assert_eq!(status, 201, "{config}");
    let config_id = config["id"].as_str().unwrap().to_owned();

    let out =
        s.cli(&s.admin_key, &["secret", "put", "prod/db-password", "--external-ref", "aws-sm://prod/db#password"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(value_of(&s, "prod/db-password"), secret_value("aws-v1"));
    let out = s.cli(&s.admin_key, &["secret", "ls"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("external_reference") && said.contains("aws_secrets_manager") && said.contains("active"),
        "{said}"
    );

    let v2 = json!({ "password": secret_value("aws-v2"), "user": "svc" }).to_string();
    moto.call("PutSecretValue", json!({ "SecretId": "prod/db", "SecretString": v2 }));
    assert_eq!(value_of(&s, "prod/db-password"), secret_value("aws-v2"), "a TTL of 0 reads through");
    // Pinned to the previous stage through the CLI (a new Airlock version).
    let out = s.cli(&s.admin_key, &["secret", "put", "prod/db-password", "--provider-version", "AWSPREVIOUS"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, got) = read(&s, "prod/db-password");
    assert_eq!((&got["value"], &got["version"]), (&json!(secret_value("aws-v1")), &json!(2)), "{got}");
    // A missing field of the JSON secret, and a missing secret: 404 with the reason.
    assert_eq!(
        post(
            &s,
            "/v1/secrets",
            json!({ "path": "prod/nofield", "managed_mode": "external_reference",
        "external_ref": "aws-sm://prod/db#nope" })
        )
        .0,
        201
    );
    assert_eq!(read(&s, "prod/nofield").1["error"]["reason"], "provider_unusable");
    assert_eq!(
        post(
            &s,
            "/v1/secrets",
            json!({ "path": "prod/none", "managed_mode": "external_reference",
        "external_ref": "aws-sm://prod/none", "provider_config_id": config_id })
        )
        .0,
        201
    );
    assert_eq!(read(&s, "prod/none").1["error"]["reason"], "provider_not_found");

    // Import: the moto secrets under a name filter, the one already referenced a duplicate.
    moto.call("CreateSecret", json!({ "Name": "prod/api", "SecretString": secret_value("aws-api") }));
    let (status, page) =
        post(&s, "/v1/secrets/remote-import/preview", json!({ "provider_config_id": config_id, "query": "prod/" }));
    assert_eq!(status, 200, "{page}");
    let by_ref: Vec<(&str, &str)> = page["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["external_ref"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert!(by_ref.contains(&("aws-sm://prod/api", "ready")), "{page}");
    let (status, done) = post(
        &s,
        "/v1/secrets/remote-import",
        json!({ "provider_config_id": config_id, "secrets": [
            { "external_ref": "aws-sm://prod/api", "path": "imported/api", "tags": { "team": "core" } },
            { "external_ref": "aws-sm://prod/api" },
            { "external_ref": "vault+kv2://secret/x" },
        ] }),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!((&done["imported"], &done["skipped"], &done["errored"]), (&json!(1), &json!(1), &json!(1)), "{done}");
    assert_eq!(value_of(&s, "imported/api"), secret_value("aws-api"));

    // moto gone: 502 provider_error.
    drop(moto);
    let resp = read(&s, "prod/db-password");
    assert_error(&resp, 502, "provider_error");
    let values: Vec<String> = ["aws-v1", "aws-v2", "aws-api"].iter().map(secret_value).collect();
    no_value_stored(&s, &values);
}

/// An AWS Secrets Manager reference (moto) through the proxy: injected upstream, scrubbed
/// back, a new AWS version seen after the config's TTL, and the proxy's stale copy once moto
/// is gone while a direct read is 502 `provider_error`.
fn aws_references_through_the_proxy(backend: Backend) {
    let Some(moto) = Moto::start() else { return };
    let mut sc = Sidecar::start_on_with(backend, &["--value-ttl-seconds", "1"]);
    let endpoint = moto.endpoint.clone();
    with_env(
        &mut sc.server,
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AIRLOCK_PROVIDER_ADDRESSES", &endpoint),
        ],
    );
    let s = &sc.server;
    let secret = |v: &str| json!({ "token": secret_value(v) }).to_string();
    moto.call("CreateSecret", json!({ "Name": "prod/api", "SecretString": secret("aws-p1") }));
    let (status, config) = post(
        s,
        "/v1/provider-configs",
        json!({ "type": "aws_secrets_manager", "name": "moto", "is_default": true, "cache_ttl_seconds": 1,
                "config": { "region": "us-east-1", "endpoint": endpoint } }),
    );
    assert_eq!(status, 201, "{config}");
    let body = json!({ "path": "production/openai/aws-key", "managed_mode": "external_reference",
                       "external_ref": "aws-sm://prod/api#token" });
    assert_eq!(post(s, "/v1/secrets", body).0, 201);

    let (status, out) = curl_with(&sc, "production/openai/aws-key");
    assert_eq!(status, 200, "{out}");
    assert_eq!(last_bearer(&sc), format!("Bearer {}", secret_value("aws-p1")));
    assert!(!out.contains(&secret_value("aws-p1")) && out.contains("{{secret:production/openai/aws-key}}"), "{out}");

    moto.call("PutSecretValue", json!({ "SecretId": "prod/api", "SecretString": secret("aws-p2") }));
    assert!(
        crate::support::until(Duration::from_secs(10), || {
            curl_with(&sc, "production/openai/aws-key").0 == 200
                && last_bearer(&sc) == format!("Bearer {}", secret_value("aws-p2"))
        }),
        "the new AWS version reaches the upstream once the TTLs pass"
    );

    drop(moto);
    std::thread::sleep(Duration::from_millis(1500));
    let resp = read(s, "production/openai/aws-key");
    assert_error(&resp, 502, "provider_error");
    let (status, out) = curl_with(&sc, "production/openai/aws-key");
    assert_eq!(status, 200, "the proxy's stale copy: {out}");
    assert_eq!(last_bearer(&sc), format!("Bearer {}", secret_value("aws-p2")));
    no_value_stored(s, &[secret_value("aws-p1"), secret_value("aws-p2")]);
}
