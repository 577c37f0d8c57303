//! The audit trail: every operation recorded, filters and cursor, and tampering detected.

use crate::both_backends;
use crate::support::{Backend, Server, secret_value};

fn every_operation_is_recorded_in_a_verifiable_chain(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("audit/a", &secret_value(1));
    srv.admin("GET", "/v1/secrets/audit%2Fa", None);
    srv.admin("PUT", "/v1/secrets/audit%2Fa", Some(&format!(r#"{{"value":"{}"}}"#, secret_value(2))));
    srv.admin("POST", "/v1/secrets/audit%2Fa/rotate", Some(&format!(r#"{{"new_value":"{}"}}"#, secret_value(3))));
    srv.admin("DELETE", "/v1/secrets/audit%2Fa", None);
    srv.admin("POST", "/v1/secrets/audit%2Fa/undelete", None);
    let (status, page) = srv.admin("GET", "/v1/audit?namespace=audit&limit=100", None);
    assert_eq!(status, 200);
    let kinds: Vec<&str> =
        page["events"].as_array().unwrap().iter().rev().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["secret.create", "secret.read", "secret.update", "secret.rotate", "secret.delete", "secret.undelete"]
    );
    let first = &page["events"][5];
    assert!(first["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!((first["ip"].as_str(), first["success"].as_bool()), (Some("127.0.0.1"), Some(true)));
    assert!(first["actor"].as_str().unwrap().starts_with("key_"));
    assert_eq!(page["events"][0]["prev_hash"], page["events"][1]["hash"], "each record links to the one before");

    // Paging by cursor, newest first, with a type filter.
    let (_, p1) = srv.admin("GET", "/v1/audit?limit=2", None);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = srv.admin("GET", &format!("/v1/audit?limit=2&cursor={cursor}"), None);
    assert!(p2["events"][0]["seq"].as_i64() < p1["events"][1]["seq"].as_i64());
    let (_, reads) = srv.admin("GET", "/v1/audit?type=secret.read&since=2000-01-01T00:00:00Z", None);
    assert!(reads["events"].as_array().unwrap().iter().all(|e| e["type"] == "secret.read"));
    assert!(!page.to_string().contains("SeCrEt"), "no value in audit records");
}

fn editing_one_audit_row_makes_verify_name_it(backend: Backend) {
    let srv = Server::start(backend);
    for i in 0..4 {
        srv.create(&format!("tamper/s{i}"), &secret_value(i));
    }
    let (_, ok) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(ok["ok"], true, "{ok}");
    let out = srv.cli(&srv.admin_key, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (_, page) = srv.admin("GET", "/v1/audit?limit=100", None);
    let victim = page["events"].as_array().unwrap().iter().find(|e| e["path"] == "tamper/s2").unwrap();
    let id = victim["id"].as_str().unwrap();
    srv.sql(&[&format!("UPDATE audit_events SET actor = 'someone-else' WHERE id = '{id}'")]);

    let (status, broken) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!((status, broken["ok"].as_bool()), (200, Some(false)));
    assert_eq!(broken["first_broken"]["id"], id, "{broken}");
    let out = srv.cli(&srv.admin_key, &["audit", "verify"]);
    assert!(!out.status.success(), "the CLI fails on a broken chain");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(id), "the CLI names the record: {said}");
}

fn removing_an_audit_row_is_detected(backend: Backend) {
    let srv = Server::start(backend);
    for i in 0..3 {
        srv.create(&format!("gone/s{i}"), &secret_value(i));
    }
    srv.sql(&["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events WHERE path = 'gone/s1')"]);
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], false, "{verdict}");
}

both_backends!(
    every_operation_is_recorded_in_a_verifiable_chain,
    editing_one_audit_row_makes_verify_name_it,
    removing_an_audit_row_is_detected,
);
