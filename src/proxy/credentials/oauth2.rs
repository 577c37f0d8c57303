//! OAuth2 client credentials (`[[oauth2]]`, RFC 6749 §4.4): for a request to a rule's host,
//! the proxy reads the client id and secret like any value, obtains an access token from the
//! token endpoint with them (one form POST through the same upstream client, egress check and
//! TLS trust as every upstream request), and the pipeline sends the token as
//! `Authorization: Bearer …` in place of whatever the agent wrote.
//!
//! Tokens are cached until shortly before they expire (`lifetime`), one fetch however many
//! requests miss at once (moka's `try_get_with`), under a key that changes with the policy
//! generation and with the client id and secret's values (a keyed hash, never the values), so
//! a policy update or a rotated secret gets a new token. An upstream's 401 drops the token it
//! refused (`Tokens::refused`), so the next request, or the pipeline's one retry, fetches a new one.
//!
//! The token is a secret too: held zeroizing in a `HeldValue` recorded against the client
//! secret's path and version, carried with the request as a `CarriedValue` of kind `oauth2`
//! (scrubbed from the response, noted as sent to the host, recorded as a use), and never
//! logged. The token endpoint's body is never quoted: an error names its status and, when it
//! is one of RFC 6749's, its `error` code.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::domain::SecretValue;
use crate::domain::policy::{AuthMethod, ClientId, OAuth2, Placeholder};
use crate::proxy::Proxy;
use crate::proxy::body::full;
use crate::proxy::central::HeldValue;
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::local::ThreadCache;
use crate::proxy::report::Use;
use crate::proxy::request::{AccessKind, CarriedValue};
use crate::proxy::substitute;

/// The most of a token endpoint's answer that is read.
const ANSWER_MAX: usize = 64 * 1024;
/// How long a token without `expires_in` is used (an upstream's 401 drops it sooner).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token is used, whatever its `expires_in`.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// A token is dropped this long before it expires (or a tenth of its life when that is less),
/// so none goes out about to expire on the way.
const EARLY: Duration = Duration::from_secs(30);
/// The RFC 6749 §5.2 error codes: only these are quoted from a token endpoint's answer.
const OAUTH2_ERRORS: [&str; 6] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// What a token is cached under: the policy it was fetched under, the rule, and a keyed hash
/// of the client id and secret it was fetched with.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    rule: usize,
    credentials: u64,
}

struct FreshUntil;

impl moka::Expiry<Key, Arc<HeldValue>> for FreshUntil {
    fn expire_after_create(&self, _: &Key, v: &Arc<HeldValue>, now: Instant) -> Option<Duration> {
        Some(v.fresh_until.saturating_duration_since(now))
    }
}

/// The proxy's access tokens.
pub struct Tokens {
    cache: moka::future::Cache<Key, Arc<HeldValue>>,
    /// The policy generation the cached tokens are for; all go when it moves.
    generation: AtomicU64,
    /// Keys the hash of the credentials (random per process: the hash says nothing of them).
    hasher: std::hash::RandomState,
    /// Each rule's credentials as last read: a token fetched with others is dropped when they
    /// change, so it is not used again if they change back (a rotation undone).
    current: std::sync::RwLock<std::collections::HashMap<usize, u64>>,
}

impl Default for Tokens {
    fn default() -> Tokens {
        Tokens {
            cache: moka::future::Cache::builder().max_capacity(1024).expire_after(FreshUntil).build(),
            generation: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
            current: Default::default(),
        }
    }
}

/// A token for one request: what it is sent with, and what `Tokens::refused` drops.
pub struct Issued {
    key: Key,
    token: Arc<HeldValue>,
}

impl Issued {
    /// The token as a value the request carries: scrubbed from the response, noted as sent to
    /// the host, recorded (kind `oauth2`) against the client secret's path and version.
    pub fn carried(&self) -> CarriedValue {
        CarriedValue { fetched: self.token.clone(), field: None, kind: Some(AccessKind::OAuth2) }
    }

    /// `Bearer <token>`, marked sensitive (HTTP/2 never indexes it).
    pub fn header(&self) -> HeaderValue {
        let text = Zeroizing::new(format!("Bearer {}", self.token.value.expose()));
        let mut value = HeaderValue::from_str(&text).expect("a token is visible ASCII (checked when fetched)");
        value.set_sensitive(true);
        value
    }
}

/// The client id or secret as read for a token fetch: its value and the text sent (the whole
/// value, or its `#field`).
struct Credential {
    held: Arc<HeldValue>,
    field: Option<String>,
    text: Zeroizing<String>,
}

