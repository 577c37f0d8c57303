//! The HTTP/1.1 fast path. Most agent traffic is plain keep-alive HTTP/1.1 — a route
//! (`/r/<name>/…`), an `http://` forward request, or a request inside a CONNECT tunnel — and
//! for it the proxy's cost per request is what decides its throughput. This module serves
//! such requests straight off the socket: it parses the head with `httparse`, runs the same
//! decision steps as every request (`pipeline::prepare`: target, admit, egress, host
//! agreement, rate limit, substitute + bind check), writes the request upstream on a
//! connection this agent connection keeps, and passes the response back, redacted, with
//! one write where it fits in one. Nothing is queued between tasks and no header map is
//! built for the response.
//!
//! What it does not take — HTTP/1.0, `Transfer-Encoding` or `Expect` on a request, upgrades,
//! CONNECT, HTTP/2, `/_airlock/`, anything malformed, while the agent's policy names body
//! fields, a request with a form or JSON body (the hyper path reads such bodies), and a request to
//! a host of an `[[oauth2]]` rule (the hyper path sends it again after a 401) or of a `[[sign]]`
//! rule (the hyper path hashes its body for the signature) — it hands over, with the bytes
//! already read, to hyper (`ConnectionEnd::Fallback`), which serves the rest of that connection.
//!
//! The exchange reads top to bottom across the files here: this one keeps the serve loop of
//! an agent connection and one request's exchange (what it keeps between requests, how a
//! refusal is answered); forward.rs writes the request upstream (its head, its body, the
//! kept upstream connection and the retry on a stale one); respond.rs reads the upstream's
//! response head (interim 1xx first) and passes the response to the agent, its head
//! scrubbed and its body redacted, passed through, buffered or re-chunked; watch.rs is the
//! one timer a connection's deadlines share.

mod forward;
mod respond;
mod watch;

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::HeaderMap;
use http::header::HeaderName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Proxy;
pub(super) use super::codec::MAX_HEAD;
use super::codec::{self, Head, Parsed};
use super::error::ProxyError;
use super::io::Rewind;
use super::local::ThreadCache;
use super::meters::{self, CountAs};
use super::pipeline::{self, RequestRecord};
use super::request::{Target, Via};
use super::upstream::Stream;
use forward::forward;
use respond::write_response;
use watch::Watch;

/// Read size, and the spare room kept in a buffer before reading.
const READ_CHUNK: usize = 16 * 1024;
/// A response whose body is to be redacted is buffered whole up to this size (and keeps its
/// `Content-Length`); longer ones are streamed chunked.
const BUFFER_REDACTED: u64 = 64 * 1024;
/// A buffer a connection keeps between requests is let go when it grew past this.
const KEEP_AT_MOST: usize = 64 * 1024;

pub(super) enum ConnectionEnd<IO> {
    /// The connection is finished.
    Done,
    /// Hyper serves the rest of it, starting with these bytes.
    Fallback(Rewind<IO>),
}

/// Serves the agent connection `io` while its requests fit the fast path. Between requests
/// the connection may sit idle for the idle timeout; once a request's first byte is in, its
/// whole head must follow within the header-read timeout.
pub(super) async fn serve<IO>(proxy: &Arc<Proxy>, mut io: IO, via: &Via) -> ConnectionEnd<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut kept = Carryover::default();
    let timeouts = proxy.timeouts;
    let mut watch = Watch::new(timeouts.header_read.min(timeouts.idle));
    loop {
        watch.set(if buf.is_empty() { timeouts.idle } else { timeouts.header_read });
        let (body_fields, credentials) = {
            let cache = ThreadCache::enter(proxy);
            (cache.policy().has_body_fields(), cache.policy().makes_credentials())
        };
        let head = loop {
            match parse_request(&mut buf, via, body_fields, &mut kept) {
                Parsed::Complete(head) if credentials && pipeline::wants_hyper(proxy, &head.parts, via) => {
                    codec::give_back(&head.raw, &mut buf);
                    return ConnectionEnd::Fallback(Rewind::new(buf.freeze(), io));
                }
                Parsed::Complete(head) => break head,
                Parsed::Partial => {}
                Parsed::Unfit => return ConnectionEnd::Fallback(Rewind::new(buf.freeze(), io)),
            }
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                read = read_into(&mut io, &mut buf) => Some(read),
                () = watch.expired() => None,
            };
            match read {
                Some(Ok(0) | Err(_)) => return ConnectionEnd::Done,
                Some(Ok(_)) if idle => watch.set(timeouts.header_read),
                Some(Ok(_)) => {}
                None => {
                    let waited = if idle { "idle" } else { "header read" };
                    tracing::debug!(timeout = waited, "agent connection closed: it sent nothing in time");
                    let _ = io.shutdown().await;
                    return ConnectionEnd::Done;
                }
            }
        };
        if !exchange(proxy, &mut io, &mut buf, &mut kept, via, head).await {
            let _ = io.shutdown().await;
            return ConnectionEnd::Done;
        }
    }
}

