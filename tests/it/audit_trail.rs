//! The audit trail: every operation recorded, filters and cursor, and tampering detected,
//! also a chain cut back together with its head (by the signed checkpoint outside the
//! database).

use std::time::{Duration, Instant};

use serde_json::Value;

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

const CHECKPOINTS: &str = "audit-checkpoints.json";
const DEFAULT_TENANT: &str = "(SELECT id FROM tenants WHERE name = 'default')";

fn checkpoint_file(srv: &Server) -> Value {
    serde_json::from_slice(&std::fs::read(srv.data_dir().join(CHECKPOINTS)).unwrap()).unwrap()
}

/// The seq of the default tenant's checkpoint, if the file has one.
fn checkpointed_seq(srv: &Server) -> Option<i64> {
    let path = srv.data_dir().join(CHECKPOINTS);
    let file: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    file["tenants"].as_object()?.values().filter_map(|cp| cp["seq"].as_i64()).max()
}

/// What an attacker with write access to the database (and none to the data dir's key
/// files) does with the server stopped: removes the last `n` records of the default tenant's
/// chain and moves the stored head back to the record before them, so the chain that is
/// left verifies on its own.
fn cut_back(srv: &Server, head_seq: i64, n: i64) -> i64 {
    let keep = head_seq - n;
    srv.sql(&[
        &format!("DELETE FROM audit_events WHERE tenant_id = {DEFAULT_TENANT} AND seq > {keep}"),
        &format!(
            "UPDATE audit_heads SET seq = {keep}, hash = (SELECT hash FROM audit_events \
             WHERE tenant_id = {DEFAULT_TENANT} AND seq = {keep}) WHERE tenant_id = {DEFAULT_TENANT}"
        ),
    ]);
    keep
}

