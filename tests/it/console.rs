//! The web console (`/console`): the HTTP-level rules with a plain client (session cookie,
//! CSRF, scopes, escaping, no value on any page), and the operator's work in headless
//! Chromium (`tests/console/console.mjs`): approve and deny an agent's requests, filter the
//! audit trail, a form without its CSRF token, a reader key.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::sidecar::Sidecar;
use crate::support::{Backend, MARKER, Server, enc, secret_value, until};

fn client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A signed-in browser, as far as HTTP goes: the session cookie it holds.
struct Browser<'a> {
    srv: &'a Server,
    http: Client,
    cookie: String,
}

/// The POST of the sign-in form.
fn post_login(srv: &Server, key: &str) -> Response {
    client().post(srv.url("/console/login")).form(&[("key", key), ("next", "/console/secrets")]).send().unwrap()
}

fn set_cookie(headers: &HeaderMap) -> String {
    headers.get("set-cookie").expect("a Set-Cookie").to_str().unwrap().to_owned()
}

impl<'a> Browser<'a> {
    fn sign_in(srv: &'a Server, key: &str) -> Browser<'a> {
        let resp = post_login(srv, key);
        assert_eq!(resp.status(), 303, "{}", resp.text().unwrap_or_default());
        let cookie = set_cookie(resp.headers()).split(';').next().unwrap().to_owned();
        Browser { srv, http: client(), cookie }
    }

    fn get(&self, path: &str) -> (u16, HeaderMap, String) {
        let resp = self.http.get(self.srv.url(path)).header("cookie", &self.cookie).send().unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        (status, headers, resp.text().unwrap())
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let resp = self.http.post(self.srv.url(path)).header("cookie", &self.cookie).form(form).send().unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        (status, headers, resp.text().unwrap())
    }

    /// The CSRF token in the forms of `path`.
    fn csrf(&self, path: &str) -> String {
        let (status, _, html) = self.get(path);
        assert_eq!(status, 200, "{html}");
        let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
        html[at..].split('"').next().unwrap().to_owned()
    }
}

fn location(headers: &HeaderMap) -> &str {
    headers.get("location").map_or("", |l| l.to_str().unwrap())
}

fn strict_headers(headers: &HeaderMap) {
    assert_eq!(headers["content-security-policy"], "default-src 'self'; frame-ancestors 'none'");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

fn mint_token(srv: &Server) -> (String, String) {
    let body = json!({ "scope": "secrets:read_metadata:production/*", "ttl_seconds": 600 }).to_string();
    let (status, token) = srv.admin("POST", "/v1/tokens", Some(&body));
    assert_eq!(status, 201, "{token}");
    (token["id"].as_str().unwrap().to_owned(), token["value"].as_str().unwrap().to_owned())
}

fn reader_key(srv: &Server) -> String {
    let (status, key) =
        srv.admin("POST", "/v1/keys", Some(&json!({ "name": "auditor", "role": "reader" }).to_string()));
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

#[test]
fn sign_in_exchanges_the_key_for_a_strict_session_cookie_and_sign_out_ends_it() {
    let srv = Server::start(Backend::Sqlite);
    // Not signed in: to the sign-in form, coming back afterwards.
    let resp = client().get(srv.url("/console/audit?type=access")).send().unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(resp.headers()), "/console/login?next=%2Fconsole%2Faudit%3Ftype%3Daccess");
    let resp = client().get(srv.url("/console/login")).send().unwrap();
    assert_eq!(resp.status(), 200);
    strict_headers(resp.headers());
    assert!(resp.text().unwrap().contains(r#"type="password""#));

    // A wrong key: 401 on the form, the key not echoed.
    let wrong = "ak_0123456789abcdef0123456789abcdef0123456789abcdef";
    let resp = post_login(&srv, wrong);
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(!resp.text().unwrap().contains(wrong), "the key is echoed back");
    // A token is not for the console.
    let (_, token) = mint_token(&srv);
    assert_eq!(post_login(&srv, &token).status(), 400);

    let resp = post_login(&srv, &srv.admin_key);
    assert_eq!(resp.status(), 303);
    assert_eq!(location(resp.headers()), "/console/secrets", "back where the form said");
    let cookie = set_cookie(resp.headers());
    let (pair, attrs) = cookie.split_once(';').unwrap();
    let id = pair.strip_prefix("airlock_console=").unwrap();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "a 256-bit id: {pair}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attrs.contains(attr), "{cookie}");
    }
    assert!(!attrs.contains("Secure"), "plain HTTP: no Secure ({cookie})");
    assert!(!cookie.contains(&srv.admin_key));

    let b = Browser::sign_in(&srv, &srv.admin_key);
    for page in ["/console/approvals", "/console/audit", "/console/secrets", "/console/agents", "/console/tokens"] {
        let (status, headers, html) = b.get(page);
        assert_eq!(status, 200, "{page}: {html}");
        strict_headers(&headers);
        assert!(!html.contains(&srv.admin_key), "{page} shows the key");
    }
    let (status, headers, _) = b.get("/console/console.css");
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/css"));

    // Sign-out is a form like any other: without the token it is refused.
    assert_eq!(b.post("/console/logout", &[]).0, 403);
    let csrf = b.csrf("/console/secrets");
    let (status, headers, _) = b.post("/console/logout", &[("csrf", &csrf)]);
    assert_eq!(status, 303);
    assert!(set_cookie(&headers).contains("Max-Age=0"));
    let (status, headers, _) = b.get("/console/secrets");
    assert_eq!((status, location(&headers)), (303, "/console/login?next=%2Fconsole%2Fsecrets"));
    assert!(!srv.log().contains(&srv.admin_key), "the key reached the log");
}

#[test]
fn a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let srv = Server::start(Backend::Sqlite);
    let (id, token) = mint_token(&srv);
    let b = Browser::sign_in(&srv, &srv.admin_key);
    let revoke = format!("/console/tokens/{id}/revoke");
    let (status, _, html) = b.post(&revoke, &[]);
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("CSRF"), "{html}");
    assert_eq!(b.post(&revoke, &[("csrf", "0".repeat(64).as_str())]).0, 403);
    // Another session's token is not this one's.
    let other = Browser::sign_in(&srv, &srv.admin_key).csrf("/console/tokens");
    assert_eq!(b.post(&revoke, &[("csrf", &other)]).0, 403);
    assert_eq!(srv.call("GET", "/v1/tokens/self", &token, None).0, 200, "the token still works");

    let csrf = b.csrf("/console/tokens");
    let (status, headers, _) = b.post(&revoke, &[("csrf", &csrf)]);
    assert_eq!((status, location(&headers)), (303, "/console/tokens"));
    assert_eq!(srv.call("GET", "/v1/tokens/self", &token, None).0, 401, "revoked");
    // Audited as the API's revocation, by the signed-in key.
    let (_, audit) = srv.admin("GET", "/v1/audit?type=token.revoke", None);
    assert_eq!(audit["events"][0]["detail"]["token_id"], id.as_str(), "{audit}");
}

#[test]
fn a_reader_key_gets_no_approvals_page() {
    let srv = Server::start(Backend::Sqlite);
    let key = reader_key(&srv);
    let b = Browser::sign_in(&srv, &key);
    let (status, _, html) = b.get("/console/secrets");
    assert_eq!(status, 200);
    assert!(!html.contains(r#"href="/console/approvals""#), "a reader is offered the approvals page");
    let (status, headers, html) = b.get("/console/approvals");
    assert_eq!(status, 403, "{html}");
    strict_headers(&headers);
    assert!(html.contains("approvals:decide"), "{html}");
    assert_eq!(b.get("/console/approvals/apr_x").0, 403);
    assert_eq!(b.get("/console/agents").0, 403);
    // A POST with the right token is still the API's refusal.
    let csrf = b.csrf("/console/secrets");
    assert_eq!(b.post("/console/approvals/apr_x/approve", &[("csrf", &csrf)]).0, 403);
}

#[test]
fn what_the_pages_show_is_escaped_and_never_a_value() {
    let srv = Server::start(Backend::Sqlite);
    let value = secret_value("console");
    let body = json!({
        "path": "production/xss/key", "value": value,
        "description": "<script>alert(1)</script>", "tags": { "team": "\"><img src=x onerror=alert(2)>" },
    });
    let (status, out) = srv.admin("POST", "/v1/secrets", Some(&body.to_string()));
    assert_eq!(status, 201, "{out}");
    let rotate = json!({ "new_value": secret_value("rotated") }).to_string();
    assert_eq!(srv.admin("POST", &format!("/v1/secrets/{}/rotate", enc("production/xss/key")), Some(&rotate)).0, 200);
    let (status, agent) = srv.admin(
        "POST",
        "/v1/agents",
        Some(&json!({ "name": "xss-agent", "description": "<b>bold</b>" }).to_string()),
    );
    assert_eq!(status, 201, "{agent}");
    let b = Browser::sign_in(&srv, &srv.admin_key);
    let pages = [
        "/console/secrets",
        "/console/secret?path=production%2Fxss%2Fkey",
        "/console/audit",
        "/console/audit?path=production%2Fxss%2Fkey",
        "/console/agents",
        "/console/tokens",
        "/console/approvals",
        "/console/audit?actor=%3Cscript%3E",
    ];
    for page in pages {
        let (status, _, html) = b.get(page);
        assert_eq!(status, 200, "{page}: {html}");
        assert!(!html.contains(MARKER), "{page} shows a secret value");
        assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>"), "{page}: {html}");
    }
    let (_, _, html) = b.get("/console/secret?path=production%2Fxss%2Fkey");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains("&quot;&gt;&lt;img"), "{html}");
    assert!(html.contains(">current<") && html.contains(">expired<"), "both versions listed: {html}");
    // Bad input is a clear 400, not a 500.
    assert_eq!(b.get("/console/secret?path=..%2Fetc").0, 400);
    assert_eq!(b.get("/console/audit?since=yesterday").0, 400);
    assert_eq!(b.get("/console/audit?outcome=maybe").0, 400);
    assert_eq!(b.get("/console/audit?bogus=1").0, 400);
    assert_eq!(b.get("/console/nowhere").0, 404);
}

#[test]
fn a_session_ends_when_idle_or_when_its_key_is_revoked_and_is_secure_behind_https() {
    let srv = Server::start_with(
        Backend::Sqlite,
        &["--console-session-idle", "1s", "--public-url", "https://airlock.example.test"],
    );
    let resp = post_login(&srv, &srv.admin_key);
    assert!(set_cookie(resp.headers()).contains("; Secure"), "an https public URL: Secure");
    let b = Browser::sign_in(&srv, &srv.admin_key);
    assert_eq!(b.get("/console/secrets").0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, headers, _) = b.get("/console/secrets");
    assert_eq!((status, location(&headers)), (303, "/console/login?next=%2Fconsole%2Fsecrets"), "idle too long");

    let (status, key) = srv.admin("POST", "/v1/keys", Some(&json!({ "name": "ops", "role": "admin" }).to_string()));
    assert_eq!(status, 201);
    let b = Browser::sign_in(&srv, key["key"].as_str().unwrap());
    assert_eq!(b.get("/console/secrets").0, 200);
    assert_eq!(srv.admin("DELETE", &format!("/v1/keys/{}", key["id"].as_str().unwrap()), None).0, 204);
    assert_eq!(b.get("/console/secrets").0, 303, "a revoked key's session ends");
}

#[test]
fn the_agents_page_shows_the_proxies_following_now_and_each_last_use() {
    let sc = Sidecar::start();
    let (status, out) =
        sc.curl(&["-H", "Authorization: Bearer {{secret:production/openai/api-key}}", "https://api.openai.com/v1/x"]);
    assert_eq!(status, 200, "{out}");
    assert!(until(Duration::from_secs(10), || !crate::sidecar::access_events(&sc).is_empty()), "the use was reported");
    let b = Browser::sign_in(&sc.server, &sc.server.admin_key);
    let (status, _, html) = b.get("/console/agents");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("research-agent") && html.contains("[[grant]]"), "the policy is shown: {html}");
    assert!(!html.contains("No proxy of this agent follows"), "the proxy follows the change stream: {html}");
    assert!(html.contains("<td>127.0.0.1</td>"), "{html}");
    assert!(html.contains("production/openai/api-key") && html.contains("injected"), "the last use: {html}");
    assert!(!html.contains(MARKER), "{html}");
}

// ------------------------------------------------------------------ headless Chromium

/// The browser and the driver, or why the browser test cannot run here.
fn browser_tools() -> Result<(String, std::path::PathBuf), String> {
    let chromium = std::env::var("AIRLOCK_TEST_CHROMIUM").ok().filter(|c| !c.is_empty()).or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|p| p.to_string())
    });
    let Some(chromium) = chromium else { return Err("no chromium here (apt-get install -y chromium)".into()) };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err("no playwright-core (cd tests/console && npm install)".into());
    }
    Ok((chromium, dir))
}

