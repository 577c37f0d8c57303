//! Where the agent's traffic may go: the policy's host allowlist, and name resolution done
//! once per host with private addresses refused (unless the operator pinned the host with
//! `--resolve`). The connector dials exactly the addresses checked here, so a DNS answer
//! cannot change between the check and the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ErrorCode, ProxyError};

/// How long a checked resolution is reused.
const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// `--resolve HOST=IP[:PORT]`: a host the operator trusts at a fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub host: String,
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::str::FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Pin, String> {
        let bad = || format!("--resolve '{s}': expected HOST=IP or HOST=IP:PORT, like api.openai.com=127.0.0.1:8443");
        let (host, addr) = s.split_once('=').ok_or_else(bad)?;
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad());
        }
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            return Ok(Pin { host, ip: sa.ip(), port: Some(sa.port()) });
        }
        let ip = addr.trim_matches(['[', ']']).parse::<IpAddr>().map_err(|_| bad())?;
        Ok(Pin { host, ip, port: None })
    }
}

/// Checked addresses per host and port.
type Checked = HashMap<String, HashMap<u16, Resolved>>;

struct Resolved {
    addrs: Vec<SocketAddr>,
    at: Instant,
    /// None of `addrs` is private: the answer also holds under a policy that denies private
    /// networks, though it was taken under one that did not.
    public: bool,
}

pub struct Resolver {
    pins: Vec<Pin>,
    checked: Mutex<Checked>,
}

impl Resolver {
    pub fn new(pins: Vec<Pin>) -> Resolver {
        Resolver { pins, checked: Mutex::new(HashMap::new()) }
    }

    /// Whether the operator pinned `host` (`--resolve`): its address is trusted, private or not.
    pub fn is_pinned(&self, host: &str) -> bool {
        self.pins.iter().any(|p| p.host == host)
    }

    fn pinned(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.pins.iter().find(|p| p.host == host).map(|p| SocketAddr::new(p.ip, p.port.unwrap_or(port)))
    }

    /// Whether `host:port` may be dialled: as `resolve`, without handing out the addresses
    /// (a pinned host, or one checked within the TTL, costs a lookup and nothing more).
    /// Returns until when the answer holds, for a caller that keeps it (`None`: for good).
    pub async fn check(&self, host: &str, port: u16, deny_private: bool) -> Result<Option<Instant>, ProxyError> {
        if self.pinned(host, port).is_some() {
            return Ok(None);
        }
        if let Some(at) = self.fresh(host, port, deny_private, |r| r.at) {
            return Ok(Some(at + RESOLVE_TTL));
        }
        self.resolve(host, port, deny_private).await?;
        Ok(Some(Instant::now() + RESOLVE_TTL))
    }

    /// The addresses to dial for `host:port`, checked against `deny_private`.
    pub async fn resolve(&self, host: &str, port: u16, deny_private: bool) -> Result<Vec<SocketAddr>, ProxyError> {
        if let Some(addr) = self.pinned(host, port) {
            return Ok(vec![addr]);
        }
        if let Some(addrs) = self.fresh(host, port, deny_private, |r| r.addrs.clone()) {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ProxyError::upstream(format!("cannot resolve '{host}': {e}")).with_source(e))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(ProxyError::upstream(format!("'{host}' resolves to no address")));
        }
        let private = addrs.iter().find(|a| is_private(a.ip()));
        if deny_private && let Some(bad) = private {
            return Err(ProxyError::new(
                ErrorCode::PrivateAddress,
                format!(
                    "'{host}' resolves to {}, a private, loopback or link-local address, and the policy denies private networks",
                    bad.ip()
                ),
            ));
        }
        let mut checked = self.checked.lock().expect("resolver lock poisoned");
        let resolved = Resolved { addrs: addrs.clone(), at: Instant::now(), public: private.is_none() };
        checked.entry(host.to_owned()).or_default().insert(port, resolved);
        Ok(addrs)
    }

    /// `f` of what was checked for `host:port` within the TTL and still passes the check
    /// (an answer with a private address does not, once the policy denies private networks).
    fn fresh<T>(&self, host: &str, port: u16, deny_private: bool, f: impl FnOnce(&Resolved) -> T) -> Option<T> {
        let checked = self.checked.lock().expect("resolver lock poisoned");
        let resolved = checked.get(host)?.get(&port)?;
        (resolved.at.elapsed() < RESOLVE_TTL && (resolved.public || !deny_private)).then(|| f(resolved))
    }

    /// Addresses already checked for `host:port` (the connector's only source).
    pub fn checked(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        if let Some(addr) = self.pinned(host, port) {
            return Some(vec![addr]);
        }
        let checked = self.checked.lock().expect("resolver lock poisoned");
        checked.get(host)?.get(&port).map(|r| r.addrs.clone())
    }
}

/// Loopback, RFC 1918, link-local (cloud metadata at 169.254.169.254 included), CGNAT,
/// unique-local, unspecified and multicast addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_table() {
        for (ip, private) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("8.8.8.8", false),
            ("172.32.0.1", false),
            ("2606:4700::1111", false),
        ] {
            assert_eq!(is_private(ip.parse().unwrap()), private, "{ip}");
        }
    }

    #[tokio::test]
    async fn a_private_answer_taken_under_an_open_policy_is_refused_once_the_policy_denies_private_networks() {
        let resolver = Resolver::new(Vec::new());
        assert!(resolver.check("10.0.0.5", 443, false).await.is_ok());
        let refused = resolver.check("10.0.0.5", 443, true).await.unwrap_err();
        assert_eq!((refused.status(), refused.kind), (http::StatusCode::FORBIDDEN, ErrorCode::PrivateAddress));
        assert_eq!(resolver.resolve("10.0.0.5", 443, true).await.unwrap_err().kind, ErrorCode::PrivateAddress);
        // Still good for a policy that allows them, and a public answer holds under either.
        assert!(resolver.check("10.0.0.5", 443, false).await.is_ok());
        assert!(resolver.check("203.0.113.9", 443, false).await.is_ok());
        assert!(resolver.check("203.0.113.9", 443, true).await.is_ok());
    }

    #[tokio::test]
    async fn a_pinned_host_holds_for_good_and_a_checked_one_for_the_ttl() {
        let resolver = Resolver::new(vec!["api.example=127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(resolver.check("api.example", 443, true).await.unwrap(), None);
        let before = Instant::now();
        let until = resolver.check("203.0.113.9", 443, true).await.unwrap().expect("a checked host expires");
        assert!(until >= before + RESOLVE_TTL && until <= Instant::now() + RESOLVE_TTL);
    }

    #[test]
    fn pins_parse() {
        assert_eq!(
            "API.openai.com=127.0.0.1:8443".parse::<Pin>().unwrap(),
            Pin { host: "api.openai.com".into(), ip: "127.0.0.1".parse().unwrap(), port: Some(8443) }
        );
        assert_eq!("a.example=::1".parse::<Pin>().unwrap().port, None);
        assert!("nohost".parse::<Pin>().is_err());
        assert!("a.example=not-an-ip".parse::<Pin>().is_err());
    }
}
