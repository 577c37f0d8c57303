//! The secrets API as a user drives it with curl: the seed examples of the issue.

use std::process::Command;

use serde_json::Value;

use crate::both_backends;
use crate::support::{Backend, Server, enc, secret_value};

/// curl with the admin key; returns (status, body).
fn curl(srv: &Server, args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", srv.admin_key))
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn seed_examples_work_with_curl(backend: Backend) {
    let srv = Server::start(backend);
    let base = srv.url("/v1/secrets");
    let item = format!("{base}/{}", enc("production/openai/api-key"));
    let (v1, v2, v3) = (secret_value("v1"), secret_value("v2"), secret_value("v3"));

    let create =
        format!(r#"{{"path":"production/openai/api-key","value":"{v1}","tier":"sensitive","tags":{{"team":"ml"}}}}"#);
    let (status, body) = curl(&srv, &["-X", "POST", &base, "-H", "Content-Type: application/json", "-d", &create]);
    assert_eq!((status, body["version"].as_i64(), body["tier"].as_str()), (201, Some(1), Some("sensitive")), "{body}");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, body) = curl(&srv, &["-X", "POST", &base, "-d", &create]);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");

    let (status, body) = curl(&srv, &[&item]);
    assert_eq!((status, body["value"].as_str(), body["version"].as_i64()), (200, Some(v1.as_str()), Some(1)), "{body}");
    assert_eq!(body["tags"]["team"], "ml");

    let (status, body) = curl(&srv, &[&format!("{base}?namespace=production%2Fopenai")]);
    assert_eq!((status, body["total"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(body["items"][0]["path"], "production/openai/api-key");
    assert!(!body.to_string().contains(&v1), "a listing must never carry values");

    let (status, body) = curl(&srv, &["-X", "PUT", &item, "-d", &format!(r#"{{"value":"{v2}","cas":1}}"#)]);
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let (status, body) = curl(&srv, &["-X", "PUT", &item, "-d", &format!(r#"{{"value":"{v3}","cas":1}}"#)]);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "stale cas: {body}");

    let (status, body) = curl(
        &srv,
        &[
            "-X",
            "POST",
            &format!("{item}/rotate"),
            "-d",
            &format!(r#"{{"new_value":"{v3}","grace_period_seconds":2}}"#),
        ],
    );
    assert_eq!((status, body["old_version"].as_i64(), body["new_version"].as_i64()), (200, Some(2), Some(3)), "{body}");
    let old_expires_at = body["old_expires_at"].as_str().unwrap().to_owned();
    let (status, body) = curl(&srv, &[&format!("{item}?version=2")]);
    assert_eq!((status, body["value"].as_str()), (200, Some(v2.as_str())), "old version readable in grace: {body}");
    let (_, body) = curl(&srv, &[&item]);
    assert_eq!(body["value"].as_str(), Some(v3.as_str()));
    let (_, versions) = curl(&srv, &[&format!("{item}/versions")]);
    assert_eq!(versions["versions"][1]["state"], "grace", "{versions}");
    assert_eq!(versions["versions"][1]["expires_at"].as_str(), Some(old_expires_at.as_str()));
    std::thread::sleep(std::time::Duration::from_millis(2300));
    let (status, body) = curl(&srv, &[&format!("{item}?version=2")]);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "after old_expires_at: {body}");

    let (status, _) = curl(&srv, &["-X", "DELETE", &item]);
    assert_eq!(status, 204);
    let (status, _) = curl(&srv, &[&item]);
    assert_eq!(status, 404);
    let (status, body) = curl(&srv, &["-X", "POST", &format!("{item}/undelete")]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(&srv, &[&item]);
    assert_eq!((status, body["value"].as_str()), (200, Some(v3.as_str())));
}

fn listing_pages_by_cursor_and_filters_by_namespace_and_tag(backend: Backend) {
    let srv = Server::start(backend);
    for i in 0..7 {
        let tags = if i % 2 == 0 { r#"{"env":"prod"}"# } else { r#"{"env":"dev"}"# };
        let body = format!(r#"{{"path":"team_a/svc/key{i}","value":"{}","tags":{tags}}}"#, secret_value(i));
        assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body)).0, 201);
    }
    srv.create("team_ab/other", &secret_value("x"));
    srv.create("teamXa/other", &secret_value("y"));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, page) = srv.admin("GET", &format!("/v1/secrets?namespace=team_a&limit=3{q}"), None);
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 7, "team_ab/ and teamXa/ are not inside team_a/");
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("team_a/svc/key{i}")).collect();
    assert_eq!(seen, expected);

    let (_, tagged) = srv.admin("GET", "/v1/secrets?tag=env=prod", None);
    assert_eq!(tagged["total"], 4, "{tagged}");
}

fn destroyed_versions_are_gone_and_permanent_delete_frees_the_path(backend: Backend) {
    let srv = Server::start(backend);
    let item = format!("/v1/secrets/{}", enc("ci/deploy-key"));
    srv.create("ci/deploy-key", &secret_value(1));
    let put = format!(r#"{{"value":"{}"}}"#, secret_value(2));
    assert_eq!(srv.admin("PUT", &item, Some(&put)).0, 200);
    assert_eq!(srv.admin("GET", &format!("{item}?version=1"), None).0, 200, "a replaced version stays readable");
    assert_eq!(srv.admin("POST", &format!("{item}/destroy"), Some(r#"{"versions":[1]}"#)).0, 204);
    assert_eq!(srv.admin("GET", &format!("{item}?version=1"), None).0, 404);
    let (_, v) = srv.admin("GET", &format!("{item}/versions"), None);
    assert_eq!(v["versions"][0]["state"], "destroyed", "{v}");

    assert_eq!(srv.admin("DELETE", &format!("{item}?permanent=true"), None).0, 204);
    assert_eq!(srv.admin("POST", &format!("{item}/undelete"), None).0, 404, "permanent delete cannot be undone");
    srv.create("ci/deploy-key", &secret_value(3));
}

fn expiry_and_not_before_hide_a_secret(backend: Backend) {
    let srv = Server::start(backend);
    let body = format!(r#"{{"path":"a/expired","value":"{}","expires_at":"2020-01-01T00:00:00Z"}}"#, secret_value(1));
    assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body)).0, 201);
    let body = format!(r#"{{"path":"a/future","value":"{}","not_before":"2999-01-01T00:00:00Z"}}"#, secret_value(2));
    assert_eq!(srv.admin("POST", "/v1/secrets", Some(&body)).0, 201);
    assert_eq!(srv.admin("GET", "/v1/secrets/a%2Fexpired", None).0, 404);
    assert_eq!(srv.admin("GET", "/v1/secrets/a%2Ffuture", None).0, 404);
}

fn patch_changes_metadata_only(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("app/db", &secret_value(1));
    let (status, meta) = srv.admin(
        "PATCH",
        "/v1/secrets/app%2Fdb",
        Some(r#"{"description":"primary db","tags":{"owner":"payments"},"allowed_hosts":["db.internal.example"],"owner":"team-payments"}"#),
    );
    assert_eq!(status, 200, "{meta}");
    assert_eq!((meta["version"].as_i64(), meta["description"].as_str()), (Some(1), Some("primary db")));
    assert_eq!(meta["allowed_hosts"][0], "db.internal.example");
    let (_, read) = srv.admin("GET", "/v1/secrets/app%2Fdb", None);
    assert_eq!(read["owner"], "team-payments");
    assert_eq!(read["value"].as_str(), Some(secret_value(1).as_str()));
}

/// A read sets `accessed_at` (docs/api.md: kept to the minute): the first read records
/// it, the listing shows it, and a read within the minute leaves it where it was.
fn a_read_records_accessed_at_to_the_minute(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("app/seen", &secret_value(1));
    let listed =
        |srv: &Server| srv.admin("GET", "/v1/secrets?namespace=app", None).1["items"][0]["accessed_at"].clone();
    assert_eq!(listed(&srv), Value::Null, "never read yet");
    let (status, first) = srv.admin("GET", "/v1/secrets/app%2Fseen", None);
    assert_eq!(status, 200, "{first}");
    assert!(first["accessed_at"].is_string(), "{first}");
    assert_eq!(listed(&srv), first["accessed_at"], "the read was recorded");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, second) = srv.admin("GET", "/v1/secrets/app%2Fseen", None);
    assert_eq!(second["accessed_at"], first["accessed_at"], "a read within the minute leaves it");
    assert_eq!(listed(&srv), first["accessed_at"]);
}

both_backends!(
    a_read_records_accessed_at_to_the_minute,
    seed_examples_work_with_curl,
    listing_pages_by_cursor_and_filters_by_namespace_and_tag,
    destroyed_versions_are_gone_and_permanent_delete_frees_the_path,
    expiry_and_not_before_hide_a_secret,
    patch_changes_metadata_only,
);
