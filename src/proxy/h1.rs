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
//! CONNECT, HTTP/2, `/_airlock/`, anything malformed — it hands over, with the bytes
//! already read, to hyper (`Served::Fallback`), which serves the rest of that connection.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use super::Proxy;
use super::body::Body;
pub(super) use super::codec::MAX_HEAD;
use super::codec::{self, ChunkState, Decoder, Framing, Head, Parsed, Piece, ResponseHead, parse_response, put_header};
use super::error::ProxyError;
use super::io::Rewind;
use super::meters::{self, Counted};
use super::pipeline::{self, HOP_BY_HOP, Prepared, Seen};
use super::redact::{Patterns, Redactor};
use super::request::{Target, Used, Via};
use super::upstream::{Alpn, Stream};

/// Read size, and the spare room kept in a buffer before reading.
const READ_CHUNK: usize = 16 * 1024;
/// A response whose body is to be redacted is buffered whole up to this size (and keeps its
/// `Content-Length`); longer ones are streamed chunked.
const BUFFER_REDACTED: u64 = 64 * 1024;
/// A buffer a connection keeps between requests is let go when it grew past this.
const KEEP_AT_MOST: usize = 64 * 1024;

pub(super) enum Served<IO> {
    /// The connection is finished.
    Done,
    /// Hyper serves the rest of it, starting with these bytes.
    Fallback(Rewind<IO>),
}

/// Serves the agent connection `io` while its requests fit the fast path. Between requests
/// the connection may sit idle for the idle timeout; once a request's first byte is in, its
/// whole head must follow within the header-read timeout.
pub(super) async fn serve<IO>(proxy: &Arc<Proxy>, mut io: IO, via: &Via) -> Served<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut kept = Kept::default();
    let timeouts = proxy.timeouts;
    let mut watch = Watch::new(timeouts.header_read.min(timeouts.idle));
    loop {
        watch.set(if buf.is_empty() { timeouts.idle } else { timeouts.header_read });
        let head = loop {
            match parse_request(&mut buf, via, &mut kept) {
                Parsed::Complete(head) => break head,
                Parsed::Partial => {}
                Parsed::Unfit => return Served::Fallback(Rewind::new(buf.freeze(), io)),
            }
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                read = read_into(&mut io, &mut buf) => Some(read),
                () = watch.expired() => None,
            };
            match read {
                Some(Ok(0) | Err(_)) => return Served::Done,
                Some(Ok(_)) if idle => watch.set(timeouts.header_read),
                Some(Ok(_)) => {}
                None => {
                    let waited = if idle { "idle" } else { "header read" };
                    tracing::debug!(timeout = waited, "agent connection closed: it sent nothing in time");
                    let _ = io.shutdown().await;
                    return Served::Done;
                }
            }
        };
        if !exchange(proxy, &mut io, &mut buf, &mut kept, via, head).await {
            let _ = io.shutdown().await;
            return Served::Done;
        }
    }
}

/// What an agent connection keeps from one request to the next: its upstream connection,
/// and (so that a request in the steady state allocates little) the spaces a head is parsed
/// into and a request is written into, emptied after each use.
#[derive(Default)]
struct Kept {
    upstream: Option<Upstream>,
    /// The header names of the head being parsed, with where their values are in it.
    fields: Vec<(HeaderName, Range<usize>)>,
    /// The last request's header map, emptied.
    headers: HeaderMap,
    /// The request as it goes upstream: zeroed after each send (it holds injected values).
    out: BytesMut,
}

/// Takes a complete request head off the front of `buf` (`codec::parse_request`), in the
/// spaces the connection keeps.
fn parse_request(buf: &mut BytesMut, via: &Via, kept: &mut Kept) -> Parsed {
    codec::parse_request(buf, via, &mut kept.fields, &mut kept.headers)
}

// ---- one exchange -------------------------------------------------------------------

