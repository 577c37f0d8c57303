//! Agent policies: this module owns what one `policies/*.toml` file means — which hosts an
//! agent may reach (`Egress`), which secrets may be sent to which hosts and in which places
//! (`Grant`), header values the proxy adds on its own (`Inject`), base-URL routes (`Route`),
//! the `{{secret:PATH#field}}` placeholder grammar, and the `PolicySet` of every agent's
//! policy. Files deserialize strictly into private raw types that keep each value's span,
//! then convert into the validated types the rest of the crate sees, so every error names
//! its file and line. Only `PolicySet::load_dir` touches the file system.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::path::{PathError, SecretPath};
use super::rate::Rate;
use super::scope::PathGlob;

/// Headers a grant may place values in when it does not say.
const DEFAULT_GRANT_HEADERS: [&str; 2] = ["authorization", "x-api-key"];
/// Headers that may never carry a secret: services store or echo them, or they steer routing.
const FORBIDDEN_HEADERS: [&str; 4] = ["host", "cookie", "user-agent", "referer"];
const FORBIDDEN_HEADER_PREFIX: &str = "x-forwarded-";
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_TENANT: &str = "default";
const PLACEHOLDER_OPEN: &str = "{{secret:";
const PLACEHOLDER_CLOSE: &str = "}}";

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

/// One agent's validated policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub agent: AgentRules,
    pub egress: Egress,
    pub grants: Vec<Grant>,
    pub injects: Vec<Inject>,
    pub routes: Vec<Route>,
    /// The file the policy came from.
    pub source: String,
    /// The file's text, so a proxy can parse the same policy with the same rules.
    pub text: String,
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

/// Which secrets may be sent to which hosts, and in which places of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub secrets: PathGlob,
    /// The only hosts these values may be sent to; never empty.
    pub hosts: Vec<HostPattern>,
    /// Minting a token for these secrets waits for a human.
    pub approval: bool,
    /// Lower-case header names values may be placed in.
    pub headers: Vec<String>,
    /// Values may be placed in the query string.
    pub query: bool,
}

/// A header the proxy sets on requests to `host` without the agent writing a placeholder.
#[derive(Debug, Clone, Serialize)]
pub struct Inject {
    pub host: HostPattern,
    /// Lower-case header name, parsed once here rather than on every request.
    #[serde(serialize_with = "as_string")]
    pub header: http::HeaderName,
    /// The template, with at least one placeholder.
    pub value: String,
    /// The placeholders of `value`, in order.
    pub placeholders: Vec<Placeholder>,
}

/// Base-URL mode: `/r/<name>/…` goes to `upstream`.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: String,
    pub upstream: Upstream,
}

/// A route's upstream base: `scheme://host[:port][/base/path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// The explicit port, else 80 or 443 by scheme.
    pub port: u16,
    /// `""` or a path such as `/v1`, without a trailing slash.
    pub base_path: String,
}

// ---------------------------------------------------------------------------------------
// Policy queries and parsing
// ---------------------------------------------------------------------------------------

impl Policy {
    /// Parses and validates one policy file; `file` names it in errors and in `source`.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        Self::parse_located(file, text).map(|(policy, _)| policy)
    }

    /// Like `parse`, also returning the line of `agent.name` (for duplicate-agent errors).
    fn parse_located(file: &str, text: &str) -> Result<(Policy, usize), PolicyError> {
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
        let injects = raw.inject.into_iter().map(|i| Inject::from_raw(i, &grants)).collect::<Result<_, _>>()?;
        let routes = routes_from_raw(raw.route, &egress)?;
        Ok(Policy { agent, egress, grants, injects, routes, source: source.to_owned(), text: String::new() })
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

    /// Whether `host` is to be tunnelled without interception.
    pub fn is_passthrough(&self, host: &str) -> bool {
        self.egress.passthrough.iter().any(|pattern| pattern.matches(host))
    }
}

impl Grant {
    /// What of approval, hosts, headers and query differs between two grants, in that order;
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
        differ
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

/// Line (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
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
    /// Loads every `*.toml` file in `dir` (sorted by name; hidden files and other files are
    /// ignored). All or nothing: the first error is returned and no set is built.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let dir_error = |e: std::io::Error| PolicyError {
            file: dir.display().to_string(),
            line: 0,
            message: format!("cannot read the policy directory: {e}"),
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(dir_error)? {
            let name = entry.map_err(dir_error)?.file_name().to_string_lossy().into_owned();
            // `metadata` follows symlinks, as in Kubernetes ConfigMap mounts.
            let is_file = std::fs::metadata(dir.join(&name)).is_ok_and(|m| m.is_file());
            if name.ends_with(".toml") && !name.starts_with('.') && is_file {
                names.push(name);
            }
        }
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let text = std::fs::read_to_string(dir.join(&name)).map_err(|e| PolicyError {
                file: name.clone(),
                line: 0,
                message: format!("cannot read the policy file: {e}"),
            })?;
            files.push((name, text));
        }
        Self::from_files(&files)
    }

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
// Host patterns
// ---------------------------------------------------------------------------------------

