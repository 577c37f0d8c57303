//! Each type round-trips through its JSON unchanged, and an answer with a field missing or
//! of the wrong type is refused with a message that names the endpoint and the field.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::access::{AccessEvent, AccessEventPage, AccessReceipt, AccessReport, Outcome};
use super::agents::{AgentCreated, AgentList, CreateAgent};
use super::approvals::{Approval, ApprovalList, ApproveBody, DenyBody};
use super::audit::AuditPage;
use super::changes::{ChangeEvent, Resync};
use super::errors::ErrorBody;
use super::keys::{CreateKey, CreateTenant, KeyCreated, KeyList, TenantCreated};
use super::policy::{PolicyReload, PolicyText};
use super::secrets::{
    CreateSecret, DestroyVersions, PatchSecret, RemoteImport, RemoteImportCandidates, RemoteImportPreview,
    RemoteImported, RotateSecret, SecretCreated, SecretList, SecretMetadata, SecretRead, SecretRotated, SecretUpdated,
    SecretVersions, UpdateSecret,
};
use super::tokens::{MintRequest, MintedToken, PendingApproval, TokenInfo};
use super::{decode, decode_value};

/// `wire` parses into `T` and serializes back to the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(wire: Value) {
    let bytes = serde_json::to_vec(&wire).unwrap();
    let parsed: T = decode("GET /test", &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
}

fn meta() -> Value {
    json!({
        "path": "prod/db", "version": 2, "tier": "standard", "description": null, "tags": {"team": "core"},
        "allowed_hosts": ["db.example"], "owner": null, "created_at": "2026-01-15T10:30:00Z",
        "updated_at": "2026-01-15T10:31:00Z", "accessed_at": null, "expires_at": null, "not_before": null,
        "managed_mode": "airlock_managed", "status": "active", "provider": null, "provider_config_id": null,
        "external_ref": null, "provider_version_ref": null, "last_rotated_at": null, "last_resolved_at": null,
        "created_by": {"id": "ak_1", "description": "deploy"},
    })
}

fn minted() -> Value {
    json!({
        "id": "tok_1", "value": "at_s3cret", "scope": "secrets:read:prod/*", "ttl_seconds": 900,
        "expires_at": "2026-01-15T10:45:00Z", "approval_status": "approved", "approval_request_id": null,
    })
}

fn approval() -> Value {
    json!({
        "id": "apr_1", "status": "pending", "requester": "ak_1", "agent": "bot", "request": {"scopes": ["s"]},
        "reason": "grants requiring approval: prod/*", "created_at": "2026-01-15T10:30:00Z", "decided_at": null,
        "decided_by": null, "note": null, "token_id": null,
    })
}

fn audit_event() -> Value {
    json!({
        "id": "evt_1", "seq": 7, "type": "secret.read", "path": "prod/db", "actor": "ak_1",
        "actor_description": null, "ip": "127.0.0.1", "user_agent": null, "timestamp": "2026-01-15T10:30:00Z",
        "success": true, "detail": {"version": 2}, "prev_hash": "aa", "hash": "bb",
    })
}

