//! Provider configs hold no credentials. A key that names one (token, password, secret
//! access key, private key, client secret, secret id, …), at any depth and in any letter
//! case, with `_`, `-` or nothing between its words, makes the whole config refused.

use serde_json::Value;

/// Key names, lower case without separators, that a config key may not be or end with.
const SENSITIVE: &[&str] = &[
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secretaccesskey",
    "secretkey",
    "accesskey",
    "accesskeyid",
    "privatekey",
    "clientsecret",
    "secretid",
    "apikey",
    "credential",
    "credentials",
    "sessiontoken",
    "bearer",
    "authorization",
];

/// The path (`config.auth.Token`) of the first key in `v` that names a credential.
pub fn find_sensitive_key(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = format!("{at}.{}", printable(k));
            if is_sensitive(k) { Some(here) } else { find_sensitive_key(v, &here) }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| find_sensitive_key(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

fn is_sensitive(key: &str) -> bool {
    let norm: String = key.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    SENSITIVE.iter().any(|s| norm.ends_with(s))
}

/// A key as a message may show it: no control characters, at most 64 characters.
fn printable(k: &str) -> String {
    k.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_credentials_at_any_depth_in_any_case() {
        let f = |v: Value| find_sensitive_key(&v, "config");
        assert_eq!(f(json!({"address": "http://h", "token": "x"})), Some("config.token".into()));
        assert_eq!(f(json!({"auth": {"Secret_Access_Key": "x"}})), Some("config.auth.Secret_Access_Key".into()));
        assert_eq!(f(json!({"a": [{"b": {"PRIVATE-KEY": 1}}]})), Some("config.a[0].b.PRIVATE-KEY".into()));
        assert_eq!(f(json!({"vault_token": "x"})), Some("config.vault_token".into()));
        assert_eq!(f(json!({"clientSecret": "x"})), Some("config.clientSecret".into()));
        assert_eq!(f(json!({"secret_id": "x"})), Some("config.secret_id".into()));
        assert_eq!(f(json!({"Password": null})), Some("config.Password".into()));
        assert_eq!(f(json!({"x\r\ntoken": 1})), Some("config.xtoken".into()));
        // Names of files and variables that hold credentials are settings, not credentials.
        assert_eq!(
            f(json!({"address": "http://h", "token_file": "/run/t", "token_env": "VAULT_TOKEN",
                     "secret_id_file": "/run/s", "role_id_env": "R", "region": "eu-west-1"})),
            None
        );
        assert_eq!(f(json!(["token"])), None);
    }
}
