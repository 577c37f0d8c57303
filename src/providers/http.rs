//! What the provider clients share: one HTTP client setup (rustls on ring, timeouts, an
//! optional private CA), bounded response bodies read into memory that is wiped, JSON parsed
//! without quoting it, and picking one field out of a secret's JSON as a `SecretValue`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::{ProviderError, ProviderKind};
use crate::domain::value::{MAX_VALUE_BYTES, SecretValue};

/// The largest response body read from a provider.
const MAX_BODY: usize = 4 * 1024 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client(
    provider: ProviderKind,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ProviderError> {
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
    fn json_errors_do_not_quote_the_body() {
        let e = json(ProviderKind::Vault, b"{\"v\": SeCrEt}").unwrap_err().to_string();
        assert!(!e.contains("SeCrEt"), "{e}");
    }
}