impl Credential {
    /// As noted sent to the token endpoint's host (redacted as its placeholder).
    fn carried(&self) -> CarriedValue {
        let field = self.field.clone().map(|name| (name, self.text.clone()));
        CarriedValue { fetched: self.held.clone(), field, kind: None }
    }
}

impl Tokens {
    /// A token for a request under `rule` (the `index`th of the policy's `[[oauth2]]` rules):
    /// the cached one while fresh and the client id and secret are unchanged, else one fetched
    /// (once for every request that misses at the same time).
    pub(in crate::proxy) async fn token(
        &self,
        proxy: &Proxy,
        cache: &ThreadCache<'_>,
        index: usize,
        rule: &OAuth2,
    ) -> Result<Issued, ProxyError> {
        // The generation `rule` is of (or older): a token is kept under the policy it was asked for under.
        let generation = cache.generation();
        if self.generation.fetch_max(generation, Ordering::AcqRel) < generation {
            self.cache.invalidate_all();
            self.current.write().expect("credentials lock poisoned").clear();
        }
        let token_host = rule.token_url().host();
        let id = match rule.client_id() {
            ClientId::Secret(placeholder) => Some(read(proxy, cache, placeholder, token_host).await?),
            ClientId::Literal(_) => None,
        };
        let secret = read(proxy, cache, rule.client_secret(), token_host).await?;
        let id_text: &str = match (rule.client_id(), &id) {
            (ClientId::Secret(_), Some(id)) => &id.text,
            (ClientId::Literal(id), _) => id,
            (ClientId::Secret(_), None) => unreachable!("a client id placeholder is read above"),
        };
        let credentials = self.hasher.hash_one((id_text, &*secret.text));
        let key = Key { generation, rule: index, credentials };
        // Read first: the write lock is taken only when a rule's credentials change.
        let known = self.current.read().expect("credentials lock poisoned").get(&index) == Some(&credentials);
        if !known {
            let before = self.current.write().expect("credentials lock poisoned").insert(index, credentials);
            if let Some(before) = before.filter(|before| *before != credentials) {
                self.cache.invalidate(&Key { credentials: before, ..key.clone() }).await;
            }
        }
        let fetch = async {
            let fetched = fetch(proxy, rule, id_text, id.as_ref(), &secret).await;
            let outcome = if fetched.is_ok() { "issued" } else { "failed" };
            metrics::counter!("airlock_proxy_oauth2_token_fetches_total", "outcome" => outcome).increment(1);
            fetched
        };
        match self.cache.try_get_with(key.clone(), fetch).await {
            Ok(token) => Ok(Issued { key, token }),
            // Shared by every request that waited on the fetch: each gets its own copy.
            Err(e) => {
                let mut copy = ProxyError::new(e.kind, e.message.clone());
                copy.secret = e.secret.clone();
                copy.retry_after = e.retry_after;
                copy.source = e.cause().map(Into::into);
                Err(copy)
            }
        }
    }

    /// Drops `issued`'s token after an upstream refused it (401), unless another request has
    /// already replaced it: concurrent refusals of one token cost one new fetch.
    pub async fn refused(&self, issued: &Issued) {
        if self.cache.get(&issued.key).await.is_some_and(|held| Arc::ptr_eq(&held, &issued.token)) {
            self.cache.invalidate(&issued.key).await;
        }
    }
}

/// The value of a client id or secret placeholder, checked against the secret's own
/// `allowed_hosts` for the token endpoint (its grant's hosts were checked when the policy loaded).
async fn read(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    placeholder: &Placeholder,
    token_host: &str,
) -> Result<Credential, ProxyError> {
    let path = placeholder.path();
    let held = cache.value(path, || proxy.central.value(path)).await.map_err(substitute::central_error)?;
    if !substitute::secret_allows_host(&held.allowed_hosts, token_host) {
        let message = format!(
            "secret '{path}' may not be sent to the OAuth2 token endpoint '{token_host}'; the secret's allowed_hosts \
             do not include it"
        );
        return Err(ProxyError::new(ErrorCode::HostNotAllowed, message).with_secret(path.as_str()));
    }
    let text = match placeholder.field() {
        None => Zeroizing::new(held.value.expose().to_owned()),
        Some(field) => substitute::json_field(held.value.expose(), field).ok_or_else(|| {
            let message = format!(
                "the OAuth2 rule's placeholder for secret '{path}' asks for field '{field}', but the secret is not a \
                 JSON object with a string field of that name"
            );
            ProxyError::new(ErrorCode::UnresolvedPlaceholder, message).with_secret(path.as_str())
        })?,
    };
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_control()) {
        let message =
            format!("the value of secret '{path}' is empty or holds control characters: not a client credential");
        return Err(ProxyError::new(ErrorCode::UnsafeValue, message).with_secret(path.as_str()));
    }
    Ok(Credential { held, field: placeholder.field().map(str::to_owned), text })
}

