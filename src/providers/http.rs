//! What the provider clients share: the check of a configured address, one HTTP client
//! setup (rustls on ring, timeouts, an optional private CA), bounded response bodies read
//! into memory that is wiped, JSON parsed without quoting it, a provider's error text and
//! status read into a `ProviderError`, picking one field out of a secret's JSON as a
//! `SecretValue`, and a timed health check.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::{Health, ProviderError, ProviderKind};
use crate::domain::value::{MAX_VALUE_BYTES, SecretValue};

/// The largest response body read from a provider.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A config's `timeout_seconds` when it sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a configured address may have a path after the host (`http://h/prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPath {
    Allowed,
    Refused,
}

/// A config's address (`what` names its field): `http(s)://host[:port]`, no query and no
/// credentials in it, and no path unless `path` allows one.
pub fn check_address(
    provider: ProviderKind,
    address: &str,
    what: &str,
    path: AddressPath,
) -> Result<(), ProviderError> {
    let config = |reason: String| ProviderError::Config { provider, reason };
    let url = reqwest::Url::parse(address).map_err(|_| config(format!("{what} is not a URL")))?;
    let bare = path == AddressPath::Allowed || url.path() == "/";
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() || !bare {
        return Err(config(format!("{what} must be http(s)://host[:port]")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(format!("{what} may not carry credentials")));
    }
    Ok(())
}

/// The HTTP client of one provider config: `timeout_seconds` (default 10 s) per request,
/// and `ca_file`'s certificate trusted besides the system's roots.
pub fn client(
    provider: ProviderKind,
    timeout_seconds: Option<u64>,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ProviderError> {
    let timeout = timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    crate::install_crypto_provider();
    let config = |reason: String| ProviderError::Config { provider, reason };
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| config(format!("cannot read ca_file {}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|_| config(format!("ca_file {} is not a PEM certificate", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| config(format!("cannot set up the HTTP client: {e}")))
}

/// The reason a request did not get an answer, without the URL's query.
pub fn unreachable(provider: ProviderKind, e: reqwest::Error) -> ProviderError {
    let reason = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.without_url().to_string()
    };
    ProviderError::Unavailable { provider, reason }
}

/// The response's body, at most `MAX_BODY` bytes, in memory that is wiped when dropped.
pub async fn body(provider: ProviderKind, mut resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
    let mut buf = Zeroizing::new(Vec::new());
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_BODY {
                    return Err(ProviderError::Unavailable {
                        provider,
                        reason: format!("response body over {MAX_BODY} bytes"),
                    });
                }
                // Grow by hand: a reallocation would leave an unwiped copy behind.
                if buf.capacity() < buf.len() + chunk.len() {
                    let mut bigger =
                        Zeroizing::new(Vec::with_capacity((buf.len() + chunk.len()).max(buf.capacity() * 2)));
                    bigger.extend_from_slice(&buf);
                    buf = bigger;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(unreachable(provider, e)),
        }
    }
}

/// `bytes` as JSON; the error never quotes them.
pub fn json(provider: ProviderKind, bytes: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(bytes).map_err(|e| ProviderError::Unavailable {
        provider,
        reason: format!("the response is not JSON (line {}, column {})", e.line(), e.column()),
    })
}

/// The JSON error body of a failed call, read for the names and reasons in it (never the
/// whole body: it is not quoted).
pub struct ErrorBody(Option<Value>);

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        ErrorBody(serde_json::from_slice(body).ok())
    }

    /// The string at `pointer` (`/error/message`), as a short single-line excerpt.
    pub fn text(&self, pointer: &str) -> Option<String> {
        self.0.as_ref()?.pointer(pointer)?.as_str().map(excerpt)
    }
}

/// What a failed call's status says when its body names nothing more specific: the
/// credentials refused (401, 403), the store's own trouble (429, 5xx; a caller may serve a
/// stale copy), else a request the store cannot serve.
pub fn by_status(provider: ProviderKind, status: reqwest::StatusCode, reason: String) -> ProviderError {
    match status.as_u16() {
        401 | 403 => ProviderError::Auth { provider, reason },
        429 | 500.. => ProviderError::Unavailable { provider, reason },
        _ => ProviderError::Unusable { provider, reason },
    }
}