const GATED: &str = "Authorization: Bearer {{secret:production/gated/key}}";
const FROZEN: &str = "Authorization: Bearer {{secret:production/frozen/key}}";

#[test]
fn an_operator_approves_denies_and_reads_the_audit_in_headless_chromium() {
    let (chromium, dir) = match browser_tools() {
        Ok(tools) => tools,
        Err(why) => return eprintln!("NOTICE: skipping the console's browser test: {why}"),
    };
    let grants = "[[grant]]\nsecrets = \"production/gated/*\"\nhosts = [\"api.openai.com\"]\napproval = true\n\n\
                  [[grant]]\nsecrets = \"production/frozen/*\"\nhosts = [\"api.openai.com\"]\napproval = true\n";
    let sc = Sidecar::start_with(grants, &[]);
    sc.server.create("production/gated/key", &secret_value("gated"));
    sc.server.create("production/frozen/key", &secret_value("frozen"));
    mint_token(&sc.server);
    let reader = reader_key(&sc.server);
    // The agent asks for both gated grants: two requests wait for an operator.
    for header in [GATED, FROZEN] {
        let (status, out) = sc.curl(&["-H", header, "https://api.openai.com/v1/first"]);
        assert!(status == 503 && out.contains("approval_pending"), "{status} {out}");
    }
    let pending = || {
        let (_, body) = sc.server.admin("GET", "/v1/approvals?status=pending", None);
        body["approvals"].as_array().map_or(0, Vec::len)
    };
    assert!(until(Duration::from_secs(15), || pending() == 2), "two approval requests filed");

    // The README's screenshots are taken again only when asked (AIRLOCK_UPDATE_SCREENSHOTS=1),
    // so that a test run leaves the tree as it was.
    let scratch = tempfile::tempdir().unwrap();
    let shots = match std::env::var_os("AIRLOCK_UPDATE_SCREENSHOTS") {
        Some(v) if v == "1" => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"),
        _ => scratch.path().to_owned(),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let started = Instant::now();
    let out = Command::new("node")
        .arg(dir.join("console.mjs"))
        .current_dir(&dir)
        .env("CONSOLE_URL", &sc.server.addr)
        .env("ADMIN_KEY", &sc.server.admin_key)
        .env("READER_KEY", &reader)
        .env("PROXY", format!("http://{}", sc.proxy_addr))
        .env("CACERT", sc.ca_path())
        .env("APPROVE_GRANT", "production/gated/*")
        .env("APPROVE_HEADER", GATED)
        .env("DENY_GRANT", "production/frozen/*")
        .env("DENY_REASON", "not during the freeze")
        .env("SECRET_VALUE", MARKER)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console.mjs failed after {:?}:\n{stdout}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    let inject_ms = results["inject_ms"].as_u64().unwrap();
    eprintln!("the approved grant was injected {inject_ms} ms after the approval");
    // The proxy asks about its pending request every 1-2 s (jittered).
    assert!(inject_ms <= 2000, "the approved grant was injected {inject_ms} ms after the approval");
    let injected = sc
        .upstream
        .requests()
        .iter()
        .any(|r| r.header("authorization").is_some_and(|a| a == format!("Bearer {}", secret_value("gated"))));
    assert!(injected, "the upstream got the approved secret");

    // The denied grant: the agent is told approval_denied, with the operator's reason.
    let mut last = (0, String::new());
    let denied = until(Duration::from_secs(15), || {
        last = sc.curl(&["-H", FROZEN, "https://api.openai.com/v1/frozen"]);
        last.0 != 503
    });
    let (status, text) = last;
    assert!(denied && status == 403, "{status} {text}");
    assert!(text.to_ascii_lowercase().contains("x-airlock-error: approval_denied"), "{text}");
    assert!(text.contains("not during the freeze"), "{text}");
    // Decided through the console, audited as the API's decisions are.
    let (_, audit) = sc.server.admin("GET", "/v1/audit?type=approval.approve", None);
    assert_eq!(audit["events"][0]["detail"]["note"], "ticket OPS-1", "{audit}");
    for shot in ["approvals.png", "audit.png", "secrets.png"] {
        assert!(std::fs::metadata(shots.join(shot)).is_ok_and(|m| m.len() > 1000), "{shot}");
    }
}