/// A host the policy names: an exact host name, an IP literal, or `*.suffix` (one or more
/// labels before `suffix`, never `suffix` itself). Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern(HostKind);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostKind {
    Name(String),
    Ip(IpAddr),
    /// The suffix after `*.`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com`, `*.example.com`, `127.0.0.1`, `::1` or `[::1]`. Upper case
    /// is lower-cased and one trailing dot dropped.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let host = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if let Some(ip) = parse_ip_literal(&host) {
            return Ok(HostPattern(HostKind::Ip(ip)));
        }
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(suffix) => (suffix, true),
            None => (host.as_str(), false),
        };
        if let Err(why) = check_host_name(name) {
            return Err(format!(
                "'{s}' is not a host pattern ({why}); write a host name such as api.example.com, \
                 '*.' and a host name such as *.example.com, or an IP address"
            ));
        }
        let name = name.to_owned();
        Ok(HostPattern(if wildcard { HostKind::Wildcard(name) } else { HostKind::Name(name) }))
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self.0, HostKind::Wildcard(_))
    }

    /// The host itself for an exact pattern; `None` for a wildcard.
    pub fn exact_host(&self) -> Option<String> {
        match &self.0 {
            HostKind::Name(name) => Some(name.clone()),
            HostKind::Ip(ip) => Some(ip.to_string()),
            HostKind::Wildcard(_) => None,
        }
    }

    /// Whether `host` (any case, one trailing dot ignored, IPv6 with or without brackets)
    /// is matched.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match &self.0 {
            HostKind::Name(name) => host.eq_ignore_ascii_case(name),
            HostKind::Ip(ip) => parse_ip_literal(host) == Some(*ip),
            HostKind::Wildcard(suffix) => {
                let Some(cut) = host.len().checked_sub(suffix.len() + 1) else { return false };
                let bytes = host.as_bytes();
                let prefix = &bytes[..cut];
                bytes[cut] == b'.'
                    && bytes[cut + 1..].eq_ignore_ascii_case(suffix.as_bytes())
                    && !prefix.is_empty()
                    && prefix.split(|&b| b == b'.').all(|label| !label.is_empty())
            }
        }
    }

    /// Whether every host `other` matches is also matched by `self`.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (&self.0, &other.0) {
            (HostKind::Wildcard(mine), HostKind::Wildcard(theirs)) => {
                theirs == mine || theirs.strip_suffix(mine.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }
            (_, HostKind::Wildcard(_)) => false,
            (_, HostKind::Name(name)) => self.matches(name),
            (_, HostKind::Ip(ip)) => self.matches(&ip.to_string()),
        }
    }
}

/// An IP address, IPv6 optionally in brackets.
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(bracketed) => bracketed.parse().ok().filter(IpAddr::is_ipv6),
        None => host.parse().ok(),
    }
}

/// Checks a lower-case DNS host name: labels of `[a-z0-9-]`, 1–63 characters each, at most
/// 253 in total, and a last label that is not all digits (that would read as an IPv4 address).
fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("labels use only letters, digits and '-'");
        }
    }
    if name.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the last label may not be all digits");
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HostKind::Name(name) => f.write_str(name),
            HostKind::Ip(ip) => write!(f, "{ip}"),
            HostKind::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPattern, String> {
        HostPattern::parse(s)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------
// Placeholders
// ---------------------------------------------------------------------------------------

/// One `{{secret:PATH}}` or `{{secret:PATH#FIELD}}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placeholder {
    path: SecretPath,
    field: Option<String>,
    span: Range<usize>,
}

impl Placeholder {
    pub fn path(&self) -> &SecretPath {
        &self.path
    }

    /// The `#FIELD` part: a field of a JSON-object secret value.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Byte range of the whole `{{secret:…}}` in the scanned string.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

/// The placeholder as an agent writes it: `{{secret:PATH}}` or `{{secret:PATH#FIELD}}`.
impl std::fmt::Display for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&placeholder_text(&self.path, self.field.as_deref()))
    }
}

/// `{{secret:PATH}}` or `{{secret:PATH#FIELD}}`: how a value is named in a request, and
/// shown when redacted.
pub fn placeholder_text(path: &SecretPath, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("{{{{secret:{path}#{field}}}}}"),
        None => format!("{{{{secret:{path}}}}}"),
    }
}

/// Why a string's placeholders cannot be read. Offsets are bytes from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("placeholder at byte {at} has no closing '}}}}'; write {{{{secret:PATH}}}} or {{{{secret:PATH#field}}}}")]
    Unterminated { at: usize },
    #[error("placeholder '{text}' names an invalid secret path: {source}")]
    InvalidPath { text: String, source: PathError },
    #[error("placeholder '{text}' has an invalid field; a field is 1 to 64 characters of [A-Za-z0-9_.-]")]
    InvalidField { text: String },
}

