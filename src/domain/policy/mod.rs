//! Agent policies: this module owns what one `policies/*.toml` file means — which hosts an
//! agent may reach (`Egress`), which secrets may be sent to which hosts and in which places
//! (`Grant`), header values the proxy adds on its own (`Inject`), base-URL routes (`Route`),
//! hosts whose requests the proxy signs itself (`Sign`), the `{{secret:PATH#field}}`
//! placeholder grammar, and the `PolicySet` of every agent's policy. Files deserialize strictly into private raw types that keep each value's span,
//! then convert into the validated types the rest of the crate sees, so every error names
//! its file and line. Nothing here touches the file system: the server reads the policy
//! directory (`server::policies`) and hands the files' text to `PolicySet::from_files`.
//!
//! This file holds the validated `Policy` and `PolicySet` and their queries; the parts live in
//! `host` (host patterns), `placeholder` (the placeholder grammar), `route` (routes and their
//! upstreams), `sign` (`[[sign]]` rules) and `raw` (the file's shape and its conversion into
//! the validated types). They are re-exported here, so `crate::domain::policy::X` names every
//! public type.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::path::SecretPath;
use super::rate::Rate;
use super::scope::PathGlob;

mod host;
mod invalid;
mod oauth2;
mod placeholder;
mod raw;
mod route;
mod sign;
#[cfg(test)]
mod tests;

pub use host::HostPattern;
pub use oauth2::{AuthMethod, ClientId, OAuth2};

/// Headers that may never carry a secret: services store or echo them, or they steer routing.
const FORBIDDEN_HEADERS: [&str; 4] = ["host", "cookie", "user-agent", "referer"];
const FORBIDDEN_HEADER_PREFIX: &str = "x-forwarded-";

/// Whether a header (its lower-case name) may ever carry a secret: a grant naming one that
/// may not is refused when the policy loads, and the proxy checks again before it writes.
pub fn header_may_carry_secret(name: &str) -> bool {
    !FORBIDDEN_HEADERS.contains(&name) && !name.starts_with(FORBIDDEN_HEADER_PREFIX)
}
pub use placeholder::{
    PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, Placeholder, PlaceholderError, placeholder_text, placeholders,
};
pub use route::{Route, Upstream};
pub use sign::{Sign, SignKind};

/// A policy file that cannot be used, with where and why. `line` is 1-based; 0 when the
/// problem is not inside the file (it cannot be read, the directory is missing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// Validated types
// ---------------------------------------------------------------------------------------

/// One agent's validated policy, made only by `parse` (or `closed`): every grant's hosts
/// and every route's upstream are in `egress.allow`, grants whose secrets overlap agree,
/// every inject rule's secrets are granted to its host in its header, and every sign rule's
/// secrets to its host.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    agent: AgentRules,
    egress: Egress,
    grants: Vec<Grant>,
    injects: Vec<Inject>,
    routes: Vec<Route>,
    /// `[[oauth2]]` rules; no two of their hosts overlap.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    oauth2: Vec<OAuth2>,
    /// `[[sign]]` rules; none overlaps an `[[oauth2]]` rule's host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signs: Vec<Sign>,
    source: String,
    text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRules {
    pub name: String,
    pub tenant: String,
    /// Longest lifetime of a token the agent may mint.
    #[serde(rename = "token_ttl_seconds", serialize_with = "as_seconds")]
    pub token_ttl: Duration,
    /// Networks the agent may call from; empty means any.
    #[serde(serialize_with = "as_strings")]
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Egress {
    /// Hosts the agent may reach at all.
    pub allow: Vec<HostPattern>,
    /// Allowed hosts tunnelled without interception; they never get values.
    pub passthrough: Vec<HostPattern>,
    pub deny_private_networks: bool,
    /// Whole-agent egress rate.
    #[serde(serialize_with = "as_optional_string")]
    pub rate: Option<Rate>,
    /// Per exact (lower-case) host.
    #[serde(serialize_with = "as_string_values")]
    pub per_host_rate: BTreeMap<String, Rate>,
}

/// Which secrets may be sent to which hosts, and in which places of a request. Made only
/// by the policy's validation (`raw`): its hosts are never empty and all in `egress.allow`,
/// its headers lower-case, sorted, unique and none that may never carry a secret.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    secrets: PathGlob,
    hosts: Vec<HostPattern>,
    approval: bool,
    headers: Vec<String>,
    query: bool,
    /// Top-level form or JSON body fields a value may be the whole value of; sorted, unique.
    body_fields: Vec<String>,
}

