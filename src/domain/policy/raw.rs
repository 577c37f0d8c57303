//! A policy file as written: strict raw types that keep each value's span (`toml::Spanned`),
//! and their conversion into the validated types of `policy`, so that every error names its
//! file and line (`PolicyError`). The defaults a file may leave out and the checks between
//! its parts (grant hosts within egress, injects bound to grants, overlapping grants that
//! must agree) live here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::host::HostPattern;
use super::invalid::{Invalid, host_pattern, invalid, line_of, parse_at};
use super::placeholder::{PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, Placeholder, placeholders};
use super::route::{Route, Upstream, route_name};
use super::sign::RawSign;
use super::{AgentRules, Egress, Grant, Inject, Policy, PolicyError, most_specific};
use crate::domain::scope::PathGlob;

/// Headers a grant may place values in when it does not say.
const DEFAULT_GRANT_HEADERS: [&str; 2] = ["authorization", "x-api-key"];
pub(super) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_TENANT: &str = "default";

impl Policy {
    /// Like `parse`, also returning the line of `agent.name` (for duplicate-agent errors).
    pub(super) fn parse_located(file: &str, text: &str) -> Result<(Policy, usize), PolicyError> {
        let located = |span: Option<Range<usize>>, message: String| PolicyError {
            file: file.to_owned(),
            line: span.map_or(1, |span| line_of(text, span.start)),
            message,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| located(e.span(), e.message().to_owned()))?;
        let name_line = line_of(text, raw.agent.name.span().start);
        let mut policy = Policy::from_raw(raw, file, text).map_err(|e| located(Some(e.span), e.message))?;
        policy.text = text.to_owned();
        Ok((policy, name_line))
    }

