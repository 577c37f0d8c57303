//! Log lines cannot be forged (issue 24 item 3): text an agent or API client chose
//! (placeholder paths after percent- or base64-decoding, URL paths, header values, names)
//! never starts a line of its own, nor reaches the terminal as a control sequence, in the
//! proxy's or the server's log.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::raw::Agent;
use crate::sidecar::Sidecar;
use crate::support::{Backend, MARKER, Server};

/// What the hostile text would make a line of its own: a genuine-looking log line, dated in
/// 1999 so that no genuine line of the test can look like it.
const FORGED: &str = "1999-12-31T23:59:59.999999Z  INFO airlock::proxy::pipeline: forged line";

/// The forged line after a CR/LF, then terminal control sequences (clear the screen, set
/// the title, the C1 CSI) and a Unicode line separator.
fn hostile() -> String {
    format!("x\r\n{FORGED}\u{1b}[2J\u{1b}]0;title\u{7}\u{9b}2J\u{2028}end")
}

/// Whether `line` starts like one the log formatter wrote: an RFC 3339 timestamp, then a level.
fn genuine(line: &str) -> bool {
    let Some((stamp, rest)) = line.split_once(' ') else { return false };
    let date_ok = stamp.len() >= 20
        && stamp.ends_with('Z')
        && stamp.as_bytes()[4] == b'-'
        && stamp.as_bytes()[10] == b'T'
        && stamp[..4].bytes().all(|b| b.is_ascii_digit());
    let level = rest.trim_start().split(' ').next().unwrap_or("");
    date_ok && !stamp.starts_with("1999") && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
}

/// Every line of `log` is one the formatter started, none is the forged one, and no control
/// character other than the line ends is in it. Returns how many lines quote the forged text
/// (escaped), so a caller can check the hostile input reached the log at all.
fn assert_unforged(who: &str, log: &str) -> usize {
    assert!(!log.contains('\r'), "{who} log holds a raw CR");
    for line in log.lines() {
        assert!(genuine(line), "{who} log has a line its formatter did not start: {line:?}");
        assert!(!line.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')), "{who}: {line:?}");
    }
    log.lines().filter(|l| l.contains("forged line")).count()
}

/// `{{secret:production/openai/x<CR><LF><forged line>…}}`, every byte percent-encoded.
fn percent_encoded_placeholder() -> String {
    format!("{{{{secret:production/openai/{}}}}}", hostile()).bytes().map(|b| format!("%{b:02X}")).collect()
}

fn refused(sc: &Sidecar, head: &str) -> String {
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(format!("{head}\r\n").as_bytes());
    String::from_utf8_lossy(&agent.read_response()).into_owned()
}

/// The hostile heads the proxy refuses, each quoting the placeholder's path in its log line.
fn send_hostile_placeholders(sc: &Sidecar) -> usize {
    let query = percent_encoded_placeholder();
    let basic = STANDARD.encode(format!("user:{{{{secret:production/openai/{}}}}}", hostile()));
    let heads = [
        // The placeholder percent-encoded in the query string.
        format!("GET /r/openai/echo?key={query} HTTP/1.1\r\nHost: airlock\r\n"),
        // Inside base64 Basic credentials.
        format!("GET /r/openai/echo HTTP/1.1\r\nHost: airlock\r\nAuthorization: Basic {basic}\r\n"),
        // Percent-encoded in the URL path (always refused).
        format!("GET /r/openai/{query} HTTP/1.1\r\nHost: airlock\r\n"),
        // The hyper path (chunked body), query again.
        format!("POST /r/openai/echo?key={query} HTTP/1.1\r\nHost: airlock\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"),
    ];
    for head in &heads {
        let answer = refused(sc, head);
        assert!(answer.starts_with("HTTP/1.1 4"), "the request was refused: {answer}");
    }
    assert!(sc.upstream.requests().is_empty(), "nothing went out");
    heads.len()
}

#[test]
fn placeholder_paths_decoded_from_a_query_or_basic_credentials_forge_no_proxy_log_line() {
    let sc = Sidecar::start();
    let sent = send_hostile_placeholders(&sc);
    let quoted = assert_unforged("proxy", &sc.log());
    assert!(quoted >= sent, "each refusal is logged, quoting the path escaped:\n{}", sc.log());
    let escaped = r"x\r\n1999-12-31T23:59:59.999999Z  INFO airlock::proxy::pipeline: forged line\u{1b}[2J";
    assert!(sc.log().contains(escaped), "the path is shown escaped:\n{}", sc.log());
    assert!(!sc.log().contains(MARKER));
}

#[test]
fn hostile_text_sent_to_the_server_forges_no_server_log_line() {
    let srv = Server::start(Backend::Sqlite);
    let encoded = percent_encoded_placeholder();
    let name = hostile();
    let key = srv.admin_key.clone();
    let calls: Vec<(&str, String, Option<String>)> = vec![
        ("GET", format!("/v1/approvals/{encoded}"), None),
        ("GET", format!("/v1/secrets/{encoded}"), None),
        ("GET", format!("/nowhere/{encoded}"), None),
        ("GET", format!("/v1/audit?actor={encoded}&type={encoded}"), None),
        ("POST", "/v1/agents".into(), Some(json!({ "name": name }).to_string())),
        ("POST", "/v1/tokens".into(), Some(json!({ "scope": format!("secrets:read:{name}") }).to_string())),
        ("POST", "/v1/secrets".into(), Some(json!({ "path": name, "value": "v" }).to_string())),
        ("POST", "/v1/keys".into(), Some(json!({ "name": name, "role": "reader" }).to_string())),
        ("POST", "/v1/policies/reload".into(), Some(name.clone())),
    ];
    for (method, path, body) in &calls {
        let (status, _) = srv.call(method, path, &key, body.as_deref());
        assert!(status < 500, "{method} {path}: {status}");
        // Hostile credentials and headers too (a header value cannot hold C0 controls; C1 it can).
        let in_header = format!("{}\u{9b}2J", name.replace(|c: char| c.is_ascii_control(), " "));
        let resp = reqwest::blocking::Client::new()
            .get(srv.url(path))
            .header("authorization", format!("Bearer ak_{in_header}").into_bytes())
            .header("user-agent", in_header.into_bytes())
            .send()
            .unwrap();
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
    }
    // Give the audit writer its moment, then read what the server wrote.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_unforged("server", &srv.log());
}

/// The same in JSON format: one JSON object a line, the hostile text a string inside it,
/// with nothing raw in it that a terminal acts on or a viewer breaks lines at.
#[test]
fn placeholder_paths_forge_no_proxy_log_line_in_json_format_either() {
    let sc = Sidecar::start_with("", &["--log-format", "json"]);
    let sent = send_hostile_placeholders(&sc);
    let log = sc.log();
    let mut quoted = 0;
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{line}");
        assert!(!line.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')), "{line:?}");
        quoted += usize::from(line.contains("forged line"));
    }
    assert!(log.contains(r"\u009b2J\u2028end"), "the hostile text is in the log, escaped:\n{log}");
    assert!(quoted >= sent, "each refusal is logged:\n{log}");
}
