//! `airlock doctor`: checks one by one what an agent or operator needs before anything else
//! works, and says how to fix what does not: the central API answers (and its TLS
//! certificate is trusted), the credential is valid and whose it is, the agent's policy is
//! loaded and parses, the proxy is ready, the local runtimes trust the proxy's CA, and the
//! clock agrees with the server's. Each check is one line, `✓` or `✗` (`!` warns); any `✗`
//! makes the exit code non-zero. `--json` prints the same as one document.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::ConnArgs;
use super::output::print_json;
use crate::api::policy::PolicyText;
use crate::api::tokens::{OneOrMany, TokenInfo};
use crate::client::{Client, ClientError};

/// Variables through which runtimes take extra CA certificates: OpenSSL (and Python's ssl,
/// Ruby, Go's crypto/x509), Python requests, Node, curl.
const CA_VARS: [&str; 4] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"];
/// Largest clock difference with the server that passes without a warning.
const MAX_SKEW: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The agent's proxy (http://127.0.0.1:7879); default: AIRLOCK_PROXY, else HTTPS_PROXY
    #[arg(long, env = "AIRLOCK_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
    /// Print the checks as one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do about it, when it is not ok.
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, message: impl Into<String>, fix: Option<String>) -> Check {
    Check { name, status, message: message.into(), fix }
}

/// Runs every check; `Ok(false)` when any failed.
pub async fn run(args: DoctorArgs) -> anyhow::Result<bool> {
    let checks = checks(&args).await;
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if args.json {
        print_json(&serde_json::json!({ "ok": ok, "checks": checks }))?;
    } else {
        for c in &checks {
            println!("{}", line(c));
        }
    }
    Ok(ok)
}

fn line(c: &Check) -> String {
    let mark = match c.status {
        Status::Ok => "✓",
        Status::Warn => "!",
        Status::Fail => "✗",
        Status::Skip => "-",
    };
    let shown = |s: &str| super::output::field(&serde_json::json!({ "s": s }), "s");
    let mut text = format!("{mark} {:<10} {}", c.name, shown(&c.message));
    if let Some(fix) = &c.fix {
        text.push_str(&format!("\n  fix: {}", shown(fix)));
    }
    text
}

async fn checks(args: &DoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let addr = args.conn.addr.trim_end_matches('/').to_owned();
    let server_up = server(&addr, &mut out).await;
    let who = match (server_up, &args.conn.token) {
        (false, _) => {
            out.push(check("key", Status::Skip, "not checked: the server is not reachable", None));
            None
        }
        (true, None) => {
            let fix = Some("export AIRLOCK_TOKEN=ak_… (an API key, agent key or token)".to_owned());
            out.push(check("key", Status::Fail, "no credential: AIRLOCK_TOKEN is not set", fix));
            None
        }
        (true, Some(token)) => key(&addr, token, &mut out).await,
    };
    match who {
        Some((client, info)) if info.agent.is_some() => policy(&client, &info, &mut out).await,
        Some(_) => out.push(check("policy", Status::Skip, "not an agent credential: no policy applies", None)),
        None => out.push(check("policy", Status::Skip, "not checked without a valid credential", None)),
    }
    let proxy = args.proxy.clone().or_else(|| {
        ["HTTPS_PROXY", "https_proxy"].iter().find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    });
    let ca = match proxy {
        Some(url) => proxy_ready(&url, &mut out).await,
        None => {
            out.push(check("proxy", Status::Skip, "no proxy given (--proxy, AIRLOCK_PROXY or HTTPS_PROXY)", None));
            None
        }
    };
    match ca {
        Some(ca) => ca_trust(&ca, &mut out),
        None => out.push(check("ca", Status::Skip, "not checked: the proxy's CA is not known", None)),
    }
    out
}

