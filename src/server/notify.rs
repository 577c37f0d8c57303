//! Approval webhooks (`--approval-webhook URL`, repeatable): each new approval request is
//! POSTed as JSON to every URL, in the background, so approvers learn of it without polling.
//!
//! The body carries the request id, agent, grants, hosts, TTL, `approve_url` and a one-line
//! `text` that Slack and Mattermost incoming webhooks show as is. With
//! `--approval-webhook-secret-file` each POST carries
//! `X-Airlock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
//! A delivery is tried up to `ATTEMPTS` times with doubling pauses; one that still fails is
//! audited as `approval.notify_failed`, naming only the URL's host: a webhook URL often
//! carries a credential in its path, so neither the URL nor the key is ever logged.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::AppState;
use super::auth::new_id;
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::time::now_ms;

/// Tries per delivery, the first included.
pub const ATTEMPTS: u32 = 5;
/// The pause after the first failed try; it doubles after each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// How long one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-airlock-signature";
/// The shortest key `--approval-webhook-secret-file` may hold.
const MIN_KEY_BYTES: usize = 16;

/// Webhook settings that cannot be used (the operator's to fix); never quotes a URL or the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebhookConfigError(String);

/// One webhook: where to POST, and the host that names it in logs and the audit trail.
struct Target {
    url: Url,
    host: String,
}

/// The configured webhooks and their signing key. Its `Debug` shows hosts only.
#[derive(Default)]
pub struct Webhooks {
    targets: Vec<Target>,
    key: Option<Zeroizing<Vec<u8>>>,
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("hosts", &self.targets.iter().map(|t| t.host.as_str()).collect::<Vec<_>>())
            .field("signed", &self.key.is_some())
            .finish()
    }
}

/// Checks a webhook URL: http or https, with a host, and no user or password in it. The
/// error never quotes the URL, which may carry a credential.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "must not carry a user or password before the host; put a credential in the path or use the signing key"
                .into(),
        );
    }
    Ok(parsed)
}

impl Webhooks {
    /// The webhooks of `urls`, signed with the key in `secret_file` (leading and trailing
    /// whitespace trimmed) when one is given.
    pub fn new(urls: &[String], secret_file: Option<&Path>) -> Result<Webhooks, WebhookConfigError> {
        let mut targets = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let url = parse_url(url).map_err(|e| WebhookConfigError(format!("--approval-webhook #{}: {e}", i + 1)))?;
            let host = url.host_str().unwrap_or_default().to_owned();
            targets.push(Target { url, host });
        }
        let key = match secret_file {
            None => None,
            Some(path) => {
                let raw = Zeroizing::new(std::fs::read(path).map_err(|e| {
                    WebhookConfigError(format!(
                        "--approval-webhook-secret-file {}: cannot read it: {e}",
                        path.display()
                    ))
                })?);
                let key = Zeroizing::new(raw.trim_ascii().to_vec());
                if key.len() < MIN_KEY_BYTES {
                    return Err(WebhookConfigError(format!(
                        "--approval-webhook-secret-file {}: the key must be at least {MIN_KEY_BYTES} bytes \
                         (make one with: openssl rand -hex 32 > {})",
                        path.display(),
                        path.display()
                    )));
                }
                Some(key)
            }
        };
        if key.is_some() && targets.is_empty() {
            return Err(WebhookConfigError(
                "--approval-webhook-secret-file is set but no --approval-webhook is".into(),
            ));
        }
        if key.is_none() && !targets.is_empty() {
            tracing::warn!(
                "approval webhooks are sent unsigned: set --approval-webhook-secret-file so receivers can check them"
            );
        }
        let client = match targets.is_empty() {
            true => None,
            false => Some(
                reqwest::Client::builder()
                    .timeout(TRY_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| WebhookConfigError(format!("cannot build the webhook client: {e}")))?,
            ),
        };
        Ok(Webhooks { targets, key, client })
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The signature header's value for `body` sent at unix time `t`.
    fn sign(&self, t: u64, body: &[u8]) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(signature(key, t, body))
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a webhook is told of a new approval request.
pub struct Notice {
    pub tenant: String,
    pub id: String,
    pub agent: Option<String>,
    pub grants: Vec<String>,
    pub hosts: Vec<String>,
    pub scopes: Vec<String>,
    pub ttl_seconds: u64,
    pub approve_url: String,
}

impl Notice {
    fn body(&self) -> Value {
        let who = self.agent.as_deref().map_or_else(|| "a user key".to_owned(), |a| format!("agent '{a}'"));
        let what = if self.grants.is_empty() { self.scopes.join(", ") } else { self.grants.join(", ") };
        let hosts = if self.hosts.is_empty() { String::new() } else { format!(" for {}", self.hosts.join(", ")) };
        let text = format!(
            "Airlock: {who} asks for {what}{hosts} ({} s); approve or deny request {}: {}",
            self.ttl_seconds, self.id, self.approve_url
        );
        json!({
            "type": "approval.request",
            "approval_request_id": self.id,
            "agent": self.agent,
            "grant": self.grants,
            "hosts": self.hosts,
            "scope": self.scopes,
            "ttl_seconds": self.ttl_seconds,
            "approve_url": self.approve_url,
            "text": text,
        })
    }
}

/// Sends `notice` to every webhook in the background; returns how many there are.
pub fn notify(state: &AppState, notice: Notice) -> usize {
    let hooks = state.webhooks.len();
    if hooks == 0 {
        return 0;
    }
    let body = match serde_json::to_vec(&notice.body()) {
        Ok(body) => bytes::Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an approval webhook body");
            return 0;
        }
    };
    for i in 0..hooks {
        let (state, body, tenant, id) = (state.clone(), body.clone(), notice.tenant.clone(), notice.id.clone());
        tokio::spawn(async move { deliver(&state, i, body, &tenant, &id).await });
    }
    hooks
}