/// One request and its response. Returns whether the agent connection stays open.
async fn exchange<IO>(
    proxy: &Arc<Proxy>,
    io: &mut IO,
    buf: &mut BytesMut,
    kept: &mut Kept,
    via: &Via,
    head: Head,
) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let seen = Seen::new(head.parts.method.clone(), head.parts.uri.clone());
    let (body_len, close) = (head.body_len, head.close);
    let outcome = match pipeline::prepare(proxy, head.parts, via, started).await {
        Ok(prepared) => forward(proxy, io, buf, kept, prepared, (body_len, close), (&seen, started)).await,
        Err(e) => Err(Failed::Refused(e, body_len)),
    };
    let (keep, counted) = match outcome {
        Ok((target, used, status)) => (!close, pipeline::record(proxy, &seen, &target, &used, status, started)),
        Err(Failed::Refused(e, unsent_body)) => {
            // The agent's body, if any, was not read: closing is the only way past it.
            let close = close || unsent_body > 0;
            let resp = pipeline::refused(proxy, &seen, via, e, started);
            (write_response(io, resp, close).await.is_ok() && !close, Counted::Elsewhere)
        }
        Err(Failed::Broken) => (false, Counted::Elsewhere),
    };
    meters::finished(proxy, started, counted);
    keep
}

enum Failed {
    /// Refused before any byte of a final response reached the agent; the number is how much
    /// of the agent's request body is still unread.
    Refused(ProxyError, u64),
    /// A connection broke after the response started (or while reading the agent's body).
    Broken,
}

/// The upstream connection an agent connection keeps between its requests.
struct Upstream {
    /// TLS, host and port it was opened for.
    key: (bool, String, u16),
    stream: Stream,
    buf: BytesMut,
    /// The response head as it goes to the agent, rebuilt for each response.
    head: BytesMut,
    /// The first-byte deadline of the response awaited.
    watch: Watch,
}

/// A deadline watched by one timer for the life of a connection. Moving the deadline costs
/// nothing (no timer is registered per request); the timer is re-armed only when it fires
/// before the deadline. Every deadline is set at least `step` ahead and the timer is armed
/// at most `step` ahead, so it never fires after the deadline.
struct Watch {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    step: Duration,
    deadline: tokio::time::Instant,
}

impl Watch {
    fn new(step: Duration) -> Watch {
        let deadline = tokio::time::Instant::now() + step;
        Watch { timer: Box::pin(tokio::time::sleep_until(deadline)), step, deadline }
    }

    /// The deadline is `after` from now (`after` ≥ `step`).
    fn set(&mut self, after: Duration) {
        self.deadline = tokio::time::Instant::now() + after.max(self.step);
    }

    /// Resolves once the deadline has passed. Cancel-safe: dropped, it resumes where it was.
    async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            let now = tokio::time::Instant::now();
            if now >= self.deadline {
                return;
            }
            self.timer.as_mut().reset(self.deadline.min(now + self.step));
        }
    }
}

impl Upstream {
    fn serves(&self, target: &Target) -> bool {
        let (tls, host, port) = &self.key;
        *tls == target.tls && *port == target.port && *host == target.host
    }
}

/// A connection's request buffer while one request is in it: zeroed and emptied when
/// dropped (an outbound request carries injected values).
struct Wiped<'k>(&'k mut BytesMut);

impl<'k> Wiped<'k> {
    /// Makes room for `len` bytes up front: a buffer that grew would leave its old
    /// allocation, with what was written so far, behind unwiped.
    fn with_room(buf: &'k mut BytesMut, len: usize) -> Wiped<'k> {
        buf.clear();
        buf.reserve(len);
        Wiped(buf)
    }
}

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        self.0[..].zeroize();
        self.0.clear();
        if self.0.capacity() > KEEP_AT_MOST {
            *self.0 = BytesMut::new();
        }
    }
}

type Forwarded = (Target, Arc<[Used]>, StatusCode);