#[test]
fn every_type_round_trips() {
    round_trip::<ErrorBody>(json!({"error": {"code": "permission_denied", "message": "no", "required_scope": "x"}}));
    round_trip::<MintRequest>(json!({"scope": ["a", "b"], "ttl_seconds": 60, "description": "d"}));
    round_trip::<MintRequest>(json!({"scope": "a"}));
    round_trip::<MintedToken>(minted());
    round_trip::<PendingApproval>(json!({
        "approval_status": "pending", "approval_request_id": "apr_1", "message": "m", "approve_url": "http://h/x",
    }));
    round_trip::<TokenInfo>(json!({
        "id": "ak_1", "kind": "agent_key", "scope": "tokens:create", "agent": {"id": "ak_1", "name": "bot"},
        "description": null, "allowed_ips": [], "max_uses": null, "uses": 0,
        "created_at": "2026-01-15T10:30:00Z", "expires_at": null,
    }));
    round_trip::<SecretList>(json!({"items": [meta()], "total": 1, "next_cursor": null}));
    let mut read = meta();
    read["value"] = "hunter2".into();
    round_trip::<SecretRead>(read);
    round_trip::<SecretVersions>(json!({"path": "prod/db", "versions": [
        {"version": 1, "state": "grace", "created_at": "2026-01-15T10:30:00Z", "expires_at": "2026-01-15T11:30:00Z"},
    ]}));
    round_trip::<CreateSecret>(json!({"path": "prod/db", "value": "v", "tier": "sensitive", "allowed_hosts": ["h"]}));
    round_trip::<CreateSecret>(json!({"path": "prod/db", "managed_mode": "external_reference",
        "external_ref": "vault+kv2://secret/db#password", "provider_version_ref": "3", "provider_config_id": "pcf_1"}));
    round_trip::<PatchSecret>(json!({"status": "disabled"}));
    round_trip::<RemoteImportPreview>(json!({"provider_config_id": "pcf_1", "query": "secret/app", "page_size": 5}));
    round_trip::<RemoteImportCandidates>(json!({"provider_config_id": "pcf_1", "provider": "vault", "candidates": [
        {"external_ref": "vault+kv2://secret/app/a", "name": "app/a", "description": null, "path": "app/a",
         "status": "duplicate", "existing_path": "x/a"},
    ], "folders": ["secret/app/sub/"], "next_token": null}));
    round_trip::<RemoteImport>(json!({"provider_config_id": "pcf_1", "secrets": [{"external_ref": "aws-sm://a"}]}));
    round_trip::<RemoteImported>(json!({"imported": 1, "skipped": 0, "errored": 0, "results": [
        {"external_ref": "aws-sm://a", "path": "a", "outcome": "imported", "message": null},
    ]}));
    round_trip::<SecretCreated>(json!({"path": "p/a", "version": 1, "tier": "standard", "created_at": "t"}));
    round_trip::<UpdateSecret>(json!({"value": "v", "cas": 3}));
    round_trip::<SecretUpdated>(json!({"path": "p/a", "version": 2, "updated_at": "t"}));
    round_trip::<PatchSecret>(json!({"description": null, "owner": "o", "tags": {}}));
    round_trip::<PatchSecret>(json!({}));
    round_trip::<RotateSecret>(json!({"new_value": "v", "grace_period_seconds": 60}));
    round_trip::<SecretRotated>(json!({"path": "p/a", "old_version": 1, "new_version": 2, "old_expires_at": "t"}));
    round_trip::<DestroyVersions>(json!({"versions": [1, 2]}));
    round_trip::<PolicyText>(json!({"source": "bot.toml", "text": "[agent]\n"}));
    round_trip::<PolicyReload>(json!({"reloaded": true, "policies": 2, "cancelled_approvals": 0}));
    round_trip::<AccessReport>(json!({"events": [{
        "id": "e1", "agent": "bot", "path": "prod/db", "version": 2, "host": "api.example", "method": "GET",
        "url_path": "/v1", "outcome": "injected", "status": 200, "latency_ms": 1.5,
        "timestamp": "2026-01-15T10:30:00Z", "count": 3,
    }]}));
    round_trip::<AccessReceipt>(json!({"accepted": 1, "duplicates": 0, "refused": 0}));
    round_trip::<AccessEventPage>(json!({"events": [audit_event()], "next_cursor": "7"}));
    round_trip::<AuditPage>(json!({"events": [audit_event()], "next_cursor": null}));
    round_trip::<ChangeEvent>(json!({"type": "secret.rotated", "path": "p/a", "version": 3, "timestamp": "t"}));
    round_trip::<ChangeEvent>(json!({"type": "token.revoked", "token_id": "tok_1", "timestamp": "t"}));
    round_trip::<Resync>(json!({"missed": 4}));
    round_trip::<ApprovalList>(json!({"approvals": [approval()], "total": 1, "next_cursor": null}));
    let mut polled = approval();
    polled["status"] = "approved".into();
    polled["approval_status"] = "approved".into();
    polled["approval_request_id"] = "apr_1".into();
    polled["token"] = minted();
    round_trip::<Approval>(polled);
    round_trip::<ApproveBody>(json!({"comment": "ok"}));
    round_trip::<DenyBody>(json!({}));
    round_trip::<CreateAgent>(json!({"name": "bot"}));
    round_trip::<AgentCreated>(json!({"id": "ak_1", "name": "bot", "key": "ak_s3cret", "has_policy": false}));
    round_trip::<CreateKey>(json!({"name": "ci", "role": "deployer"}));
    round_trip::<KeyCreated>(json!({"id": "ak_2", "name": "ci", "role": "deployer", "key": "ak_s3cret"}));
    round_trip::<KeyList>(json!({"keys": [{"id": "ak_2", "name": "ci", "role": "reader", "created_at": "t"}]}));
    round_trip::<CreateTenant>(json!({"name": "acme"}));
    round_trip::<TenantCreated>(json!({"id": "ten_1", "name": "acme", "admin_key": "ak_s3cret"}));
    round_trip::<AgentList>(json!({"agents": [
        {"id": "ak_1", "name": "bot", "description": null, "created_at": "t", "has_policy": true},
    ]}));
}