/// A header the proxy sets on requests to `host` without the agent writing a placeholder.
/// Made only by the policy's validation (`raw`): its value holds at least one placeholder
/// and no CR, LF or NUL, and a grant sends each of its secrets to this host in this header.
#[derive(Debug, Clone, Serialize)]
pub struct Inject {
    host: HostPattern,
    #[serde(serialize_with = "as_string")]
    header: http::HeaderName,
    value: String,
    placeholders: Vec<Placeholder>,
}

impl Inject {
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// Lower-case header name, parsed once here rather than on every request.
    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    /// The template, with at least one placeholder.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The placeholders of `value`, in order; never empty.
    pub fn placeholders(&self) -> &[Placeholder] {
        &self.placeholders
    }
}

// ---------------------------------------------------------------------------------------
// Policy queries
// ---------------------------------------------------------------------------------------

impl Policy {
    /// Parses and validates one policy file; `file` names it in errors and in `source`.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        Self::parse_located(file, text).map(|(policy, _)| policy)
    }

    /// What a proxy enforces once the central API refuses the agent its policy: this one
    /// with no egress, no grants, no inject rules, no routes and no sign rules, its source saying `why`.
    pub fn closed(&self, why: &str) -> Policy {
        let mut closed = self.clone();
        closed.egress.allow.clear();
        closed.egress.passthrough.clear();
        closed.grants.clear();
        closed.injects.clear();
        closed.routes.clear();
        closed.oauth2.clear();
        closed.signs.clear();
        closed.source = format!("(no policy: {why})");
        closed.text = String::new();
        closed
    }

    pub fn agent(&self) -> &AgentRules {
        &self.agent
    }

    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn injects(&self) -> &[Inject] {
        &self.injects
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn oauth2(&self) -> &[OAuth2] {
        &self.oauth2
    }

    /// The `[[oauth2]]` rule whose host matches `host` (at most one does).
    pub fn oauth2_for(&self, host: &str) -> Option<&OAuth2> {
        self.oauth2.iter().find(|rule| rule.host().matches(host))
    }

    /// The `[[sign]]` rules: hosts whose requests the proxy signs itself.
    pub fn signs(&self) -> &[Sign] {
        &self.signs
    }

    /// The `[[sign]]` rule for `host`: the first that matches it, in file order.
    pub fn sign_for(&self, host: &str) -> Option<&Sign> {
        self.signs.iter().find(|sign| sign.host().matches(host))
    }

    /// The file the policy came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file's text, so a proxy can parse the same policy with the same rules.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a caller at `ip` may act as this agent; an empty list allows any address.
    /// An IPv4-mapped IPv6 address is also checked as the IPv4 address it carries.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let allowed = &self.agent.allowed_ips;
        allowed.is_empty() || allowed.iter().any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
    }

    /// The grant that governs `path`: the most specific whose glob matches it
    /// (`PathGlob::cmp_specificity`), wherever it stands in the file. Grants whose globs
    /// overlap agree on everything but the glob (`check_overlapping_grants`), so which one
    /// governs only decides the token a proxy reads the value with.
    pub fn grant_for(&self, path: &SecretPath) -> Option<&Grant> {
        most_specific(&self.grants, |grant| grant.secrets.matches(path))
    }

    /// For minting: the most specific grant covering a requested secrets glob (requested ⊆
    /// grant.secrets). Every grant that shares a path with it needs approval if it does.
    pub fn grant_covering(&self, glob: &PathGlob) -> Option<&Grant> {
        most_specific(&self.grants, |grant| glob.is_subset_of(&grant.secrets))
    }

    /// Whether `egress.allow` lets the agent reach `host` at all.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.egress.allow.iter().any(|pattern| pattern.matches(host))
    }

    /// Whether the proxy makes credentials itself for some host (`[[oauth2]]`, `[[sign]]`):
    /// only then does the HTTP/1.1 fast path look at each request's host to hand it to hyper.
    pub fn makes_credentials(&self) -> bool {
        !self.oauth2.is_empty() || !self.signs.is_empty()
    }

    /// Whether any grant allows body fields: only then are request bodies read for placeholders.
    pub fn has_body_fields(&self) -> bool {
        self.grants.iter().any(|grant| !grant.body_fields.is_empty())
    }

    /// Whether a grant that allows body fields lets its values go to `host`: a request to such
    /// a host with a form or JSON body is read whole (within the proxy's bound) before it goes.
    pub fn body_fields_reach(&self, host: &str) -> bool {
        self.grants.iter().any(|grant| !grant.body_fields.is_empty() && grant.allows_host(host))
    }

    /// Whether `host` is to be tunnelled without interception.
    pub fn is_passthrough(&self, host: &str) -> bool {
        self.egress.passthrough.iter().any(|pattern| pattern.matches(host))
    }
}