/// `GET /healthz`: reachable, TLS trusted; and the clock against the answer's `Date`.
async fn server(addr: &str, out: &mut Vec<Check>) -> bool {
    if let Err(e) = crate::client::parse_base_url(addr) {
        out.push(check("server", Status::Fail, e.to_string(), Some("set AIRLOCK_ADDR to http(s)://host:port".into())));
        return false;
    }
    let http = match crate::trust::central_client().timeout(TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            out.push(check("server", Status::Fail, format!("cannot make an HTTP client: {e}"), None));
            return false;
        }
    };
    let answer = http.get(format!("{addr}/healthz")).send().await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            let cause = super::describe(&anyhow::Error::from(e));
            let tls = ["certificate", "UnknownIssuer", "invalid peer"].iter().any(|w| cause.contains(w));
            let fix = if tls {
                "give the CA of the server's certificate: export AIRLOCK_SERVER_CA=ca.pem (or --server-ca)"
            } else {
                "start the server (airlock server, or airlock dev), or set AIRLOCK_ADDR to where it listens"
            };
            let what = if tls { "TLS certificate not trusted" } else { "not reachable" };
            out.push(check("server", Status::Fail, format!("{addr}: {what}: {cause}"), Some(fix.into())));
            return false;
        }
    };
    let date = response.headers().get(reqwest::header::DATE).and_then(|d| d.to_str().ok()).map(str::to_owned);
    let status = response.status();
    if !status.is_success() {
        let fix = Some("is AIRLOCK_ADDR the Airlock server? Look at the server's log".to_owned());
        out.push(check("server", Status::Fail, format!("{addr}/healthz answered {status}"), fix));
        return false;
    }
    let tls = if addr.starts_with("https://") { ", TLS certificate trusted" } else { "" };
    out.push(check("server", Status::Ok, format!("{addr} answers{tls}"), None));
    out.push(clock(date.as_deref()));
    true
}

fn clock(date: Option<&str>) -> Check {
    let Some(date) = date else {
        return check("clock", Status::Skip, "the server sent no Date header", None);
    };
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let Ok(server) = time::PrimitiveDateTime::parse(date, &format) else {
        return check("clock", Status::Skip, format!("cannot read the server's Date header '{date}'"), None);
    };
    let skew = (time::OffsetDateTime::now_utc() - server.assume_utc()).abs();
    let seconds = skew.whole_seconds();
    if skew > MAX_SKEW {
        let fix = Some("synchronise the clock (NTP: timedatectl set-ntp true, or chrony)".to_owned());
        check("clock", Status::Warn, format!("{seconds} s off the server's clock (token expiry is checked by it)"), fix)
    } else {
        check("clock", Status::Ok, format!("within {seconds} s of the server's clock"), None)
    }
}

/// `GET /v1/tokens/self`: the credential is valid, and whose it is.
async fn key(addr: &str, token: &str, out: &mut Vec<Check>) -> Option<(Client, TokenInfo)> {
    let client = match Client::new(addr, token) {
        Ok(c) => c,
        Err(e) => {
            out.push(check("key", Status::Fail, e.to_string(), Some("check AIRLOCK_TOKEN".into())));
            return None;
        }
    };
    match client.get::<TokenInfo>("/v1/tokens/self").await {
        Ok(info) => {
            let scopes = match &info.scope {
                OneOrMany::One(s) => s.clone(),
                OneOrMany::Many(s) => s.join(" "),
            };
            let whose = match &info.agent {
                Some(agent) => format!("agent {}", agent.name),
                None => info.description.clone().unwrap_or_else(|| "an operator".into()),
            };
            let expires = info.expires_at.as_deref().map(|e| format!(", expires {e}")).unwrap_or_default();
            let message = format!("{} {} of {whose}, scopes: {scopes}{expires}", info.kind, info.id);
            out.push(check("key", Status::Ok, message, None));
            Some((client, info))
        }
        Err(e) => {
            let fix = match &e {
                ClientError::Api { status: 401, .. } => {
                    "the key is unknown, revoked or expired: make a new one (airlock agent add, or ask an operator) \
                     and export AIRLOCK_TOKEN"
                }
                _ => "look at the server's log",
            };
            let cause = super::describe(&anyhow::Error::from(e));
            out.push(check("key", Status::Fail, format!("refused: {cause}"), Some(fix.into())));
            None
        }
    }
}

/// `GET /v1/agents/self/policy`: a policy names the agent, and it parses here as well.
async fn policy(client: &Client, info: &TokenInfo, out: &mut Vec<Check>) {
    let name = info.agent.as_ref().map_or("", |a| a.name.as_str());
    match client.get::<PolicyText>("/v1/agents/self/policy").await {
        Ok(text) => match crate::domain::policy::Policy::parse(&text.source, &text.text) {
            Ok(_) => out.push(check("policy", Status::Ok, format!("{} is loaded for agent {name}", text.source), None)),
            Err(e) => {
                let fix = Some(format!("fix it (airlock policy check {}), then airlock policy reload", text.source));
                out.push(check("policy", Status::Fail, format!("{} does not parse here: {e}", text.source), fix));
            }
        },
        Err(e) => {
            let fix = format!(
                "write a policy whose [agent] name is \"{name}\" into the server's --policies directory \
                 (check it with airlock policy check), then airlock policy reload"
            );
            let cause = super::describe(&anyhow::Error::from(e));
            out.push(check("policy", Status::Fail, format!("no policy for agent {name}: {cause}"), Some(fix)));
        }
    }
}

