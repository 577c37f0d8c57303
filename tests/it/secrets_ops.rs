//! The secrets API beyond the basics, driven with curl: create or replace (`PUT` with its
//! preconditions), the validity window after create, who created a secret and who owns it,
//! undelete and destroy by version, copy and move, search, bulk operations and structured
//! values. Each on both backends, with its error cases.

use std::process::Command;

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, Server, assert_error, enc, secret_value};

/// curl with `key` and extra arguments; returns (status, headers, body).
fn curl_as(key: &str, args: &[&str]) -> (u16, String, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (rest, status) = text.rsplit_once('\n').unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (status.parse().unwrap(), head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn curl(srv: &Server, args: &[&str]) -> (u16, Value) {
    let (status, _, body) = curl_as(&srv.admin_key, args);
    (status, body)
}

/// A token of `srv`'s admin holding exactly `scopes`.
fn token(srv: &Server, scopes: &[&str]) -> String {
    let body = json!({ "scope": scopes, "ttl_seconds": 600 }).to_string();
    let (status, resp) = srv.admin("POST", "/v1/tokens", Some(&body));
    assert_eq!(status, 201, "{resp}");
    resp["value"].as_str().unwrap().to_owned()
}

fn item(srv: &Server, path: &str) -> String {
    srv.url(&format!("/v1/secrets/{}", enc(path)))
}

fn read(srv: &Server, path: &str) -> (u16, Value) {
    srv.admin("GET", &format!("/v1/secrets/{}", enc(path)), None)
}

/// The audit records of `kind` at `path`.
fn audited(srv: &Server, kind: &str, path: &str) -> Vec<Value> {
    let (status, page) = srv.admin("GET", &format!("/v1/audit?type={kind}&limit=1000"), None);
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().iter().filter(|e| e["path"] == path).cloned().collect()
}

// ---------------------------------------------------------------------------------------
// 2. Create or replace
// ---------------------------------------------------------------------------------------

fn put_creates_or_replaces_under_its_preconditions(backend: Backend) {
    let srv = Server::start(backend);
    let url = item(&srv, "app/put");
    let (v1, v2, v3) = (secret_value("p1"), secret_value("p2"), secret_value("p3"));

    // A path with no secret: PUT creates it (201), with an ETag of its version.
    let (status, head, body) =
        curl_as(&srv.admin_key, &["-X", "PUT", &url, "-d", &json!({"value": v1, "tags": {"team": "a"}}).to_string()]);
    assert_eq!((status, body["version"].as_i64()), (201, Some(1)), "{body}");
    assert!(head.contains("etag: \"1\""), "{head}");
    assert_eq!(read(&srv, "app/put").1["value"], v1.as_str());
    assert_eq!(audited(&srv, "secret.create", "app/put").len(), 1, "a PUT create is audited as a create");

    // Exists now: PUT replaces (200).
    let (status, head, body) = curl_as(&srv.admin_key, &["-X", "PUT", &url, "-d", &json!({"value": v2}).to_string()]);
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    assert!(head.contains("etag: \"2\""), "{head}");

    // cas: 0 and If-None-Match: * mean "must not exist".
    for args in [
        vec!["-X", "PUT", &url, "-d", r#"{"value":"x","cas":0}"#],
        vec!["-X", "PUT", &url, "-H", "If-None-Match: *", "-d", r#"{"value":"x"}"#],
    ] {
        let (status, body) = curl(&srv, &args);
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{args:?}: {body}");
    }
    // If-Match: a stale version is 409, the current one writes.
    let stale = json!({"value": v3}).to_string();
    let (status, body) = curl(&srv, &["-X", "PUT", &url, "-H", "If-Match: \"1\"", "-d", &stale]);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = curl(&srv, &["-X", "PUT", &url, "-H", "If-Match: \"2\"", "-d", &stale]);
    assert_eq!((status, body["version"].as_i64()), (200, Some(3)), "{body}");
    // Contradicting preconditions and bad ones are 400, and nothing changes.
    for args in [
        vec!["-X", "PUT", &url, "-H", "If-Match: \"3\"", "-d", r#"{"value":"x","cas":2}"#],
        vec!["-X", "PUT", &url, "-H", "If-Match: three", "-d", r#"{"value":"x"}"#],
        vec!["-X", "PUT", &url, "-H", "If-None-Match: \"3\"", "-d", r#"{"value":"x"}"#],
    ] {
        let (status, body) = curl(&srv, &args);
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{args:?}: {body}");
    }
    assert_eq!(read(&srv, "app/put").1["version"], 3);

    // A path with no secret: cas: 0 creates; cas: N (or If-Match) needs one, so 404.
    let fresh = item(&srv, "app/fresh");
    let (status, body) = curl(&srv, &["-X", "PUT", &fresh, "-d", &json!({"value": v1, "cas": 2}).to_string()]);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = curl(&srv, &["-X", "PUT", &fresh, "-H", "If-Match: *", "-d", r#"{"value":"x"}"#]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = curl(&srv, &["-X", "PUT", &fresh, "-d", &json!({"value": v1, "cas": 0}).to_string()]);
    assert_eq!((status, body["version"].as_i64()), (201, Some(1)), "{body}");

    // A soft-deleted path is not recreated by PUT: undelete it first.
    assert_eq!(srv.admin("DELETE", &format!("/v1/secrets/{}", enc("app/fresh")), None).0, 204);
    let (status, _) = curl(&srv, &["-X", "PUT", &fresh, "-d", r#"{"value":"x"}"#]);
    assert_eq!(status, 404);

    // Creating by PUT needs the write scope a POST needs.
    let reader = token(&srv, &["secrets:read:app/**"]);
    let (status, _, body) =
        curl_as(&reader, &["-X", "PUT", &item(&srv, "app/new"), "-d", &json!({"value": v1}).to_string()]);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");
    assert_eq!(read(&srv, "app/new").0, 404, "nothing was created");
    let writer = token(&srv, &["secrets:write:app/**"]);
    let (status, _, body) =
        curl_as(&writer, &["-X", "PUT", &item(&srv, "app/new"), "-d", &json!({"value": v1}).to_string()]);
    assert_eq!(status, 201, "{body}");
}

fn the_validity_window_can_be_set_changed_and_cleared_after_create(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("app/window", &secret_value(1));
    let path = format!("/v1/secrets/{}", enc("app/window"));
    // PATCH sets an expiry in the past: the secret is unreadable.
    let (status, meta) = srv.admin("PATCH", &path, Some(r#"{"expires_at":"2020-01-01T00:00:00Z"}"#));
    assert_eq!((status, meta["expires_at"].as_str()), (200, Some("2020-01-01T00:00:00Z")), "{meta}");
    assert_eq!(read(&srv, "app/window").0, 404);
    // PATCH clears it with null.
    let (status, meta) = srv.admin("PATCH", &path, Some(r#"{"expires_at":null}"#));
    assert_eq!((status, &meta["expires_at"]), (200, &Value::Null), "{meta}");
    assert_eq!(read(&srv, "app/window").0, 200);
    // PUT sets not_before in the future with a new value, then clears it.
    let body = json!({"value": secret_value(2), "not_before": "2999-01-01T00:00:00Z"}).to_string();
    assert_eq!(srv.admin("PUT", &path, Some(&body)).0, 200);
    assert_eq!(read(&srv, "app/window").0, 404, "not valid yet");
    let (_, versions) = srv.admin("GET", &format!("{path}/versions"), None);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let body = json!({"value": secret_value(3), "not_before": null}).to_string();
    assert_eq!(srv.admin("PUT", &path, Some(&body)).0, 200);
    let (status, now) = read(&srv, "app/window");
    assert_eq!(
        (status, now["value"].as_str(), &now["not_before"]),
        (200, Some(secret_value(3).as_str()), &Value::Null)
    );
    // A PUT without the fields leaves them; a bad time is 422 and changes nothing.
    assert_eq!(srv.admin("PATCH", &path, Some(r#"{"expires_at":"2999-01-01T00:00:00Z"}"#)).0, 200);
    assert_eq!(srv.admin("PUT", &path, Some(&json!({"value": secret_value(4)}).to_string())).0, 200);
    assert_eq!(read(&srv, "app/window").1["expires_at"], "2999-01-01T00:00:00Z");
    let resp = srv.admin("PATCH", &path, Some(r#"{"expires_at":"tomorrow"}"#));
    assert_error(&resp, 422, "validation_error");
    assert_eq!(read(&srv, "app/window").1["expires_at"], "2999-01-01T00:00:00Z");
}

// ---------------------------------------------------------------------------------------
// 3. Owner and creator
// ---------------------------------------------------------------------------------------

fn a_secret_records_its_creator_and_owner_defaults_to_the_writer(backend: Backend) {
    let srv = Server::start(backend);
    let (status, key) = srv.admin("POST", "/v1/keys", Some(r#"{"name":"deploy-bot","role":"admin"}"#));
    assert_eq!(status, 201, "{key}");
    let bot = key["key"].as_str().unwrap();
    let body = json!({"path": "app/owned", "value": secret_value(1)}).to_string();
    let (status, _, resp) = curl_as(bot, &["-X", "POST", &srv.url("/v1/secrets"), "-d", &body]);
    assert_eq!(status, 201, "{resp}");
    let (_, meta) = read(&srv, "app/owned");
    assert_eq!(meta["created_by"], json!({"id": key["id"], "description": "deploy-bot"}), "{meta}");
    assert_eq!(meta["owner"], "deploy-bot", "the owner defaults to the writer");

    // A named owner is kept; an owner change keeps created_by.
    let body = json!({"path": "app/named", "value": secret_value(2), "owner": "team-payments"}).to_string();
    assert_eq!(curl_as(bot, &["-X", "POST", &srv.url("/v1/secrets"), "-d", &body]).0, 201);
    assert_eq!(read(&srv, "app/named").1["owner"], "team-payments");
    let (status, meta) =
        srv.admin("PATCH", &format!("/v1/secrets/{}", enc("app/owned")), Some(r#"{"owner":"team-ml"}"#));
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["owner"], "team-ml");
    assert_eq!(meta["created_by"]["description"], "deploy-bot", "{meta}");
    // A PUT by another credential keeps both.
    let body = json!({"value": secret_value(3)}).to_string();
    assert_eq!(srv.admin("PUT", &format!("/v1/secrets/{}", enc("app/owned")), Some(&body)).0, 200);
    let (_, meta) = read(&srv, "app/owned");
    assert_eq!((meta["owner"].as_str(), meta["created_by"]["id"].clone()), (Some("team-ml"), key["id"].clone()));
    // The listing shows created_by as well.
    let (_, list) = srv.admin("GET", "/v1/secrets?namespace=app", None);
    assert!(list["items"].as_array().unwrap().iter().all(|i| i["created_by"]["description"] == "deploy-bot"), "{list}");
}

// ---------------------------------------------------------------------------------------
// 4. Undelete and destroy by version
// ---------------------------------------------------------------------------------------

fn undelete_and_destroy_take_versions_and_refuse_unknown_ones(backend: Backend) {
    let srv = Server::start(backend);
    let base = format!("/v1/secrets/{}", enc("app/versions"));
    srv.create("app/versions", &secret_value(1));
    // Rotated out with no grace: version 1 is expired.
    let rotate = json!({"new_value": secret_value(2), "grace_period_seconds": 0}).to_string();
    assert_eq!(srv.admin("POST", &format!("{base}/rotate"), Some(&rotate)).0, 200);
    assert_eq!(srv.admin("GET", &format!("{base}?version=1"), None).0, 404);

    // Empty lists and versions that do not exist are 422 on both, and change nothing.
    for endpoint in ["undelete", "destroy"] {
        for body in [r#"{"versions":[]}"#, r#"{"versions":[7]}"#, r#"{"versions":[0]}"#, r#"{"versions":[1,9]}"#] {
            let resp = srv.admin("POST", &format!("{base}/{endpoint}"), Some(body));
            assert_error(&resp, 422, "validation_error");
        }
    }
    let (_, v) = srv.admin("GET", &format!("{base}/versions"), None);
    assert_eq!(
        (v["versions"][0]["state"].as_str(), v["versions"][1]["state"].as_str()),
        (Some("expired"), Some("current"))
    );

    // Undelete of a version lifts its expiry: readable again.
    let (status, meta) = srv.admin("POST", &format!("{base}/undelete"), Some(r#"{"versions":[1]}"#));
    assert_eq!(status, 200, "{meta}");
    let (status, old) = srv.admin("GET", &format!("{base}?version=1"), None);
    assert_eq!((status, old["value"].as_str()), (200, Some(secret_value(1).as_str())), "{old}");
    assert_eq!(audited(&srv, "secret.undelete", "app/versions")[0]["detail"]["versions"], json!([1]));

    // Soft delete, then undelete with no body (the secret) or with versions (and them).
    assert_eq!(srv.admin("DELETE", &base, None).0, 204);
    let (status, _) = srv.admin("POST", &format!("{base}/undelete"), None);
    assert_eq!(status, 200);
    assert_eq!(srv.admin("DELETE", &base, None).0, 204);
    let (status, _) = srv.admin("POST", &format!("{base}/undelete"), Some(r#"{"versions":[2]}"#));
    assert_eq!(status, 200);
    assert_eq!(read(&srv, "app/versions").0, 200);
    // Not deleted and no versions named: nothing to undelete.
    assert_eq!(srv.admin("POST", &format!("{base}/undelete"), None).0, 404);

    // A destroyed version cannot be undeleted; destroying it again is fine.
    assert_eq!(srv.admin("POST", &format!("{base}/destroy"), Some(r#"{"versions":[1]}"#)).0, 204);
    assert_eq!(srv.admin("POST", &format!("{base}/destroy"), Some(r#"{"versions":[1]}"#)).0, 204);
    let resp = srv.admin("POST", &format!("{base}/undelete"), Some(r#"{"versions":[1]}"#));
    assert_error(&resp, 422, "validation_error");
    let resp = srv.admin("POST", &format!("{base}/undelete"), Some(r#"{"versions":[1],"extra":true}"#));
    assert_error(&resp, 422, "validation_error");
}

// ---------------------------------------------------------------------------------------
// 5. Copy and move
// ---------------------------------------------------------------------------------------

/// The stored ciphertext of each version of the secret at `path`, oldest first.
fn ciphertexts(srv: &Server, path: &str) -> Vec<Vec<u8>> {
    let url =
        srv.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", srv.data_dir().join("airlock.db").display()));
    let path = path.to_owned();
    crate::support::block_on(async move {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let rows: Vec<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id \
             WHERE s.path = $1 ORDER BY v.version",
        )
        .bind(path)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows.into_iter().flatten().collect()
    })
}

fn copy_reencrypts_and_move_keeps_the_history(backend: Backend) {
    let srv = Server::start(backend);
    let (v1, v2) = (secret_value("c1"), secret_value("c2"));
    let body = json!({"path": "src/key", "value": v1, "tags": {"team": "a"}, "description": "d"}).to_string();
    assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body)).0, 201);
    assert_eq!(srv.admin("PUT", "/v1/secrets/src%2Fkey", Some(&json!({"value": v2}).to_string())).0, 200);

    // Copy: the current value, metadata with it, a new secret (201) under its own ciphertext.
    let copy = |body: Value| curl(&srv, &["-X", "POST", &srv.url("/v1/secrets/copy"), "-d", &body.to_string()]);
    let (status, body) = copy(json!({"from": "src/key", "to": "dst/key"}));
    assert_eq!((status, body["version"].as_i64(), body["from_version"].as_i64()), (201, Some(1), Some(2)), "{body}");
    let (_, copied) = read(&srv, "dst/key");
    assert_eq!((copied["value"].as_str(), copied["tags"]["team"].as_str()), (Some(v2.as_str()), Some("a")));
    let (src_ct, dst_ct) = (ciphertexts(&srv, "src/key"), ciphertexts(&srv, "dst/key"));
    assert_eq!((src_ct.len(), dst_ct.len()), (2, 1));
    assert_ne!(src_ct[1], dst_ct[0], "a copy is sealed anew, never the same ciphertext");
    assert!(!dst_ct[0].windows(v2.len()).any(|w| w == v2.as_bytes()), "ciphertext only");
    assert_eq!(audited(&srv, "secret.copy", "dst/key")[0]["detail"]["from"], "src/key");
    // Onto an existing path: 409 without overwrite, a new version with it.
    let (status, body) = copy(json!({"from": "src/key", "to": "dst/key"}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = copy(json!({"from": "src/key", "to": "dst/key", "overwrite": true}));
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    // Bad requests: the same path, a missing source, unknown fields.
    assert_eq!(copy(json!({"from": "src/key", "to": "src/key"})).0, 422);
    assert_eq!(copy(json!({"from": "src/none", "to": "dst/none"})).0, 404);
    assert_eq!(copy(json!({"from": "src/key", "to": "dst/x", "mode": "fast"})).0, 422);
    assert_eq!(copy(json!({"from": "src/key", "to": "copy"})).0, 422, "an endpoint's name is no path");

    // Scopes: read on the source, write on the destination.
    let limited = token(&srv, &["secrets:read:src/**", "secrets:write:mine/**", "secrets:delete:src/**"]);
    let as_limited = |endpoint: &str, body: Value| {
        let (status, _, body) =
            curl_as(&limited, &["-X", "POST", &srv.url(&format!("/v1/secrets/{endpoint}")), "-d", &body.to_string()]);
        (status, body)
    };
    assert_eq!(as_limited("copy", json!({"from": "src/key", "to": "other/key"})).0, 403);
    assert_eq!(read(&srv, "other/key").0, 404);
    assert_eq!(as_limited("copy", json!({"from": "dst/key", "to": "mine/key"})).0, 403);
    assert_eq!(as_limited("copy", json!({"from": "src/key", "to": "mine/key"})).0, 201);

    // Move into a path the caller may not write: 403 and nothing changes.
    let (status, body) = as_limited("move", json!({"from": "src/key", "to": "other/moved"}));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");
    assert_eq!(read(&srv, "src/key").1["value"], v2.as_str());
    assert_eq!(read(&srv, "other/moved").0, 404);

    // Move: the history goes along, re-sealed; nothing is left at the old path.
    let before = ciphertexts(&srv, "src/key");
    let (status, body) = as_limited("move", json!({"from": "src/key", "to": "mine/moved"}));
    assert_eq!((status, body["path"].as_str(), body["version"].as_i64()), (200, Some("mine/moved"), Some(2)), "{body}");
    assert_eq!(read(&srv, "src/key").0, 404);
    assert_eq!(srv.admin("GET", "/v1/secrets/src%2Fkey/versions", None).0, 404);
    assert_eq!(srv.admin("POST", "/v1/secrets/src%2Fkey/undelete", None).0, 404, "nothing to undelete");
    let (status, moved) = srv.admin("GET", "/v1/secrets/mine%2Fmoved?version=1", None);
    assert_eq!((status, moved["value"].as_str()), (200, Some(v1.as_str())), "{moved}");
    assert_eq!(read(&srv, "mine/moved").1["value"], v2.as_str());
    let after = ciphertexts(&srv, "mine/moved");
    assert_eq!(after.len(), 2);
    assert!(before.iter().all(|b| !after.contains(b)), "every version was sealed under the new path");
    assert_eq!(audited(&srv, "secret.move", "src/key")[0]["detail"]["to"], "mine/moved");
    assert_eq!(audited(&srv, "secret.move", "mine/moved")[0]["detail"]["from"], "src/key");
    // Onto an existing path: 409 without overwrite.
    srv.create("src/again", &secret_value(3));
    let (status, body) = srv.admin("POST", "/v1/secrets/move", Some(r#"{"from":"src/again","to":"dst/key"}"#));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, _) =
        srv.admin("POST", "/v1/secrets/move", Some(r#"{"from":"src/again","to":"dst/key","overwrite":true}"#));
    assert_eq!(status, 200);
    assert_eq!(read(&srv, "dst/key").1["value"], secret_value(3).as_str());
}

// ---------------------------------------------------------------------------------------
// 6. Search
// ---------------------------------------------------------------------------------------

fn search_finds_by_path_description_tags_and_owner_within_the_callers_scopes(backend: Backend) {
    let srv = Server::start(backend);
    for (path, description, tags, owner) in [
        ("team/db/password", "Primary Postgres", json!({"env": "prod"}), "team-data"),
        ("team/api/stripe", "payments", json!({"vendor": "Stripe"}), "team-pay"),
        ("team/api/openai", "LLM key", json!({"env": "dev"}), "team-ml"),
        ("other/db/password", "other postgres", json!({}), "ops"),
    ] {
        let body = json!({"path": path, "value": secret_value(path), "description": description, "tags": tags, "owner": owner});
        assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body.to_string())).0, 201);
    }
    let search = |key: &str, query: &str| {
        let (status, _, body) = curl_as(key, &[&srv.url(&format!("/v1/secrets/search?{query}"))]);
        let paths: Vec<String> = body["items"]
            .as_array()
            .map(|a| a.iter().map(|i| i["path"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        (status, paths, body)
    };
    let admin = srv.admin_key.clone();
    assert_eq!(search(&admin, "q=postgres").1, vec!["other/db/password", "team/db/password"], "description, any case");
    assert_eq!(search(&admin, "q=stripe").1, vec!["team/api/stripe"], "path and tag value");
    assert_eq!(search(&admin, "q=VENDOR").1, vec!["team/api/stripe"], "tag key");
    assert_eq!(search(&admin, "q=team-ml").1, vec!["team/api/openai"], "owner");
    assert_eq!(search(&admin, "q=postgres&prefix=team/").1, vec!["team/db/password"]);
    assert_eq!(search(&admin, "prefix=team/api/").1, vec!["team/api/openai", "team/api/stripe"]);
    assert!(search(&admin, "q=nothing-like-this").1.is_empty());
    // Metadata only.
    let (_, _, body) = search(&admin, "q=team");
    assert!(!body.to_string().contains(&secret_value("team/db/password")), "{body}");
    // Pages by cursor.
    let (status, first, body) = search(&admin, "q=team&limit=2");
    assert_eq!((status, first.len(), body["total"].as_i64()), (200, 2, Some(3)), "{body}");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, second, body) = search(&admin, &format!("q=team&limit=2&cursor={cursor}"));
    assert_eq!((second.len(), &body["next_cursor"]), (1, &Value::Null), "{body}");
    // Filtered to what the caller may see; outside its scopes, nothing.
    let api_only = token(&srv, &["secrets:read_metadata:team/api/*"]);
    assert_eq!(search(&api_only, "q=postgres").1, Vec::<String>::new());
    assert_eq!(search(&api_only, "q=team").1, vec!["team/api/openai", "team/api/stripe"]);
    let nothing = token(&srv, &["secrets:read_metadata:elsewhere/**"]);
    let (status, paths, body) = search(&nothing, "q=team");
    assert_eq!((status, paths.len(), body["total"].as_i64()), (200, 0, Some(0)), "{body}");
    // Unknown and bad parameters are 400.
    for bad in ["q=a&owner=me", "limit=0", "limit=101", "cursor=garbage"] {
        let (status, _, body) = search(&admin, bad);
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {body}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Bulk
// ---------------------------------------------------------------------------------------

fn bulk(srv: &Server, key: &str, body: &Value) -> (u16, Value) {
    let (status, _, resp) = curl_as(key, &["-X", "POST", &srv.url("/v1/secrets/bulk"), "-d", &body.to_string()]);
    (status, resp)
}

fn bulk_applies_each_operation_under_its_own_scope_atomically_or_not(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("bulk/a", &secret_value("a1"));
    srv.create("bulk/b", &secret_value("b1"));
    let admin = srv.admin_key.clone();
    let ops = json!([
        {"op": "set", "path": "bulk/a", "value": secret_value("a2")},
        {"op": "set", "path": "bulk/new", "value": secret_value("n1"), "tags": {"k": "v"}},
        {"op": "rotate", "path": "bulk/b", "new_value": secret_value("b2"), "grace_period_seconds": 60},
        {"op": "destroy", "path": "bulk/a", "versions": [1]},
        {"op": "delete", "path": "bulk/b"},
        {"op": "undelete", "path": "bulk/b"},
    ]);
    let (status, body) = bulk(&srv, &admin, &json!({"atomic": true, "operations": ops}));
    assert_eq!((status, body["applied"].as_bool()), (200, Some(true)), "{body}");
    let statuses: Vec<i64> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![200, 201, 200, 200, 200, 200], "{body}");
    assert_eq!(read(&srv, "bulk/a").1["value"], secret_value("a2").as_str());
    assert_eq!(read(&srv, "bulk/new").1["value"], secret_value("n1").as_str());
    assert_eq!(read(&srv, "bulk/b").1["value"], secret_value("b2").as_str());
    assert_eq!(srv.admin("GET", "/v1/secrets/bulk%2Fa?version=1", None).0, 404, "destroyed");
    assert_eq!(audited(&srv, "secret.create", "bulk/new").len(), 1);

    // Atomic with one failing operation: nothing changes, no record for the others.
    let updates_before = audited(&srv, "secret.update", "bulk/a").len();
    let ops = json!([
        {"op": "set", "path": "bulk/a", "value": secret_value("a3")},
        {"op": "set", "path": "bulk/other", "value": secret_value("o1")},
        {"op": "destroy", "path": "bulk/b", "versions": [99]},
    ]);
    let (status, body) = bulk(&srv, &admin, &json!({"atomic": true, "operations": ops}));
    assert_eq!((status, body["applied"].as_bool()), (200, Some(false)), "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(
        (r[0]["status"].as_i64(), r[1]["status"].as_i64(), r[2]["status"].as_i64()),
        (Some(424), Some(424), Some(422))
    );
    assert_eq!(r[2]["error"]["code"], "validation_error");
    assert_eq!(read(&srv, "bulk/a").1["value"], secret_value("a2").as_str(), "rolled back");
    assert_eq!(read(&srv, "bulk/other").0, 404, "rolled back");
    assert_eq!(audited(&srv, "secret.update", "bulk/a").len(), updates_before, "no record of the rolled-back set");
    assert!(audited(&srv, "secret.create", "bulk/other").is_empty());

    // Each operation is checked against its own scope.
    let limited = token(&srv, &["secrets:write:bulk/a", "secrets:read:bulk/**"]);
    let ops = json!([
        {"op": "set", "path": "bulk/a", "value": secret_value("a4")},
        {"op": "set", "path": "bulk/b", "value": secret_value("b3")},
        {"op": "delete", "path": "bulk/a"},
    ]);
    let (status, body) = bulk(&srv, &limited, &json!({"atomic": true, "operations": ops.clone()}));
    assert_eq!((status, body["applied"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(body["results"][1]["status"], 403);
    assert_eq!(read(&srv, "bulk/a").1["value"], secret_value("a2").as_str(), "atomic: nothing changed");
    // Best effort: the allowed one is applied, the others say why not.
    let (status, body) = bulk(&srv, &limited, &json!({"operations": ops}));
    assert_eq!((status, body["applied"].as_bool()), (200, Some(true)), "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!((r[0]["status"].as_i64(), r[0]["version"].as_i64()), (Some(200), Some(3)), "{body}");
    assert_eq!((r[1]["status"].as_i64(), r[1]["error"]["code"].as_str()), (Some(403), Some("permission_denied")));
    assert_eq!(r[2]["status"], 403);
    assert_eq!(read(&srv, "bulk/a").1["value"], secret_value("a4").as_str());
    assert_eq!(read(&srv, "bulk/b").1["value"], secret_value("b2").as_str());
    // Best effort with a store failure in the middle.
    let ops = json!([
        {"op": "set", "path": "bulk/a", "value": secret_value("a5"), "cas": 1},
        {"op": "set", "path": "bulk/a", "value": secret_value("a5")},
    ]);
    let (_, body) = bulk(&srv, &admin, &json!({"operations": ops}));
    let r = body["results"].as_array().unwrap();
    assert_eq!((r[0]["status"].as_i64(), r[1]["status"].as_i64()), (Some(409), Some(200)), "{body}");

    // Shape: at most 100 operations, at least one, known ops only.
    let many: Vec<Value> = (0..101).map(|i| json!({"op": "delete", "path": format!("bulk/x{i}")})).collect();
    let (status, body) = bulk(&srv, &admin, &json!({"operations": many}));
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("validation_error")), "{body}");
    assert_eq!(bulk(&srv, &admin, &json!({"operations": []})).0, 422);
    assert_eq!(bulk(&srv, &admin, &json!({"operations": [{"op": "steal", "path": "bulk/a"}]})).0, 422);
    let (status, body) = bulk(&srv, &admin, &json!({"operations": [{"op": "set", "path": "bulk/a", "value": 7}]}));
    assert_eq!(status, 422, "{body}");
    assert!(!srv.log().contains(&secret_value("a4")), "no value in the log");
}

// ---------------------------------------------------------------------------------------
// 8. Structured values
// ---------------------------------------------------------------------------------------

fn a_structured_value_is_stored_as_canonical_json_and_read_by_field(backend: Backend) {
    let sc = crate::sidecar::Sidecar::start_on(backend);
    let srv = &sc.server;
    let (user, pass) = (secret_value("user"), secret_value("pass"));
    // An object value, and the same object sent as text: both are JSON objects to `#field`.
    let body = json!({"path": "production/multi/obj", "value": {"user": user, "pass": pass, "n": 1}});
    assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body.to_string())).0, 201);
    let text = json!({"user": user, "pass": pass}).to_string();
    let body = json!({"path": "production/multi/text", "value": text});
    assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body.to_string())).0, 201);
    let (status, whole) = read(srv, "production/multi/obj");
    let canonical = format!(r#"{{"n":1,"pass":"{pass}","user":"{user}"}}"#);
    assert_eq!((status, whole["value"].as_str()), (200, Some(canonical.as_str())), "keys sorted, no spaces");
    for path in ["production/multi/obj", "production/multi/text"] {
        let (status, one) = srv.admin("GET", &format!("/v1/secrets/{}?field=user", enc(path)), None);
        assert_eq!((status, one["value"].as_str()), (200, Some(user.as_str())), "{path}: {one}");
        let resp = srv.admin("GET", &format!("/v1/secrets/{}?field=nope", enc(path)), None);
        assert_error(&resp, 404, "not_found");
        assert!(!resp.1.to_string().contains(&pass), "an error never quotes the value");
    }
    // PUT takes objects too; a field of a plain value is 422; other JSON types are 422.
    let item = format!("/v1/secrets/{}", enc("production/multi/obj"));
    assert_eq!(srv.admin("PUT", &item, Some(&json!({"value": {"user": "u2"}}).to_string())).0, 200);
    assert_eq!(srv.admin("GET", &format!("{item}?field=user"), None).1["value"], "u2");
    let put = json!({"value": {"user": user, "pass": pass}}).to_string();
    assert_eq!(srv.admin("PUT", &item, Some(&put)).0, 200);
    let resp = srv.admin("GET", &format!("/v1/secrets/{}?field=user", enc(crate::sidecar::OPENAI_KEY_PATH)), None);
    assert_error(&resp, 422, "validation_error");
    for bad in [json!([1, 2]), json!(7), json!(true)] {
        let body = json!({"path": "production/multi/bad", "value": bad}).to_string();
        assert_error(&srv.admin("POST", "/v1/secrets", Some(&body)), 422, "validation_error");
    }
    // The proxy's `#field` placeholders work on both forms.
    for path in ["production/multi/obj", "production/multi/text"] {
        let header = format!("Authorization: Bearer {{{{secret:{path}#user}}}}");
        let (status, out) = sc.curl(&["-H", &header, "https://api.openai.com/v1/field"]);
        assert_eq!(status, 200, "{path}: {out}");
    }
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got.len(), 2);
    for r in &got {
        let auth = r.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(auth, format!("Bearer {user}"), "the field, not the object");
    }
}

both_backends!(
    put_creates_or_replaces_under_its_preconditions,
    the_validity_window_can_be_set_changed_and_cleared_after_create,
    a_secret_records_its_creator_and_owner_defaults_to_the_writer,
    undelete_and_destroy_take_versions_and_refuse_unknown_ones,
    copy_reencrypts_and_move_keeps_the_history,
    search_finds_by_path_description_tags_and_owner_within_the_callers_scopes,
    bulk_applies_each_operation_under_its_own_scope_atomically_or_not,
    a_structured_value_is_stored_as_canonical_json_and_read_by_field,
);