/// The error `T` gives for `wire`, which must be refused.
fn refusal<T: DeserializeOwned + std::fmt::Debug>(endpoint: &str, wire: Value) -> String {
    let bytes = serde_json::to_vec(&wire).unwrap();
    decode::<T>(endpoint, &bytes).expect_err("accepted a body the API does not define").to_string()
}

#[test]
fn a_missing_field_is_refused_naming_it() {
    let mut token = minted();
    token.as_object_mut().unwrap().remove("value");
    let e = refusal::<MintedToken>("POST /v1/tokens", token);
    assert!(e.contains("POST /v1/tokens") && e.contains("missing field `value`"), "{e}");

    let mut polled = approval();
    let mut token = minted();
    token.as_object_mut().unwrap().remove("ttl_seconds");
    polled["token"] = token;
    let e = refusal::<Approval>("GET /v1/approvals/apr_1", polled);
    assert!(e.contains("`token`") && e.contains("missing field `ttl_seconds`"), "{e}");

    let mut read = meta();
    read.as_object_mut().unwrap().remove("version");
    read["value"] = "hunter2".into();
    let e = refusal::<SecretRead>("GET /v1/secrets/prod%2Fdb?version=2", read);
    assert!(e.contains("GET /v1/secrets/prod%2Fdb answered") && e.contains("missing field `version`"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");

    let e = refusal::<PolicyText>("GET /v1/agents/self/policy", json!({"source": "bot.toml"}));
    assert!(e.contains("missing field `text`"), "{e}");
    let e = refusal::<ErrorBody>("GET /x", json!({"error": {"message": "m"}}));
    assert!(e.contains("missing field `code`"), "{e}");
    let e = refusal::<TokenInfo>("GET /v1/tokens/self", json!({"agent": {"id": "a"}}));
    assert!(e.contains("missing field"), "{e}");
}

#[test]
fn a_field_of_the_wrong_type_is_refused_naming_it_without_quoting_it() {
    let mut token = minted();
    token["ttl_seconds"] = "hunter2".into();
    let e = refusal::<MintedToken>("POST /v1/tokens", token);
    assert!(e.contains("field `ttl_seconds`") && e.contains("invalid type"), "{e}");
    assert!(!e.contains("hunter2"), "a string in the wrong place is not quoted: {e}");

    let mut token = minted();
    token["value"] = 42.into();
    let e = refusal::<MintedToken>("POST /v1/tokens", token);
    assert!(e.contains("field `value`") && e.contains("invalid type"), "{e}");

    let e = refusal::<SecretList>("GET /v1/secrets", json!({"items": [{"path": 1}], "total": 1, "next_cursor": null}));
    assert!(e.contains("field `items[0].path`"), "{e}");

    let e = refusal::<AccessReport>(
        "POST /v1/access-events",
        json!({"events": [{"id": "e", "host": "h", "method": "GET", "url_path": "/", "outcome": "stolen", "timestamp": "t"}]}),
    );
    assert!(e.contains("field `events[0].outcome`") && e.contains("unknown variant"), "{e}");

    let e = decode_value::<ChangeEvent>("event secret.updated", json!({"type": "secret.updated", "path": 7}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("event secret.updated") && e.contains("field `path`"), "{e}");
}

#[test]
fn request_bodies_refuse_unknown_fields() {
    let e = refusal::<MintRequest>("POST /v1/tokens", json!({"scope": "a", "ttl": 60}));
    assert!(e.contains("unknown field `ttl`"), "{e}");
    let e = refusal::<UpdateSecret>("PUT /v1/secrets/a", json!({"value": "v", "allowed_hosts": ["h"]}));
    assert!(e.contains("unknown field `allowed_hosts`"), "{e}");
}

#[test]
fn values_never_show_in_debug_output() {
    let token: MintedToken = serde_json::from_value(minted()).unwrap();
    let agent: AgentCreated =
        serde_json::from_value(json!({"id": "a", "name": "b", "key": "ak_s3cret", "has_policy": true})).unwrap();
    let mut read = meta();
    read["value"] = "hunter2".into();
    let read: SecretRead = serde_json::from_value(read).unwrap();
    let create: CreateSecret = serde_json::from_value(json!({"path": "a/b", "value": "hunter2"})).unwrap();
    let rotate: RotateSecret = serde_json::from_value(json!({"new_value": "hunter2"})).unwrap();
    for shown in
        [format!("{token:?}"), format!("{agent:?}"), format!("{read:?}"), format!("{create:?}"), format!("{rotate:?}")]
    {
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2") && shown.contains("***"), "{shown}");
    }
}

#[test]
fn outcome_names_match_the_wire() {
    for outcome in [Outcome::Injected, Outcome::Denied, Outcome::Error] {
        assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
    }
    let e: AccessEvent = serde_json::from_value(json!({
        "id": "e", "host": "h", "method": "GET", "url_path": "/", "outcome": "denied", "timestamp": "t",
    }))
    .unwrap();
    assert_eq!((e.outcome, e.count, e.agent), (Outcome::Denied, None, None));
}

#[test]
fn a_secret_read_names_its_wrong_field_too() {
    let mut read = meta();
    read["value"] = "hunter2".into();
    read["version"] = "two".into();
    let e = refusal::<SecretRead>("GET /v1/secrets/prod%2Fdb", read.clone());
    assert!(e.contains("version") && e.contains("invalid type"), "{e}");
    read["version"] = 2.into();
    read["value"] = 7.into();
    let e = refusal::<SecretRead>("GET /v1/secrets/prod%2Fdb", read);
    assert!(e.contains("field `value`") && e.contains("invalid type"), "{e}");
}

/// Each property of `T`'s JSON schema with its type, without the descriptions (the two
/// structs word theirs differently).
fn properties<T: schemars::JsonSchema>() -> serde_json::Map<String, Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut schema = schemars::schema_for!(T).to_value();
    strip(&mut schema);
    let mut props = schema["properties"].as_object().cloned().expect("a struct has properties");
    let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    for (name, prop) in props.iter_mut() {
        prop["required"] = required.contains(&json!(name)).into();
    }
    props
}

/// `SecretRead` spells out `SecretMetadata`'s fields (flattening would cost serde's field
/// names in errors): a field added to one and not the other, or typed differently, fails
/// here, as does `SecretRead::new` dropping or mixing one up.
#[test]
fn a_secret_read_has_exactly_the_metadatas_fields_and_the_value() {
    let meta_props = properties::<SecretMetadata>();
    let mut read_props = properties::<SecretRead>();
    assert!(read_props.remove("value").is_some_and(|v| v["required"] == true), "{read_props:?}");
    let names = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&read_props), names(&meta_props), "the same field names");
    assert_eq!(read_props, meta_props, "the same types and required fields");

    // Every field set, each to a value no other field has.
    let mut wire = meta();
    for (field, value) in [
        ("description", json!("the main database")),
        ("owner", json!("team-core")),
        ("accessed_at", json!("2026-01-15T10:32:00Z")),
        ("expires_at", json!("2026-02-15T10:30:00Z")),
        ("not_before", json!("2026-01-01T00:00:00Z")),
        ("managed_mode", json!("external_reference")),
        ("status", json!("disabled")),
        ("provider", json!("vault")),
        ("provider_config_id", json!("pc_1")),
        ("external_ref", json!("vault://kv/db#password")),
        ("provider_version_ref", json!("7")),
        ("last_rotated_at", json!("2026-01-15T10:33:00Z")),
        ("last_resolved_at", json!("2026-01-15T10:34:00Z")),
    ] {
        assert!(wire.get(field).is_some_and(|old| *old != value), "{field} is a metadata field, changed here");
        wire[field] = value;
    }
    assert!(wire.as_object().unwrap().values().all(|v| !v.is_null()), "{wire}");
    let metadata: SecretMetadata = serde_json::from_value(wire.clone()).unwrap();
    let read = SecretRead::new(metadata, crate::domain::SecretValue::new("hunter2".into()));
    let mut read = serde_json::to_value(&read).unwrap();
    assert_eq!(read.as_object_mut().unwrap().remove("value"), Some(json!("hunter2")));
    assert_eq!(read, wire, "SecretRead::new carries every field over to its own name");
}