async fn forward<IO>(
    proxy: &Arc<Proxy>,
    io: &mut IO,
    buf: &mut BytesMut,
    kept: &mut Kept,
    prepared: Prepared,
    (body_len, agent_close): (u64, bool),
    (seen, started): (&Seen, Instant),
) -> Result<Forwarded, Failed>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Prepared { head, target, used, scrub } = prepared;
    // A refusal once the values went out: its message is scrubbed (it may quote the
    // upstream) and the use is recorded, whatever became of the response.
    let after_sending = |e: ProxyError, unsent: u64| {
        let e = pipeline::scrubbed(e, scrub.as_deref());
        pipeline::record(proxy, seen, &target, &used, e.status, started);
        Failed::Refused(e, unsent)
    };
    // A connection that broke once the values went out: the use is recorded all the same,
    // with the response's status if one came, else 499 (the client closed the request).
    let broken_after_sending = |status: Option<StatusCode>| {
        let closed = StatusCode::from_u16(499).expect("499 is a valid status code");
        pipeline::record(proxy, seen, &target, &used, status.unwrap_or(closed), started);
        Failed::Broken
    };
    let is_head = head.method == Method::HEAD;
    let idempotent = matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);

    // The request: head, and as much of the body as has arrived, in one buffer. It holds
    // the injected values, so it is wiped once sent (`Wiped`).
    let buffered = buf.len().min(usize::try_from(body_len).unwrap_or(usize::MAX));
    let out = Wiped::with_room(&mut kept.out, request_len(&head, &target) + buffered);
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
                let e = ProxyError::upstream(format!("{}: {e}", target.host));
                if wrote {
                    after_sending(e, unsent)
                } else {
                    Failed::Refused(pipeline::scrubbed(e, scrub.as_deref()), unsent)
                }
            })?;
            let key = (target.tls, target.host.clone(), target.port);
            let watch = Watch::new(first_byte);
            *slot =
                Some(Upstream { key, stream, buf: BytesMut::with_capacity(READ_CHUNK), head: BytesMut::new(), watch });
        }
        let up = slot.as_mut().expect("an upstream connection was just set");
        let unreachable = |e: std::io::Error| ProxyError::upstream(format!("{}: {e}", target.host));
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

fn put_content_length(out: &mut BytesMut, n: u64) {
    out.put_slice(b"content-length: ");
    put_decimal(out, n);
    out.put_slice(b"\r\n");
}

/// `n` in decimal.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
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

// ---- the response -------------------------------------------------------------------

struct HeadError {
    error: ProxyError,
    /// The connection ended before any byte of a response (a kept connection gone stale).
    nothing_received: bool,
}

/// Reads one response head (final, or interim 1xx) off `up` within `limit`; with `wipe`
/// (the request carried values, which an upstream may echo) the raw head is zeroed in the
/// read buffer once parsed.
async fn read_response_head(up: &mut Upstream, wipe: bool, limit: Duration) -> Result<ResponseHead, HeadError> {
    up.watch.set(limit);
    let read = tokio::select! {
        biased;
        read = read_head(&mut up.stream, &mut up.buf, &mut up.head, wipe) => Some(read),
        () = up.watch.expired() => None,
    };
    let host = &up.key.1;
    match read {
        Some(read) => read.map_err(|(message, nothing_received)| HeadError {
            error: ProxyError::upstream(format!("{host}: {message}")),
            nothing_received,
        }),
        None => Err(HeadError { error: ProxyError::upstream_timeout(host, limit), nothing_received: false }),
    }
}

/// `read_response_head` without the time limit; an error says what went wrong and whether
/// nothing at all was received.
async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &mut BytesMut,
    wipe: bool,
) -> Result<ResponseHead, (String, bool)> {
    let mut received = false;
    loop {
        match parse_response(buf, head) {
            Ok(Some((len, resp))) => {
                if wipe {
                    buf[..len].zeroize();
                }
                buf.advance(len);
                if resp.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(("upstream switched protocols without being asked to".into(), false));
                }
                return Ok(resp);
            }
            Ok(None) => {}
            Err(message) => return Err((message, false)),
        }
        let nothing_received = |buf: &BytesMut| !received && buf.is_empty();
        match read_into(stream, buf).await {
            Ok(0) => return Err(("connection closed before a response".into(), nothing_received(buf))),
            Ok(_) => received = true,
            Err(e) => return Err((e.to_string(), nothing_received(buf))),
        }
    }
}