/// `GET /_airlock/readyz` and `/_airlock/ca.pem` on the proxy; its CA certificate (PEM).
async fn proxy_ready(url: &str, out: &mut Vec<Check>) -> Option<String> {
    let base = match reqwest::Url::parse(url) {
        Ok(mut u) if u.scheme() == "http" && u.host().is_some() => {
            // The session key, if the URL carries one, is not needed here and not shown.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_path("");
            u.as_str().trim_end_matches('/').to_owned()
        }
        _ => {
            let fix = Some("give the proxy as http://host:port (--proxy or AIRLOCK_PROXY)".to_owned());
            out.push(check("proxy", Status::Fail, "the proxy address is not an http:// URL", fix));
            return None;
        }
    };
    let http = reqwest::Client::builder().no_proxy().timeout(TIMEOUT).build().ok()?;
    let fix_down = Some("start the proxy (airlock proxy, airlock run, or the pod's sidecar)".to_owned());
    match http.get(format!("{base}/_airlock/readyz")).send().await {
        Ok(r) if r.status().is_success() => out.push(check("proxy", Status::Ok, format!("{base} is ready"), None)),
        Ok(r) => {
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let why = body.pointer("/error/message").or(body.get("reason")).and_then(Value::as_str).unwrap_or("");
            let fix =
                Some("the proxy cannot get its token or policy from the central API: see the proxy's log".to_owned());
            out.push(check("proxy", Status::Fail, format!("{base} is up but not ready ({status}) {why}"), fix));
        }
        Err(_) => {
            out.push(check("proxy", Status::Fail, format!("{base} is not reachable"), fix_down));
            return None;
        }
    }
    let pem = http.get(format!("{base}/_airlock/ca.pem")).send().await.ok()?.text().await.ok()?;
    pem.contains("BEGIN CERTIFICATE").then_some(pem)
}

/// The base64 bodies of the PEM certificates in `text`, whitespace removed.
fn pem_certs(text: &str) -> Vec<String> {
    let mut certs = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            certs.extend(current.take());
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    certs
}

/// Each CA variable that is set points at a readable bundle holding the proxy's CA.
fn ca_trust(ca_pem: &str, out: &mut Vec<Check>) {
    let Some(ca) = pem_certs(ca_pem).into_iter().next() else { return };
    let export = |var: &str| {
        let file =
            if var == "NODE_EXTRA_CA_CERTS" { "the CA alone" } else { "a bundle of the system roots and the CA" };
        format!(
            "export {var}=FILE, FILE holding {file} (airlock ca export; the proxy also writes ca.pem and bundle.pem)"
        )
    };
    for var in CA_VARS {
        let name = ca_var_check_name(var);
        match std::env::var_os(var) {
            None => out.push(check(name, Status::Warn, format!("{var} is not set"), Some(export(var)))),
            Some(path) => {
                let shown = path.to_string_lossy().into_owned();
                match std::fs::read_to_string(&path) {
                    Ok(text) if pem_certs(&text).contains(&ca) => {
                        out.push(check(name, Status::Ok, format!("{var}={shown} holds the Airlock CA"), None));
                    }
                    Ok(_) => out.push(check(
                        name,
                        Status::Fail,
                        format!("{var}={shown} does not hold the Airlock CA"),
                        Some(export(var)),
                    )),
                    Err(e) => out.push(check(
                        name,
                        Status::Fail,
                        format!("{var}={shown} cannot be read: {e}"),
                        Some(export(var)),
                    )),
                }
            }
        }
    }
}

fn ca_var_check_name(var: &str) -> &'static str {
    match var {
        "SSL_CERT_FILE" => "ca:openssl",
        "REQUESTS_CA_BUNDLE" => "ca:python",
        "NODE_EXTRA_CA_CERTS" => "ca:node",
        _ => "ca:curl",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bodies_are_compared_without_line_breaks() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        let bundle = format!("junk\n-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n{a}");
        assert_eq!(pem_certs(a), vec!["AAAABBBB".to_owned()]);
        assert_eq!(pem_certs(&bundle), vec!["CCCC".to_owned(), "AAAABBBB".to_owned()]);
    }

    #[test]
    fn clock_skew_over_30_s_warns() {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at =
            |offset: i64| (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset)).format(&format).unwrap();
        assert_eq!(clock(Some(&at(0))).status, Status::Ok);
        assert_eq!(clock(Some(&at(-120))).status, Status::Warn);
        assert_eq!(clock(Some("yesterday")).status, Status::Skip);
    }
}
