//! Scale-out on PostgreSQL: replicas share the database and pass changes to each other's
//! change-stream subscribers (LISTEN/NOTIFY), so a proxy may follow any replica.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Backend, Server, postgres_url, secret_value};

#[test]
fn a_change_on_one_replica_reaches_the_subscribers_of_another() {
    if postgres_url().is_none() {
        return;
    }
    let srv = Server::start(Backend::Postgres);
    let replica = srv.replica();
    srv.create("shared/key", &secret_value(1));
    let subscriber = Command::new("curl")
        .args(["-sN", "--max-time", "5", "-H", &format!("Authorization: Bearer {}", srv.admin_key)])
        .arg(srv.url("/v1/events"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let http = reqwest::blocking::Client::new();
    let put = http
        .put(format!("{}/v1/secrets/shared%2Fkey", replica.addr))
        .bearer_auth(&srv.admin_key)
        .body(format!(r#"{{"value":"{}"}}"#, secret_value(2)))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "the replica writes to the same database");
    let out = subscriber.wait_with_output().unwrap();
    let stream = String::from_utf8_lossy(&out.stdout);
    assert!(stream.contains("event: secret.updated"), "{stream}");
    assert!(stream.contains("\"path\":\"shared/key\""), "{stream}");
    assert!(!stream.contains("SeCrEt"), "no value on the change stream");
}
