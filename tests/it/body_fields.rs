//! Body fields: a grant's `body_fields` let a placeholder be the whole value of a top-level
//! form or JSON body field (OAuth2's `client_secret`) toward the grant's hosts. A raw TLS
//! upstream records the bytes it is sent: the body with the value written in and its
//! `Content-Length` recomputed, on every path a request takes (the fast path hands such a
//! request to hyper, a chunked body is buffered, HTTP/2, a CONNECT tunnel); the same
//! placeholder in another field, to another host, or in a body over the bound is refused
//! with nothing sent; the response's echo of the value is scrubbed and the use recorded.

use std::process::Command;
use std::time::Duration;

use crate::raw::{Agent, Hostile, Received, Reply};
use crate::sidecar::Sidecar;
use crate::support::{MARKER, until};

const PATH: &str = "oauth/client-secret";
const PLACEHOLDER: &str = "{{secret:oauth/client-secret}}";

const GRANT: &str = r#"
[[grant]]
secrets = "oauth/*"
hosts = ["api.openai.com"]
headers = []
body_fields = ["client_secret"]
"#;

/// What encoders change: `&`, `=`, `+`, a space, a quote and a slash.
fn value() -> String {
    format!("cs-{MARKER}-a&b=c+d e\"f/g-0123456789")
}

fn start() -> (Hostile, Sidecar) {
    // The upstream answers with the request it read: an echo of the value, to be scrubbed.
    let hostile = Hostile::start(|r: &Received| {
        let body = r.text();
        Reply::Send(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
    });
    let sc = Sidecar::start_against(GRANT, &[], hostile.port, &hostile.ca_pem);
    sc.server.create(PATH, &value());
    (hostile, sc)
}

#[derive(Clone, Copy, Debug)]
enum Way {
    /// Route mode, `Content-Length`: the fast path, which hands it to hyper.
    Route,
    /// Route mode, chunked.
    RouteChunked,
    /// Route mode over cleartext HTTP/2.
    H2Route,
    /// HTTPS in a CONNECT tunnel, HTTP/1.1 inside.
    Connect,
    /// HTTPS in a CONNECT tunnel, HTTP/2 inside.
    ConnectH2,
}

const EVERY_WAY: [Way; 5] = [Way::Route, Way::RouteChunked, Way::H2Route, Way::Connect, Way::ConnectH2];

/// POSTs `body` as `content_type` to `host` (`api.openai.com` through the route or a tunnel)
/// the `way` given; returns the status and everything the agent saw.
fn post(sc: &Sidecar, way: Way, host: &str, content_type: &str, body: &str) -> (u16, String) {
    let raw = |framing: &str, sent: String| {
        let mut agent = Agent::connect(&sc.proxy_addr);
        let head =
            format!("POST /r/openai/token HTTP/1.1\r\nHost: airlock\r\nContent-Type: {content_type}\r\n{framing}\r\n");
        agent.send(format!("{head}{sent}").as_bytes());
        String::from_utf8_lossy(&agent.read_response()).into_owned()
    };
    let curl = |args: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-g", "--max-time", "20", "--cacert"])
            .arg(sc.ca_path())
            .args(args)
            .args(["-X", "POST", "-H", &format!("Content-Type: {content_type}"), "--data-binary", body])
            .arg(url)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let proxy = format!("http://{}", sc.proxy_addr);
    let seen = match way {
        Way::Route => raw(&format!("Content-Length: {}\r\n", body.len()), body.to_owned()),
        Way::RouteChunked => {
            let (a, b) = body.split_at(body.len() / 2);
            raw("Transfer-Encoding: chunked\r\n", format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len()))
        }
        Way::H2Route => curl(&["--http2-prior-knowledge"], format!("{proxy}/r/openai/token")),
        Way::Connect => curl(&["--http1.1", "--proxy", &proxy], format!("https://{host}/v1/token")),
        Way::ConnectH2 => curl(&["--http2", "--proxy", &proxy], format!("https://{host}/v1/token")),
    };
    // A CONNECT's own `200 Connection established` comes first in curl's output: the last
    // status line is the request's.
    let status = seen
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u16>().ok())
        .next_back()
        .unwrap_or(0);
    (status, seen)
}

/// The body of what the upstream read last, and its `Content-Length`.
fn last_body(hostile: &Hostile) -> (String, Option<String>) {
    let last = hostile.received().last().cloned().expect("the upstream got a request");
    let text = last.text();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (body, last.header("content-length"))
}