/// The token endpoint's answer (RFC 6749 §5.1); `expires_in` as a number or a string of digits.
#[derive(Deserialize)]
struct Answer {
    access_token: SecretValue,
    token_type: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// POSTs the client credentials grant to the rule's token endpoint and returns the token,
/// recorded against the client secret (path, version) and held until shortly before it expires.
async fn fetch(
    proxy: &Proxy,
    rule: &OAuth2,
    id_text: &str,
    id: Option<&Credential>,
    secret: &Credential,
) -> Result<Arc<HeldValue>, ProxyError> {
    let url = rule.token_url();
    let endpoint = format!("{url}{}", if url.base_path().is_empty() { "/" } else { "" });
    let fail = |message: String| {
        ProxyError::new(ErrorCode::TokenEndpointError, message).with_secret(secret.held.path.as_str())
    };
    if proxy.reporter.spool_full() {
        return Err(ProxyError::new(
            ErrorCode::SpoolFull,
            "the proxy's access-event spool is full or cannot be written; the OAuth2 client credentials are not sent \
             until uses can be recorded again",
        ));
    }
    // Reached like any upstream: in egress.allow (checked when the policy loaded), resolved with
    // private addresses refused unless the policy allows them or the host is pinned.
    let deny_private = proxy.central.policy().egress().deny_private_networks;
    proxy.resolver.check(url.host(), url.port(), deny_private).await?;

    let request = token_request(&endpoint, rule, id_text, secret)?;
    let started = Instant::now();
    let limit = proxy.timeouts.upstream_first_byte;
    let sent = tokio::time::timeout(limit, proxy.upstreams.request(request)).await;
    let resp = match sent {
        Err(_) => {
            record(proxy, rule, id, secret, None, started);
            return Err(fail(format!(
                "the OAuth2 token endpoint {endpoint} sent no response within {} s",
                limit.as_secs_f64()
            )));
        }
        Ok(Err(e)) => {
            return Err(fail(format!("the OAuth2 token endpoint {endpoint} could not be reached")).with_source(e));
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    record(proxy, rule, id, secret, Some(status), started);
    let body = tokio::time::timeout(limit, read_answer(resp.into_body()))
        .await
        .map_err(|_| fail(format!("the OAuth2 token endpoint {endpoint} did not finish its answer in time")))?
        .map_err(|why| fail(format!("the OAuth2 token endpoint {endpoint}: {why}")))?;
    if !status.is_success() {
        let code = serde_json::from_slice::<ErrorAnswer>(&body)
            .ok()
            .filter(|e| OAUTH2_ERRORS.contains(&e.error.as_str()))
            .map(|e| format!(" ({})", e.error))
            .unwrap_or_default();
        let hint = if status == StatusCode::UNAUTHORIZED || code.contains("invalid_client") {
            "; check the client id and secret the rule names"
        } else {
            ""
        };
        return Err(fail(format!("the OAuth2 token endpoint {endpoint} answered {}{code}{hint}", status.as_u16())));
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
        fail(format!("the OAuth2 token endpoint {endpoint} answered with no access_token and token_type in JSON"))
    })?;
    if !answer.token_type.eq_ignore_ascii_case("bearer") {
        let kind: String = answer.token_type.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
        return Err(fail(format!(
            "the OAuth2 token endpoint {endpoint} issued a token of type '{kind}'; the proxy sends only Bearer tokens"
        )));
    }
    let token = answer.access_token.expose();
    if token.is_empty() || token.len() > 16 * 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(format!(
            "the OAuth2 token endpoint {endpoint} issued an access token that is empty, over 16 KiB or not visible \
             ASCII; it cannot go in a header"
        )));
    }
    let expires_in = match &answer.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let fresh_until = Instant::now() + lifetime(expires_in);
    tracing::debug!(token_url = %endpoint, expires_in, path = %secret.held.path, "OAuth2 access token obtained");
    let path = secret.held.path.clone();
    Ok(Arc::new(HeldValue::derived(path, answer.access_token, secret.held.version, fresh_until)))
}