/// What an agent connection keeps from one request to the next: its upstream connection,
/// and (so that a request in the steady state allocates little) the spaces a head is parsed
/// into and a request is written into, emptied after each use.
#[derive(Default)]
struct Carryover {
    upstream: Option<UpstreamConn>,
    /// The header names of the head being parsed, with where their values are in it.
    fields: Vec<(HeaderName, Range<usize>)>,
    /// The last request's header map, emptied.
    headers: HeaderMap,
    /// The request as it goes upstream: zeroed after each send (it holds injected values).
    out: BytesMut,
}

/// Takes a complete request head off the front of `buf` (`codec::parse_request`), in the
/// spaces the connection keeps.
fn parse_request(buf: &mut BytesMut, via: &Via, body_fields: bool, kept: &mut Carryover) -> Parsed {
    codec::parse_request(buf, via, body_fields, &mut kept.fields, &mut kept.headers)
}

// ---- one exchange -------------------------------------------------------------------

/// One request and its response. Returns whether the agent connection stays open.
async fn exchange<IO>(
    proxy: &Arc<Proxy>,
    io: &mut IO,
    buf: &mut BytesMut,
    kept: &mut Carryover,
    via: &Via,
    head: Head,
) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let seen = RequestRecord::new(head.parts.method.clone(), head.parts.uri.clone());
    let (body_len, close) = (head.body_len, head.close);
    let outcome = match pipeline::prepare(proxy, head.parts, via, started).await {
        Ok(prepared) => forward(proxy, io, buf, kept, prepared, (body_len, close), (&seen, started)).await,
        Err(e) => Err(ExchangeError::Refused(e, body_len)),
    };
    let (keep, counted) = match outcome {
        Ok((target, used, status)) => (!close, pipeline::record(proxy, &seen, &target, &used, status, started)),
        Err(ExchangeError::Refused(e, unsent_body)) => {
            // The agent's body, if any, was not read: closing is the only way past it.
            let close = close || unsent_body > 0;
            let resp = pipeline::refusal_response(proxy, &seen, via, e, started);
            (write_response(io, resp, close).await.is_ok() && !close, CountAs::Elsewhere)
        }
        Err(ExchangeError::Broken) => (false, CountAs::Elsewhere),
    };
    meters::finished(proxy, started, counted);
    keep
}

enum ExchangeError {
    /// Refused before any byte of a final response reached the agent; the number is how much
    /// of the agent's request body is still unread.
    Refused(ProxyError, u64),
    /// A connection broke after the response started (or while reading the agent's body).
    Broken,
}

/// The upstream connection an agent connection keeps between its requests.
struct UpstreamConn {
    /// TLS, host and port it was opened for.
    key: (bool, String, u16),
    stream: Stream,
    buf: BytesMut,
    /// The response head as it goes to the agent, rebuilt for each response.
    head: BytesMut,
    /// The first-byte deadline of the response awaited.
    watch: Watch,
}

impl UpstreamConn {
    fn serves(&self, target: &Target) -> bool {
        let (tls, host, port) = &self.key;
        *tls == target.tls && *port == target.port && *host == target.host
    }
}

/// Reads once into the spare room of `buf` (making room first); 0 at end of stream.
async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    r.read_buf(buf).await
}
