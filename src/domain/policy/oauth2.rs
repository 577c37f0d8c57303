//! `[[oauth2]]` rules: for requests to a host, the proxy obtains an access token with the
//! OAuth2 client credentials grant (RFC 6749 §4.4) from a token endpoint, with a client id and
//! secret it reads like any value, and sends it as `Authorization: Bearer …` in place of
//! whatever the agent wrote. This module owns the rule's shape as written (`RawOAuth2`), its
//! checks against the rest of the policy (egress, grants) and the validated type (`OAuth2`).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::host::HostPattern;
use super::invalid::{Invalid, host_pattern, invalid, line_of, parse_at};
use super::placeholder::{PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, Placeholder, placeholders};
use super::route::Upstream;
use super::{Egress, Grant, Inject, as_string, most_specific};

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Basic` with the form-encoded id and secret: the default, which every
    /// server must support.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The client id: a value the proxy reads (a placeholder), or the id itself, which is not a
/// secret in OAuth2 and may be written in the policy.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ClientId {
    Secret(#[serde(serialize_with = "as_string")] Placeholder),
    Literal(String),
}

/// One `[[oauth2]]` rule, made only by the policy's validation: its host and the token
/// endpoint's host are in `egress.allow` and not passthrough, the token endpoint is https (or
/// http on loopback), and the grant of each of its secrets sends them to the token endpoint's
/// host. No two rules' hosts overlap.
#[derive(Debug, Clone, Serialize)]
pub struct OAuth2 {
    host: HostPattern,
    #[serde(serialize_with = "as_string")]
    token_url: Upstream,
    client_id: ClientId,
    #[serde(serialize_with = "as_string")]
    client_secret: Placeholder,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    auth_method: AuthMethod,
}

impl OAuth2 {
    /// The hosts whose requests get the token.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The token endpoint: scheme, host, port and path (`base_path`, `""` meaning `/`).
    pub fn token_url(&self) -> &Upstream {
        &self.token_url
    }

    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    pub fn client_secret(&self) -> &Placeholder {
        &self.client_secret
    }

    /// Space-separated scopes to ask for; `None` asks for the client's default.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    pub fn auth_method(&self) -> AuthMethod {
        self.auth_method
    }

    /// The placeholders whose values the token fetch reads: the client id's (when it is one)
    /// and the client secret's.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        let id = match &self.client_id {
            ClientId::Secret(p) => Some(p),
            ClientId::Literal(_) => None,
        };
        id.into_iter().chain(std::iter::once(&self.client_secret))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    host: Spanned<String>,
    token_url: Spanned<String>,
    client_id: Spanned<String>,
    client_secret: Spanned<String>,
    scope: Option<Spanned<String>>,
    auth_method: Option<Spanned<AuthMethod>>,
}

impl OAuth2 {
    pub(super) fn from_raw(raw: RawOAuth2, egress: &Egress, grants: &[Grant]) -> Result<OAuth2, Invalid> {
        let host = host_pattern(&raw.host, "oauth2 host")?;
        if !egress.allow.iter().any(|allowed| allowed.covers(&host)) {
            return Err(invalid(&raw.host, format!("oauth2 host '{host}' is not in egress.allow")));
        }
        if egress.passthrough.iter().any(|p| p.covers(&host) || host.covers(p)) {
            let message = format!(
                "oauth2 host '{host}' is (partly) in egress.passthrough, whose requests the proxy does not see; \
                 it could never add the token there"
            );
            return Err(invalid(&raw.host, message));
        }
        let token_url = parse_at(&raw.token_url, "oauth2 token_url", token_url)?;
        let token_host = token_url.host();
        if !egress.allow.iter().any(|allowed| allowed.matches(token_host)) {
            let message = format!("oauth2 token_url host '{token_host}' is not in egress.allow");
            return Err(invalid(&raw.token_url, message));
        }
        if egress.passthrough.iter().any(|p| p.matches(token_host)) {
            let message = format!(
                "oauth2 token_url host '{token_host}' is in egress.passthrough, which never gets values; the \
                 client credentials could not be sent there"
            );
            return Err(invalid(&raw.token_url, message));
        }
        let client_id = match raw.client_id.get_ref().contains(PLACEHOLDER_OPEN) {
            true => ClientId::Secret(credential(&raw.client_id, "client_id", token_host, grants)?),
            false => ClientId::Literal(parse_at(&raw.client_id, "oauth2 client_id", literal_client_id)?),
        };
        let client_secret = credential(&raw.client_secret, "client_secret", token_host, grants)?;
        let scope = raw.scope.as_ref().map(|s| parse_at(s, "oauth2 scope", scope)).transpose()?;
        let auth_method = raw.auth_method.map_or(AuthMethod::ClientSecretBasic, Spanned::into_inner);
        Ok(OAuth2 { host, token_url, client_id, client_secret, scope, auth_method })
    }
}

/// https, or http to a loopback address (`127.0.0.1`, `::1`, `localhost`): the client secret
/// and the token cross this connection, so it is TLS unless it never leaves the machine.
fn token_url(s: &str) -> Result<Upstream, String> {
    let url = Upstream::parse(s)?;
    let loopback = matches!(url.host(), "localhost" | "::1") || url.host().starts_with("127.");
    if !url.is_tls() && !loopback {
        return Err(format!(
            "'{s}' is not https; the client secret and the token cross this connection, so it must be https \
             (http only to 127.0.0.1, ::1 or localhost)"
        ));
    }
    Ok(url)
}

/// The client id or secret: exactly one placeholder, whose grant sends it to the token
/// endpoint's host (the proxy sends it there, and nowhere else).
fn credential(raw: &Spanned<String>, what: &str, token_host: &str, grants: &[Grant]) -> Result<Placeholder, Invalid> {
    let text = raw.get_ref();
    let found = placeholders(text).map_err(|e| invalid(raw, format!("oauth2 {what}: {e}")))?;
    let [placeholder] = found.as_slice() else {
        let message =
            format!("oauth2 {what} must be exactly one placeholder, like '{PLACEHOLDER_OPEN}PATH{PLACEHOLDER_CLOSE}'");
        return Err(invalid(raw, message));
    };
    if placeholder.span() != (0..text.len()) {
        let message = format!(
            "oauth2 {what} must be exactly one placeholder with nothing around it, like \
             '{PLACEHOLDER_OPEN}PATH{PLACEHOLDER_CLOSE}'"
        );
        return Err(invalid(raw, message));
    }
    let path = placeholder.path();
    let Some(grant) = most_specific(grants, |grant| grant.secrets().matches(path)) else {
        return Err(invalid(raw, format!("oauth2 {what} uses secret '{path}' but no grant covers it")));
    };
    if !grant.allows_host(token_host) {
        let message = format!(
            "oauth2 {what} sends secret '{path}' to the token endpoint '{token_host}', but its grant '{}' does not \
             list that host",
            grant.secrets()
        );
        return Err(invalid(raw, message));
    }
    Ok(placeholder.clone())
}

/// A client id written as itself: RFC 6749's VSCHAR (printable ASCII), 1 to 256 of them.
fn literal_client_id(s: &str) -> Result<String, String> {
    let ok = (1..=256).contains(&s.len()) && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("'{s}' is not a client id; write 1 to 256 printable ASCII characters, or a placeholder"))
    }
}

/// Scope tokens (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`) separated by single spaces.
fn scope(s: &str) -> Result<String, String> {
    let token_char = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    let ok = !s.is_empty() && s.len() <= 1024 && s.split(' ').all(|t| !t.is_empty() && t.bytes().all(token_char));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}' is not a scope; write scope tokens (printable ASCII but '\"' and '\\') separated by single spaces"
        ))
    }
}