/// Why one try failed, in words that quote neither URL nor key.
fn failure(result: &Result<reqwest::Response, reqwest::Error>) -> Option<String> {
    match result {
        Ok(resp) if resp.status().is_success() => None,
        Ok(resp) => Some(format!("answered HTTP {}", resp.status().as_u16())),
        Err(e) if e.is_timeout() => Some(format!("no answer within {} s", TRY_TIMEOUT.as_secs())),
        Err(e) if e.is_connect() => Some("could not connect".into()),
        Err(_) => Some("the request failed".into()),
    }
}

async fn deliver(state: &AppState, index: usize, body: bytes::Bytes, tenant: &str, id: &str) {
    let hooks = &state.webhooks;
    let (Some(target), Some(client)) = (hooks.targets.get(index), hooks.client.as_ref()) else { return };
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut req = client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .body(body.clone());
        if let Some(sig) = hooks.sign(t, &body) {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        let Some(why) = failure(&req.send().await) else {
            tracing::info!(approval = id, host = %target.host, attempt, "approval webhook delivered");
            return;
        };
        tracing::warn!(approval = id, host = %target.host, attempt, reason = %why, "approval webhook not delivered");
        last = why;
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    let draft = AuditDraft {
        id: new_id("evt"),
        kind: kind::APPROVAL_NOTIFY_FAILED,
        path: None,
        actor: "airlock-server".into(),
        actor_description: Some("approval webhook".into()),
        ip: None,
        user_agent: None,
        timestamp_ms: now_ms(),
        success: false,
        detail: json!({ "approval_request_id": id, "host": target.host, "attempts": ATTEMPTS, "reason": last }),
    };
    if let Err(e) = state.store.record(tenant, draft, None).await {
        tracing::error!(approval = id, host = %target.host, error = %e, "cannot audit a failed approval webhook");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_userinfo_or_another_scheme_is_refused_without_being_quoted() {
        for bad in ["ftp://hooks.example/x", "https://user:pw-SeCrEt@hooks.example/x", "not a url"] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("SeCrEt") && !e.contains("hooks.example"), "{e}");
        }
        assert!(parse_url("https://hooks.slack.com/services/T/B/X").is_ok());
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = signature(b"0123456789abcdef", 1, b"{}");
        assert!(a.starts_with("t=1,v1=") && a.len() == "t=1,v1=".len() + 64, "{a}");
        assert_ne!(a, signature(b"0123456789abcdef", 2, b"{}"));
        assert_ne!(a, signature(b"0123456789abcdef", 1, b"{ }"));
        assert_ne!(a, signature(b"0123456789abcdeF", 1, b"{}"));
    }
}
