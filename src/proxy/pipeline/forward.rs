//! Forwarding through hyper's pooled client: hop-by-hop headers dropped, the upstream's
//! first byte awaited within its timeout, an upgrade spliced (`websocket`), and a response
//! refused whose coding would hide a value from the scrubbing.

use http::header;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::remove_connection_named;
use crate::proxy::Proxy;
use crate::proxy::body::{Body, BoxError};
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::request::Target;

pub(in crate::proxy) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
];

/// An upgrade request's side of the connection, and a watch on the policy it was let
/// through under (`websocket::splice` ends it when an update would not).
pub(super) struct Upgrading {
    pub agent: hyper::upgrade::OnUpgrade,
    pub watch: crate::proxy::central::PolicyWatch,
}

/// `Upgrade`, and `upgrade` as a token of `Connection` (not as part of another token).
pub(super) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| has_token(v.as_bytes(), "upgrade"))
}

/// Whether a comma-separated header value lists `token` (any case).
pub(in crate::proxy) fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

pub(super) async fn forward(
    proxy: &Proxy,
    mut head: Parts,
    body: Body,
    upgrading: Option<Upgrading>,
    target: &Target,
    scanned: bool,
) -> Result<Response<Body>, ProxyError> {
    let upgrade = is_upgrade(&head.headers);
    let is_head = head.method == http::Method::HEAD;
    // What an upgraded stream is masked of: every value its host was sent (the request's own
    // among them, noted in `prepare`).
    let masks = if upgrade { proxy.echoes.masks(&target.host) } else { None };
    if upgrade && masks.is_some() {
        // The upgraded stream is scrubbed frame by frame (`websocket`): only WebSocket, and
        // without compression, which would hide a value from the scrubbing.
        let websocket =
            head.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if !websocket {
            return Err(ProxyError::new(
                ErrorCode::PlacementNotAllowed,
                "an upgrade that carries values, or goes to a host that was sent values, can only be to WebSocket: \
                 the proxy cannot scrub other upgraded protocols",
            ));
        }
        head.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    for name in HOP_BY_HOP {
        if !(upgrade && name == "connection") {
            head.headers.remove(name);
        }
    }
    if !upgrade {
        head.headers.remove(header::UPGRADE);
    }
    head.headers.remove(header::HOST);
    head.uri = target.uri_for(&head.uri)?;
    head.version = http::Version::HTTP_11;
    let limit = proxy.timeouts.upstream_first_byte;
    let sent = proxy.upstreams.request(Request::from_parts(head, body));
    let mut resp = tokio::time::timeout(limit, sent)
        .await
        .map_err(|_| ProxyError::upstream_timeout(&target.host, limit))?
        .map_err(|e| ProxyError::upstream(format!("{}: {}", target.host, describe(&e))).with_source(e))?;
    if scanned && has_body(resp.status(), is_head) && resp.headers().iter().any(|(n, v)| hides_values(n, v)) {
        return Err(unscannable());
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(Upgrading { agent, watch }) = upgrading
    {
        let host = target.host.clone();
        let until_revoked = watch.until_disallowed(move |p| p.host_allowed(&host));
        let upstream = hyper::upgrade::on(&mut resp);
        crate::proxy::websocket::splice(agent, upstream, masks, until_revoked);
    }
    let (mut parts, body) = resp.into_parts();
    remove_connection_named(&mut parts.headers);
    for name in HOP_BY_HOP {
        if !(upgrade && name == "connection") {
            parts.headers.remove(name);
        }
    }
    Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
}

/// Whether a response can carry a body.
pub(in crate::proxy) fn has_body(status: StatusCode, is_head: bool) -> bool {
    !(is_head || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
}

/// Whether a response header declares a coding the scrubber cannot see through: a content
/// coding but `identity` (the upstream ignored `Accept-Encoding: identity`), a transfer
/// coding but `chunked`.
pub(in crate::proxy) fn hides_values(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    let allowed: &[u8] = if name.eq_ignore_ascii_case(b"content-encoding") {
        b"identity"
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        b"chunked"
    } else {
        return false;
    };
    value
        .as_ref()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(allowed))
}

/// The refusal of a response `hides_values` is true of. The coding's name is not repeated:
/// it is the upstream's text, which may hold anything.
pub(in crate::proxy) fn unscannable() -> ProxyError {
    ProxyError::new(
        ErrorCode::UnscannableResponse,
        "the upstream, which has been sent secret values, answered with a compressed or otherwise coded body \
         (Content-Encoding other than identity, or Transfer-Encoding other than chunked), which the proxy cannot \
         scrub for them; it had asked for Accept-Encoding: identity",
    )
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
