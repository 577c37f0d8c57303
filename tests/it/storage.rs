//! What is on disk: ciphertext only, bound to its row; master key rotation under a running
//! server; and durability of acknowledged writes across `kill -9`.

use std::process::Command;

use crate::both_backends;
use crate::support::{BIN, Backend, MARKER, Server, assert_error, block_on, fresh_schema, postgres_url, secret_value};

fn database_never_holds_plaintext(backend: Backend) {
    let srv = Server::start(backend);
    for i in 0..5 {
        srv.create(&format!("plain/check{i}"), &secret_value(i));
    }
    let put = format!(r#"{{"value":"{}"}}"#, secret_value("updated"));
    assert_eq!(srv.admin("PUT", "/v1/secrets/plain%2Fcheck0", Some(&put)).0, 200);
    assert_eq!(srv.admin("GET", "/v1/secrets/plain%2Fcheck0", None).0, 200);
    let dump = srv.database_dump();
    assert!(dump.len() > 1000, "the dump holds the database");
    assert!(dump.windows(b"plain/check".len()).any(|w| w == b"plain/check"), "paths are stored, so the dump is real");
    assert!(!dump.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "a plaintext value is in the database");
}

fn ciphertext_moved_to_another_row_fails_to_open(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("swap/a", &secret_value("a"));
    srv.create("swap/b", &secret_value("b"));
    let copy = "UPDATE secret_versions SET kid = (SELECT v.kid FROM secret_versions v JOIN secrets s ON s.id = v.secret_id WHERE s.path = 'swap/a'), \
        wrapped_key = (SELECT v.wrapped_key FROM secret_versions v JOIN secrets s ON s.id = v.secret_id WHERE s.path = 'swap/a'), \
        ciphertext = (SELECT v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id WHERE s.path = 'swap/a') \
        WHERE secret_id = (SELECT id FROM secrets WHERE path = 'swap/b')";
    srv.sql(&[copy]);
    let resp = srv.admin("GET", "/v1/secrets/swap%2Fb", None);
    assert_error(&resp, 500, "internal_error");
    assert!(!resp.1.to_string().contains(MARKER));
    assert_eq!(srv.admin("GET", "/v1/secrets/swap%2Fa", None).0, 200, "the source row still opens");
}

fn rekey_keeps_every_secret_readable_while_serving(backend: Backend) {
    let srv = Server::start(backend);
    for i in 0..20 {
        srv.create(&format!("rk/s{i}"), &secret_value(i));
    }
    let mut rekey = Command::new(BIN);
    rekey.args(["server", "rekey", "--data-dir"]).arg(srv.data_dir());
    if let Some(url) = &srv.database_url {
        rekey.args(["--database-url", url]);
    }
    let mut child = rekey.spawn().unwrap();
    // The server keeps serving reads and writes while the keys are re-wrapped.
    for i in 0..20 {
        let (status, body) = srv.admin("GET", &format!("/v1/secrets/rk%2Fs{i}"), None);
        assert_eq!((status, body["value"].as_str()), (200, Some(secret_value(i).as_str())));
    }
    srv.create("rk/during", &secret_value("during"));
    assert!(child.wait().unwrap().success());

    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(srv.data_dir().join("master.key")).unwrap()).unwrap();
    assert_eq!(ring["keys"].as_array().unwrap().len(), 2, "old key kept for reading, new key active");
    for i in 0..20 {
        let (status, body) = srv.admin("GET", &format!("/v1/secrets/rk%2Fs{i}"), None);
        assert_eq!((status, body["value"].as_str()), (200, Some(secret_value(i).as_str())), "after rekey");
    }
    assert_eq!(srv.admin("GET", "/v1/secrets/rk%2Fduring", None).0, 200);
    let new_kid = ring["active"].as_str().unwrap();
    let dump = String::from_utf8_lossy(&srv.database_dump()).into_owned();
    assert!(dump.contains(new_kid), "rows carry the new key id");
}

fn acknowledged_write_survives_kill_9(backend: Backend) {
    let mut srv = Server::start(backend);
    srv.create("durable/one", &secret_value("durable"));
    let put = format!(r#"{{"value":"{}"}}"#, secret_value("durable2"));
    assert_eq!(srv.admin("PUT", "/v1/secrets/durable%2Fone", Some(&put)).0, 200);
    srv.kill9();
    srv.spawn();
    let (status, body) = srv.admin("GET", "/v1/secrets/durable%2Fone", None);
    assert_eq!(
        (status, body["value"].as_str(), body["version"].as_i64()),
        (200, Some(secret_value("durable2").as_str()), Some(2))
    );
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], true, "{verdict}");
}