impl Grant {
    /// What of approval, hosts, headers, query and body fields differs between two grants, in that order;
    /// empty when they agree. Hosts are compared as the sets of hosts they match.
    fn differences(&self, other: &Grant) -> Vec<&'static str> {
        let covered = |a: &[HostPattern], b: &[HostPattern]| a.iter().all(|h| b.iter().any(|o| o.covers(h)));
        let same_hosts = covered(&self.hosts, &other.hosts) && covered(&other.hosts, &self.hosts);
        let mut differ = Vec::new();
        if self.approval != other.approval {
            differ.push("approval");
        }
        if !same_hosts {
            differ.push("hosts");
        }
        if self.headers != other.headers {
            differ.push("headers");
        }
        if self.query != other.query {
            differ.push("query");
        }
        if self.body_fields != other.body_fields {
            differ.push("body_fields");
        }
        differ
    }

    /// The secrets this grant covers.
    pub fn secrets(&self) -> &PathGlob {
        &self.secrets
    }

    /// The only hosts these values may be sent to; never empty.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// Minting a token for these secrets waits for a human.
    pub fn approval(&self) -> bool {
        self.approval
    }

    /// Lower-case header names values may be placed in.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Values may be placed in the query string.
    pub fn query(&self) -> bool {
        self.query
    }

    /// Top-level `application/x-www-form-urlencoded` or `application/json` body fields whose
    /// whole value may be a placeholder for these secrets; empty (the default) allows none.
    pub fn body_fields(&self) -> &[String] {
        &self.body_fields
    }

    /// Whether this grant lets its values be the whole value of body field `name` (exact).
    pub fn allows_body_field(&self, name: &str) -> bool {
        self.body_fields.iter().any(|allowed| allowed == name)
    }

    /// For a test that breaks the invariant on purpose, to check a defence behind it.
    #[cfg(test)]
    pub(crate) fn headers_mut(&mut self) -> &mut Vec<String> {
        &mut self.headers
    }

    /// Whether this grant lets its values go to `host`.
    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| pattern.matches(host))
    }

    /// Whether this grant lets its values go in header `name` (any case).
    pub fn allows_header(&self, name: &str) -> bool {
        self.headers.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// Of the grants that pass `wanted`, the one with the most specific glob; never depends on
/// the order of `grants`.
fn most_specific(grants: &[Grant], wanted: impl Fn(&Grant) -> bool) -> Option<&Grant> {
    grants.iter().filter(|grant| wanted(grant)).min_by(|a, b| a.secrets.cmp_specificity(&b.secrets))
}

// ---------------------------------------------------------------------------------------
// Policy sets
// ---------------------------------------------------------------------------------------

/// Every agent's policy, keyed by (tenant, agent name). Not `Serialize`: JSON has no tuple
/// keys; serialize the policies from `iter` instead.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    by_agent: BTreeMap<(String, String), Policy>,
}

impl PolicySet {
    /// Builds a set from `(file name, text)` pairs, in order. Two files for the same
    /// (tenant, agent) are an error naming both.
    pub fn from_files(files: &[(String, String)]) -> Result<PolicySet, PolicyError> {
        let mut by_agent = BTreeMap::new();
        for (file, text) in files {
            let (policy, name_line) = Policy::parse_located(file, text)?;
            let key = (policy.agent.tenant.clone(), policy.agent.name.clone());
            if let Some(earlier) = by_agent.get(&key).map(|p: &Policy| p.source.clone()) {
                return Err(PolicyError {
                    file: file.clone(),
                    line: name_line,
                    message: format!(
                        "agent '{}' of tenant '{}' is already defined in {earlier}; \
                         each agent has exactly one policy file",
                        key.1, key.0
                    ),
                });
            }
            by_agent.insert(key, policy);
        }
        Ok(PolicySet { by_agent })
    }

    pub fn get(&self, tenant: &str, agent: &str) -> Option<&Policy> {
        self.by_agent.get(&(tenant.to_owned(), agent.to_owned()))
    }

    /// Every policy, ordered by (tenant, agent).
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_agent.values()
    }

    pub fn len(&self) -> usize {
        self.by_agent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Serialization helpers
// ---------------------------------------------------------------------------------------

fn as_seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs())
}

fn as_strings<S: Serializer, T: fmt::Display>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(T::to_string))
}

fn as_string<S: Serializer, T: fmt::Display>(item: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(item)
}

fn as_optional_string<S: Serializer, T: fmt::Display>(item: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
    match item {
        Some(item) => as_string(item, serializer),
        None => serializer.serialize_none(),
    }
}

fn as_string_values<S: Serializer, T: fmt::Display>(
    map: &BTreeMap<String, T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(key, value)| (key, value.to_string())))
}