    fn from_raw(raw: RawPolicy, source: &str, text: &str) -> Result<Policy, Invalid> {
        let agent = AgentRules::try_from(raw.agent)?;
        let egress = Egress::try_from(raw.egress)?;
        let spans: Vec<Range<usize>> = raw.grant.iter().map(|g| g.secrets.span()).collect();
        let grants: Vec<Grant> =
            raw.grant.into_iter().map(|g| Grant::from_raw(g, &egress)).collect::<Result<_, _>>()?;
        check_overlapping_grants(&grants, &spans, text)?;
        let injects: Vec<Inject> =
            raw.inject.into_iter().map(|i| Inject::from_raw(i, &grants)).collect::<Result<_, _>>()?;
        let routes = routes_from_raw(raw.route, &egress)?;
        let oauth2 = super::oauth2::rules_from_raw(raw.oauth2, &egress, &grants, &injects, text)?;
        let signs = super::sign::rules_from_raw(raw.sign, &egress, &grants, &injects, &oauth2)?;
        Ok(Policy {
            agent,
            egress,
            grants,
            injects,
            routes,
            oauth2,
            signs,
            source: source.to_owned(),
            text: String::new(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    agent: RawAgent,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    inject: Vec<RawInject>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    oauth2: Vec<super::oauth2::RawOAuth2>,
    #[serde(default)]
    sign: Vec<RawSign>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    tenant: Option<Spanned<String>>,
    token_ttl: Option<Spanned<String>>,
    #[serde(default)]
    allowed_ips: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    passthrough: Vec<Spanned<String>>,
    deny_private_networks: Option<bool>,
    rate: Option<Spanned<String>>,
    #[serde(default)]
    per_host_rate: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    secrets: Spanned<String>,
    hosts: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    approval: bool,
    headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    query: bool,
    #[serde(default)]
    body_fields: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInject {
    host: Spanned<String>,
    header: Spanned<String>,
    value: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    upstream: Spanned<String>,
}

impl TryFrom<RawAgent> for AgentRules {
    type Error = Invalid;

    fn try_from(raw: RawAgent) -> Result<AgentRules, Invalid> {
        let name = parse_at(&raw.name, "agent.name", |s| check_identifier(s).map(|()| s.to_owned()))?;
        let tenant = match &raw.tenant {
            Some(tenant) => parse_at(tenant, "agent.tenant", |s| check_identifier(s).map(|()| s.to_owned()))?,
            None => DEFAULT_TENANT.to_owned(),
        };
        let token_ttl = match &raw.token_ttl {
            Some(ttl) => parse_token_ttl(ttl.get_ref()).map_err(|why| invalid(ttl, why))?,
            None => DEFAULT_TOKEN_TTL,
        };
        let allowed_ips = raw.allowed_ips.iter().map(|ip| parse_at(ip, "agent.allowed_ips", parse_network));
        Ok(AgentRules { name, tenant, token_ttl, allowed_ips: allowed_ips.collect::<Result<_, _>>()? })
    }
}

/// Agent and tenant names: 1–64 characters of `[A-Za-z0-9._-]`.
fn check_identifier(s: &str) -> Result<(), String> {
    let ok =
        (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(format!("'{s}' is not a name; use 1 to 64 characters of [A-Za-z0-9._-]")) }
}

/// `<n>s`, `<n>m` or `<n>h`, from 1s to 24h.
fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    let units = [("s", 1), ("m", 60), ("h", 3600)];
    let split = units.into_iter().find_map(|(unit, secs)| Some((s.strip_suffix(unit)?, secs)));
    let ttl = split
        .filter(|(digits, _)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(digits, secs)| digits.parse::<u64>().ok()?.checked_mul(secs))
        .map(Duration::from_secs);
    match ttl {
        Some(ttl) if ttl.is_zero() => Err(format!("token_ttl '{s}' must be at least 1s")),
        Some(ttl) if ttl <= MAX_TOKEN_TTL => Ok(ttl),
        _ => Err(format!("token_ttl '{s}': use a number followed by s, m or h, at most 24h")),
    }
}

/// A CIDR, or a bare IP meaning just that address.
fn parse_network(s: &str) -> Result<IpNet, String> {
    let net = s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
    net.map(|net| net.trunc())
        .map_err(|_| format!("'{s}' is not a network; write a CIDR such as 10.0.0.0/8 or an address such as 127.0.0.1"))
}

impl TryFrom<RawEgress> for Egress {
    type Error = Invalid;

    fn try_from(raw: RawEgress) -> Result<Egress, Invalid> {
        let allow: Vec<HostPattern> =
            raw.allow.iter().map(|h| host_pattern(h, "egress.allow")).collect::<Result<_, _>>()?;
        let allowed = |pattern: &HostPattern| allow.iter().any(|a| a.covers(pattern));
        let mut passthrough = Vec::new();
        for raw_host in &raw.passthrough {
            let host = host_pattern(raw_host, "egress.passthrough")?;
            if !allowed(&host) {
                return Err(invalid(raw_host, format!("passthrough host '{host}' is not in egress.allow")));
            }
            passthrough.push(host);
        }
        let rate = raw.rate.as_ref().map(|r| parse_at(r, "egress.rate", |s| s.parse())).transpose()?;
        let mut per_host_rate = BTreeMap::new();
        for (raw_host, raw_rate) in &raw.per_host_rate {
            let what = format!("egress.per_host_rate '{}'", raw_host.get_ref());
            let host = parse_at(raw_host, &what, |s| {
                HostPattern::parse(s)?.exact_host().ok_or_else(|| "keys are exact hosts, not patterns".to_owned())
            })?;
            if !allow.iter().any(|a| a.matches(&host)) {
                return Err(invalid(raw_host, format!("{what}: host '{host}' is not in egress.allow")));
            }
            let rate = parse_at(raw_rate, &what, |s| s.parse())?;
            if per_host_rate.insert(host.clone(), rate).is_some() {
                return Err(invalid(raw_host, format!("{what}: host '{host}' is listed twice")));
            }
        }
        let deny_private_networks = raw.deny_private_networks.unwrap_or(true);
        Ok(Egress { allow, passthrough, deny_private_networks, rate, per_host_rate })
    }
}

impl Grant {
    fn from_raw(raw: RawGrant, egress: &Egress) -> Result<Grant, Invalid> {
        let secrets = parse_at(&raw.secrets, "grant secrets", |s| PathGlob::parse(s).map_err(|e| e.to_string()))?;
        if raw.hosts.get_ref().is_empty() {
            return Err(invalid(&raw.hosts, "grant hosts is empty; name the hosts these secrets may be sent to"));
        }
        let mut hosts = Vec::new();
        for raw_host in raw.hosts.get_ref() {
            let host = host_pattern(raw_host, "grant hosts")?;
            if !egress.allow.iter().any(|allowed| allowed.covers(&host)) {
                let message =
                    format!("grant host '{host}' is not in egress.allow, so these secrets could never be sent there");
                return Err(invalid(raw_host, message));
            }
            hosts.push(host);
        }
        let headers = match &raw.headers {
            Some(names) => names.iter().map(grant_header).collect::<Result<Vec<_>, _>>()?,
            None => DEFAULT_GRANT_HEADERS.map(str::to_owned).to_vec(),
        };
        let headers = headers.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let body_fields = raw
            .body_fields
            .iter()
            .map(|f| parse_at(f, "grant body_fields", body_field))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let body_fields = body_fields.into_iter().collect();
        Ok(Grant { secrets, hosts, approval: raw.approval, headers, query: raw.query, body_fields })
    }
}

/// A body field name: 1 to 128 characters of `[A-Za-z0-9._-]`, matched exactly (case counts).
fn body_field(s: &str) -> Result<String, String> {
    let ok =
        (1..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("'{s}' is not a body field name; use 1 to 128 characters of [A-Za-z0-9._-]"))
    }
}

/// A grant header name: lower-cased, an HTTP token, and not one that may never carry a secret.
fn grant_header(raw: &Spanned<String>) -> Result<String, Invalid> {
    let name = parse_at(raw, "grant headers", header_name)?;
    if !super::header_may_carry_secret(&name) {
        let message = format!(
            "header '{name}' may never carry a secret; host, cookie, user-agent, referer and x-forwarded-* are refused"
        );
        return Err(invalid(raw, message));
    }
    Ok(name)
}

/// A header name (an RFC 9110 token), lower-cased.
fn header_name(s: &str) -> Result<String, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if s.is_empty() || !s.chars().all(tchar) {
        return Err(format!("'{s}' is not a header name; use letters, digits and !#$%&'*+-.^_`|~"));
    }
    Ok(s.to_ascii_lowercase())
}

/// Two grants whose secrets overlap (some path matches both) must agree on approval, hosts,
/// headers, query and body fields: otherwise the one that governs a path would decide, say, whether it
/// needs approval, and a broad grant could open what a narrow one gates. The later grant of
/// such a pair is the error (at `spans`, the grants' `secrets` in the file), naming the
/// earlier with its line.
fn check_overlapping_grants(grants: &[Grant], spans: &[Range<usize>], text: &str) -> Result<(), Invalid> {
    for (later, grant) in grants.iter().enumerate() {
        for (earlier, other) in grants[..later].iter().enumerate() {
            let differ = grant.differences(other);
            if differ.is_empty() || !grant.secrets.overlaps(&other.secrets) {
                continue;
            }
            let message = format!(
                "grant '{}' overlaps grant '{}' (line {}) but differs in {}; make them agree or make their \
                 secrets disjoint",
                grant.secrets,
                other.secrets,
                line_of(text, spans[earlier].start),
                differ.join(", "),
            );
            return Err(Invalid { span: spans[later].clone(), message });
        }
    }
    Ok(())
}

impl Inject {
    /// Each placeholder must be governed by a grant (the one `Policy::grant_for` picks)
    /// that sends it to this host in this header.
    fn from_raw(raw: RawInject, grants: &[Grant]) -> Result<Inject, Invalid> {
        let host = host_pattern(&raw.host, "inject host")?;
        let header = parse_at(&raw.header, "inject header", |s| {
            let name = header_name(s)?;
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{s}' is not a header name"))
        })?;
        let value = raw.value.get_ref();
        if value.contains(['\r', '\n', '\0']) {
            return Err(invalid(&raw.value, "inject value may not contain CR, LF or NUL"));
        }
        let placeholders = placeholders(value).map_err(|e| invalid(&raw.value, format!("inject value: {e}")))?;
        if placeholders.is_empty() {
            let message = format!(
                "inject value has no placeholder; write it like 'Bearer {PLACEHOLDER_OPEN}PATH{PLACEHOLDER_CLOSE}'"
            );
            return Err(invalid(&raw.value, message));
        }
        for placeholder in &placeholders {
            check_inject_binding(placeholder, &host, header.as_str(), grants)
                .map_err(|why| invalid(&raw.value, why))?;
        }
        Ok(Inject { host, header, value: value.clone(), placeholders })
    }
}

fn check_inject_binding(p: &Placeholder, host: &HostPattern, header: &str, grants: &[Grant]) -> Result<(), String> {
    let path = p.path();
    let Some(grant) = most_specific(grants, |grant| grant.secrets.matches(path)) else {
        return Err(format!("inject uses secret '{path}' but no grant covers it"));
    };
    let glob = &grant.secrets;
    if !grant.hosts.iter().any(|allowed| allowed.covers(host)) {
        return Err(format!(
            "inject sends secret '{path}' to '{host}', but its grant '{glob}' does not list that host"
        ));
    }
    if !grant.allows_header(header) {
        let allowed = grant.headers.join(", ");
        return Err(format!(
            "inject puts secret '{path}' in header '{header}', but its grant '{glob}' allows only: {allowed}"
        ));
    }
    Ok(())
}

fn routes_from_raw(raw: Vec<RawRoute>, egress: &Egress) -> Result<Vec<Route>, Invalid> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for raw in raw {
        let name = parse_at(&raw.name, "route name", route_name)?;
        if routes.iter().any(|route| route.name == name) {
            return Err(invalid(&raw.name, format!("route name '{name}' is used twice; route names are unique")));
        }
        let upstream = parse_at(&raw.upstream, "route upstream", Upstream::parse)?;
        if !egress.allow.iter().any(|allowed| allowed.matches(&upstream.host)) {
            let message = format!("route upstream host '{}' is not in egress.allow", upstream.host);
            return Err(invalid(&raw.upstream, message));
        }
        routes.push(Route { name, upstream });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ttl_table() {
        let cases =
            [("1s", Some(1)), ("15m", Some(900)), ("24h", Some(86_400)), ("86400s", Some(86_400)), ("007m", Some(420))];
        for (input, secs) in cases {
            assert_eq!(parse_token_ttl(input).ok(), secs.map(Duration::from_secs), "{input}");
        }
        for bad in [
            "",
            "m",
            "15",
            "0s",
            "86401s",
            "25h",
            "-1m",
            "+1m",
            "1.5h",
            " 1m",
            "1 m",
            "5é",
            "é",
            "1d",
            "99999999999999999999h",
        ] {
            assert!(parse_token_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