/// Clients that give up on writes halfway (closing the connection a moment after sending)
/// must leave each write done or not done, the audit chain whole, and the server taking
/// writes. An earlier build could, under load, leave a pooled SQLite connection inside its
/// transaction after such a disconnect, and every later write waited out the 10 s busy
/// timeout and failed. That race needs sustained load to show (bench/api.sh hit it in 3 of
/// 20 create-then-mint runs); this test guards what must hold around it, not the race.
fn abandoned_writes_leave_each_write_whole_and_the_server_writing(backend: Backend) {
    use std::io::Write;
    let srv = Server::start(backend);
    let authority = srv.addr.trim_start_matches("http://").to_owned();
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (authority, key) = (authority.clone(), srv.admin_key.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    let body = format!(r#"{{"path":"gone/t{t}/c{i}","value":"{}"}}"#, secret_value(format!("{t}-{i}")));
                    let request = format!(
                        "POST /v1/secrets HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {key}\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let mut conn = std::net::TcpStream::connect(&authority).unwrap();
                    conn.write_all(request.as_bytes()).unwrap();
                    // Gone before, during or after the server's transaction.
                    std::thread::sleep(std::time::Duration::from_micros((t * 40 + i) as u64 * 37 % 3000));
                    drop(conn);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    // Writes still go through (a wedged server answers 500 once its busy timeout runs out).
    srv.create("after/abandoned", &secret_value("after"));
    // Each abandoned create is whole or absent: there, it reads with its value.
    let mut written = 0;
    for (t, i) in (0..8).flat_map(|t| (0..40).map(move |i| (t, i))) {
        let (status, body) = srv.admin("GET", &format!("/v1/secrets/gone%2Ft{t}%2Fc{i}"), None);
        match status {
            404 => {}
            200 => {
                assert_eq!(body["value"].as_str(), Some(secret_value(format!("{t}-{i}")).as_str()));
                written += 1;
            }
            other => panic!("gone/t{t}/c{i}: {other} {body}"),
        }
    }
    eprintln!("{written} of 320 abandoned creates were written");
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], true, "{verdict}");
}

/// Creates that arrive together are committed together, each with its own answer: of 16
/// concurrent creates of one path exactly one wins (201) and the others get 409, while
/// creates of other paths in the same moment all succeed.
fn concurrent_creates_each_get_their_own_answer(backend: Backend) {
    let srv = std::sync::Arc::new(Server::start(backend));
    let attempts: Vec<_> = (0..32)
        .map(|n| {
            let srv = srv.clone();
            std::thread::spawn(move || {
                let path = if n % 2 == 0 { "race/same".to_owned() } else { format!("race/own{n}") };
                let body = serde_json::json!({ "path": path, "value": secret_value(n) }).to_string();
                (n, srv.admin("POST", "/v1/secrets", Some(&body)))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        let (n, resp) = attempt.join().unwrap();
        if n % 2 == 1 {
            assert_eq!(resp.0, 201, "race/own{n}: {}", resp.1);
        } else if resp.0 == 201 {
            winners.push(n);
        } else {
            assert_error(&resp, 409, "conflict");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create of race/same wins: {winners:?}");
    let (status, body) = srv.admin("GET", "/v1/secrets/race%2Fsame", None);
    assert_eq!((status, body["value"].as_str()), (200, Some(secret_value(winners[0]).as_str())));
    let (_, verdict) = srv.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], true, "{verdict}");
}

both_backends!(
    abandoned_writes_leave_each_write_whole_and_the_server_writing,
    concurrent_creates_each_get_their_own_answer,
    database_never_holds_plaintext,
    ciphertext_moved_to_another_row_fails_to_open,
    rekey_keeps_every_secret_readable_while_serving,
    acknowledged_write_survives_kill_9,
);

/// `sslmode=require` in the database URL: every connection the server holds is TLS. With
/// `verify-full` and a certificate the machine does not trust for that name, the server does
/// not start, and says why.
#[test]
fn postgres_connections_use_tls_when_the_url_asks_for_it() {
    let Some(base) = postgres_url() else { return };
    let ssl: String = block_on(async {
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query_scalar("SHOW ssl").fetch_one(&pool).await.unwrap()
    });
    if ssl != "on" {
        eprintln!("notice: the test database has ssl = {ssl}; skipping the TLS test");
        return;
    }
    let name = format!("airlock-tls-{}", std::process::id());
    let url = format!("{}&sslmode=require&application_name={name}", fresh_schema(&base));
    let srv = Server::start_on(Some(url.clone()), &[]);
    srv.create("tls/check", &secret_value("tls"));
    let (status, body) = srv.admin("GET", "/v1/secrets/tls%2Fcheck", None);
    assert_eq!((status, body["value"].as_str()), (200, Some(secret_value("tls").as_str())));
    let (all_tls, count): (Option<bool>, i64) = block_on(async {
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query_as(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
        )
        .bind(&name)
        .fetch_one(&pool)
        .await
        .unwrap()
    });
    assert!(count > 0, "the server's connections carry the application name");
    assert_eq!(all_tls, Some(true), "every one of the server's {count} connections is TLS");

    let untrusted = url.replace("sslmode=require", "sslmode=verify-full");
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(srv.data_dir())
        .args(["--database-url", &untrusted])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the database") && err.contains("certificate"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
