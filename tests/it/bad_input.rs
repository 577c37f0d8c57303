//! Client mistakes get a clear 4xx with the right code and change nothing.

use crate::both_backends;
use crate::support::{Backend, Server, assert_error, secret_value};

fn each_bad_request_gets_its_code_and_writes_nothing(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("keep/me", &secret_value("kept"));
    let (_, before) = srv.admin("GET", "/v1/audit/verify", None);

    let long = "a/".repeat(256) + "b"; // 513 chars
    let big = "x".repeat(64 * 1024 + 1);
    let v = secret_value("bad");
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("POST", "/v1/secrets".into(), Some(r#"{"path":"a/b","value":"#.into()), 400, "invalid_request"),
        ("POST", "/v1/secrets".into(), Some("not json".into()), 400, "invalid_request"),
        ("POST", "/v1/secrets".into(), Some("".into()), 400, "invalid_request"),
        ("POST", "/v1/secrets".into(), Some(r#"{"path":"a/b"}"#.into()), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"a/../b","value":"{v}"}}"#)), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"a//b","value":"{v}"}}"#)), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"/a/b","value":"{v}"}}"#)), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"a b/c","value":"{v}"}}"#)), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"{long}","value":"{v}"}}"#)), 422, "validation_error"),
        ("POST", "/v1/secrets".into(), Some(format!(r#"{{"path":"a/big","value":"{big}"}}"#)), 422, "validation_error"),
        (
            "POST",
            "/v1/secrets".into(),
            Some(format!(r#"{{"path":"a/c","value":"{v}","colour":"red"}}"#)),
            422,
            "validation_error",
        ),
        (
            "POST",
            "/v1/secrets".into(),
            Some(format!(r#"{{"path":"a/c","value":"{v}","tier":"ultra"}}"#)),
            422,
            "validation_error",
        ),
        (
            "POST",
            "/v1/secrets".into(),
            Some(format!(r#"{{"path":"a/c","value":"{v}","expires_at":"tomorrow"}}"#)),
            422,
            "validation_error",
        ),
        (
            "POST",
            "/v1/secrets".into(),
            Some(format!(r#"{{"path":"a/c","value":"{v}","allowed_hosts":["bad host"]}}"#)),
            422,
            "validation_error",
        ),
        ("GET", "/v1/secrets/a%zzb".into(), None, 400, "invalid_request"),
        ("GET", "/v1/secrets/a%2".into(), None, 400, "invalid_request"),
        ("GET", "/v1/secrets/%FF%FE".into(), None, 400, "invalid_request"),
        ("GET", "/v1/secrets/a%2F..%2Fb".into(), None, 422, "validation_error"),
        ("GET", "/v1/secrets/keep%2Fme?version=two".into(), None, 400, "invalid_request"),
        ("GET", "/v1/secrets?cursor=not-a-cursor".into(), None, 400, "invalid_request"),
        ("GET", "/v1/secrets?limit=1000".into(), None, 400, "invalid_request"),
        ("GET", "/v1/audit?cursor=-4".into(), None, 400, "invalid_request"),
        (
            "PUT",
            "/v1/secrets/keep%2Fme".into(),
            Some(format!(r#"{{"value":"{v}","cas":"one"}}"#)),
            422,
            "validation_error",
        ),
        (
            "PUT",
            "/v1/secrets/keep%2Fme".into(),
            Some(format!(r#"{{"value":"{v}","extra":1}}"#)),
            422,
            "validation_error",
        ),
        // A PUT creates a missing secret unless its cas names a version it must have.
        ("PUT", "/v1/secrets/nope%2Fmissing".into(), Some(format!(r#"{{"value":"{v}","cas":1}}"#)), 404, "not_found"),
        (
            "POST",
            "/v1/secrets/keep%2Fme/rotate".into(),
            Some(r#"{"grace_period_seconds":5}"#.into()),
            422,
            "validation_error",
        ),
        (
            "POST",
            "/v1/secrets/keep%2Fme/rotate".into(),
            Some(format!(r#"{{"new_value":"{v}","grace_period_seconds":-1}}"#)),
            422,
            "validation_error",
        ),
        ("POST", "/v1/secrets/keep%2Fme/destroy".into(), Some(r#"{"versions":[]}"#.into()), 422, "validation_error"),
        ("POST", "/v1/keys".into(), Some(r#"{"name":"ci","role":"superuser"}"#.into()), 422, "validation_error"),
        ("GET", "/v1/secrets/production/openai/api-key".into(), None, 404, "not_found"),
        ("GET", "/v1/nothing-here".into(), None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in &cases {
        let resp = srv.admin(method, path, body.as_deref());
        assert_error(&resp, *status, code);
        let message = resp.1.to_string();
        assert!(!message.contains(&v), "{method} {path}: the error echoed the value");
    }
    for key in ["ak_0000", "at_not-a-token", ""] {
        assert_error(&srv.call("GET", "/v1/secrets", key, None), 401, "unauthorized");
    }
    let (_, listing) = srv.admin("GET", "/v1/secrets", None);
    assert_eq!(listing["total"], 1, "nothing was written: {listing}");
    let (_, read) = srv.admin("GET", "/v1/secrets/keep%2Fme", None);
    assert_eq!(read["version"], 1, "the kept secret is unchanged");
    let (_, after) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(after["ok"], true, "{after}");
    assert!(after["head_seq"].as_i64() > before["head_seq"].as_i64(), "refusals are audited");
    assert!(!srv.log().contains("panicked"), "no panic in the server");
}

both_backends!(each_bad_request_gets_its_code_and_writes_nothing);

/// A query parameter an endpoint does not take is refused with its name, never ignored: a
/// filter that is silently not applied returns more than the caller asked for.
#[test]
fn an_unknown_query_parameter_is_refused_by_name() {
    let srv = Server::start(Backend::Sqlite);
    srv.create("team-a/key", &secret_value("a"));
    srv.create("team-b/key", &secret_value("b"));
    for path in [
        "/v1/secrets?agent_id=agt_1",
        "/v1/secrets?namespace=team-a&owner=me",
        "/v1/audit?agent_id=agt_1",
        "/v1/approvals?agent=research",
        "/v1/secrets/team-a%2Fkey?verison=1",
        "/v1/secrets/team-a%2Fkey/access-events?since=2020-01-01",
        "/v1/agents?agent_id=agt_1",
        "/v1/keys?role=admin",
        "/v1/secrets/team-a%2Fkey/versions?limit=1",
        "/v1/audit/verify?tenant=other",
    ] {
        let resp = srv.admin("GET", path, None);
        assert_error(&resp, 400, "invalid_request");
        let name = path.rsplit_once('&').map_or_else(|| path.split_once('?').unwrap().1, |(_, last)| last);
        let name = name.split('=').next().unwrap();
        let message = resp.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("'{name}'")), "{path}: {message}");
    }
    // The parameters an endpoint does take still work.
    let (status, listing) = srv.admin("GET", "/v1/secrets?namespace=team-a&limit=10", None);
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["total"], 1, "{listing}");
    let (status, read) = srv.admin("GET", "/v1/secrets/team-a%2Fkey?version=1", None);
    assert_eq!(status, 200, "{read}");
    // An unknown parameter on a write is refused and writes nothing.
    let resp = srv.admin("POST", "/v1/secrets/team-a%2Fkey/destroy?force=true", Some(r#"{"versions":[1]}"#));
    assert_error(&resp, 400, "invalid_request");
    assert_eq!(srv.admin("GET", "/v1/secrets/team-a%2Fkey?version=1", None).0, 200, "nothing was destroyed");
}
