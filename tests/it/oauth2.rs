//! OAuth2 client credentials (`[[oauth2]]`): a real authorization server (authlib's Flask
//! `AuthorizationServer` with `ClientCredentialsGrant`, tests/it/oauth2_server.py) issues
//! tokens to the client whose id and secret Airlock holds, and a resource endpoint on the same
//! TLS server checks them (`ResourceProtector`). The proxy fetches a token, sends it as the
//! Bearer token on every path a request takes (the fast path hands such a request to hyper,
//! HTTP/2, a CONNECT tunnel), reuses it until shortly before it expires, fetches a new one
//! once when the upstream refuses it (401) and sends the request again once, scrubs it from
//! responses, never logs it, and records the uses with kind `oauth2`. A token endpoint that
//! refuses the client is a clear 502 that quotes nothing of its body.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::raw::Agent;
use crate::sidecar::Sidecar;
use crate::support::{BIN, MARKER, until};
use crate::upstream::PemFiles;

const TOKEN_HOST: &str = "auth.airlock.test";
const CLIENT_ID: &str = "client-1";
const ID_PATH: &str = "oauth/client-id";
const SECRET_PATH: &str = "oauth/client-secret";

/// What form and Basic encoders change: `&`, `=`, `+`, a space, `:` and `%`.
fn client_secret() -> String {
    format!("cs-{MARKER}-a&b=c+d e:f%g")
}

