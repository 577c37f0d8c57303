//! The HTTP/1.1 fast path's parsing, free of I/O: request heads (`parse_request`),
//! response heads with their framing decision (`parse_response`), and the body decoder
//! (`Decoder`: `Content-Length`, chunked, or until close). `h1` does the reading and
//! writing around them. They live apart so that the fuzz targets in `fuzz/` can hold these
//! decisions against hyper's on the same bytes (`fuzzing`).
//!
//! Request and response heads are parsed here; the body decoder is body.rs. The fuzz
//! targets' view is fuzzing.rs, and the unit tests (tests.rs) hold these decisions against
//! what hyper does with the same bytes.

mod body;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
#[cfg(test)]
mod tests;

pub(super) use body::{ChunkState, Decoder, Piece};

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

use super::pipeline::{self, HOP_BY_HOP, has_token};
use super::request::Via;

/// Longest request or response head taken here (hyper answers longer requests with 431).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header lines taken in a head (their slots are left uninitialised: filling 100 of
/// them was a third of the parse).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer line accepted from an upstream.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer lines, and the trailer section's size (lines, CRLFs and the blank line)
/// it must stay under: hyper's limits, so that a body one reads whole the other does too.
const MAX_TRAILERS: usize = 100;
const TRAILERS_UNDER: usize = 16 * 1024;

// ---- requests -----------------------------------------------------------------------

pub(super) struct Head {
    pub(super) parts: http::request::Parts,
    /// `Content-Length` (0 without one: a request without framing headers has no body).
    pub(super) body_len: u64,
    /// The agent asked to close after this exchange.
    pub(super) close: bool,
}

// Lives on the stack for one parse; boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    Complete(Head),
    Partial,
    Unfit,
}

/// Takes a complete request head off the front of `buf`. The head's path and header values
/// are not copied: they are views of the bytes as read (which stay alive, and the buffer
/// unreusable, until the request is done with them). `fields` and `map` are spaces a
/// connection keeps between requests: `fields` is left empty, `map` becomes the head's.
/// `body_fields`: the agent's policy names body fields, so a request with a form or JSON
/// body is hyper's, whose path reads and substitutes such bodies (`pipeline`).
/// `signed`: given the request target as written, whether a sign rule signs the request
/// (`None` when the policy has none): such a request is hyper's, whose path reads the body
/// to hash it for the signature (`credentials::sigv4`).
pub(super) fn parse_request(
    buf: &mut BytesMut,
    via: &Via,
    body_fields: bool,
    signed: Option<&dyn Fn(&str) -> bool>,
    fields: &mut Vec<(HeaderName, Range<usize>)>,
    map: &mut HeaderMap,
) -> Parsed {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        // However the reads split it, a head over the limit is hyper's to answer.
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Unfit,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else { return Parsed::Unfit };
    let fits = match via {
        Via::Direct => {
            path.starts_with("/r/") || path.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        }
        Via::Mitm { .. } => path.starts_with('/'),
    };
    if !fits || method == "CONNECT" || signed.is_some_and(|signed| signed(path)) {
        return Parsed::Unfit;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Unfit };
    // Where a slice httparse returned lies in `buf`.
    let start = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let at = s.as_ptr() as usize - start;
        at..at + s.len()
    };
    let path = range(path.as_bytes());
    let (mut body_len, mut close, mut fields_body) = (None, false, false);
    fields.clear();
    for h in req.headers.iter() {
        // Checked here, while the head can still go to hyper whole: what `HeaderValue` takes.
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Parsed::Unfit };
        if !h.value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
            return Parsed::Unfit;
        }
        if name == header::TRANSFER_ENCODING || name == header::UPGRADE || name == header::EXPECT {
            return Parsed::Unfit;
        }
        if name == header::CONTENT_LENGTH {
            match (body_len, content_length(h.value)) {
                (None, Some(n)) => body_len = Some(n),
                _ => return Parsed::Unfit, // repeated or not a number: hyper's to refuse
            }
        }
        if name == header::CONNECTION {
            close |= has_token(h.value, "close");
        }
        if body_fields && name == header::CONTENT_TYPE {
            fields_body |= may_hold_body_fields(h.value);
        }
        fields.push((name, range(h.value)));
    }
    if fields_body && body_len.unwrap_or(0) > 0 {
        return Parsed::Unfit;
    }
    let raw = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(raw.slice(path)) else { return unfit_after_all(raw, buf) };
    // Room for what the pipeline adds (an injected header, Accept-Encoding) without regrowing.
    let mut map = std::mem::take(map);
    map.clear();
    map.reserve(fields.len() + 4);
    for (name, value) in fields.drain(..) {
        let Ok(value) = HeaderValue::from_maybe_shared(raw.slice(value)) else { return unfit_after_all(raw, buf) };
        map.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = map;
    Parsed::Complete(Head { parts, body_len: body_len.unwrap_or(0), close })
}

