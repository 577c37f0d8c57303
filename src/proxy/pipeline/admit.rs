//! The checks a request meets before anything is substituted: its target (a forward
//! request, a route or a CONNECT tunnel's host), the caller's session key, the egress
//! allowlist and name resolution, host agreement, and the header rules (one `Host`, the
//! headers `Connection` names dropped).

use std::time::Instant;

use http::Uri;
use http::header::{self, HeaderName};
use http::request::Parts;
use zeroize::Zeroizing;

use super::is_upgrade;
use crate::domain::policy::Policy;
use crate::proxy::Proxy;
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::local::ThreadCache;
use crate::proxy::request::{Target, Via};

/// An HTTP/1.1 request names its host in exactly one `Host` header (RFC 9112 §3.2); an
/// HTTP/1.0 one in at most one. HTTP/2 has `:authority` instead.
pub(super) fn one_host(head: &Parts) -> Result<(), ProxyError> {
    if head.version == http::Version::HTTP_2 {
        return Ok(());
    }
    match head.headers.get_all(header::HOST).iter().count() {
        1 => Ok(()),
        0 if head.version < http::Version::HTTP_11 => Ok(()),
        0 => Err(ProxyError::bad_request("an HTTP/1.1 request needs a Host header")),
        _ => Err(ProxyError::bad_request("the request has more than one Host header")),
    }
}

/// Headers the `Connection` header names are for this hop only (RFC 9110 §7.6.1): removed
/// before anything reads them, but `Upgrade` on an upgrade.
pub(super) fn remove_connection_named(headers: &mut http::HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let upgrade = is_upgrade(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE) && name != header::CONNECTION)
        .collect();
    for name in named {
        headers.remove(name);
    }
}

// ---- target -------------------------------------------------------------------------

pub(super) fn target(policy: &Policy, head: &Parts, via: &Via) -> Result<Target, ProxyError> {
    match via {
        Via::Mitm { host, port, tls, .. } => Ok(Target {
            tls: *tls,
            host: host.clone(),
            port: *port,
            base_path: None,
            plain_http_allowed: !tls && plain_http_named(policy, host),
            route: None,
        }),
        // Every HTTP/2 request names a scheme and authority (for an agent talking to the
        // proxy in cleartext HTTP/2, the proxy's own): HTTP/2 agents use routes, or CONNECT.
        Via::Direct if head.uri.scheme().is_some() && head.version != http::Version::HTTP_2 => {
            forward_target(policy, &head.uri)
        }
        Via::Direct if head.uri.path().starts_with("/r/") => route_target(policy, &head.uri),
        Via::Direct => Err(ProxyError::bad_request(
            "this is the Airlock proxy: send proxy requests (HTTP_PROXY / HTTPS_PROXY), or use a route: /r/<route>/<path>",
        )),
    }
}

/// A plain http:// upstream may carry values only when the policy names it so on purpose:
/// an inject, `[[oauth2]]` or `[[sign]]` rule for the host and a route to its http:// address.
fn plain_http_named(policy: &Policy, host: &str) -> bool {
    (policy.injects().iter().any(|i| i.host().matches(host))
        || policy.oauth2_for(host).is_some()
        || policy.sign_for(host).is_some())
        && policy.routes().iter().any(|r| r.upstream().host() == host && !r.upstream().is_tls())
}

fn forward_target(policy: &Policy, uri: &Uri) -> Result<Target, ProxyError> {
    if uri.scheme_str() != Some("http") {
        return Err(ProxyError::bad_request(
            "only http:// goes through the forward proxy; use CONNECT (HTTPS_PROXY) for https",
        ));
    }
    let host = uri.host().ok_or_else(|| ProxyError::bad_request("the request URI names no host"))?;
    let host = host.trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(80);
    let plain_http_allowed = plain_http_named(policy, &host);
    Ok(Target { tls: false, base_path: None, host, port, plain_http_allowed, route: None })
}