/// Every `[[oauth2]]` rule, in order. No two may apply to one host: the later rule whose
/// host overlaps an earlier one's is the error, naming the earlier's line. No `[[inject]]`
/// rule may set `Authorization` toward a rule's host: the token would replace it unseen.
pub(super) fn rules_from_raw(
    raw: Vec<RawOAuth2>,
    egress: &Egress,
    grants: &[Grant],
    injects: &[Inject],
    text: &str,
) -> Result<Vec<OAuth2>, Invalid> {
    let mut rules: Vec<(OAuth2, usize)> = Vec::with_capacity(raw.len());
    for raw in raw {
        let span = raw.host.span();
        let rule = OAuth2::from_raw(raw, egress, grants)?;
        let overlaps = |other: &HostPattern| rule.host.covers(other) || other.covers(&rule.host);
        if let Some(inject) = injects.iter().find(|i| i.header() == http::header::AUTHORIZATION && overlaps(i.host())) {
            let message = format!(
                "oauth2 host '{}' overlaps the host '{}' of an inject rule for Authorization, which the oauth2 \
                 token would replace; remove one of them",
                rule.host,
                inject.host()
            );
            return Err(Invalid { span, message });
        }
        if let Some((other, line)) =
            rules.iter().find(|(other, _)| rule.host.covers(&other.host) || other.host.covers(&rule.host))
        {
            let message = format!(
                "oauth2 host '{}' overlaps the oauth2 rule for '{}' (line {line}); a host gets one token",
                rule.host, other.host
            );
            return Err(Invalid { span, message });
        }
        rules.push((rule, line_of(text, span.start)));
    }
    Ok(rules.into_iter().map(|(rule, _)| rule).collect())
}

#[cfg(test)]
mod tests {
    use super::super::{Policy, PolicyError};
    use super::*;

    const HEAD: &str = r#"[agent]
name = "agent-1"

[egress]
allow = ["api.example.com", "*.example.net", "auth.example.com", "127.0.0.1"]
passthrough = ["raw.example.net"]

[[grant]]
secrets = "example/*"
hosts = ["auth.example.com", "127.0.0.1"]

[[grant]]
secrets = "other/*"
hosts = ["api.example.com"]
"#;

