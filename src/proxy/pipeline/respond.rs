//! What a response is scrubbed of, and the scrubbing: the response's reason phrase, headers,
//! body and trailers, and the message of an error met after the values went out.

use std::sync::Arc;

use http::header;
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::proxy::Proxy;
use crate::proxy::body::Body;
use crate::proxy::error::ProxyError;
use crate::proxy::local::ThreadCache;
use crate::proxy::redact::{Patterns, Redactor};
use crate::proxy::request::CarriedValue;
use crate::proxy::substitute::Written;

/// What the response is scrubbed of (`Outbound::scrub`): every form of each value in `used`
/// and what the request wrote byte for byte, or, for a request without values, the values its
/// host was sent; `None` when neither applies.
pub(super) fn scrub_for(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    host: &str,
    used: &Arc<[CarriedValue]>,
    written: &[Written],
) -> Option<Arc<Patterns>> {
    // Noted as sent to the host, then the host's scrub: every value it was ever sent.
    let echoes = || {
        if !used.is_empty() {
            proxy.echoes.sent(host, used);
        }
        proxy.echoes.of(host)
    };
    if used.is_empty() {
        // A host that was sent values may send them back to a request that carried none.
        return cache.echo_scrub(host, used, echoes);
    }
    // Scrubbed of every value the host was ever sent (this request's among them), not
    // only of this request's: the host may hold another, or one from before a rotation.
    match written {
        [] => cache.echo_scrub(host, used, echoes),
        written => {
            proxy.echoes.sent(host, used);
            proxy.echoes.with_exact(host, written)
        }
    }
}

/// An error met after the request left with values: its message and its cause may quote
/// the upstream (a certificate's names, say), so both are scrubbed like the response would
/// have been; the cause is kept as its scrubbed text.
pub(in crate::proxy) fn scrubbed(mut e: ProxyError, scrub: Option<&Patterns>) -> ProxyError {
    let Some(patterns) = scrub else { return e };
    // The cause chain as the logs show it (`ProxyError::cause`), taken before the message
    // changes, then scrubbed like the message.
    let cause = e.cause();
    if let Some(clean) = patterns.redact_whole(e.message.as_bytes()) {
        e.message = String::from_utf8_lossy(&clean).into_owned();
    }
    e.source = cause.map(|chain| match patterns.redact_whole(chain.as_bytes()) {
        Some(clean) => String::from_utf8_lossy(&clean).into_owned().into(),
        None => chain.into(),
    });
    e
}

/// Replaces every injected value in the response by its placeholder: in the reason phrase
/// (hyper keeps the upstream's and writes it back to an HTTP/1.1 agent), header values,
/// the body and its trailers; a header whose name holds a value is dropped.
pub(super) fn redact(resp: Response<Body>, scrub: Option<Arc<Patterns>>) -> Response<Body> {
    let Some(redactor) = scrub.map(Redactor::with) else { return resp };
    let (mut parts, body) = resp.into_parts();
    if let Some(reason) = parts.extensions.remove::<hyper::ext::ReasonPhrase>() {
        match redactor.redact_whole(reason.as_bytes()) {
            None => drop(parts.extensions.insert(reason)),
            Some(clean) => {
                if let Ok(clean) = hyper::ext::ReasonPhrase::try_from(clean) {
                    parts.extensions.insert(clean);
                }
            }
        }
    }
    if redactor.scrub_headers(&mut parts.headers) > 0 {
        tracing::debug!("response headers whose name held an injected value were dropped");
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // No body: what follows is the upgraded stream, scrubbed by `websocket`.
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, crate::proxy::body::Redacted::new(body, redactor).boxed())
}
