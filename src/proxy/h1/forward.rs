//! The request side of the fast path's exchange: the request head is written for the
//! upstream (hop-by-hop headers dropped, `host` set) with as much of the body as has
//! arrived, in one buffer that is wiped once sent (it carries injected values); the rest of
//! the body is copied after it. The agent connection's kept upstream connection takes the
//! request when it is still clean and open; a stale one gets the request again once, on a
//! new connection, when that is safe. Then the response is read and passed on (respond.rs).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use http::header;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use super::respond::{read_response_head, respond, scrub_head};
use super::{Carryover, ExchangeError, KEEP_AT_MOST, Proxy, READ_CHUNK, UpstreamConn, Watch, read_into};
use crate::proxy::codec::{Framing, put_header};
use crate::proxy::error::ProxyError;
use crate::proxy::pipeline::{self, HOP_BY_HOP, Outbound, RequestRecord};
use crate::proxy::redact::Redactor;
use crate::proxy::request::{CarriedValue, Target};
use crate::proxy::upstream::{Alpn, Stream};

/// A connection's request buffer while one request is in it: zeroed and emptied when
/// dropped (an outbound request carries injected values).
struct RequestBuffer<'k>(&'k mut BytesMut);

impl<'k> RequestBuffer<'k> {
    /// Makes room for `len` bytes up front: a buffer that grew would leave its old
    /// allocation, with what was written so far, behind unwiped.
    fn with_room(buf: &'k mut BytesMut, len: usize) -> RequestBuffer<'k> {
        buf.clear();
        buf.reserve(len);
        RequestBuffer(buf)
    }
}

impl Drop for RequestBuffer<'_> {
    fn drop(&mut self) {
        self.0[..].zeroize();
        self.0.clear();
        if self.0.capacity() > KEEP_AT_MOST {
            *self.0 = BytesMut::new();
        }
    }
}

type Forwarded = (Target, Arc<[CarriedValue]>, StatusCode);

pub(super) async fn forward<IO>(
    proxy: &Arc<Proxy>,
    io: &mut IO,
    buf: &mut BytesMut,
    kept: &mut Carryover,
    prepared: Outbound,
    (body_len, agent_close): (u64, bool),
    (seen, started): (&RequestRecord, Instant),
) -> Result<Forwarded, ExchangeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Outbound { head, target, used, scrub, .. } = prepared;
    // A refusal once the values went out: its message is scrubbed (it may quote the
    // upstream) and the use is recorded, whatever became of the response.
    let after_sending = |e: ProxyError, unsent: u64| {
        let e = pipeline::scrubbed(e, scrub.as_deref());
        pipeline::record(proxy, seen, &target, &used, e.status(), started);
        ExchangeError::Refused(e, unsent)
    };
    // A connection that broke once the values went out: the use is recorded all the same,
    // with the response's status if one came, else 499 (the client closed the request).
    let broken_after_sending = |status: Option<StatusCode>| {
        let closed = StatusCode::from_u16(499).expect("499 is a valid status code");
        pipeline::record(proxy, seen, &target, &used, status.unwrap_or(closed), started);
        ExchangeError::Broken
    };
    let is_head = head.method == Method::HEAD;
    let idempotent = matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);

    // The request: head, and as much of the body as has arrived, in one buffer. It holds
    // the injected values, so it is wiped once sent (`RequestBuffer`).
    let buffered = buf.len().min(usize::try_from(body_len).unwrap_or(usize::MAX));
    let out = RequestBuffer::with_room(&mut kept.out, request_len(&head, &target) + buffered);
    request_head(out.0, &head, &target);
    out.0.extend_from_slice(&buf.split_to(buffered));
    let mut unsent = body_len - buffered as u64;
    // Written: the header map goes back to the connection, emptied.
    kept.headers = head.headers;
    kept.headers.clear();
    let slot = &mut kept.upstream;

    // A kept connection takes the request only if nothing arrived on it since its last
    // response: bytes read before a request was sent are never taken as its response.
    if slot.as_ref().is_some_and(|u| !u.serves(&target) || !u.buf.is_empty() || !u.stream.idle_and_open()) {
        *slot = None;
    }
    // A kept connection the upstream closed meanwhile fails the first write or read; the
    // request is sent again once, on a new connection, when that is safe: the whole body
    // is in hand, and either the request never left or its method is idempotent.
    let mut retry = slot.is_some() && unsent == 0;
    let redactor = scrub.clone().map(Redactor::with);
    let first_byte = proxy.timeouts.upstream_first_byte;
    let mut wrote = false;
    let resp = loop {
        if slot.is_none() {
            let stream = proxy.dialer.open(&target.host, target.port, target.tls, Alpn::H1).await.map_err(|e| {
                // Its message may quote the upstream (a certificate's names): scrubbed; and
                // on a retry the values already went out once: recorded.
                let e = ProxyError::upstream(format!("{}: {e}", target.host)).with_source(e);
                if wrote {
                    after_sending(e, unsent)
                } else {
                    ExchangeError::Refused(pipeline::scrubbed(e, scrub.as_deref()), unsent)
                }
            })?;
            let key = (target.tls, target.host.clone(), target.port);
            let watch = Watch::new(first_byte);
            *slot = Some(UpstreamConn {
                key,
                stream,
                buf: BytesMut::with_capacity(READ_CHUNK),
                head: BytesMut::new(),
                watch,
            });
        }
        let up = slot.as_mut().expect("an upstream connection was just set");
        let unreachable = |e: std::io::Error| ProxyError::upstream(format!("{}: {e}", target.host)).with_source(e);
        // From here the values may be on their way (a failed write may have sent part).
        wrote = true;
        if let Err(e) = up.stream.write_all(out.0).await {
            *slot = None;
            if std::mem::take(&mut retry) {
                continue;
            }
            return Err(after_sending(unreachable(e), unsent));
        }
        if unsent > 0 {
            copy_body(io, buf, &mut up.stream, unsent).await.map_err(|_| broken_after_sending(None))?;
            unsent = 0;
        }
        match read_response_head(up, redactor.is_some(), first_byte).await {
            Ok(resp) => break resp,
            Err(e) => {
                *slot = None;
                if std::mem::take(&mut retry) && idempotent && e.nothing_received {
                    continue;
                }
                return Err(after_sending(e.error, 0));
            }
        }
    };
    // Interim responses go to the agent as they come (scrubbed), then the final one is read.
    let mut resp = resp;
    while resp.status.is_informational() {
        let up = slot.as_mut().expect("the response came from this connection");
        if let Some(r) = &redactor {
            scrub_head(&mut up.head, r);
        }
        up.head.put_slice(b"\r\n");
        io.write_all(&up.head).await.map_err(|_| broken_after_sending(None))?;
        resp = match read_response_head(up, redactor.is_some(), first_byte).await {
            Ok(resp) => resp,
            Err(e) => {
                *slot = None;
                return Err(after_sending(e.error, 0));
            }
        };
    }
    if redactor.is_some() && resp.coded && pipeline::has_body(resp.status, is_head) {
        *slot = None;
        return Err(after_sending(pipeline::unscannable(), 0));
    }

    let framing = if is_head || resp.status == StatusCode::NO_CONTENT || resp.status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else {
        resp.framing
    };
    let status = resp.status;
    let keep_upstream = resp.keep_alive && !matches!(framing, Framing::UntilClose);
    let up = slot.as_mut().expect("the response came from this connection");
    respond(io, up, resp, framing, redactor, is_head, agent_close)
        .await
        .map_err(|_| broken_after_sending(Some(status)))?;
    // Bytes beyond the response's framing belong to no request: the connection goes with them.
    if !keep_upstream || !up.buf.is_empty() {
        *slot = None;
    }
    Ok((target, used, status))
}