    const RULE: &str = r#"
[[oauth2]]
host = "api.example.com"
token_url = "https://auth.example.com/oauth/token"
client_id = "{{secret:example/client-id}}"
client_secret = "{{secret:example/client-secret}}"
scope = "read write"
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse("test.toml", text)
    }

    #[test]
    fn a_rule_parses_with_its_defaults() {
        let policy = parse(&format!("{HEAD}{RULE}")).unwrap();
        let rule = policy.oauth2_for("API.example.com").expect("the rule applies to its host");
        assert_eq!(rule.token_url().to_string(), "https://auth.example.com/oauth/token");
        assert_eq!(rule.scope(), Some("read write"));
        assert_eq!(rule.auth_method(), AuthMethod::ClientSecretBasic);
        let paths: Vec<&str> = rule.placeholders().map(|p| p.path().as_str()).collect();
        assert_eq!(paths, ["example/client-id", "example/client-secret"]);
        assert!(policy.oauth2_for("auth.example.com").is_none());
        assert!(policy.closed("test").oauth2().is_empty());
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["oauth2"][0]["client_secret"], "{{secret:example/client-secret}}");

        let literal = RULE
            .replace("{{secret:example/client-id}}", "my-client")
            .replace("scope = \"read write\"", "auth_method = \"client_secret_post\"");
        let policy = parse(&format!("{HEAD}{literal}")).unwrap();
        let rule = &policy.oauth2()[0];
        assert!(matches!(rule.client_id(), ClientId::Literal(id) if id == "my-client"));
        assert_eq!((rule.scope(), rule.auth_method()), (None, AuthMethod::ClientSecretPost));
        assert_eq!(rule.placeholders().count(), 1);

        let local = RULE.replace("https://auth.example.com/oauth/token", "http://127.0.0.1:8080/token");
        assert!(parse(&format!("{HEAD}{local}")).is_ok());
    }

    #[test]
    fn bad_rules_are_refused_at_their_line() {
        let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let cases = [
            ("https://auth.example.com/oauth/token", "http://auth.example.com/token", "is not https"),
            ("https://auth.example.com/oauth/token", "https://login.example.org/token", "not in egress.allow"),
            ("https://auth.example.com/oauth/token", "https://auth.example.com/t?x=1", "query or fragment"),
            ("https://auth.example.com/oauth/token", "https://raw.example.net/token", "egress.passthrough"),
            ("host = \"api.example.com\"", "host = \"api.example.org\"", "oauth2 host 'api.example.org' is not in"),
            ("host = \"api.example.com\"", "host = \"*.example.net\"", "(partly) in egress.passthrough"),
            ("{{secret:example/client-secret}}", "{{secret:nothing/here}}", "no grant covers it"),
            ("{{secret:example/client-secret}}", "{{secret:other/secret}}", "does not list that host"),
            ("{{secret:example/client-secret}}", "Basic {{secret:example/client-secret}}", "nothing around it"),
            ("{{secret:example/client-secret}}", "plain-text", "exactly one placeholder"),
            ("{{secret:example/client-id}}", "{{secret:example/client-id", "no closing"),
            ("\"read write\"", "\"read  write\"", "is not a scope"),
            ("\"read write\"", "\"read\\\"\"", "is not a scope"),
        ];
        for (from, to, says) in cases {
            let rule = RULE.replace(from, to);
            let text = format!("{HEAD}{rule}");
            let e = parse(&text).expect_err(to);
            assert!(e.message.contains(says), "{to}: {e}");
            assert_eq!(e.line, line_of(&text, to), "{to}: {e}");
        }
        let unknown = format!("{HEAD}{RULE}token_lifetime = 5\n");
        let e = parse(&unknown).unwrap_err();
        assert!(e.message.contains("unknown field `token_lifetime`"), "{e}");
        let method = format!("{HEAD}{RULE}auth_method = \"private_key_jwt\"\n");
        assert!(parse(&method).unwrap_err().message.contains("unknown variant"));
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let wild = RULE.replace("host = \"api.example.com\"", "host = \"*.example.net\"");
        let narrow = RULE.replace("host = \"api.example.com\"", "host = \"a.b.example.net\"");
        let text = format!("{HEAD}{wild}{narrow}").replace("passthrough = [\"raw.example.net\"]", "");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("overlaps the oauth2 rule for '*.example.net' (line"), "{e}");
        assert_eq!(e.line, text.lines().position(|l| l.contains("a.b.example.net")).unwrap() + 1);
        let two = format!("{HEAD}{RULE}{RULE}");
        assert!(parse(&two).unwrap_err().message.contains("overlaps"));
        let inject = "\n[[grant]]\nsecrets = \"api/*\"\nhosts = [\"*.example.net\"]\n\n[[inject]]\nhost = \"*.example.net\"\n\
                      header = \"Authorization\"\nvalue = \"Bearer {{secret:api/key}}\"\n";
        let text = format!("{HEAD}{inject}{narrow}").replace("passthrough = [\"raw.example.net\"]", "");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("an inject rule for Authorization"), "{e}");
    }
}
