//! The proxy when the world changes or misbehaves: rotations and deletions reach it at
//! once, misses are single-flight, tokens renew, revocation bites, and access events
//! survive an outage of the central API and a SIGKILL of the proxy, exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::sidecar::{Sidecar, access_events, policy, uses};
use crate::support::{secret_value, until};

const AUTH: &str = "Authorization: Bearer {{secret:production/openai/api-key}}";

fn last_authorization(sc: &Sidecar) -> Option<String> {
    sc.upstream.requests().last().and_then(|r| r.header("authorization").map(str::to_owned))
}

/// Rotates the OpenAI key; within 1 s a request made with `curl_args` carries the new value.
fn rotate_and_see_it_within_a_second(sc: &Sidecar, curl_args: &[&str]) {
    let rotate = json!({ "new_value": secret_value("rotated") }).to_string();
    assert_eq!(sc.server.admin("POST", "/v1/secrets/production%2Fopenai%2Fapi-key/rotate", Some(&rotate)).0, 200);
    let rotated_at = Instant::now();
    assert!(
        until(Duration::from_secs(1), || {
            sc.curl(curl_args);
            last_authorization(sc) == Some(format!("Bearer {}", secret_value("rotated")))
        }),
        "the new value was not used within 1 s of the rotation"
    );
    assert!(rotated_at.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_rotation_reaches_the_proxy_within_a_second_and_a_deletion_stops_injection() {
    let sc = Sidecar::start();
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/a"]).0, 200);
    assert_eq!(last_authorization(&sc), Some(format!("Bearer {}", secret_value("openai"))));

    rotate_and_see_it_within_a_second(&sc, &["-H", AUTH, "https://api.openai.com/v1/b"]);

    assert_eq!(sc.server.admin("DELETE", "/v1/secrets/production%2Fopenai%2Fapi-key", None).0, 204);
    std::thread::sleep(Duration::from_millis(300));
    let before = sc.upstream.requests().len();
    let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/c"]);
    assert!(status == 403 || status == 404, "after rm: {status} {out}");
    assert_eq!(sc.upstream.requests().len(), before, "nothing was sent with the old value");
}

/// The same through an `[[inject]]` rule, where each proxy thread reuses the headers it made
/// for the first request (the agent sends no placeholder): a rotation and a deletion must
/// reach that reuse as fast as they reach a placeholder.
#[test]
fn an_inject_rule_follows_a_rotation_within_a_second_and_stops_at_a_deletion() {
    let rule = "[[inject]]\nhost = \"api.openai.com\"\nheader = \"authorization\"\n\
                value = \"Bearer {{secret:production/openai/api-key}}\"\n";
    let sc = Sidecar::start_custom(&policy(rule), &[]);
    // Enough requests (each its own connection) that every proxy thread has reused its headers.
    for n in 0..6 {
        let (status, out) = sc.curl(&[&format!("https://api.openai.com/v1/warm{n}")]);
        assert_eq!(status, 200, "{out}");
        assert!(!out.contains(&secret_value("openai")), "the value came back unredacted: {out}");
        assert_eq!(last_authorization(&sc), Some(format!("Bearer {}", secret_value("openai"))));
    }

    rotate_and_see_it_within_a_second(&sc, &["https://api.openai.com/v1/b"]);
    // Every thread, not just the first to hear of it.
    for n in 0..6 {
        assert_eq!(sc.curl(&[&format!("https://api.openai.com/v1/after{n}")]).0, 200);
        assert_eq!(last_authorization(&sc), Some(format!("Bearer {}", secret_value("rotated"))), "request {n}");
    }

    assert_eq!(sc.server.admin("DELETE", "/v1/secrets/production%2Fopenai%2Fapi-key", None).0, 204);
    std::thread::sleep(Duration::from_millis(300));
    let before = sc.upstream.requests().len();
    for n in 0..6 {
        let (status, out) = sc.curl(&[&format!("https://api.openai.com/v1/gone{n}")]);
        assert!(status == 403 || status == 404, "after rm: {status} {out}");
    }
    assert_eq!(sc.upstream.requests().len(), before, "nothing was sent with the old value");
}

#[test]
fn two_hundred_concurrent_misses_make_one_central_read() {
    let sc = Arc::new(Sidecar::start());
    let path = "production/openai/burst";
    sc.server.create(path, &secret_value("burst"));
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let ok = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let (sc, barrier, ok) = (sc.clone(), barrier.clone(), ok.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let (status, _) = sc.curl(&[
                    "-H",
                    &format!("Authorization: Bearer {{{{secret:{path}}}}}"),
                    "https://api.openai.com/v1/burst",
                ]);
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(ok.load(Ordering::Relaxed), 200);
    let (_, audit) = sc.server.admin("GET", "/v1/audit?type=secret.read&limit=1000", None);
    let reads =
        audit["events"].as_array().unwrap().iter().filter(|e| e["path"] == path && e["success"] == true).count();
    assert_eq!(reads, 1, "one read at the central API for 200 concurrent misses");
}

#[test]
fn a_five_second_token_renews_through_a_twenty_second_run() {
    let sc = Sidecar::start_custom(&policy("").replace("token_ttl = \"15m\"", "token_ttl = \"5s\""), &[]);
    let end = Instant::now() + Duration::from_secs(20);
    let mut failures = Vec::new();
    let mut count = 0;
    while Instant::now() < end {
        let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/renew"]);
        count += 1;
        if status != 200 {
            failures.push(out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(failures.is_empty(), "{} of {count} requests failed: {:?}", failures.len(), failures.first());
    let (_, audit) = sc.server.admin("GET", "/v1/audit?type=token.create&limit=100", None);
    assert!(audit["events"].as_array().unwrap().len() >= 4, "the token was renewed: {audit}");
}

#[test]
fn deleting_the_agent_stops_injection_within_a_second() {
    let sc = Sidecar::start();
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/a"]).0, 200);
    let (_, agents) = sc.server.admin("GET", "/v1/agents", None);
    let id = agents["agents"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sc.server.admin("DELETE", &format!("/v1/agents/{id}"), None).0, 204);
    std::thread::sleep(Duration::from_secs(1));
    let before = sc.upstream.requests().len();
    let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/after"]);
    assert_ne!(status, 200, "{out}");
    assert_eq!(sc.upstream.requests().len(), before, "no value went out after the agent was deleted");
    // A deleted agent has no policy: the proxy lets nothing out, placeholder or not.
    let (status, out) = sc.curl(&["https://api.openai.com/v1/plain"]);
    assert_eq!(status, 403, "{out}");
    assert!(out.to_ascii_lowercase().contains("x-airlock-error: egress_denied"), "{out}");
    assert_eq!(sc.upstream.requests().len(), before);
}

#[test]
fn a_policy_changed_while_the_proxy_was_not_listening_holds_once_it_reconnects() {
    let open = policy("").replace("deny_private_networks = true", "deny_private_networks = false");
    let mut sc = Sidecar::start_custom(&open, &[]);
    // The central server listens on 127.0.0.1, which only the open policy allows.
    let health = sc.server.url("/healthz");
    assert_eq!(sc.curl(&[&health]).0, 200);
    sc.server.kill9();
    std::fs::write(sc.policy_file(), policy("")).unwrap();
    sc.server.restart_same_port();
    // No event announces this change: the proxy reads the policy when its stream is back.
    let mut last = String::new();
    let refused = until(Duration::from_secs(30), || {
        let (status, out) = sc.curl(&[&health]);
        last = out;
        status == 403
    });
    assert!(refused && last.contains("private_address"), "the policy read after the restart holds: {last}");
}

#[test]
fn a_revoked_proxy_token_is_never_used_again() {
    let sc = Sidecar::start();
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/a"]).0, 200);
    let (_, reads) = sc.server.admin("GET", "/v1/audit?type=secret.read&limit=10", None);
    let token_id = reads["events"][0]["actor"].as_str().unwrap().to_owned();
    assert!(token_id.starts_with("tok_"));
    assert_eq!(sc.server.admin("DELETE", &format!("/v1/tokens/{token_id}"), None).0, 204);
    std::thread::sleep(Duration::from_secs(1));
    let rotate = json!({ "new_value": secret_value("after-revoke") }).to_string();
    sc.server.admin("POST", "/v1/secrets/production%2Fopenai%2Fapi-key/rotate", Some(&rotate));
    assert!(until(Duration::from_secs(5), || sc.curl(&["-H", AUTH, "https://api.openai.com/v1/b"]).0 == 200));
    let (_, reads) = sc.server.admin("GET", "/v1/audit?type=secret.read&limit=10", None);
    let latest = reads["events"][0]["actor"].as_str().unwrap();
    assert_ne!(latest, token_id, "the value was read with a fresh token, not the revoked one");
    let (_, denied) = sc.server.admin("GET", "/v1/audit?type=token.denied", None);
    assert!(denied["events"].as_array().unwrap().is_empty(), "the revoked token was never presented: {denied}");
}

/// `n` injected requests, 100 ms apart; each must succeed.
fn send(sc: &Sidecar, n: usize) -> usize {
    for _ in 0..n {
        let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/steady"]);
        assert_eq!(status, 200, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    n
}

#[test]
fn access_events_survive_an_outage_and_a_sigkill_exactly_once() {
    let mut sc = Sidecar::start();
    let mut sent = send(&sc, 5);

    // 30 s without the central API, under steady load: cached values keep working.
    sc.server.kill9();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        sent += send(&sc, 10);
    }
    sc.server.restart_same_port();
    assert!(
        until(Duration::from_secs(20), || uses(&access_events(&sc)) >= sent),
        "after the outage {} of {sent} uses arrived",
        uses(&access_events(&sc))
    );

    // Events spooled while the API is down, then the proxy is killed and restarted.
    sc.server.kill9();
    sent += send(&sc, 10);
    std::thread::sleep(Duration::from_millis(300));
    sc.kill9();
    sc.server.restart_same_port();
    sc.restart();
    assert!(until(Duration::from_secs(20), || uses(&access_events(&sc)) >= sent), "spooled events were lost");
    std::thread::sleep(Duration::from_secs(2));
    let events = access_events(&sc);
    assert_eq!(uses(&events), sent, "every use exactly once");
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "no event recorded twice");
    let (_, verdict) = sc.server.admin("GET", "/v1/audit/verify", None);
    assert_eq!(verdict["ok"], true, "{verdict}");
}

#[test]
fn an_agent_revoked_while_the_proxy_was_not_listening_gets_no_egress() {
    let mut sc = Sidecar::start();
    assert_eq!(sc.curl(&["https://api.openai.com/v1/before"]).0, 200);
    let (_, agents) = sc.server.admin("GET", "/v1/agents", None);
    let id = agents["agents"][0]["id"].as_str().unwrap().to_owned();
    sc.server.kill9();
    // Revoked behind the server's back, so no event announces it.
    sc.server.sql(&[&format!("UPDATE credentials SET revoked_at = 1 WHERE id = '{id}'")]);
    sc.server.restart_same_port();
    let mut last = String::new();
    let closed = until(Duration::from_secs(30), || {
        let (status, out) = sc.curl(&["https://api.openai.com/v1/after"]);
        last = out;
        status == 403
    });
    assert!(closed && last.to_ascii_lowercase().contains("x-airlock-error: egress_denied"), "{last}");
    let ready = reqwest::blocking::get(format!("http://{}/_airlock/readyz", sc.proxy_addr)).unwrap();
    assert_eq!(ready.status(), 503, "a proxy that allows nothing says it is not ready");
}

#[test]
fn grants_changed_by_a_reload_hold_without_a_restart() {
    let sc = Sidecar::start();
    sc.server.create("staging/tools/key", &secret_value("staging"));
    const STAGING: &str = "Authorization: Bearer {{secret:staging/tools/key}}";
    assert_eq!(sc.curl(&["-H", STAGING, "https://api.openai.com/v1/before"]).0, 403, "not granted yet");
    let added = "[[grant]]\nsecrets = \"staging/tools/*\"\nhosts = [\"api.openai.com\"]\n";
    sc.reload_policy(&policy(added));
    // A grant added later gets a token of its own, without a restart.
    let mut last = String::new();
    let granted = until(Duration::from_secs(10), || {
        let (status, out) = sc.curl(&["-H", STAGING, "https://api.openai.com/v1/added"]);
        last = out;
        status == 200
    });
    assert!(granted, "the added grant is used without a restart: {last}");
    assert_eq!(last_authorization(&sc).as_deref(), Some(format!("Bearer {}", secret_value("staging")).as_str()));
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/still"]).0, 200, "the other grants still work");

    // The same grant now needs approval: the token minted without it is not used again.
    sc.reload_policy(&policy(&added.replace("hosts", "approval = true\nhosts")));
    let pending = until(Duration::from_secs(10), || {
        let (status, out) = sc.curl(&["-H", STAGING, "https://api.openai.com/v1/gated"]);
        last = out;
        status == 503
    });
    assert!(pending && last.contains("approval_pending"), "{last}");
    let before = sc.upstream.requests().len();
    let (status, out) = sc.curl(&["-H", STAGING, "https://api.openai.com/v1/gated-again"]);
    assert_eq!(status, 503, "{out}");
    assert_eq!(sc.upstream.requests().len(), before, "nothing went out while the grant waits for approval");
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/after"]).0, 200, "the open grants still work");
}

#[test]
fn sigterm_delivers_the_uses_still_gathering_before_the_proxy_exits() {
    let mut sc = Sidecar::start();
    let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/last"]);
    assert_eq!(status, 200, "{out}");
    let exit = sc.terminate();
    assert!(exit.success(), "the proxy exits 0 on SIGTERM: {exit:?}");
    assert_eq!(uses(&access_events(&sc)), 1, "the use was delivered before the exit");
}

#[test]
fn the_server_exits_promptly_on_sigterm_and_sigint_while_a_proxy_follows_its_changes() {
    for signal in ["TERM", "INT"] {
        let mut sc = Sidecar::start();
        // The proxy follows the change stream (a rotation reaches it), so a stream is open.
        let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/before"]);
        assert_eq!(status, 200, "{out}");
        let exit = sc.server.signal_and_wait(signal, Duration::from_secs(8));
        let exit = exit.unwrap_or_else(|| panic!("SIG{signal}: the server was still running 8 s later"));
        assert!(exit.success(), "SIG{signal}: {exit:?}");
    }
}

/// A TCP relay on 127.0.0.1 to `target`; `stall()` makes every connection open at that
/// moment stop forwarding in both directions without closing (a silent partition), while
/// connections opened later are forwarded as usual.
struct Relay {
    addr: String,
    generation: Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        Relay::start_on("127.0.0.1:0", target)
    }

    fn start_on(at: &str, target: &str) -> Relay {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind(at).unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_owned();
        let generation = Arc::new(AtomicUsize::new(0));
        let stalls = generation.clone();
        std::thread::spawn(move || {
            for agent in listener.incoming().filter_map(Result::ok) {
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                let born = stalls.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (agent.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), agent.try_clone().unwrap()),
                ] {
                    let stalls = stalls.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            // Stalled: hold the bytes and the connection, forward nothing.
                            while stalls.load(Ordering::SeqCst) != born {
                                std::thread::sleep(Duration::from_secs(1));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Relay { addr, generation }
    }

    fn stall(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_change_stream_that_goes_silent_without_closing_is_opened_again() {
    let mut sc = Sidecar::start();
    let relay = Relay::start(&sc.server.addr);
    sc.restart_via(&relay.addr, &["--change-stream-timeout", "2s"]);
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/a"]).0, 200);
    assert_eq!(last_authorization(&sc), Some(format!("Bearer {}", secret_value("openai"))));
    // The partition: the proxy's stream (and its pooled connections) go quiet, nothing closes.
    relay.stall();
    std::thread::sleep(Duration::from_secs(1));
    let rotate = json!({ "new_value": secret_value("rotated") }).to_string();
    assert_eq!(sc.server.admin("POST", "/v1/secrets/production%2Fopenai%2Fapi-key/rotate", Some(&rotate)).0, 200);
    // Within the silence timeout and a reconnect, the rotation reaches the proxy (the value
    // TTL is 60 s: without noticing the silence it would inject the old value for that long).
    assert!(
        until(Duration::from_secs(15), || {
            sc.curl(&["-H", AUTH, "https://api.openai.com/v1/b"]);
            last_authorization(&sc) == Some(format!("Bearer {}", secret_value("rotated")))
        }),
        "the proxy never noticed its change stream had gone silent"
    );
    let metrics = reqwest::blocking::get(format!("http://{}/_airlock/metrics", sc.proxy_addr)).unwrap().text().unwrap();
    assert!(metrics.contains("airlock_proxy_change_stream_reconnects_total{reason=\"silent\"}"), "{metrics}");
}

#[test]
fn uses_with_huge_agent_chosen_paths_are_recorded_and_delivery_goes_on() {
    let sc = Sidecar::start();
    // Five URL paths of 60 KB each: their events together outgrow what one report may carry.
    let mut agent = crate::raw::Agent::connect(&sc.proxy_addr);
    for n in 0..5 {
        let long = format!("/r/openai/{n}{}", "x".repeat(60_000));
        agent.send(format!("GET {long} HTTP/1.1\r\nHost: a\r\n{AUTH}\r\n\r\n").as_bytes());
        let got = String::from_utf8_lossy(&agent.read_response()).into_owned();
        assert!(got.starts_with("HTTP/1.1 200"), "{}", &got[..got.len().min(300)]);
    }
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/after"]).0, 200);
    assert!(until(Duration::from_secs(10), || uses(&access_events(&sc)) == 6), "every use was delivered");
    for e in access_events(&sc) {
        let path = e["detail"]["url_path"].as_str().unwrap();
        assert!(path.len() < 1200, "the recorded path is capped: {} bytes", path.len());
    }
}

#[test]
fn an_event_the_server_refuses_is_set_aside_and_the_rest_are_delivered() {
    let mut sc = Sidecar::start();
    sc.kill9();
    // A line the API will refuse (an id it does not take), left in the spool.
    let spool = sc.dir.path().join("proxy").join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let bad = r#"{"id":"not a valid id!","agent":"research-agent","host":"api.openai.com","method":"GET","url_path":"/x","outcome":"injected","latency_ms":1.0,"timestamp":"2026-12-07T00:00:00Z","count":1}"#;
    std::fs::write(spool.join("access-events.jsonl"), format!("{bad}\n")).unwrap();
    sc.restart();
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/next"]).0, 200);
    assert!(until(Duration::from_secs(10), || uses(&access_events(&sc)) == 1), "the good event was delivered");
    let dead = std::fs::read_to_string(spool.join("access-events.dead.jsonl")).unwrap_or_default();
    assert!(dead.contains("not a valid id!"), "the refused event is kept aside: {dead:?}");
    assert!(sc.log().contains("dead-letter"), "and the proxy says so");
}

#[test]
fn a_full_spool_refuses_injection_rather_than_inject_unrecorded_and_readyz_says_why() {
    let mut sc = Sidecar::start_with("", &["--spool-max-bytes", "1"]);
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/first"]).0, 200);
    assert!(until(Duration::from_secs(10), || uses(&access_events(&sc)) == 1));
    // The central API goes away: the next use stays in the spool, which is then full.
    sc.server.kill9();
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/second"]).0, 200);
    let ready = format!("http://{}/_airlock/readyz", sc.proxy_addr);
    assert!(
        until(Duration::from_secs(5), || reqwest::blocking::get(&ready).unwrap().status() == 503),
        "readyz turns 503"
    );
    let why = reqwest::blocking::get(&ready).unwrap().text().unwrap();
    assert!(why.contains("spool is full"), "{why}");
    let before = sc.requests_to("api.openai.com").len();
    let (status, out) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/third"]);
    assert_eq!(status, 503, "{out}");
    assert!(out.contains("spool_full"), "{out}");
    assert_eq!(sc.requests_to("api.openai.com").len(), before, "nothing went upstream");
    // A request without a value is not a use: it still passes.
    assert_eq!(sc.curl(&["https://api.openai.com/v1/plain"]).0, 200);
}

#[test]
fn a_proxy_started_before_its_server_waits_answering_503_and_serves_once_it_is_up() {
    let sc = Sidecar::start();
    // Where the central API will be: nothing listens there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let mut proxy = std::process::Command::new(crate::support::BIN)
        .args(["proxy", "--server", &format!("http://127.0.0.1:{port}"), "--listen", &listen])
        .arg("--allow-any-local-caller")
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .arg("--data-dir")
        .arg(sc.dir.path().join("early"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = format!("http://{listen}/_airlock/readyz");
    let answer = || reqwest::blocking::get(&ready).ok().map(|r| (r.status().as_u16(), r.text().unwrap_or_default()));
    assert!(until(Duration::from_secs(10), || answer().is_some_and(|(s, _)| s == 503)), "it listens and answers 503");
    let (_, why) = answer().unwrap();
    assert!(why.contains("central_unavailable") && why.contains("cannot reach"), "{why}");
    assert!(proxy.try_wait().unwrap().is_none(), "it did not exit");
    let health = reqwest::blocking::get(format!("http://{listen}/_airlock/healthz")).unwrap().status();
    assert_eq!(health, 200, "alive while not ready: a liveness probe does not restart it");
    // The server comes up at that address.
    let _relay = Relay::start_on(&format!("127.0.0.1:{port}"), &sc.server.addr);
    let up = until(Duration::from_secs(20), || answer().is_some_and(|(s, _)| s == 200));
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(up, "ready once the central API answers");
}

#[test]
fn a_proxy_whose_key_is_refused_still_exits_at_once_with_the_reason() {
    let sc = Sidecar::start();
    let key = sc.dir.path().join("wrong.key");
    std::fs::write(&key, "ak_not_a_real_key").unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["proxy", "--server", &sc.server.addr, "--listen", "127.0.0.1:0"])
        .arg("--allow-any-local-caller")
        .arg("--agent-key-file")
        .arg(&key)
        .arg("--data-dir")
        .arg(sc.dir.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn the_proxy_fails_over_to_a_replica_and_follows_its_changes() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    let mut sc = Sidecar::start_on(crate::support::Backend::Postgres);
    let replica = sc.server.replica();
    sc.restart_via(&format!("{},{}", sc.server.addr, replica.addr), &[]);
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/warm"]).0, 200);
    // Requests keep running while the server the proxy follows dies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (proxy, halt) = (sc.proxy_addr.clone(), stop.clone());
    let ca = sc.ca_path();
    let load = std::thread::spawn(move || {
        let mut failed = Vec::new();
        while !halt.load(std::sync::atomic::Ordering::SeqCst) {
            let out = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--proxy"])
                .arg(format!("http://{proxy}"))
                .arg("--cacert")
                .arg(&ca)
                .args(["-H", AUTH, "https://api.openai.com/v1/during"])
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code != "200" {
                failed.push(code);
            }
        }
        failed
    });
    std::thread::sleep(Duration::from_millis(300));
    sc.server.kill9();
    std::thread::sleep(Duration::from_secs(2));
    // A rotation through the survivor reaches the proxy.
    let rotate = json!({ "new_value": secret_value("rotated") }).to_string();
    let rotated = reqwest::blocking::Client::new()
        .post(format!("{}/v1/secrets/production%2Fopenai%2Fapi-key/rotate", replica.addr))
        .bearer_auth(&sc.server.admin_key)
        .header("content-type", "application/json")
        .body(rotate)
        .send()
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let seen = until(Duration::from_secs(3), || {
        last_authorization(&sc) == Some(format!("Bearer {}", secret_value("rotated")))
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = load.join().unwrap();
    if !seen {
        let log = sc.log();
        let tail: Vec<&str> =
            log.lines().filter(|l| l.contains("WARN") || l.contains("INFO") || l.contains("ERROR")).collect();
        panic!(
            "the rotation made through the replica did not reach the proxy; log:\n{}",
            tail[tail.len().saturating_sub(30)..].join("\n")
        );
    }
    assert!(failed.is_empty(), "requests for the cached value failed during the failover: {failed:?}");
}

/// A plain HTTP listener that answers every request with `answer` and closes: a load
/// balancer in front of a replica that is down.
fn gateway(answer: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer);
        }
    });
    format!("http://{addr}")
}

/// A gateway's 502, 503 or 504 says the replica behind it cannot be reached, not that the
/// central API refused the proxy: the proxy starts, reads and reports through the next
/// address instead of failing (or serving nothing) on the first.
#[test]
fn a_gateway_error_for_a_replica_that_is_down_moves_the_proxy_to_the_next_address() {
    for answer in [
        &b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 20\r\nconnection: close\r\n\r\n<h1>bad gateway</h1>"[..],
        &b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 69\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"the database is not reachable\"}}"[..],
        &b"HTTP/1.1 504 Gateway Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
    ] {
        let mut sc = Sidecar::start();
        let down = gateway(answer);
        sc.restart_via(&format!("{down},{}", sc.server.addr), &[]);
        let (status, body) = sc.curl(&["-H", AUTH, "https://api.openai.com/v1/through-the-survivor"]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(last_authorization(&sc), Some(format!("Bearer {}", secret_value("openai"))));
        // Its use reaches the audit through the survivor too.
        assert!(until(Duration::from_secs(10), || uses(&access_events(&sc)) > 0), "the use was not delivered");
    }
}

/// Issue 17 item 10: once an operator denies the proxy's approval request, the agent gets
/// 403 `approval_denied` with the reason, and the proxy files no new request until the
/// cool-down ends (`--approval-denied-cooldown`) or the policy changes.
#[test]
fn a_denied_approval_is_final_until_the_cool_down_ends_or_the_policy_changes() {
    const COOLDOWN: Duration = Duration::from_secs(10);
    let gated = "[[grant]]\nsecrets = \"production/gated/*\"\nhosts = [\"api.openai.com\"]\napproval = true\n";
    let sc = Sidecar::start_with(gated, &["--approval-denied-cooldown", "10s"]);
    sc.server.create("production/gated/key", &secret_value("gated"));
    const GATED: &str = "Authorization: Bearer {{secret:production/gated/key}}";
    let approvals = |status: &str| {
        let (code, body) = sc.server.admin("GET", &format!("/v1/approvals?status={status}"), None);
        assert_eq!(code, 200, "{body}");
        body["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let pending_request = |deadline: Duration| {
        let mut found = Vec::new();
        assert!(
            until(deadline, || {
                found = approvals("pending");
                !found.is_empty()
            }),
            "no approval request filed"
        );
        assert_eq!(found.len(), 1, "one request at a time: {found:?}");
        found.remove(0)
    };
    let deny = |id: &str, reason: &str| {
        let body = json!({ "reason": reason }).to_string();
        let (status, out) = sc.server.admin("POST", &format!("/v1/approvals/{id}/deny"), Some(&body));
        assert_eq!(status, 200, "{out}");
    };
    // Until the denial reaches the proxy (it polls), the agent may still see approval_pending.
    let until_denied = |reason: &str| {
        let mut last = (0, String::new());
        let denied = until(Duration::from_secs(15), || {
            last = sc.curl(&["-H", GATED, "https://api.openai.com/v1/gated"]);
            last.0 != 503
        });
        let (status, out) = last;
        assert!(denied && status == 403, "{status} {out}");
        let lower = out.to_ascii_lowercase();
        assert!(lower.contains("x-airlock-error: approval_denied") && lower.contains("retry-after: "), "{out}");
        assert!(out.contains(reason), "the agent is told the operator's reason: {out}");
        assert!(!out.contains(crate::support::MARKER), "{out}");
        Instant::now()
    };

    let first = pending_request(Duration::from_secs(15));
    let (status, out) = sc.curl(&["-H", GATED, "https://api.openai.com/v1/pending"]);
    assert!(status == 503 && out.contains("approval_pending"), "{status} {out}");
    deny(&first, "not during the freeze");
    let seen = until_denied("not during the freeze");
    // No new request is filed while the denial stands; every request is refused the same way.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(approvals("pending"), Vec::<String>::new(), "the proxy asked again during the cool-down");
    assert_eq!(sc.curl(&["-H", GATED, "https://api.openai.com/v1/again"]).0, 403);
    let sent_gated = |r: &crate::upstream::Recorded| r.header("authorization").is_some_and(|a| a.contains("gated"));
    assert!(!sc.requests_to("api.openai.com").iter().any(sent_gated), "nothing went out with the denied grant");
    assert_eq!(sc.curl(&["-H", AUTH, "https://api.openai.com/v1/open"]).0, 200, "the open grants still work");

    // A policy change ends the cool-down: the proxy asks again at once.
    sc.reload_policy(&format!("{}\n# edited\n", policy(gated)));
    let second = pending_request(Duration::from_secs(5));
    assert_ne!(second, first);
    assert!(
        seen.elapsed() < COOLDOWN - Duration::from_secs(1),
        "the policy change, not the cool-down, ended the denial"
    );
    let (status, out) = sc.curl(&["-H", GATED, "https://api.openai.com/v1/pending-again"]);
    assert!(status == 503 && out.contains("approval_pending"), "{status} {out}");

    // Without a policy change, the proxy asks again when the cool-down ends.
    deny(&second, "still frozen");
    let seen = until_denied("still frozen");
    let third = pending_request(COOLDOWN + Duration::from_secs(15));
    assert!(third != first && third != second);
    assert!(seen.elapsed() >= COOLDOWN / 2, "asked again after {:?}, before the cool-down ended", seen.elapsed());
}