/// At least what `request_head` writes.
fn request_len(head: &http::request::Parts, target: &Target) -> usize {
    let path: usize = target.path_pieces(&head.uri).iter().map(|p| p.len()).sum();
    let headers: usize = head.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    // The fixed text, brackets and port: 30 at most.
    head.method.as_str().len() + path + target.host.len() + headers + 32
}

/// `METHOD path HTTP/1.1`, `host`, then the agent's headers minus hop-by-hop ones.
fn request_head(out: &mut BytesMut, head: &http::request::Parts, target: &Target) {
    out.put_slice(head.method.as_str().as_bytes());
    out.put_u8(b' ');
    for piece in target.path_pieces(&head.uri) {
        out.put_slice(piece.as_bytes());
    }
    out.put_slice(b" HTTP/1.1\r\nhost: ");
    // Writing into a `BytesMut` cannot fail: it grows.
    let _ = write!(out, "{}", target.authority());
    out.put_slice(b"\r\n");
    for (name, value) in &head.headers {
        if name == header::HOST || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Copies the rest of the agent's request body (`left` bytes) upstream.
async fn copy_body<IO>(io: &mut IO, buf: &mut BytesMut, up: &mut Stream, mut left: u64) -> std::io::Result<()>
where
    IO: AsyncRead + Unpin,
{
    while left > 0 {
        if buf.is_empty() && read_into(io, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        up.write_all(&buf.split_to(n)).await?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn the_request_buffer_never_moves_while_it_is_written() {
        let route = Target {
            tls: false,
            host: "fe80::1".into(),
            port: 8080,
            base_path: Some("/v1/deep/base".into()),
            plain_http_allowed: true,
            route: Some("openai".into()),
        };
        let forward = Target { base_path: None, route: None, host: "api.openai.com".into(), ..route.clone() };
        let long = "v".repeat(3000);
        for (target, path, headers) in [
            (&route, "/r/openai/chat/completions?stream=true", 1),
            (&route, "/r/openai", 40),
            (&forward, "http://api.openai.com:8080/v1/models", 7),
        ] {
            let mut parts = http::Request::get(path).body(()).expect("a valid request").into_parts().0;
            for i in 0..headers {
                parts
                    .headers
                    .append(HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(), long.parse().unwrap());
            }
            parts.headers.append(header::CONNECTION, "keep-alive".parse().unwrap());
            let mut kept = BytesMut::new();
            let out = RequestBuffer::with_room(&mut kept, request_len(&parts, target));
            let room = out.0.capacity();
            request_head(out.0, &parts, target);
            assert_eq!(out.0.capacity(), room, "{path}: the buffer grew");
            assert!(out.0.len() <= request_len(&parts, target));
            drop(out);
            assert!(kept.is_empty());
        }
    }
}