/// A health check's answer: `check` timed, its message (`ok`, or what failed).
pub async fn timed_health(check: impl Future<Output = Result<String, ProviderError>>) -> Health {
    let started = Instant::now();
    let outcome = check.await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(message) => Health { ok: true, message, latency_ms },
        Err(e) => Health { ok: false, message: e.to_string(), latency_ms },
    }
}

/// Wipes every string in `v` (keys and values) before it is dropped.
pub fn wipe(mut v: Value) {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) => s.zeroize(),
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => {
                let taken = std::mem::take(map);
                for (mut k, mut v) in taken {
                    k.zeroize();
                    walk(&mut v);
                }
            }
            _ => {}
        }
    }
    walk(&mut v);
}

/// The value of `field` in `object` (taken out of it), or of its only member when `field` is
/// `None`. Strings are taken as they are; numbers and booleans as their JSON text.
pub fn pick_field(
    provider: ProviderKind,
    object: &mut serde_json::Map<String, Value>,
    field: Option<&str>,
    what: &str,
) -> Result<SecretValue, ProviderError> {
    let unusable = |reason: String| ProviderError::Unusable { provider, reason };
    let key = match field {
        Some(f) => f.to_owned(),
        None if object.len() == 1 => object.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(unusable(format!(
                "{what} has {} fields; name one with #field (fields: {})",
                object.len(),
                field_names(object)
            )));
        }
    };
    let Some(v) = object.get_mut(&key) else {
        return Err(unusable(format!("{what} has no field '{key}' (fields: {})", field_names(object))));
    };
    let value = match v {
        Value::String(s) => SecretValue::new(std::mem::take(s)),
        Value::Number(n) => SecretValue::new(n.to_string()),
        Value::Bool(b) => SecretValue::new(b.to_string()),
        _ => return Err(unusable(format!("field '{key}' of {what} is not a string"))),
    };
    check_size(provider, value, what)
}

/// The field `field` of `raw`, a secret's text that is a JSON object, or `raw` itself when
/// no field is named; the parsed copy is wiped.
pub fn field_of_text(
    provider: ProviderKind,
    raw: SecretValue,
    field: Option<&str>,
    what: &str,
) -> Result<SecretValue, ProviderError> {
    let Some(field) = field else { return check_size(provider, raw, what) };
    let not_object =
        || ProviderError::Unusable { provider, reason: format!("{what} is not a JSON object, so it has no #{field}") };
    let parsed = serde_json::from_str::<Value>(raw.expose()).ok();
    drop(raw);
    let Some(mut parsed) = parsed else { return Err(not_object()) };
    let picked = match parsed.as_object_mut() {
        Some(object) => pick_field(provider, object, Some(field), what),
        None => Err(not_object()),
    };
    wipe(parsed);
    picked
}

pub fn check_size(provider: ProviderKind, value: SecretValue, what: &str) -> Result<SecretValue, ProviderError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ProviderError::Unusable {
            provider,
            reason: format!("the value of {what} is {} bytes; at most {MAX_VALUE_BYTES}", value.len()),
        });
    }
    Ok(value)
}

/// Field names for a message: names, not values, at most ten of them.
fn field_names(object: &serde_json::Map<String, Value>) -> String {
    let mut names: Vec<String> =
        object.keys().take(10).map(|k| k.chars().filter(|c| !c.is_control()).take(64).collect()).collect();
    if object.len() > 10 {
        names.push("…".into());
    }
    names.join(", ")
}