/// `airlock audit verify`: whether it succeeded, and everything it printed.
fn cli_verify(srv: &Server) -> (bool, String) {
    let out = srv.cli(&srv.admin_key, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

fn stop(srv: &mut Server) {
    let status = srv.signal_and_wait("TERM", Duration::from_secs(15)).expect("the server stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// The issue's case: the last records deleted and the head moved back with the server
/// stopped. The chain left verifies on its own; the checkpoint written on shutdown shows
/// the cut, and the server's scheduled rounds keep that checkpoint rather than sign the
/// shorter chain.
fn a_chain_cut_back_with_its_head_fails_its_checkpoint(backend: Backend) {
    let mut srv = Server::start_with(backend, &["--audit-checkpoint-interval", "1s"]);
    for i in 0..5 {
        srv.create(&format!("cut/s{i}"), &secret_value(i));
    }
    let (_, before) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(before["ok"], true, "{before}");
    let head = before["head_seq"].as_i64().unwrap();
    stop(&mut srv);
    assert_eq!(checkpointed_seq(&srv), Some(head), "a checkpoint of the head is written on shutdown");

    let keep = cut_back(&srv, head, 2);
    srv.spawn();
    std::thread::sleep(Duration::from_millis(2500)); // two scheduled rounds
    let (status, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!((status, verdict["ok"].as_bool()), (200, Some(false)), "{verdict}");
    assert_eq!(verdict["checked"], keep, "the chain left is intact: {verdict}");
    assert_eq!(verdict["checkpoint"]["status"], "truncated", "{verdict}");
    assert_eq!(verdict["checkpoint"]["seq"], head, "{verdict}");
    assert_eq!(verdict["first_broken"]["seq"], keep + 1, "{verdict}");
    let (ok, said) = cli_verify(&srv);
    assert!(!ok, "the CLI fails on a cut chain: {said}");
    let expected = format!("the chain ends at seq {keep} but a signed checkpoint from");
    assert!(said.contains(&expected) && said.contains("records were removed"), "{said}");
    assert_eq!(checkpointed_seq(&srv), Some(head), "the checkpoint is kept, not moved back to the cut chain");
    assert!(srv.log().contains("fails its signed checkpoint"), "the server logs it");
}

/// A checkpoint file edited on disk does not verify, and says so.
fn a_checkpoint_altered_on_disk_is_reported(backend: Backend) {
    let mut srv = Server::start(backend);
    for i in 0..3 {
        srv.create(&format!("forge/s{i}"), &secret_value(i));
    }
    stop(&mut srv);
    let mut file = checkpoint_file(&srv);
    for cp in file["tenants"].as_object_mut().unwrap().values_mut() {
        cp["seq"] = (cp["seq"].as_i64().unwrap() - 1).into();
    }
    std::fs::write(srv.data_dir().join(CHECKPOINTS), file.to_string()).unwrap();
    srv.spawn();

    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["checkpoint"]["status"], "invalid", "{verdict}");
    assert!(verdict["first_broken"].is_null(), "the records themselves are intact: {verdict}");
    let (ok, said) = cli_verify(&srv);
    assert!(!ok, "{said}");
    assert!(said.contains("audit checkpoint FAILED (invalid)") && said.contains("does not verify"), "{said}");

    // Nor does a file that is not a checkpoint file pass for none.
    std::fs::write(srv.data_dir().join(CHECKPOINTS), "{\"format\": 1, \"tenants\": [").unwrap();
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!((verdict["ok"].as_bool(), verdict["checkpoint"]["status"].as_str()), (Some(false), Some("invalid")));
}

/// The ordinary life of a server: no checkpoint at first (not a failure), one on shutdown,
/// and after a restart a longer chain that holds it.
fn a_restarted_server_with_more_records_verifies(backend: Backend) {
    let mut srv = Server::start(backend);
    for i in 0..3 {
        srv.create(&format!("life/a{i}"), &secret_value(i));
    }
    let (_, first) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!((first["ok"].as_bool(), first["checkpoint"]["status"].as_str()), (Some(true), Some("none")), "{first}");
    let (ok, said) = cli_verify(&srv);
    assert!(ok && said.contains("no signed checkpoint"), "{said}");
    stop(&mut srv);
    let checkpointed = checkpointed_seq(&srv).expect("written on shutdown");

    srv.spawn();
    for i in 0..3 {
        srv.create(&format!("life/b{i}"), &secret_value(i));
    }
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["checkpoint"]["status"], "verified", "{verdict}");
    assert_eq!(verdict["checkpoint"]["seq"], checkpointed, "{verdict}");
    assert!(verdict["head_seq"].as_i64().unwrap() > checkpointed);
    let (ok, said) = cli_verify(&srv);
    assert!(ok, "{said}");
    assert!(said.contains("audit chain intact") && said.contains("holds the signed checkpoint"), "{said}");
    let text = std::fs::read_to_string(srv.data_dir().join(CHECKPOINTS)).unwrap();
    assert!(!text.contains("SeCrEt"), "no value in the checkpoint file");
}

/// Checkpoints are written on schedule, so a crash (no shutdown) leaves one too; replicas
/// sharing the data dir write the same file, and each one's checkpoints verify on the other.
fn checkpoints_on_schedule_survive_a_crash_and_serve_replicas(backend: Backend) {
    let mut srv = Server::start_with(backend, &["--audit-checkpoint-interval", "1s"]);
    for i in 0..4 {
        srv.create(&format!("tick/s{i}"), &secret_value(i));
    }
    if backend == Backend::Postgres {
        let replica = srv.replica();
        let http = reqwest::blocking::Client::new();
        let body = serde_json::json!({ "path": "tick/replica", "value": secret_value(9) }).to_string();
        let created = http
            .post(format!("{}/v1/secrets", replica.addr))
            .bearer_auth(&srv.admin_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(created.status(), 201);
        std::thread::sleep(Duration::from_millis(2500));
        for addr in [&srv.addr, &replica.addr] {
            let verdict: Value =
                http.get(format!("{addr}/v1/audit/verify")).bearer_auth(&srv.admin_key).send().unwrap().json().unwrap();
            assert_eq!(verdict["ok"], true, "{addr}: {verdict}");
            assert_eq!(verdict["checkpoint"]["status"], "verified", "{addr}: {verdict}");
        }
    }
    let (_, before) = srv.admin("GET", "/v1/audit/verify", None);
    let head = before["head_seq"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while checkpointed_seq(&srv) != Some(head) {
        assert!(Instant::now() < deadline, "no scheduled checkpoint of seq {head}: {:?}", checkpointed_seq(&srv));
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.kill9();

    let keep = cut_back(&srv, head, 1);
    srv.spawn();
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!((verdict["ok"].as_bool(), verdict["checkpoint"]["status"].as_str()), (Some(false), Some("truncated")));
    assert_eq!(verdict["first_broken"]["seq"], keep + 1, "{verdict}");
}

both_backends!(
    every_operation_is_recorded_in_a_verifiable_chain,
    editing_one_audit_row_makes_verify_name_it,
    removing_an_audit_row_is_detected,
    a_chain_cut_back_with_its_head_fails_its_checkpoint,
    a_checkpoint_altered_on_disk_is_reported,
    a_restarted_server_with_more_records_verifies,
    checkpoints_on_schedule_survive_a_crash_and_serve_replicas,
);