fn route_target(policy: &Policy, uri: &Uri) -> Result<Target, ProxyError> {
    let rest = &uri.path()["/r/".len()..];
    let name = rest.split_once('/').map_or(rest, |(name, _)| name);
    let route = policy.routes().iter().find(|r| r.name() == name).ok_or_else(|| {
        let names: Vec<&str> = policy.routes().iter().map(|r| r.name()).collect();
        ProxyError::new(ErrorCode::UnknownRoute, format!("no route '{name}'; this agent's routes: {names:?}"))
    })?;
    let up = route.upstream();
    let tls = up.is_tls();
    Ok(Target {
        tls,
        host: up.host().to_owned(),
        port: up.port(),
        base_path: Some(up.base_path().to_owned()),
        plain_http_allowed: !tls,
        route: Some(route.name().to_owned()),
    })
}

// ---- admit --------------------------------------------------------------------------

/// With a session key, only callers that present it get through. Route mode takes it as
/// the bearer or API key the SDK sends, and drops it so an inject rule can put the real one.
pub(super) fn admit(proxy: &Proxy, head: &mut Parts, via: &Via, target: &Target) -> Result<(), ProxyError> {
    let Some(key) = &proxy.session_key else { return Ok(()) };
    if matches!(via, Via::Mitm { .. }) {
        return Ok(()); // checked on the CONNECT that opened this connection
    }
    if target.route.is_some() {
        for name in [header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
            let presented =
                head.headers.get(&name).and_then(|v| v.to_str().ok()).map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
            if presented.is_some_and(|p| constant_eq(p, key)) {
                head.headers.remove(&name);
                return Ok(());
            }
        }
        return Err(ProxyError::unauthorized("this route needs the session key as its bearer token or API key"));
    }
    proxy_authorized(&head.headers, key)
}

pub fn proxy_authorized(headers: &http::HeaderMap, key: &str) -> Result<(), ProxyError> {
    use base64::Engine as _;
    let presented = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .map(Zeroizing::new);
    let ok = presented
        .as_ref()
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(|creds| creds.split_once(':'))
        .is_some_and(|(_, password)| constant_eq(password, key));
    if ok { Ok(()) } else { Err(ProxyError::unauthorized("the proxy needs the session key (Proxy-Authorization)")) }
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ---- egress -------------------------------------------------------------------------

/// The policy's allowlist, then name resolution with private addresses refused; an upstream
/// that passed both under this thread's policy is not checked again until its resolution
/// expires.
pub(super) async fn egress(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    target: &Target,
    now: Instant,
) -> Result<(), ProxyError> {
    cache.egress(target, now, || egress_check(proxy, cache.policy(), target)).await
}

/// Until when `target` may be reached (`None`: pinned), or why not.
async fn egress_check(proxy: &Proxy, policy: &Policy, target: &Target) -> Result<Option<Instant>, ProxyError> {
    if !policy.host_allowed(&target.host) {
        return Err(ProxyError::egress_denied(&target.host));
    }
    proxy.resolver.check(&target.host, target.port, policy.egress().deny_private_networks).await
}

/// Under CONNECT, the CONNECT authority, the TLS SNI and the request's Host must name the
/// same host; for a forward request the URI and Host must agree.
pub(super) fn agree(head: &Parts, via: &Via, target: &Target) -> Result<(), ProxyError> {
    let mismatch = |what: &str, other: &str| {
        ProxyError::new(
            ErrorCode::HostMismatch,
            format!("{what} '{other}' does not match the target host '{}'", target.host),
        )
    };
    if let Via::Mitm { sni: Some(sni), .. } = via
        && !sni.eq_ignore_ascii_case(&target.host)
    {
        return Err(mismatch("the TLS server name", sni));
    }
    if target.route.is_some() {
        return Ok(());
    }
    let named = head
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| head.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| strip_port(h).to_owned()));
    if let Some(named) = named {
        let named = named.trim_matches(['[', ']']).trim_end_matches('.');
        if !named.eq_ignore_ascii_case(&target.host) {
            return Err(mismatch("the request's host", named));
        }
    }
    if let Some(h) = head.headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let h = strip_port(h).trim_matches(['[', ']']).trim_end_matches('.');
        if !h.eq_ignore_ascii_case(&target.host) {
            return Err(mismatch("the Host header", h));
        }
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host })
}
