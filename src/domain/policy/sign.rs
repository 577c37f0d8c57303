//! `[[sign]]` rules: requests to a host that the proxy signs itself, with credentials the
//! agent never holds. Today one kind, `aws-sigv4`: the proxy strips the agent's own SigV4
//! signature material and signs the request again with an access key pair (and optional
//! session token) read like any granted value. The rule names its secrets as placeholders,
//! and each must be governed by a grant that lets its value go to the rule's host: the
//! values are bound to hosts like any value, a signature only being another place for them.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::host::HostPattern;
use super::invalid::{Invalid, host_pattern, invalid, parse_at};
use super::placeholder::{PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, Placeholder, placeholders};
use super::{Egress, Grant, most_specific};

/// How a `[[sign]]` rule signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SignKind {
    /// AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 …`).
    #[serde(rename = "aws-sigv4")]
    AwsSigV4,
}

/// A validated `[[sign]]` rule: its host is in `egress.allow`, and a grant that lists the
/// host governs each of its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Sign {
    host: HostPattern,
    kind: SignKind,
    access_key: Placeholder,
    secret_key: Placeholder,
    session_token: Option<Placeholder>,
    region: Option<String>,
    service: Option<String>,
}

impl Sign {
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    pub fn kind(&self) -> SignKind {
        self.kind
    }

    /// The access key id's secret: it goes on the wire, in the credential scope.
    pub fn access_key(&self) -> &Placeholder {
        &self.access_key
    }

    /// The secret access key's secret: only the signature is derived from it.
    pub fn secret_key(&self) -> &Placeholder {
        &self.secret_key
    }

    /// The session token's secret, for temporary credentials (`X-Amz-Security-Token`).
    pub fn session_token(&self) -> Option<&Placeholder> {
        self.session_token.as_ref()
    }

    /// The region to sign for; `None`: the agent's credential scope's, else the host's.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The service to sign for; `None`: the agent's credential scope's, else the host's.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Every secret the rule reads: access key, secret key, then the session token.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        [&self.access_key, &self.secret_key].into_iter().chain(self.session_token.as_ref())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSign {
    host: Spanned<String>,
    kind: Spanned<String>,
    access_key: Spanned<String>,
    secret_key: Spanned<String>,
    session_token: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
}

impl Sign {
    pub(super) fn from_raw(raw: RawSign, egress: &Egress, grants: &[Grant]) -> Result<Sign, Invalid> {
        let host = host_pattern(&raw.host, "sign host")?;
        if !egress.allow.iter().any(|allowed| allowed.covers(&host)) {
            return Err(invalid(&raw.host, format!("sign host '{host}' is not in egress.allow")));
        }
        let kind = match raw.kind.get_ref().as_str() {
            "aws-sigv4" => SignKind::AwsSigV4,
            other => {
                return Err(invalid(&raw.kind, format!("sign kind '{other}' is unknown; the one kind is aws-sigv4")));
            }
        };
        let secret = |raw: &Spanned<String>, what: &str| -> Result<Placeholder, Invalid> {
            let placeholder = parse_at(raw, &format!("sign {what}"), whole_placeholder)?;
            check_binding(&placeholder, &host, grants).map_err(|why| invalid(raw, format!("sign {what}: {why}")))?;
            Ok(placeholder)
        };
        let access_key = secret(&raw.access_key, "access_key")?;
        let secret_key = secret(&raw.secret_key, "secret_key")?;
        let session_token = raw.session_token.as_ref().map(|t| secret(t, "session_token")).transpose()?;
        let region = raw.region.as_ref().map(|r| parse_at(r, "sign region", scope_part)).transpose()?;
        let service = raw.service.as_ref().map(|s| parse_at(s, "sign service", scope_part)).transpose()?;
        Ok(Sign { host, kind, access_key, secret_key, session_token, region, service })
    }
}

/// Every `[[sign]]` rule, in order. A host a sign rule signs for gets no other credential
/// the signature would replace or break: no `[[oauth2]]` rule and no `[[inject]]` rule for
/// `Authorization` or an `X-Amz-*` header may name an overlapping host.
pub(super) fn rules_from_raw(
    raw: Vec<RawSign>,
    egress: &Egress,
    grants: &[Grant],
    injects: &[super::Inject],
    oauth2: &[super::OAuth2],
) -> Result<Vec<Sign>, Invalid> {
    let mut rules = Vec::with_capacity(raw.len());
    for raw in raw {
        let span = raw.host.span();
        let rule = Sign::from_raw(raw, egress, grants)?;
        let overlaps = |other: &HostPattern| rule.host.covers(other) || other.covers(&rule.host);
        let signed_header =
            |name: &http::HeaderName| name == http::header::AUTHORIZATION || name.as_str().starts_with("x-amz-");
        let clash = injects
            .iter()
            .find(|i| signed_header(i.header()) && overlaps(i.host()))
            .map(|i| format!("an inject rule for '{}' toward '{}'", i.header(), i.host()))
            .or_else(|| {
                oauth2.iter().find(|o| overlaps(o.host())).map(|o| format!("the oauth2 rule for '{}'", o.host()))
            });
        if let Some(clash) = clash {
            let message = format!(
                "sign host '{}' overlaps {clash}, whose credential the signature would replace; remove one of them",
                rule.host
            );
            return Err(Invalid { span, message });
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The text is exactly one placeholder, nothing around it.
fn whole_placeholder(s: &str) -> Result<Placeholder, String> {
    let found = placeholders(s).map_err(|e| e.to_string())?;
    match found.as_slice() {
        [one] if one.span() == (0..s.len()) => Ok(one.clone()),
        _ => Err(format!(
            "write exactly one placeholder, like '{PLACEHOLDER_OPEN}aws/prod/access-key-id{PLACEHOLDER_CLOSE}'"
        )),
    }
}

/// A region or service name as it goes in a credential scope: 1 to 64 of `[a-z0-9-]`.
fn scope_part(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(s.to_owned()) } else { Err(format!("'{s}' is not a region or service name; use 1 to 64 of [a-z0-9-]")) }
}

/// The grant that governs the placeholder's secret (the one `Policy::grant_for` picks) must
/// list a host pattern covering the rule's.
fn check_binding(p: &Placeholder, host: &HostPattern, grants: &[Grant]) -> Result<(), String> {
    let path = p.path();
    let Some(grant) = most_specific(grants, |grant| grant.secrets.matches(path)) else {
        return Err(format!("secret '{path}' is not covered by any grant"));
    };
    if !grant.hosts.iter().any(|allowed| allowed.covers(host)) {
        let glob = &grant.secrets;
        return Err(format!("signs with secret '{path}' for '{host}', but its grant '{glob}' does not list that host"));
    }
    Ok(())
}
