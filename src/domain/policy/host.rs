//! Host patterns: the hosts a policy names (`api.example.com`, `*.example.com`, an IP
//! literal), how they are parsed and normalized, and which hosts each matches or covers.
//! Egress, grants, injects and routes are all checked with these.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