#[test]
fn a_form_field_gets_the_value_on_every_path() {
    let (hostile, sc) = start();
    let value = value();
    let encoded: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = format!("grant_type=client_credentials&client_secret={PLACEHOLDER}&scope=a+b");
    let expected = format!("grant_type=client_credentials&client_secret={encoded}&scope=a+b");
    for way in EVERY_WAY {
        let (status, seen) = post(&sc, way, "api.openai.com", "application/x-www-form-urlencoded", &body);
        assert_eq!(status, 200, "{way:?}: {seen}");
        let (sent, length) = last_body(&hostile);
        assert_eq!(sent, expected, "{way:?}");
        assert_eq!(length, Some(expected.len().to_string()), "{way:?}");
        assert!(!seen.contains(&encoded) && !seen.contains(&value), "{way:?}: the echo came back: {seen}");
    }
    // Events reach the central API a moment after the response.
    let uses = || {
        let (_, page) = sc.server.admin("GET", "/v1/secrets/oauth%2Fclient-secret/access-events?limit=100", None);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        events.iter().filter_map(|e| e["detail"]["count"].as_u64()).sum::<u64>()
    };
    until(Duration::from_secs(10), || uses() == EVERY_WAY.len() as u64);
    assert_eq!(uses(), EVERY_WAY.len() as u64, "one access event per use");
    let (_, page) = sc.server.admin("GET", "/v1/secrets/oauth%2Fclient-secret/access-events?limit=100", None);
    for event in page["events"].as_array().unwrap() {
        assert_eq!(event["detail"]["kind"], "body_field", "{event}");
        assert_eq!(event["detail"]["host"], "api.openai.com", "{event}");
    }
}

#[test]
fn a_json_field_gets_the_value_and_other_bytes_stay() {
    let (hostile, sc) = start();
    let value = value();
    let body = format!(r#"{{"client_id": "me",  "client_secret":"{PLACEHOLDER}", "n": [1, {{"x": 2}}]}}"#);
    let quoted = serde_json::to_string(&value).unwrap();
    let expected = format!(r#"{{"client_id": "me",  "client_secret":{quoted}, "n": [1, {{"x": 2}}]}}"#);
    for way in [Way::Route, Way::Connect, Way::ConnectH2] {
        let (status, seen) = post(&sc, way, "api.openai.com", "application/json", &body);
        assert_eq!(status, 200, "{way:?}: {seen}");
        let (sent, length) = last_body(&hostile);
        assert_eq!(sent, expected, "{way:?}");
        assert_eq!(length, Some(expected.len().to_string()), "{way:?}");
        assert!(!seen.contains(quoted.trim_matches('"')), "{way:?}: the echo came back: {seen}");
    }
}

#[test]
fn the_placeholder_anywhere_else_is_refused_and_nothing_is_sent() {
    let (hostile, sc) = start();
    let cases = [
        ("application/x-www-form-urlencoded", format!("client_id={PLACEHOLDER}"), "placement_not_allowed"),
        ("application/x-www-form-urlencoded", format!("client_secret=x{PLACEHOLDER}"), "placement_not_allowed"),
        ("application/json", format!(r#"{{"a": {{"client_secret": "{PLACEHOLDER}"}}}}"#), "placement_not_allowed"),
        (
            "application/json",
            format!(r#"{{"client_secret": "{PLACEHOLDER}", "client_secret": "2"}}"#),
            "placement_not_allowed",
        ),
    ];
    for (content_type, body, code) in &cases {
        for way in EVERY_WAY {
            let (status, seen) = post(&sc, way, "api.openai.com", content_type, body);
            assert_eq!(status, 403, "{way:?} {body}: {seen}");
            assert!(seen.contains(code), "{way:?} {body}: {seen}");
        }
    }
    assert!(hostile.received().is_empty(), "nothing reached the upstream");
}

#[test]
fn the_placeholder_toward_another_host_is_refused() {
    let (_hostile, sc) = start();
    let body = format!("client_secret={PLACEHOLDER}");
    for way in [Way::Connect, Way::ConnectH2] {
        let (status, seen) = post(&sc, way, "api.evil.example", "application/x-www-form-urlencoded", &body);
        assert_eq!(status, 403, "{way:?}: {seen}");
        assert!(seen.contains("host_not_allowed"), "{way:?}: {seen}");
    }
    assert!(sc.requests_to("api.evil.example").is_empty(), "nothing reached the other host");
}

#[test]
fn a_body_over_the_bound_is_refused() {
    let (hostile, sc) = start();
    let body = format!("client_secret={PLACEHOLDER}&pad={}", "x".repeat(70 * 1024));
    for way in EVERY_WAY {
        let (status, seen) = post(&sc, way, "api.openai.com", "application/x-www-form-urlencoded", &body);
        let h2 = matches!(way, Way::H2Route | Way::ConnectH2);
        // Over HTTP/2, curl takes the proxy's early answer (413 while it still uploads, then a
        // stream reset) for a framing error; the proxy's log shows the refusal instead.
        if h2 && seen.contains("curl: (92)") {
            continue;
        }
        assert_eq!(status, 413, "{way:?}: {}", &seen[..seen.len().min(600)]);
        assert!(seen.contains("body_too_large"), "{way:?}");
    }
    assert!(sc.log().matches("body_too_large").count() >= EVERY_WAY.len(), "every way was refused");
    assert!(hostile.received().is_empty(), "nothing reached the upstream");
}

#[test]
fn without_body_fields_a_body_is_never_read() {
    // Off by default: no grant names body fields, so the body goes as sent (on the fast path),
    // its placeholder text never replaced by a value.
    let hostile = Hostile::start(|_| Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let body = format!("client_secret={PLACEHOLDER}");
    let (status, seen) = post(&sc, Way::Route, "api.openai.com", "application/x-www-form-urlencoded", &body);
    assert_eq!(status, 200, "{seen}");
    assert_eq!(last_body(&hostile), (body.clone(), Some(body.len().to_string())));
}