/// Every placeholder in `s`, in order. Text that does not start with `{{secret:` is left
/// alone; a `{{secret:` without its `}}`, a bad path or a bad field is an error.
pub fn placeholders(s: &str) -> Result<Vec<Placeholder>, PlaceholderError> {
    use memchr::memmem::Finder;
    // Built once: a one-shot `memmem::find` sets up its searcher on every call, which costs
    // more than the search itself over a header value.
    static OPEN: std::sync::LazyLock<Finder<'static>> =
        std::sync::LazyLock::new(|| Finder::new(PLACEHOLDER_OPEN.as_bytes()));
    static CLOSE: std::sync::LazyLock<Finder<'static>> =
        std::sync::LazyLock::new(|| Finder::new(PLACEHOLDER_CLOSE.as_bytes()));
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = OPEN.find(&s.as_bytes()[from..]) {
        let start = from + offset;
        let body_start = start + PLACEHOLDER_OPEN.len();
        let body_len = CLOSE.find(&s.as_bytes()[body_start..]).ok_or(PlaceholderError::Unterminated { at: start })?;
        let end = body_start + body_len + PLACEHOLDER_CLOSE.len();
        found.push(placeholder(&s[body_start..body_start + body_len], &s[start..end], start..end)?);
        from = end;
    }
    Ok(found)
}

fn placeholder(body: &str, text: &str, span: Range<usize>) -> Result<Placeholder, PlaceholderError> {
    let (path, field) = match body.split_once('#') {
        Some((path, field)) => (path, Some(field)),
        None => (body, None),
    };
    let path =
        SecretPath::parse(path).map_err(|source| PlaceholderError::InvalidPath { text: text.to_owned(), source })?;
    let field_ok = |f: &str| {
        (1..=64).contains(&f.len()) && f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if field.is_some_and(|f| !field_ok(f)) {
        return Err(PlaceholderError::InvalidField { text: text.to_owned() });
    }
    Ok(Placeholder { path, field: field.map(str::to_owned), span })
}

// ---------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------

impl Upstream {
    /// Parses `http(s)://host[:port][/base/path]`; no user info, query or fragment.
    pub fn parse(s: &str) -> Result<Upstream, String> {
        let bad = |why: &str| {
            format!("upstream '{s}' {why}; write it like https://api.example.com or http://10.0.0.5:8080/v1")
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad("must start with http:// or https://")),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("may not have a query or fragment"));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err(bad("may not carry user info"));
        }
        let (host, port) = split_port(authority).ok_or_else(|| bad("has an invalid host"))?;
        let host = exact_host(host).ok_or_else(|| bad("has an invalid host"))?;
        let port = port.map(|p| parse_port(p).ok_or_else(|| bad("has an invalid port"))).transpose()?;
        let base_path = path.trim_end_matches('/');
        if !is_valid_base_path(base_path) {
            return Err(bad("has an invalid path"));
        }
        let port = port.unwrap_or(default_port);
        Ok(Upstream { scheme, host, port, base_path: base_path.to_owned() })
    }

    /// Whether the connection to the upstream is TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }
}

/// Splits `host[:port]` (an IPv6 host in brackets); `None` if the port is not 1–65535.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let host_end = authority.find(']')? + 1;
        let (host, after) = authority.split_at(host_end);
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(authority.split_once(':').map_or((authority, None), |(host, port)| (host, Some(port))))
}

fn parse_port(port: &str) -> Option<u16> {
    port.bytes().all(|b| b.is_ascii_digit()).then(|| port.parse().ok()).flatten().filter(|&p| p != 0)
}

/// An exact host (name or IP) in lower case without brackets; `None` for anything else.
fn exact_host(host: &str) -> Option<String> {
    let pattern = HostPattern::parse(host).ok()?;
    pattern.exact_host()
}