/// A short, single-line excerpt of a provider's own error text.
pub fn excerpt(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_fields_and_says_which_exist() {
        let p = ProviderKind::Vault;
        let mut m = json!({"a": "SeCrEt-1", "b": 2, "c": {"x": 1}}).as_object().unwrap().clone();
        assert_eq!(pick_field(p, &mut m, Some("a"), "s").unwrap().expose(), "SeCrEt-1");
        assert_eq!(pick_field(p, &mut m, Some("b"), "s").unwrap().expose(), "2");
        let e = pick_field(p, &mut m, Some("c"), "s").unwrap_err().to_string();
        assert!(e.contains("not a string"), "{e}");
        let e = pick_field(p, &mut m, Some("z"), "s").unwrap_err().to_string();
        assert!(e.contains("no field 'z'") && e.contains("a, b, c"), "{e}");
        let e = pick_field(p, &mut m, None, "s").unwrap_err().to_string();
        assert!(e.contains("3 fields"), "{e}");
        let mut one = json!({"only": "v"}).as_object().unwrap().clone();
        assert_eq!(pick_field(p, &mut one, None, "s").unwrap().expose(), "v");
    }

    #[test]
    fn addresses_are_bare_origins() {
        let p = ProviderKind::Vault;
        for ok in ["http://h", "https://h:8200", "http://127.0.0.1:5000/"] {
            assert!(check_address(p, ok, "endpoint", AddressPath::Refused).is_ok(), "{ok}");
        }
        assert!(check_address(p, "http://h/prefix", "address", AddressPath::Allowed).is_ok());
        for (bad, says) in [
            ("not a url", "is not a URL"),
            ("ftp://h", "must be http(s)"),
            ("http://h/?q=1", "must be http(s)"),
            ("http://h/prefix", "must be http(s)"),
            ("http://u:p@h", "may not carry credentials"),
        ] {
            let e = check_address(p, bad, "endpoint", AddressPath::Refused).unwrap_err().to_string();
            assert!(e.contains(&format!("endpoint {says}")), "{bad}: {e}");
        }
    }

    #[test]
    fn a_field_of_a_json_text() {
        let p = ProviderKind::GcpSecretManager;
        let raw = || SecretValue::new(r#"{"user":"u","password":"SeCrEt"}"#.into());
        assert_eq!(field_of_text(p, raw(), Some("password"), "s").unwrap().expose(), "SeCrEt");
        assert_eq!(field_of_text(p, raw(), None, "s").unwrap().expose(), raw().expose());
        for text in ["SeCrEt", r#"["SeCrEt"]"#] {
            let e = field_of_text(p, SecretValue::new(text.into()), Some("password"), "s").unwrap_err().to_string();
            assert!(e.contains("not a JSON object") && !e.contains("SeCrEt"), "{e}");
        }
    }

    #[test]
    fn statuses_and_error_bodies() {
        use reqwest::StatusCode;
        let p = ProviderKind::AwsSecretsManager;
        assert!(matches!(by_status(p, StatusCode::UNAUTHORIZED, "r".into()), ProviderError::Auth { .. }));
        assert!(matches!(by_status(p, StatusCode::FORBIDDEN, "r".into()), ProviderError::Auth { .. }));
        assert!(by_status(p, StatusCode::TOO_MANY_REQUESTS, "r".into()).is_unavailable());
        assert!(by_status(p, StatusCode::BAD_GATEWAY, "r".into()).is_unavailable());
        assert!(matches!(by_status(p, StatusCode::BAD_REQUEST, "r".into()), ProviderError::Unusable { .. }));
        let body = ErrorBody::parse(br#"{"error":{"message":"line one\nline two"},"errors":["first"]}"#);
        assert_eq!(body.text("/error/message").as_deref(), Some("line oneline two"));
        assert_eq!(body.text("/errors/0").as_deref(), Some("first"));
        assert_eq!(body.text("/missing"), None);
        assert_eq!(ErrorBody::parse(b"<html>").text("/error"), None);
    }

    #[test]
    fn json_errors_do_not_quote_the_body() {
        let e = json(ProviderKind::Vault, b"{\"v\": SeCrEt}").unwrap_err().to_string();
        assert!(!e.contains("SeCrEt"), "{e}");
    }
}