/// Sends the response to the agent: headers (redacted), then the body as it arrives —
/// with its own length when it is passed through or buffered whole, chunked otherwise.
async fn respond<IO>(
    io: &mut IO,
    up: &mut Upstream,
    resp: ResponseHead,
    framing: Framing,
    redactor: Option<Redactor>,
    is_head: bool,
    agent_close: bool,
) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let Upstream { stream, buf, head, .. } = up;
    if let Some(r) = &redactor {
        scrub_head(head, r);
    }
    let finish_head = |out: &mut BytesMut, frame: Option<Frame>| {
        match frame {
            Some(Frame::Length(n)) => put_content_length(out, n),
            Some(Frame::Chunked) => put_header(out, b"transfer-encoding", b"chunked"),
            None => {}
        }
        if agent_close {
            out.put_slice(b"connection: close\r\n");
        }
        out.put_slice(b"\r\n");
    };
    let sent = match framing {
        Framing::Empty => {
            // A HEAD response keeps the length the body would have had (unless redacted).
            let length = match (resp.framing, is_head, &redactor) {
                (Framing::Length(n), true, None) => Some(Frame::Length(n)),
                _ => None,
            };
            finish_head(head, length);
            io.write_all(head).await
        }
        Framing::Length(n) if redactor.is_none() => {
            finish_head(head, Some(Frame::Length(n)));
            let ready = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            head.extend_from_slice(&buf[..ready]);
            buf.advance(ready);
            io.write_all(head).await?;
            let mut left = n - ready as u64;
            while left > 0 {
                if read_into(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                io.write_all(&buf[..take]).await?;
                buf.advance(take);
                left -= take as u64;
            }
            Ok(())
        }
        Framing::Length(n) if n <= BUFFER_REDACTED => {
            let n = n as usize;
            while buf.len() < n {
                if read_into(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let r = redactor.as_ref().expect("matched above");
            // The whole body is here: one pass says whether any value is in it.
            let clean = r.redact_whole(&buf[..n]);
            let body = clean.as_deref().unwrap_or(&buf[..n]);
            finish_head(head, Some(Frame::Length(body.len() as u64)));
            head.extend_from_slice(body);
            if clean.is_some() {
                buf[..n].zeroize(); // it held a value
            }
            buf.advance(n);
            io.write_all(head).await
        }
        framing => {
            finish_head(head, Some(Frame::Chunked));
            stream_chunked(io, stream, buf, framing, redactor, head).await
        }
    };
    if head.capacity() > KEEP_AT_MOST {
        *head = BytesMut::new();
    }
    sent
}

/// Scrubs a response head as it goes to the agent (status line and header lines, each
/// ended by CRLF): a header whose name holds a value in any letter case is dropped, every
/// value elsewhere is replaced by its placeholder. The raw head is wiped.
fn scrub_head(head: &mut BytesMut, patterns: &Patterns) {
    if patterns.in_name(head) {
        let mut kept = BytesMut::with_capacity(head.len());
        for (i, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if i == 0 || !patterns.in_name(name) {
                kept.put_slice(line);
            }
        }
        head.zeroize();
        *head = kept;
    }
    if let Some(clean) = patterns.redact_whole(head) {
        head.zeroize();
        head.clear();
        head.extend_from_slice(&clean);
    }
}

/// The framing header a response goes to the agent with.
enum Frame {
    Length(u64),
    Chunked,
}

/// Streams a body the agent gets chunked: decoded from the upstream's framing, redacted,
/// re-chunked. Whatever is at hand is written before waiting for more (SSE stays live).
async fn stream_chunked<IO>(
    io: &mut IO,
    stream: &mut Stream,
    buf: &mut BytesMut,
    framing: Framing,
    mut redactor: Option<Redactor>,
    out: &mut BytesMut,
) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let mut body = match framing {
        Framing::Length(n) => Decoder::Length(n),
        Framing::Chunked => Decoder::Chunked(ChunkState::Size),
        _ => Decoder::UntilClose,
    };
    loop {
        match body.next(buf).map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))? {
            Piece::Data(mut data) => {
                let data = match &mut redactor {
                    Some(r) => {
                        // The raw bytes may hold a value (or part of one): zeroed once redacted.
                        let clean = r.push(&data);
                        data.zeroize();
                        clean
                    }
                    None => data.freeze(),
                };
                put_chunk(out, &data);
            }
            Piece::End => break,
            Piece::NeedMore => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                if read_into(stream, buf).await? == 0 {
                    if matches!(body, Decoder::UntilClose) {
                        break;
                    }
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
    if let Some(r) = &mut redactor {
        put_chunk(out, &r.finish());
    }
    out.put_slice(b"0\r\n\r\n");
    io.write_all(out).await
}

fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len()); // into a `BytesMut`: cannot fail
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// An answer the proxy makes itself (a refusal), written whole.
async fn write_response<IO>(io: &mut IO, resp: Response<Body>, close: bool) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut out = BytesMut::with_capacity(256 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(parts.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        put_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    put_content_length(&mut out, body.len() as u64);
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(&body);
    io.write_all(&out).await
}

/// Reads once into the spare room of `buf` (making room first); 0 at end of stream.
async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    r.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let out = Wiped::with_room(&mut kept, request_len(&parts, target));
            let room = out.0.capacity();
            request_head(out.0, &parts, target);
            assert_eq!(out.0.capacity(), room, "{path}: the buffer grew");
            assert!(out.0.len() <= request_len(&parts, target));
            drop(out);
            assert!(kept.is_empty());
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