#[test]
fn bulk_operations_read_each_op_and_refuse_fields_of_another() {
    use super::secrets::BulkOperation;
    for wire in [
        json!({ "op": "set", "path": "a/b", "value": "v\"1", "cas": 0, "tier": "standard", "tags": { "t": "x" } }),
        json!({ "op": "set", "path": "a/b", "value": "plain" }),
        json!({ "op": "delete", "path": "a/b" }),
        json!({ "op": "undelete", "path": "a/b", "versions": [1, 2] }),
        json!({ "op": "undelete", "path": "a/b" }),
        json!({ "op": "destroy", "path": "a/b", "versions": [3] }),
        json!({ "op": "rotate", "path": "a/b", "new_value": "n", "grace_period_seconds": 60 }),
    ] {
        round_trip::<BulkOperation>(wire);
    }
    // An object value is kept as its canonical text, as everywhere else.
    let parsed: BulkOperation = decode("t", br#"{"op":"set","path":"a/b","value":{"b":"2","a":"1"}}"#).unwrap();
    assert!(matches!(parsed, BulkOperation::Set { value, .. } if value.expose() == r#"{"a":"1","b":"2"}"#));
    for (wire, says) in [
        (json!({ "op": "delete", "path": "a/b", "value": "v" }), "unknown field `value` for op `delete`"),
        (json!({ "op": "rotate", "path": "a/b", "value": "v" }), "unknown field `value` for op `rotate`"),
        (json!({ "op": "set", "path": "a/b" }), "missing field `value` for op `set`"),
        (json!({ "op": "destroy", "path": "a/b" }), "missing field `versions` for op `destroy`"),
        (json!({ "op": "rotate", "path": "a/b" }), "missing field `new_value` for op `rotate`"),
        (json!({ "op": "copy", "path": "a/b" }), "unknown variant `copy`"),
        (json!({ "op": "set", "path": "a/b", "value": "v", "owner": "x" }), "unknown field `owner`"),
        (
            json!({ "op": "rotate", "path": "a/b", "new_value": "n", "grace_period_seconds": null }),
            "invalid type: null",
        ),
        (json!({ "op": "destroy", "path": "a/b", "versions": null }), "invalid type: null"),
        (json!({ "op": "set", "path": "a/b", "value": null }), "invalid type: null"),
    ] {
        let e = decode::<BulkOperation>("t", &serde_json::to_vec(&wire).unwrap()).expect_err("refused");
        assert!(e.to_string().contains(says), "{wire}: {e}");
    }
}