/// A head taken off `buf` that `http` refuses after all (the checks above should have
/// caught it): hyper gets it back, whole, and answers it.
fn unfit_after_all(raw: Bytes, buf: &mut BytesMut) -> Parsed {
    let mut whole = BytesMut::with_capacity(raw.len() + buf.len());
    whole.extend_from_slice(&raw);
    whole.extend_from_slice(buf);
    *buf = whole;
    Parsed::Unfit
}

/// A `Content-Type` of a form or JSON (`substitute::BodyKind`), any case, parameters aside.
fn may_hold_body_fields(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") || media.eq_ignore_ascii_case(b"application/json")
}

fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

// ---- responses ----------------------------------------------------------------------

/// A response head read; the status line and headers as they go to the agent (minus
/// framing headers) are in the connection's `head`.
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) framing: Framing,
    /// The upstream did not ask to close, and the framing leaves no doubt where the next
    /// response would start.
    pub(super) keep_alive: bool,
    /// A content or transfer coding the scrubber cannot see through (`pipeline::hides_values`).
    pub(super) coded: bool,
}

#[derive(Clone, Copy)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

pub(super) fn parse_response(buf: &[u8], head: &mut BytesMut) -> Result<Option<(usize, ResponseHead)>, String> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        // The limit holds however the reads split the head.
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Complete(_) | httparse::Status::Partial) => return Err("response head over 64 KiB".into()),
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or("malformed status")?;
    let http10 = resp.version == Some(0);
    let mut keep_alive = !http10;
    let (mut length, mut chunked, mut encoded, mut coded) = (None, false, false, false);
    // What `Connection` names is for this hop only (RFC 9110 §7.6.1): not passed on.
    let connection: Vec<&[u8]> = (resp.headers.iter())
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii))
        .collect();
    head.clear();
    head.reserve(len + 64);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(resp.reason.unwrap_or_else(|| status.canonical_reason().unwrap_or("")).as_bytes());
    head.put_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        coded |= pipeline::hides_values(name, h.value);
        if name.eq_ignore_ascii_case("content-length") {
            match (length, content_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => return Err("invalid Content-Length in the response".into()),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // As hyper reads it: a value with bytes outside visible ASCII is not chunked.
            chunked = h.value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
                && h.value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                keep_alive = false;
            } else if has_token(h.value, "keep-alive") && !http10 {
                keep_alive = true;
            }
        } else if !is_hop_by_hop(name) && !connection.iter().any(|c| c.eq_ignore_ascii_case(name.as_bytes())) {
            put_header(head, name.as_bytes(), h.value);
        }
    }
    if encoded && http10 {
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
        return Err("an HTTP/1.0 response with Transfer-Encoding (faulty framing)".into());
    }
    if encoded && length.is_some() {
        // RFC 9112 §6.3: Transfer-Encoding wins, and the connection is not used again.
        keep_alive = false;
    }
    let framing = match (encoded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) => Framing::UntilClose,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::UntilClose,
    };
    Ok(Some((len, ResponseHead { status, framing, keep_alive, coded })))
}

pub(super) fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("upgrade") || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

pub(super) fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}