fn policy(token_host_in_egress: bool) -> String {
    // Without the token host in egress, the grant names another host (or it would be the error).
    let (allow, grant_host) = match token_host_in_egress {
        true => (format!(r#""api.openai.com", "{TOKEN_HOST}""#), TOKEN_HOST),
        false => (r#""api.openai.com""#.to_owned(), "api.openai.com"),
    };
    format!(
        r#"
[agent]
name = "research-agent"

[egress]
allow = [{allow}]

[[grant]]
secrets = "oauth/*"
hosts = ["{grant_host}"]

[[route]]
name = "api"
upstream = "https://api.openai.com/v1"

[[oauth2]]
host = "api.openai.com"
token_url = "https://{TOKEN_HOST}/oauth/token"
client_id = "{{{{secret:{ID_PATH}}}}}"
client_secret = "{{{{secret:{SECRET_PATH}}}}}"
scope = "read write"
"#
    )
}

/// The authorization and resource server (one Flask process over TLS).
struct AuthServer {
    child: Child,
    port: u16,
    /// The same server over plain HTTP.
    plain_port: u16,
    pem: PemFiles,
    _dir: tempfile::TempDir,
}

impl AuthServer {
    fn start(expires_in: u64) -> AuthServer {
        let dir = tempfile::tempdir().unwrap();
        let pem = PemFiles::write(dir.path(), "oauth2-", &["api.openai.com", TOKEN_HOST]);
        let port_file = dir.path().join("port");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/oauth2_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&port_file)
            .arg(&pem.cert)
            .arg(&pem.key)
            .args([CLIENT_ID, &client_secret(), &expires_in.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (pip install authlib flask)");
        let started = until(Duration::from_secs(20), || port_file.exists());
        if !started {
            let _ = child.kill();
            panic!("the OAuth2 server did not start (pip install authlib flask)");
        }
        let ports = std::fs::read_to_string(&port_file).unwrap();
        let (port, plain_port) = ports.trim().split_once(' ').unwrap();
        let (port, plain_port) = (port.parse().unwrap(), plain_port.parse().unwrap());
        AuthServer { child, port, plain_port, pem, _dir: dir }
    }

    /// A call to the server itself (not through the proxy).
    fn call(&self, method: &str, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-X", method, "--cacert"])
            .arg(&self.pem.ca)
            .args(["--resolve", &format!("{TOKEN_HOST}:{}:127.0.0.1", self.port)])
            .arg(format!("https://{TOKEN_HOST}:{}{path}", self.port))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
    }

    fn stats(&self) -> Value {
        self.call("GET", "/_test/stats")
    }

    fn issued(&self) -> u64 {
        self.stats()["issued"].as_u64().unwrap()
    }

    fn tokens(&self) -> Vec<String> {
        self.stats()["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
    }

    fn hits(&self, path: &str) -> u64 {
        self.stats()["hits"][path].as_u64().unwrap_or(0)
    }

    fn revoke(&self) {
        self.call("POST", "/_test/revoke");
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server, and a sidecar whose api.openai.com and token host are that server.
fn start(expires_in: u64, secret: &str) -> (AuthServer, Sidecar) {
    start_with(expires_in, secret, |_, text| text)
}

/// `start`, the policy changed by `edit` (given the server).
fn start_with(expires_in: u64, secret: &str, edit: impl Fn(&AuthServer, String) -> String) -> (AuthServer, Sidecar) {
    let auth = AuthServer::start(expires_in);
    let pin = format!("{TOKEN_HOST}=127.0.0.1:{}", auth.port);
    let text = edit(&auth, policy(true));
    let sc = Sidecar::start_custom_against(&text, &["--resolve", &pin], auth.port, &auth.pem.ca);
    sc.server.create(ID_PATH, CLIENT_ID);
    sc.server.create(SECRET_PATH, secret);
    (auth, sc)
}

#[derive(Clone, Copy, Debug)]
enum Way {
    /// Route mode over HTTP/1.1 with `Content-Length`: the fast path, which hands it to hyper.
    Route,
    /// Route mode over cleartext HTTP/2.
    H2Route,
    /// HTTPS in a CONNECT tunnel, HTTP/1.1 inside.
    Connect,
    /// HTTPS in a CONNECT tunnel, HTTP/2 inside.
    ConnectH2,
}

const EVERY_WAY: [Way; 4] = [Way::Route, Way::H2Route, Way::Connect, Way::ConnectH2];

/// Sends `method path` (under `/v1`) with `body` the `way` given, with an `Authorization` of the
/// agent's own (which the token replaces); returns the status and everything the agent saw.
fn send(sc: &Sidecar, way: Way, method: &str, path: &str, body: &str) -> (u16, String) {
    let proxy = format!("http://{}", sc.proxy_addr);
    let curl = |args: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-g", "--max-time", "20", "--cacert"])
            .arg(sc.ca_path())
            .args(args)
            .args(["-X", method, "-H", "Authorization: Bearer agent-own-junk"])
            .args(if body.is_empty() { vec![] } else { vec!["--data-binary", body] })
            .arg(url)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let seen = match way {
        Way::Route => {
            let mut agent = Agent::connect(&sc.proxy_addr);
            let head = format!(
                "{method} /r/api{path} HTTP/1.1\r\nHost: airlock\r\nAuthorization: Bearer agent-own-junk\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            agent.send(head.as_bytes());
            String::from_utf8_lossy(&agent.read_response()).into_owned()
        }
        Way::H2Route => curl(&["--http2-prior-knowledge"], format!("{proxy}/r/api{path}")),
        Way::Connect => curl(&["--http1.1", "--proxy", &proxy], format!("https://api.openai.com/v1{path}")),
        Way::ConnectH2 => curl(&["--http2", "--proxy", &proxy], format!("https://api.openai.com/v1{path}")),
    };
    // A CONNECT's own `200 Connection established` comes first: the last status is the request's.
    let status = seen
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u16>().ok())
        .next_back()
        .unwrap_or(0);
    (status, seen)
}

fn get(sc: &Sidecar, path: &str) -> (u16, String) {
    send(sc, Way::Route, "GET", path, "")
}

/// The access events of `path`, once at least `wanted` uses of kind oauth2 have arrived.
fn oauth2_events(sc: &Sidecar, path: &str, wanted: u64) -> Vec<Value> {
    let events = || {
        let url = format!("/v1/secrets/{}/access-events?limit=1000", crate::support::enc(path));
        let (_, page) = sc.server.admin("GET", &url, None);
        page["events"].as_array().cloned().unwrap_or_default()
    };
    let uses = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["detail"]["kind"] == "oauth2")
            .filter_map(|e| e["detail"]["count"].as_u64())
            .sum::<u64>()
    };
    until(Duration::from_secs(10), || uses(&events()) >= wanted);
    let events = events();
    assert_eq!(uses(&events), wanted, "{events:#?}");
    events
}

#[test]
fn every_path_gets_the_token_and_one_token_serves_them_all() {
    let (auth, sc) = start(3600, &client_secret());
    for way in EVERY_WAY {
        let (status, seen) = send(&sc, way, "GET", "/whoami", "");
        assert_eq!(status, 200, "{way:?}: {seen}");
        assert!(seen.contains(r#""client":"client-1""#) && seen.contains(r#""scope":"read write""#), "{way:?}: {seen}");
    }
    // A body goes through as sent (the route's fast path hands it to hyper, which holds it).
    let (status, seen) = send(&sc, Way::Route, "POST", "/whoami", "a=1&b=two");
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains(r#""body":"a=1&b=two""#), "{seen}");
    assert_eq!(auth.issued(), 1, "one token for every request: {}", auth.stats());
    assert_eq!(auth.hits("/v1/whoami"), 5);
    assert_eq!(auth.stats()["auth"], json!(["client_secret_basic"]));

    // Uses: the id and secret sent to the token endpoint once, the token sent five times.
    let events = oauth2_events(&sc, SECRET_PATH, 6);
    let fetch: Vec<&Value> = events.iter().filter(|e| e["detail"]["host"] == TOKEN_HOST).collect();
    assert_eq!(fetch.len(), 1, "{events:#?}");
    let d = &fetch[0]["detail"];
    let seen = (&d["method"], &d["url_path"], &d["status"], &d["outcome"]);
    assert_eq!(seen, (&json!("POST"), &json!("/oauth/token"), &json!(200), &json!("injected")), "{d}");
    for e in events.iter().filter(|e| e["detail"]["host"] == "api.openai.com") {
        assert_eq!(e["detail"]["kind"], "oauth2", "{e}");
        assert_eq!(e["detail"]["version"], 1, "{e}");
    }
    let id_events = oauth2_events(&sc, ID_PATH, 1);
    assert_eq!(id_events[0]["detail"]["host"], TOKEN_HOST);

    // Neither the client secret nor the token reached the proxy's trace log.
    let log = sc.log();
    assert!(log.contains("OAuth2 access token obtained"), "the fetch is logged (without the token)");
    for token in auth.tokens() {
        assert!(!log.contains(&token), "the access token reached the log");
    }
    assert!(!log.contains(&client_secret()) && !log.contains("cs-SeCrEt"), "the client secret reached the log");
    // Nor the Basic credentials the token endpoint was sent (RFC 6749 §2.3.1: form-encoded, then base64).
    let form = |s: &str| -> String {
        s.bytes()
            .map(|b| match b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            })
            .collect()
    };
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{}", form(&client_secret())));
    assert!(!log.contains(&basic), "the Basic credentials reached the log");
}

#[test]
fn a_token_is_replaced_when_it_expires() {
    let (auth, sc) = start(2, &client_secret());
    assert_eq!(get(&sc, "/whoami").0, 200);
    assert_eq!(get(&sc, "/whoami").0, 200);
    assert_eq!(auth.issued(), 1, "reused while fresh");
    // Used for 1.8 s of its 2 s.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(get(&sc, "/whoami").0, 200);
    assert_eq!(auth.issued(), 2, "a new token after the first expired");
    assert_eq!(auth.hits("/v1/whoami"), 3, "no request was refused and sent again");
}

#[test]
fn a_refused_token_is_refreshed_once_and_the_request_sent_again_once() {
    let (auth, sc) = start(3600, &client_secret());
    assert_eq!(get(&sc, "/whoami").0, 200);
    auth.revoke();
    // The upstream refuses the revoked token: a new one, and the request (its body too) again.
    let (status, seen) = send(&sc, Way::Route, "POST", "/whoami", "replayed=yes");
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains(r#""body":"replayed=yes""#), "{seen}");
    assert_eq!((auth.issued(), auth.hits("/v1/whoami")), (2, 3));
    for way in [Way::H2Route, Way::ConnectH2] {
        auth.revoke();
        let (status, seen) = send(&sc, way, "GET", "/whoami", "");
        assert_eq!(status, 200, "{way:?}: {seen}");
    }
    assert_eq!(auth.issued(), 4);

    // An upstream that refuses every token: one new token, one retry, then its 401.
    let (status, seen) = send(&sc, Way::Connect, "GET", "/denied", "");
    assert_eq!(status, 401, "{seen}");
    assert!(seen.contains("invalid_token"), "{seen}");
    assert_eq!((auth.hits("/v1/denied"), auth.issued()), (2, 5));

    // A body of unknown length is not held, so it is not sent again: the 401 goes back and
    // the token is dropped all the same (the next request fetches one).
    let chunked = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"])
        .args(["-H", "Transfer-Encoding: chunked", "--data-binary", "streamed", "-X", "POST"])
        .arg(format!("http://{}/r/api/denied", sc.proxy_addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&chunked.stdout), "401");
    assert_eq!(auth.hits("/v1/denied"), 3, "sent once");
    assert_eq!(auth.issued(), 5);
    assert_eq!(get(&sc, "/whoami").0, 200);
    assert_eq!(auth.issued(), 6, "the refused token was dropped");
}

#[test]
fn the_token_is_scrubbed_from_what_the_upstream_sends_back() {
    let (auth, sc) = start(3600, &client_secret());
    for way in EVERY_WAY {
        let (status, seen) = send(&sc, way, "GET", "/echo", "");
        assert_eq!(status, 200, "{way:?}: {seen}");
        for token in auth.tokens() {
            assert!(!seen.contains(&token), "{way:?}: the token came back: {seen}");
        }
        assert!(!seen.contains(MARKER), "{way:?}: {seen}");
        assert!(seen.contains("Bearer [oauth2 access token]"), "{way:?}: {seen}");
    }
    assert_eq!(auth.issued(), 1);
}

#[test]
fn a_token_endpoint_that_refuses_the_client_is_a_clear_502() {
    let (auth, sc) = start(3600, &format!("wrong-{MARKER}-secret"));
    for way in [Way::Route, Way::Connect] {
        let (status, seen) = send(&sc, way, "GET", "/whoami", "");
        assert_eq!(status, 502, "{way:?}: {seen}");
        assert!(seen.contains("token_endpoint_error") && seen.contains(r#""fault":"upstream""#), "{seen}");
        assert!(seen.contains("answered 401 (invalid_client)"), "{seen}");
        assert!(!seen.contains("error_description") && !seen.contains(MARKER), "{seen}");
    }
    assert_eq!(auth.hits("/v1/whoami"), 0, "nothing went to the upstream");
    assert_eq!(auth.hits("/oauth/token"), 2, "a failed fetch is not cached");
}

#[test]
fn a_token_url_outside_egress_is_a_policy_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = policy(false);
    std::fs::write(dir.path().join("agent.toml"), &text).unwrap();
    let out = Command::new(BIN).args(["policy", "check"]).arg(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let line = text.lines().position(|l| l.starts_with("token_url")).unwrap() + 1;
    assert!(
        err.contains(&format!("agent.toml:{line}: oauth2 token_url host '{TOKEN_HOST}' is not in egress.allow")),
        "{err}"
    );
}

#[test]
fn a_new_client_secret_or_policy_gets_a_new_token() {
    let (auth, sc) = start(3600, &client_secret());
    assert_eq!(get(&sc, "/whoami").0, 200);
    let put = |value: &str| {
        let body = json!({ "value": value }).to_string();
        let url = format!("/v1/secrets/{}", crate::support::enc(SECRET_PATH));
        assert_eq!(sc.server.admin("PUT", &url, Some(&body)).0, 200);
    };
    // The client secret changes (to one the server does not take): the token fetched with the
    // old one is not used with it.
    put(&format!("rotated-{MARKER}-wrong"));
    assert!(until(Duration::from_secs(10), || get(&sc, "/whoami").0 == 502), "the old token went on being used");
    put(&client_secret());
    assert!(until(Duration::from_secs(10), || get(&sc, "/whoami").0 == 200));
    assert_eq!(auth.issued(), 2, "{}", auth.stats());

    // A new policy (a narrower scope): a token asked for under it.
    sc.reload_policy(&policy(true).replace(r#"scope = "read write""#, r#"scope = "read""#));
    assert!(until(Duration::from_secs(10), || get(&sc, "/whoami").1.contains(r#""scope":"read""#)));
    assert_eq!(auth.issued(), 3, "{}", auth.stats());
}

#[test]
fn plain_http_gets_the_token_only_where_a_route_names_it() {
    // A second rule for the plain HTTP port on 127.0.0.1 (a private address the policy allows).
    let plain_rule = |auth: &AuthServer, text: String, route: bool| {
        let text = text
            .replace(r#"allow = ["#, r#"allow = ["127.0.0.1", "#)
            .replace("[egress]\n", "[egress]\ndeny_private_networks = false\n");
        let route = match route {
            true => format!("[[route]]\nname = \"plain\"\nupstream = \"http://127.0.0.1:{}/v1\"\n", auth.plain_port),
            false => String::new(),
        };
        let rule = format!(
            "[[oauth2]]\nhost = \"127.0.0.1\"\ntoken_url = \"https://{TOKEN_HOST}/oauth/token\"\n\
             client_id = \"{{{{secret:{ID_PATH}}}}}\"\nclient_secret = \"{{{{secret:{SECRET_PATH}}}}}\"\n"
        );
        format!("{text}\n{route}\n{rule}")
    };
    let forward = |sc: &Sidecar, auth: &AuthServer| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20", "--proxy", &format!("http://{}", sc.proxy_addr)])
            .args(["-H", "Authorization: Bearer agent-own-junk"])
            .arg(format!("http://127.0.0.1:{}/v1/whoami", auth.plain_port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Named by a route: the forward request and the route both get the token.
    let (auth, sc) = start_with(3600, &client_secret(), |auth, text| plain_rule(auth, text, true));
    let seen = forward(&sc, &auth);
    assert!(seen.starts_with("HTTP/1.1 200") && seen.contains(r#""client":"client-1""#), "{seen}");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20"])
        .arg(format!("http://{}/r/plain/whoami", sc.proxy_addr))
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.starts_with("HTTP/1.1 200") && seen.contains(r#""client":"client-1""#), "{seen}");
    assert_eq!(auth.issued(), 1);
    drop(sc);
    drop(auth);

    // Not named: refused, no token fetched, nothing sent.
    let (auth, sc) = start_with(3600, &client_secret(), |auth, text| plain_rule(auth, text, false));
    let seen = forward(&sc, &auth);
    assert!(seen.starts_with("HTTP/1.1 403") && seen.contains("insecure_transport"), "{seen}");
    assert_eq!((auth.issued(), auth.hits("/v1/whoami")), (0, 0));
}

#[test]
fn concurrent_misses_share_one_token_fetch() {
    let (auth, sc) = start(3600, &client_secret());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let sc = &sc;
                let way = EVERY_WAY[i % EVERY_WAY.len()];
                s.spawn(move || send(sc, way, "GET", "/whoami", "").0)
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(auth.issued(), 1, "{}", auth.stats());
    // Operators see the one fetch in the proxy's metrics.
    let metrics = reqwest::blocking::get(format!("http://{}/_airlock/metrics", sc.proxy_addr)).unwrap().text().unwrap();
    assert!(metrics.contains("airlock_proxy_oauth2_token_fetches_total{outcome=\"issued\"} 1"), "{metrics}");
}

#[test]
fn client_secret_post_sends_the_credentials_in_the_form() {
    let post =
        |_: &AuthServer, text: String| text.replace("scope = \"read write\"", "auth_method = \"client_secret_post\"");
    let (auth, sc) = start_with(3600, &client_secret(), post);
    let (status, seen) = get(&sc, "/whoami");
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains(r#""scope":"""#), "no scope asked for: {seen}");
    assert_eq!(auth.stats()["auth"], json!(["client_secret_post"]));
}
