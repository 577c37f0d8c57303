//! Where the agent's traffic may go: the policy's host allowlist, and name resolution done
//! once per host with private addresses refused (unless the operator pinned the host with
//! `--resolve`). The connector dials exactly the addresses checked here, so a DNS answer
//! cannot change between the check and the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ProxyError;

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

/// Checked addresses per host and port, with when they were checked.
type Checked = HashMap<String, HashMap<u16, (Vec<SocketAddr>, Instant)>>;

pub struct Resolver {
    pins: Vec<Pin>,
    checked: Mutex<Checked>,
}

impl Resolver {
    pub fn new(pins: Vec<Pin>) -> Resolver {
        Resolver { pins, checked: Mutex::new(HashMap::new()) }
    }

    fn pinned(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.pins.iter().find(|p| p.host == host).map(|p| SocketAddr::new(p.ip, p.port.unwrap_or(port)))
    }

    /// Whether `host:port` may be dialled: as `resolve`, without handing out the addresses
    /// (a pinned host, or one checked within the TTL, costs a lookup and nothing more).
    pub async fn check(&self, host: &str, port: u16, deny_private: bool) -> Result<(), ProxyError> {
        if self.pinned(host, port).is_some() || self.fresh(host, port, |_| ()).is_some() {
            return Ok(());
        }
        self.resolve(host, port, deny_private).await.map(|_| ())
    }

    /// The addresses to dial for `host:port`, checked against `deny_private`.
    pub async fn resolve(&self, host: &str, port: u16, deny_private: bool) -> Result<Vec<SocketAddr>, ProxyError> {
        if let Some(addr) = self.pinned(host, port) {
            return Ok(vec![addr]);
        }
        if let Some(addrs) = self.fresh(host, port, |addrs| addrs.to_vec()) {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ProxyError::upstream(format!("cannot resolve '{host}': {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(ProxyError::upstream(format!("'{host}' resolves to no address")));
        }
        if deny_private && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(ProxyError::policy(
                "private_address",
                format!(
                    "'{host}' resolves to {}, a private, loopback or link-local address, and the policy denies private networks",
                    bad.ip()
                ),
            ));
        }
        let mut checked = self.checked.lock().expect("resolver lock poisoned");
        checked.entry(host.to_owned()).or_default().insert(port, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }

    /// `f` of the addresses checked for `host:port` within the TTL, if any.
    fn fresh<T>(&self, host: &str, port: u16, f: impl FnOnce(&[SocketAddr]) -> T) -> Option<T> {
        let checked = self.checked.lock().expect("resolver lock poisoned");
        let (addrs, at) = checked.get(host)?.get(&port)?;
        (at.elapsed() < RESOLVE_TTL).then(|| f(addrs))
    }

    /// Addresses already checked for `host:port` (the connector's only source).
    pub fn checked(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        if let Some(addr) = self.pinned(host, port) {
            return Some(vec![addr]);
        }
        let checked = self.checked.lock().expect("resolver lock poisoned");
        checked.get(host)?.get(&port).map(|(addrs, _)| addrs.clone())
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
