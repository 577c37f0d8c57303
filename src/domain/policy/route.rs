//! Routes: base-URL mode, where `/r/<name>/…` on the proxy goes to a route's upstream. This
//! module owns the route name grammar and the upstream URL (`scheme://host[:port][/base]`),
//! parsed and printed.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::host::HostPattern;

/// Base-URL mode: `/r/<name>/…` goes to `upstream`. Made only by the policy's validation
/// (`raw`): the name follows `route_name`, the upstream's host is in `egress.allow`.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub(super) name: String,
    pub(super) upstream: Upstream,
}

impl Route {
    /// 1–32 characters of `[a-z0-9-]`, unique in its policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

/// A route's upstream base: `scheme://host[:port][/base/path]`, made only by `parse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub(super) scheme: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) base_path: String,
}

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

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Lower-case host name or IP literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, else 80 or 443 by scheme.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `""` or a path such as `/v1`, without a trailing slash.
    pub fn base_path(&self) -> &str {
        &self.base_path
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

/// Route names: 1–32 characters of `[a-z0-9-]` (they become URL segments and env names).
pub(super) fn route_name(s: &str) -> Result<String, String> {
    let ok =
        (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(s.to_owned()) } else { Err(format!("'{s}' is not a route name; use 1 to 32 characters of [a-z0-9-]")) }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