/// How long a token with `expires_in` (seconds; `None` when the endpoint gave none) is used:
/// until 30 s before it expires, or a tenth of its life before when that is less (a 2 s token
/// is used for 1.8 s); at most a day.
fn lifetime(expires_in: Option<u64>) -> Duration {
    let Some(secs) = expires_in else { return DEFAULT_LIFETIME };
    let life = Duration::from_secs(secs).min(MAX_LIFETIME);
    life - (life / 10).min(EARLY)
}

/// The client credentials grant as a form POST (RFC 6749 §4.4.2), the client authenticated as
/// the rule says (§2.3.1: each of id and secret form-encoded, then `Basic`, or in the form).
fn token_request(
    endpoint: &str,
    rule: &OAuth2,
    id_text: &str,
    secret: &Credential,
) -> Result<Request<crate::proxy::body::Body>, ProxyError> {
    let uri: Uri = endpoint.parse().map_err(|_| ProxyError::bad_request("the OAuth2 token_url is not a valid URI"))?;
    let mut form = Zeroizing::new(String::from("grant_type=client_credentials"));
    if let Some(scope) = rule.scope() {
        form.push_str("&scope=");
        form.push_str(&form_encode(scope));
    }
    let mut builder = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header(header::ACCEPT_ENCODING, "identity");
    match rule.auth_method() {
        AuthMethod::ClientSecretBasic => {
            let pair = Zeroizing::new(format!("{}:{}", *form_encode(id_text), *form_encode(&secret.text)));
            let basic = Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&*pair)));
            let mut value = HeaderValue::from_str(&basic).expect("base64 is a valid header value");
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        AuthMethod::ClientSecretPost => {
            form.push_str("&client_id=");
            form.push_str(&form_encode(id_text));
            form.push_str("&client_secret=");
            form.push_str(&form_encode(&secret.text));
        }
    }
    let body = Bytes::from_owner(Zeroizing::new(std::mem::take(&mut *form).into_bytes()));
    builder
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .map_err(|_| ProxyError::bad_request("the OAuth2 token request could not be built"))
}

/// `application/x-www-form-urlencoded` of one value (a space as `%20`, which every decoder
/// takes, `Basic` credentials included), in a zeroizing buffer.
fn form_encode(s: &str) -> Zeroizing<String> {
    const FORM: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');
    let mut out = Zeroizing::new(String::with_capacity(s.len() * 3));
    for piece in percent_encoding::utf8_percent_encode(s, FORM) {
        out.push_str(piece);
    }
    out
}

/// The answer's body, at most `ANSWER_MAX`, in a zeroizing buffer (it holds the token).
async fn read_answer(mut body: hyper::body::Incoming) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("its answer could not be read: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > ANSWER_MAX {
                return Err(format!("its answer is over {ANSWER_MAX} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The client id (when a secret) and secret went to the token endpoint: one access event each
/// (kind `oauth2`), with the endpoint's host, path and status (`None`: no answer came); and the
/// endpoint's host is noted as sent them, so its responses to the agent are scrubbed of them.
fn record(
    proxy: &Proxy,
    rule: &OAuth2,
    id: Option<&Credential>,
    secret: &Credential,
    status: Option<StatusCode>,
    started: Instant,
) {
    let url = rule.token_url();
    let url_path = if url.base_path().is_empty() { "/" } else { url.base_path() };
    let sent: Vec<CarriedValue> = id.into_iter().chain([secret]).map(Credential::carried).collect();
    proxy.echoes.sent(url.host(), &sent);
    for credential in id.into_iter().chain([secret]) {
        proxy.reporter.record(Use {
            agent: proxy.central.agent_name(),
            path: Some(credential.held.path.as_str()),
            version: Some(credential.held.version),
            host: url.host(),
            method: "POST",
            url_path,
            outcome: "injected",
            error_code: None,
            status: Some(status.map_or(504, |s| s.as_u16())),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            kind: Some(AccessKind::OAuth2.as_str()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_ends_before_expiry() {
        assert_eq!(lifetime(None), DEFAULT_LIFETIME);
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3570));
        assert_eq!(lifetime(Some(100)), Duration::from_secs(90));
        assert_eq!(lifetime(Some(2)), Duration::from_millis(1800));
        assert_eq!(lifetime(Some(0)), Duration::ZERO);
        assert_eq!(lifetime(Some(u64::MAX)), MAX_LIFETIME - EARLY);
    }

    #[test]
    fn form_encoding_leaves_only_unreserved_characters() {
        assert_eq!(*form_encode("a b&c=d+e/f:g-h.i_j*k~"), "a%20b%26c%3Dd%2Be%2Ff%3Ag-h.i_j*k%7E");
    }
}