/// `""` or `/segment/…` of RFC 3986 path characters, without `.`/`..` or empty segments.
fn is_valid_base_path(path: &str) -> bool {
    let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c);
    path.is_empty()
        || path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(pchar))
        })
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match self.host.contains(':') {
            true => write!(f, "[{}]", self.host)?,
            false => f.write_str(&self.host)?,
        }
        let default_port = if self.is_tls() { 443 } else { 80 };
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.base_path)
    }
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Upstream, String> {
        Upstream::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Raw file shape and its conversion
// ---------------------------------------------------------------------------------------

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

/// A validation failure at a span of the file; `Policy::parse` turns it into a line.
struct Invalid {
    span: Range<usize>,
    message: String,
}

fn invalid<T>(at: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid { span: at.span(), message: message.into() }
}

/// Parses a spanned string with `parse`, prefixing errors with `what`.
fn parse_at<T>(value: &Spanned<String>, what: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, Invalid> {
    parse(value.get_ref()).map_err(|why| invalid(value, format!("{what}: {why}")))
}

fn host_pattern(value: &Spanned<String>, what: &str) -> Result<HostPattern, Invalid> {
    parse_at(value, what, HostPattern::parse)
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
        Ok(Grant { secrets, hosts, approval: raw.approval, headers, query: raw.query })
    }
}

/// A grant header name: lower-cased, an HTTP token, and not one that may never carry a secret.
fn grant_header(raw: &Spanned<String>) -> Result<String, Invalid> {
    let name = parse_at(raw, "grant headers", header_name)?;
    if FORBIDDEN_HEADERS.contains(&name.as_str()) || name.starts_with(FORBIDDEN_HEADER_PREFIX) {
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
/// headers and query: otherwise the one that governs a path would decide, say, whether it
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
            let message = "inject value has no placeholder; write it like 'Bearer {{secret:PATH}}'";
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

/// Route names: 1–32 characters of `[a-z0-9-]` (they become URL segments and env names).
fn route_name(s: &str) -> Result<String, String> {
    let ok =
        (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(s.to_owned()) } else { Err(format!("'{s}' is not a route name; use 1 to 32 characters of [a-z0-9-]")) }
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

#[cfg(test)]
mod tests {
    use super::*;

    const RESEARCH: &str = include_str!("../../policies/research-agent.toml");
    const PAYMENTS: &str = include_str!("../../policies/payments-agent.toml");

    /// The start of a valid policy that cases extend.
    const HEAD: &str = r#"[agent]
name = "agent-1"

[egress]
allow = ["api.openai.com", "*.github.com"]
"#;

    fn parse(text: &str) -> Policy {
        Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    fn glob(s: &str) -> PathGlob {
        PathGlob::parse(s).unwrap()
    }

    /// The 1-based line of `text` holding the `# here` marker.
    fn marked_line(text: &str) -> usize {
        text.lines().position(|line| line.contains("# here")).expect("case has a '# here' marker") + 1
    }

    #[test]
    fn example_policies_parse() {
        let research = parse(RESEARCH);
        assert_eq!((research.agent.name.as_str(), research.agent.tenant.as_str()), ("research-agent", "default"));
        assert_eq!(research.agent.token_ttl, Duration::from_secs(900));
        assert_eq!(research.egress.rate.unwrap().to_string(), "600/min");
        assert_eq!(research.egress.per_host_rate["api.openai.com"].to_string(), "120/min");
        assert_eq!(research.grants.len(), 2);
        assert_eq!(research.injects[0].header, "authorization");
        assert_eq!(research.injects[0].placeholders[0].path().as_str(), "production/openai/api-key");
        let routes: Vec<String> = research.routes.iter().map(|r| format!("{}={}", r.name, r.upstream)).collect();
        assert_eq!(routes, ["openai=https://api.openai.com", "github=https://api.github.com"]);
        assert!(research.host_allowed("raw.githubusercontent.com") && !research.host_allowed("evil.com"));

        let payments = parse(PAYMENTS);
        assert_eq!(payments.agent.token_ttl, Duration::from_secs(300));
        let grant = payments.grant_for(&path("production/stripe/secret-key")).expect("stripe grant");
        assert!(grant.approval && grant.allows_host("api.stripe.com") && !grant.query);
        assert!(payments.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(payments.allows_ip("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!payments.allows_ip("10.0.0.1".parse().unwrap()));
        assert_eq!(payments.routes[0].upstream.port, 443);
    }

    #[test]
    fn defaults_apply() {
        let policy = parse(&format!("{HEAD}\n[[grant]]\nsecrets = \"a/*\"\nhosts = [\"api.openai.com\"]\n"));
        assert_eq!(policy.agent.tenant, "default");
        assert_eq!(policy.agent.token_ttl, DEFAULT_TOKEN_TTL);
        assert!(policy.allows_ip("203.0.113.9".parse().unwrap()));
        assert!(policy.egress.deny_private_networks && policy.egress.rate.is_none());
        let grant = &policy.grants[0];
        assert_eq!(grant.headers, ["authorization", "x-api-key"]);
        assert!(!grant.approval && !grant.query);
        assert_eq!(policy.source, "test.toml");
    }

    #[test]
    fn invalid_policies_point_at_the_offending_line() {
        let grant = |body: &str| format!("{HEAD}\n[[grant]]\n{body}\n");
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "typo'd key",
                grant("secrets = \"a/*\"\nhostz = [\"api.openai.com\"] # here"),
                "unknown field `hostz`, expected one of",
            ),
            ("unknown table", format!("{HEAD}\n[egres] # here\nallow = []\n"), "unknown field `egres`"),
            ("wrong type", format!("{HEAD}deny_private_networks = \"yes\" # here\n"), "invalid type"),
            ("missing agent name", "[agent] # here\ntenant = \"t\"\n".into(), "missing field `name`"),
            ("bad agent name", "[agent]\nname = \"a b\" # here\n".into(), "'a b' is not a name"),
            ("bad glob", grant("secrets = \"a/**/b\" # here\nhosts = [\"api.openai.com\"]"), "'**' may only be"),
            (
                "forbidden header",
                grant(
                    "secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"authorization\",\n  \"Cookie\", # here\n]",
                ),
                "header 'cookie' may never carry a secret",
            ),
            (
                "x-forwarded header",
                grant("secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"X-Forwarded-For\"] # here"),
                "header 'x-forwarded-for' may never carry a secret",
            ),
            (
                "header not a token",
                grant("secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"x api\"] # here"),
                "'x api' is not a header name",
            ),
            (
                "grant host not in allow",
                grant("secrets = \"a/*\"\nhosts = [\n  \"api.openai.com\",\n  \"api.stripe.com\", # here\n]"),
                "grant host 'api.stripe.com' is not in egress.allow",
            ),
            (
                "grant wildcard wider than allow",
                grant("secrets = \"a/*\"\nhosts = [\"*.openai.com\"] # here"),
                "grant host '*.openai.com' is not in egress.allow",
            ),
            ("empty grant hosts", grant("secrets = \"a/*\"\nhosts = [] # here"), "grant hosts is empty"),
            ("bad host pattern", grant("secrets = \"a/*\"\nhosts = [\"api_openai.com\"] # here"), "not a host pattern"),
            (
                "bad duration",
                "[agent]\nname = \"a\"\ntoken_ttl = \"2d\" # here\n".into(),
                "token_ttl '2d': use a number",
            ),
            ("too long duration", "[agent]\nname = \"a\"\ntoken_ttl = \"25h\" # here\n".into(), "at most 24h"),
            ("zero duration", "[agent]\nname = \"a\"\ntoken_ttl = \"0s\" # here\n".into(), "at least 1s"),
            ("bad cidr", "[agent]\nname = \"a\"\nallowed_ips = [\"10.0.0.0/33\"] # here\n".into(), "not a network"),
            ("bad rate", format!("{HEAD}rate = \"600/day\" # here\n"), "egress.rate: '600/day' is not a rate"),
            (
                "bad per-host rate",
                format!("{HEAD}per_host_rate = {{ \"api.openai.com\" = \"0/s\" }} # here\n"),
                "must allow at least 1 event",
            ),
            (
                "per-host rate for a pattern",
                format!("{HEAD}per_host_rate = {{ \"*.github.com\" = \"1/s\" }} # here\n"),
                "keys are exact hosts",
            ),
            (
                "per-host rate for an unreachable host",
                format!("{HEAD}per_host_rate = {{ \"evil.com\" = \"1/s\" }} # here\n"),
                "host 'evil.com' is not in egress.allow",
            ),
            (
                "passthrough outside allow",
                format!("{HEAD}passthrough = [\"pinned.example.com\"] # here\n"),
                "passthrough host 'pinned.example.com' is not in egress.allow",
            ),
            (
                "inject without grant",
                format!(
                    "{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"authorization\"\n\
                     value = \"Bearer {{{{secret:production/openai/key}}}}\" # here\n"
                ),
                "inject uses secret 'production/openai/key' but no grant covers it",
            ),
            (
                "inject to a host its grant does not list",
                format!(
                    "{HEAD}\n[[grant]]\nsecrets = \"p/*\"\nhosts = [\"api.openai.com\"]\n\n[[inject]]\n\
                     host = \"api.github.com\"\nheader = \"authorization\"\nvalue = \"{{{{secret:p/k}}}}\" # here\n"
                ),
                "does not list that host",
            ),
            (
                "inject in a header its grant does not allow",
                format!(
                    "{HEAD}\n[[grant]]\nsecrets = \"p/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"x-api-key\"]\n\n\
                     [[inject]]\nhost = \"api.openai.com\"\nheader = \"Authorization\"\nvalue = \"{{{{secret:p/k}}}}\" # here\n"
                ),
                "allows only: x-api-key",
            ),
            (
                "inject without placeholder",
                format!("{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"a\"\nvalue = \"Bearer x\" # here\n"),
                "has no placeholder",
            ),
            (
                "inject with unterminated placeholder",
                format!(
                    "{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"a\"\nvalue = \"{{{{secret:p/k\" # here\n"
                ),
                "no closing",
            ),
            (
                "duplicate route",
                format!(
                    "{HEAD}\n[[route]]\nname = \"r\"\nupstream = \"https://api.openai.com\"\n\n\
                     [[route]]\nname = \"r\" # here\nupstream = \"https://api.openai.com\"\n"
                ),
                "route name 'r' is used twice",
            ),
            (
                "bad route name",
                format!("{HEAD}\n[[route]]\nname = \"OpenAI\" # here\nupstream = \"https://api.openai.com\"\n"),
                "not a route name",
            ),
            (
                "upstream with query",
                format!("{HEAD}\n[[route]]\nname = \"o\"\nupstream = \"https://api.openai.com/v1?x=1\" # here\n"),
                "may not have a query",
            ),
            (
                "upstream outside allow",
                format!("{HEAD}\n[[route]]\nname = \"o\"\nupstream = \"https://evil.com\" # here\n"),
                "route upstream host 'evil.com' is not in egress.allow",
            ),
        ];
        for (name, text, needle) in cases {
            let err = Policy::parse("bad.toml", &text).err().unwrap_or_else(|| panic!("{name}: parsed\n{text}"));
            assert_eq!(err.file, "bad.toml", "{name}");
            assert!(err.message.contains(needle), "{name}: {err}");
            assert_eq!(err.line, marked_line(&text), "{name}: {err}\n{text}");
            assert!(err.to_string().starts_with(&format!("bad.toml:{}: ", err.line)), "{name}");
        }
    }

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

    #[test]
    fn host_pattern_matching() {
        let cases = [
            ("*.github.com", "api.github.com", true),
            ("*.github.com", "a.b.github.com", true),
            ("*.github.com", "API.GitHub.com.", true),
            ("*.github.com", "github.com", false),
            ("*.github.com", "evilgithub.com", false),
            ("*.github.com", ".github.com", false),
            ("*.github.com", "a..github.com", false),
            ("*.github.com", "github.com.evil.com", false),
            ("api.openai.com", "api.openai.com", true),
            ("API.OpenAI.com", "api.openai.com.", true),
            ("api.openai.com", "api.openai.com..", false),
            ("api.openai.com", "xapi.openai.com", false),
            ("api.openai.com", "a.api.openai.com", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("::1", "[::1]", true),
            ("[::1]", "0:0:0:0:0:0:0:1", true),
        ];
        for (pattern, host, expected) in cases {
            let parsed = HostPattern::parse(pattern).unwrap();
            assert_eq!(parsed.matches(host), expected, "{pattern} vs {host}");
        }
        for bad in ["", "*", "*.", "*.*.com", "a*.com", "a_b.com", "a..b", "1.2.3", "*.0.0.1", "[1.2.3.4]", "é.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HostPattern::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert_eq!(HostPattern::parse("*.GitHub.com.").unwrap().to_string(), "*.github.com");
    }

    #[test]
    fn host_pattern_covering() {
        let cases = [
            ("*.github.com", "api.github.com", true),
            ("*.github.com", "*.api.github.com", true),
            ("*.github.com", "*.github.com", true),
            ("*.github.com", "github.com", false),
            ("*.github.com", "*.evilgithub.com", false),
            ("api.github.com", "*.api.github.com", false),
            ("api.github.com", "api.github.com", true),
            ("::1", "[::1]", true),
        ];
        for (outer, inner, expected) in cases {
            let (outer_p, inner_p) = (HostPattern::parse(outer).unwrap(), HostPattern::parse(inner).unwrap());
            assert_eq!(outer_p.covers(&inner_p), expected, "{outer} covers {inner}");
        }
    }

    #[test]
    fn placeholder_parsing() {
        type Found<'a> = Vec<(&'a str, Option<&'a str>, Range<usize>)>;
        let cases: Vec<(&str, Found)> = vec![
            ("no placeholders", vec![]),
            ("{{other}} and {{ secret:x }}", vec![]),
            ("Bearer {{secret:prod/openai/key}}", vec![("prod/openai/key", None, 7..33)]),
            ("{{secret:db/main#password}}", vec![("db/main", Some("password"), 0..27)]),
            ("{{secret:a}}:{{secret:b/c#user_1}}", vec![("a", None, 0..12), ("b/c", Some("user_1"), 13..34)]),
            ("{{secret:a}}}}", vec![("a", None, 0..12)]),
        ];
        for (input, expected) in cases {
            let found = placeholders(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let got: Found = found.iter().map(|p| (p.path().as_str(), p.field(), p.span())).collect();
            assert_eq!(got, expected, "{input}");
            for p in &found {
                assert!(input[p.span()].starts_with("{{secret:") && input[p.span()].ends_with("}}"));
            }
        }
        let errors = [
            ("{{secret:a", "no closing"),
            ("{{secret:a}} then {{secret:b", "at byte 18"),
            ("{{secret:}}", "invalid secret path"),
            ("{{secret:a/../b}}", "invalid secret path"),
            ("{{secret:a b}}", "invalid secret path"),
            ("{{secret:a#}}", "invalid field"),
            ("{{secret:a#b#c}}", "invalid field"),
            ("{{secret:a{{secret:b}}", "invalid secret path"),
        ];
        for (input, needle) in errors {
            let message = placeholders(input).unwrap_err().to_string();
            assert!(message.contains(needle), "{input}: {message}");
        }
        let long_field = format!("{{{{secret:a#{}}}}}", "f".repeat(65));
        assert!(placeholders(&long_field).is_err());
    }

    #[test]
    fn upstream_parsing() {
        let cases = [
            ("https://api.openai.com", ("https", "api.openai.com", 443, "")),
            ("HTTPS://API.OpenAI.com/", ("https", "api.openai.com", 443, "")),
            ("http://10.0.0.5:8080/v1/", ("http", "10.0.0.5", 8080, "/v1")),
            ("http://[::1]:9000/a/b", ("http", "::1", 9000, "/a/b")),
            ("https://[::1]", ("https", "::1", 443, "")),
        ];
        for (input, (scheme, host, port, base_path)) in cases {
            let up = Upstream::parse(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (up.scheme.as_str(), up.host.as_str(), up.port, up.base_path.as_str()),
                (scheme, host, port, base_path)
            );
            assert_eq!(Upstream::parse(&up.to_string()).unwrap(), up, "{input} round-trips");
        }
        let bad = [
            "api.openai.com",
            "ftp://a.com",
            "https://",
            "https://a.com:0",
            "https://a.com:99999",
            "https://a.com:",
            "https://a.com:+1",
            "https://user@a.com",
            "https://a.com/v1#x",
            "https://a.com/../x",
            "https://a.com//x",
            "https://a.com/a b",
            "https://*.a.com",
            "https://::1",
        ];
        for input in bad {
            assert!(Upstream::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn grant_lookups_pick_the_most_specific_grant_in_any_order() {
        let narrow = "[[grant]]\nsecrets = \"prod/openai/*\"\nhosts = [\"api.openai.com\", \"*.github.com\"]\n";
        let broad = "[[grant]]\nsecrets = \"prod/**\"\nhosts = [\"*.github.com\", \"api.openai.com\"]\n";
        let middle = "[[grant]]\nsecrets = \"prod/*/key\"\nhosts = [\"api.openai.com\", \"*.github.com\"]\n";
        let orders =
            [[narrow, broad, middle], [broad, middle, narrow], [middle, narrow, broad], [broad, narrow, middle]];
        for order in orders {
            let policy = parse(&format!("{HEAD}\n{}\n{}\n{}", order[0], order[1], order[2]));
            let first = |g: Option<&Grant>| g.map(|g| g.secrets.to_string());
            assert_eq!(first(policy.grant_for(&path("prod/openai/key"))).as_deref(), Some("prod/*/key"));
            assert_eq!(first(policy.grant_for(&path("prod/openai/other"))).as_deref(), Some("prod/openai/*"));
            assert_eq!(first(policy.grant_for(&path("prod/github/x/y"))).as_deref(), Some("prod/**"));
            assert_eq!(first(policy.grant_for(&path("dev/x"))), None);
            assert_eq!(first(policy.grant_covering(&glob("prod/openai/key"))).as_deref(), Some("prod/*/key"));
            assert_eq!(first(policy.grant_covering(&glob("prod/openai/*"))).as_deref(), Some("prod/openai/*"));
            assert_eq!(first(policy.grant_covering(&glob("prod/*/*"))).as_deref(), Some("prod/**"));
            assert_eq!(first(policy.grant_covering(&glob("**"))), None);
        }
    }

    /// Issue 17 item 9: a broad grant listed before (or after) a narrow one that overlaps it
    /// and disagrees is refused at load, in either order, naming both grants with their lines;
    /// grants that overlap and agree, or that are disjoint, load.
    #[test]
    fn overlapping_grants_that_disagree_are_refused_in_either_order() {
        let head = "[agent]\nname = \"a\"\n\n[egress]\nallow = [\"api.stripe.com\", \"api.openai.com\"]\n";
        let grant = |secrets: &str, rest: &str| {
            format!("\n[[grant]]\nsecrets = \"{secrets}\"\nhosts = [\"api.stripe.com\"]\n{rest}")
        };
        let refused: Vec<(&str, String, String, &str)> = vec![
            ("approval", grant("production/**", ""), grant("production/stripe/*", "approval = true\n"), "approval"),
            (
                "hosts",
                grant("production/**", ""),
                "\n[[grant]]\nsecrets = \"production/stripe/*\"\nhosts = [\"api.stripe.com\", \"api.openai.com\"]\n"
                    .to_owned(),
                "hosts",
            ),
            ("headers", grant("**", ""), grant("production/stripe/key", "headers = [\"x-api-key\"]\n"), "headers"),
            ("query", grant("*/stripe/*", ""), grant("production/*/*", "query = true\n"), "query"),
            (
                "several",
                grant("production/*/key", "approval = true\n"),
                grant("production/stripe/*", "query = true\n"),
                "approval, query",
            ),
        ];
        for (name, a, b, what) in refused {
            for (first, second) in [(&a, &b), (&b, &a)] {
                let text = format!("{head}{first}{second}");
                let err =
                    Policy::parse("research.toml", &text).err().unwrap_or_else(|| panic!("{name}: loaded\n{text}"));
                let line = |grant: &str| {
                    let secrets = grant.lines().find(|l| l.starts_with("secrets")).unwrap();
                    text.lines().position(|l| l == secrets).unwrap() + 1
                };
                let glob = |grant: &str| grant.split('"').nth(1).unwrap().to_owned();
                assert_eq!(err.line, line(second), "{name}: the later grant is the error");
                assert_eq!(
                    err.to_string(),
                    format!(
                        "research.toml:{}: grant '{}' overlaps grant '{}' (line {}) but differs in {what}; \
                         make them agree or make their secrets disjoint",
                        err.line,
                        glob(second),
                        glob(first),
                        line(first),
                    ),
                    "{name}"
                );
            }
        }

        let loaded = [
            (
                "agreeing",
                grant("production/**", "approval = true\n"),
                grant("production/stripe/*", "approval = true\n"),
            ),
            ("disjoint", grant("production/openai/*", ""), grant("production/stripe/*", "approval = true\n")),
            ("one longer", grant("production/*", ""), grant("production/stripe/*", "approval = true\n")),
            (
                "same hosts another way",
                grant("a/**", ""),
                grant("a/b", "").replace("[\"api.stripe.com\"]", "[\"API.Stripe.com\", \"api.stripe.com\"]"),
            ),
        ];
        for (name, a, b) in loaded {
            for (first, second) in [(&a, &b), (&b, &a)] {
                let text = format!("{head}{first}{second}");
                assert!(Policy::parse("research.toml", &text).is_ok(), "{name}: refused\n{text}");
            }
        }
    }

    #[test]
    fn policy_serializes_for_the_api() {
        let json = serde_json::to_value(parse(RESEARCH)).unwrap();
        assert_eq!(json["agent"]["token_ttl_seconds"], 900);
        assert_eq!(json["agent"]["allowed_ips"], serde_json::json!(["127.0.0.1/32", "::1/128"]));
        assert_eq!(json["egress"]["rate"], "600/min");
        assert_eq!(json["egress"]["per_host_rate"]["api.openai.com"], "120/min");
        assert_eq!(json["egress"]["allow"][2], "*.githubusercontent.com");
        assert_eq!(json["grants"][0]["secrets"], "production/openai/*");
        assert_eq!(json["routes"][0]["upstream"]["host"], "api.openai.com");
        assert_eq!(json["injects"][0]["placeholders"][0]["path"], "production/openai/api-key");
    }

    #[test]
    fn policy_set_from_files() {
        let files =
            vec![("payments.toml".to_owned(), PAYMENTS.to_owned()), ("research.toml".to_owned(), RESEARCH.to_owned())];
        let set = PolicySet::from_files(&files).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get("default", "payments-agent").is_some());
        assert!(set.get("other", "payments-agent").is_none());

        let other_tenant = format!("{}\ntenant = \"acme\"\n", "[agent]\nname = \"payments-agent\"");
        let files = [files, vec![("acme.toml".to_owned(), other_tenant)]].concat();
        assert_eq!(PolicySet::from_files(&files).unwrap().len(), 3);

        let copy = ("z-copy.toml".to_owned(), PAYMENTS.to_owned());
        let err = PolicySet::from_files(&[files, vec![copy]].concat()).unwrap_err();
        assert_eq!(err.file, "z-copy.toml");
        assert!(err.message.contains("already defined in payments.toml"), "{err}");
        assert_eq!(err.line, PAYMENTS.lines().position(|l| l.starts_with("name =")).unwrap() + 1);

        let broken = [("ok.toml".to_owned(), RESEARCH.to_owned()), ("bad.toml".to_owned(), "[agent]\n".to_owned())];
        assert_eq!(PolicySet::from_files(&broken).unwrap_err().file, "bad.toml");
        assert!(PolicySet::from_files(&[]).unwrap().is_empty());
    }

    #[test]
    fn policy_set_load_dir() {
        let dir = std::env::temp_dir().join(format!("airlock-policy-test-{}", std::process::id()));
        let missing = PolicySet::load_dir(&dir).unwrap_err();
        assert!(missing.message.contains("cannot read the policy directory"), "{missing}");

        std::fs::create_dir_all(dir.join("sub.toml")).unwrap();
        std::fs::write(dir.join("research.toml"), RESEARCH).unwrap();
        std::fs::write(dir.join("payments.toml"), PAYMENTS).unwrap();
        std::fs::write(dir.join("notes.md"), "not a policy").unwrap();
        std::fs::write(dir.join(".hidden.toml"), "garbage").unwrap();
        let set = PolicySet::load_dir(&dir);
        std::fs::write(dir.join("zz-broken.toml"), "[agent]\nname = 3\n").unwrap();
        let broken = PolicySet::load_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();

        let set = set.unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("default", "research-agent").unwrap().source, "research.toml");
        let broken = broken.unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("zz-broken.toml", 2));
    }
}
