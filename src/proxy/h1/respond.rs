//! The response side of the fast path's exchange: the upstream's response head is read
//! (within the first-byte timeout; interim 1xx ones are passed on as they come), scrubbed
//! of any value the request carried (`scrub_head`), and the body goes to the agent as it
//! arrives — passed through with its length, buffered whole and redacted when short, or
//! decoded, redacted and re-chunked (`stream_chunked`). The proxy's own answers (refusals)
//! are written here too (`write_response`).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use http::{Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use super::{BUFFER_REDACTED, KEEP_AT_MOST, UpstreamConn, read_into};
use crate::proxy::body::Body;
use crate::proxy::codec::{ChunkState, Decoder, Framing, Piece, ResponseHead, parse_response, put_header};
use crate::proxy::error::ProxyError;
use crate::proxy::redact::{Patterns, Redactor};
use crate::proxy::upstream::Stream;

pub(super) struct HeadError {
    pub(super) error: ProxyError,
    /// The connection ended before any byte of a response (a kept connection gone stale).
    pub(super) nothing_received: bool,
}

/// Reads one response head (final, or interim 1xx) off `up` within `limit`; with `wipe`
/// (the request carried values, which an upstream may echo) the raw head is zeroed in the
/// read buffer once parsed.
pub(super) async fn read_response_head(
    up: &mut UpstreamConn,
    wipe: bool,
    limit: Duration,
) -> Result<ResponseHead, HeadError> {
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
pub(super) async fn respond<IO>(
    io: &mut IO,
    up: &mut UpstreamConn,
    resp: ResponseHead,
    framing: Framing,
    redactor: Option<Redactor>,
    is_head: bool,
    agent_close: bool,
) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let UpstreamConn { stream, buf, head, .. } = up;
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
pub(super) fn scrub_head(head: &mut BytesMut, patterns: &Patterns) {
    // No value in any letter case anywhere in the head: none as it is either (one scan of
    // the head for the common response instead of two).
    if !patterns.in_name(head) {
        return;
    }
    let mut kept = BytesMut::with_capacity(head.len());
    for (i, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if i == 0 || !patterns.in_name(name) {
            kept.put_slice(line);
        }
    }
    head.zeroize();
    *head = kept;
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
pub(super) async fn write_response<IO>(io: &mut IO, resp: Response<Body>, close: bool) -> std::io::Result<()>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
