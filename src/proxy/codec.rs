//! The HTTP/1.1 fast path's parsing, free of I/O: request heads (`parse_request`),
//! response heads with their framing decision (`parse_response`), and the body decoder
//! (`Decoder`: `Content-Length`, chunked, or until close). `h1` does the reading and
//! writing around them. They live apart so that the fuzz targets in `fuzz/` can hold these
//! decisions against hyper's on the same bytes (`fuzzing`).

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
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
pub(super) fn parse_request(
    buf: &mut BytesMut,
    via: &Via,
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
    if !fits || method == "CONNECT" {
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
    let (mut body_len, mut close) = (None, false);
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
        fields.push((name, range(h.value)));
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

// ---- bodies -------------------------------------------------------------------------

pub(super) enum Decoder {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

pub(super) enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    /// After the last chunk: the trailer lines so far, and their bytes with their CRLFs.
    Trailers(usize, usize),
}

pub(super) enum Piece {
    Data(BytesMut),
    NeedMore,
    End,
}

impl Decoder {
    /// The next piece of body in `buf`, consuming framing as it goes.
    pub(super) fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, &'static str> {
        loop {
            match self {
                Decoder::Length(0) => return Ok(Piece::End),
                Decoder::Length(left) | Decoder::Chunked(ChunkState::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Piece::NeedMore);
                    }
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if let Decoder::Chunked(state @ ChunkState::Data(0)) = self {
                        *state = ChunkState::DataEnd;
                    }
                    return Ok(Piece::Data(buf.split_to(n)));
                }
                Decoder::UntilClose => {
                    return Ok(if buf.is_empty() { Piece::NeedMore } else { Piece::Data(buf.split()) });
                }
                Decoder::Chunked(ChunkState::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Piece::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(ChunkState::Size);
                }
                Decoder::Chunked(ChunkState::Size) => {
                    let Some(line) = take_line(buf)? else { return Ok(Piece::NeedMore) };
                    let size = chunk_size(&line)?;
                    *self =
                        Decoder::Chunked(if size == 0 { ChunkState::Trailers(0, 0) } else { ChunkState::Data(size) });
                }
                Decoder::Chunked(ChunkState::Trailers(lines, bytes)) => {
                    let Some(line) = take_line(buf)? else { return Ok(Piece::NeedMore) };
                    // The blank line counts once there are trailers (as hyper counts).
                    *bytes += if line.is_empty() && *lines == 0 { 0 } else { line.len() + 2 };
                    if *bytes >= TRAILERS_UNDER {
                        return Err("trailers over 16 KiB");
                    }
                    if line.is_empty() {
                        *self = Decoder::Length(0);
                        continue;
                    }
                    *lines += 1;
                    if *lines > MAX_TRAILERS {
                        return Err("more than 100 trailers");
                    }
                    if !is_field(&line) {
                        return Err("malformed trailer");
                    }
                }
            }
        }
    }
}

/// The size a chunk-size line gives: hex digits, then (as hyper reads it) spaces or tabs,
/// then `;` and extensions, which are ignored (RFC 9112 §7.1.1) but may not hold a CR.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err("malformed chunk size");
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |size, &b| size.checked_mul(16)?.checked_add(u64::from((b as char).to_digit(16)?)))
        .ok_or("chunk size overflows")
}

/// Whether a trailer line is one header field, as hyper checks its trailers: httparse reads
/// it, and `http` takes its name and value.
fn is_field(line: &[u8]) -> bool {
    let mut field = Vec::with_capacity(line.len() + 4);
    field.extend_from_slice(line);
    field.extend_from_slice(b"\r\n\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(&field, &mut headers) {
        Ok(httparse::Status::Complete((_, [h]))) => {
            HeaderName::from_bytes(h.name.as_bytes()).is_ok() && HeaderValue::from_bytes(h.value).is_ok()
        }
        _ => false,
    }
}

/// A CRLF-terminated line off the front of `buf` (without the CRLF), if all there. The
/// length limit holds however the reads split the line.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, &'static str> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_CHUNK_LINE { Err("chunk framing line too long") } else { Ok(None) };
    };
    if end > MAX_CHUNK_LINE {
        return Err("chunk framing line too long");
    }
    if end == 0 || buf[end - 1] != b'\r' {
        return Err("chunk framing line not ended by CRLF");
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &mut BytesMut) -> Option<Head> {
        match parse_request(buf, &Via::Direct, &mut Vec::new(), &mut HeaderMap::new()) {
            Parsed::Complete(head) => Some(head),
            Parsed::Partial | Parsed::Unfit => None,
        }
    }

    #[test]
    fn a_head_is_taken_off_the_front_and_what_follows_it_stays() {
        let first = "POST /r/openai/v1/chat?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Trace: a\tb\r\n\
                     Authorization: Bearer {{secret:production/openai/api-key}}\r\nContent-Length: 4\r\n\r\n";
        let second = "GET /r/openai/v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let mut buf = BytesMut::from(format!("{first}body{second}").as_bytes());

        let head = parse(&mut buf).expect("the first request is complete");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/r/openai/v1/chat?x=1");
        assert_eq!(head.parts.headers["x-trace"], "a\tb");
        assert_eq!(head.parts.headers[header::AUTHORIZATION], "Bearer {{secret:production/openai/api-key}}");
        assert_eq!((head.body_len, head.close), (4, false));
        assert_eq!(&buf[..], format!("body{second}").as_bytes());

        buf.advance(4);
        let head = parse(&mut buf).expect("the second request is complete");
        assert_eq!(head.parts.uri, "/r/openai/v1/models");
        assert_eq!((head.body_len, head.close), (0, true));
        assert!(buf.is_empty());
    }

    #[test]
    fn what_the_fast_path_does_not_take_is_left_whole_for_hyper() {
        for request in [
            "POST /r/a/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /r/a/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET /_airlock/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /r/a/<b> HTTP/1.1\r\nHost: x\r\n\r\n", // httparse takes `<`, `http` does not
        ] {
            let mut buf = BytesMut::from(request.as_bytes());
            assert!(
                matches!(parse_request(&mut buf, &Via::Direct, &mut Vec::new(), &mut HeaderMap::new()), Parsed::Unfit),
                "{request:?}"
            );
            assert_eq!(&buf[..], request.as_bytes(), "{request:?}");
        }
        let many = format!("GET /r/a/ HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        let mut buf = BytesMut::from(many.as_bytes());
        assert!(matches!(parse_request(&mut buf, &Via::Direct, &mut Vec::new(), &mut HeaderMap::new()), Parsed::Unfit));
        assert_eq!(&buf[..], many.as_bytes());

        let mut buf = BytesMut::from(&b"GET /r/a/ HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(
            parse_request(&mut buf, &Via::Direct, &mut Vec::new(), &mut HeaderMap::new()),
            Parsed::Partial
        ));
    }

    #[test]
    fn header_values_are_taken_byte_for_byte() {
        let mut buf = BytesMut::from(&b"GET /r/a/ HTTP/1.1\r\nX-Empty:\r\nX-Latin: caf\xe9\r\nX-Sp:  a b \r\n\r\n"[..]);
        let head = parse(&mut buf).expect("complete");
        assert_eq!(head.parts.headers["x-empty"], "");
        assert_eq!(head.parts.headers["x-latin"].as_bytes(), b"caf\xe9");
        assert_eq!(head.parts.headers["x-sp"], "a b");
    }

    use super::fuzzing::{BodyFraming, ResponseDecision, response_to_get};

    /// The fast path's decision on a whole response, and the same bytes one at a time.
    fn decide(response: &[u8]) -> ResponseDecision {
        let whole = response_to_get([response]);
        assert_eq!(response_to_get(response.chunks(1)), whole, "read byte by byte");
        whole
    }

    fn body(response: &[u8]) -> Result<(BodyFraming, Vec<u8>), String> {
        match decide(response) {
            ResponseDecision::Accepted { framing, body, .. } => Ok((framing, body)),
            ResponseDecision::Refused(why) => Err(why),
        }
    }

    fn chunked(body_and_after: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body_and_after}").into_bytes()
    }

    #[test]
    fn framing_by_status_and_headers() {
        let cases: [(&[u8], BodyFraming, &[u8]); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", BodyFraming::Length(3), b"abc"),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", BodyFraming::UntilClose, b"until the end"),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", BodyFraming::Empty, b""),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", BodyFraming::UntilClose, b"zz"),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
                BodyFraming::Chunked,
                b"a",
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", BodyFraming::Length(2), b"ok"),
        ];
        for (response, framing, want) in cases {
            assert_eq!(body(response), Ok((framing, want.to_vec())), "{:?}", String::from_utf8_lossy(response));
        }
        assert_eq!(
            decide(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            ResponseDecision::Refused("upstream switched protocols without being asked to".into())
        );
        assert!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc").is_err(), "short body");
        assert!(body(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").is_err(), "1.0 with TE");
    }

    #[test]
    fn trailers_are_header_fields_within_hyper_s_limits() {
        // Found by fuzzing (h1_response_framing): trailer lines were not checked at all, so
        // `a` and `0` after the last chunk were taken as trailers; hyper refuses them.
        assert_eq!(body(&chunked("0\r\na\r\n0\r\n\r\n")), Err("malformed trailer".into()));
        assert_eq!(body(&chunked("1\r\nx\r\n0\r\nX-T: 1\r\nX-U:\r\n\r\n")), Ok((BodyFraming::Chunked, b"x".to_vec())));
        for bad in ["X T: 1", ": 1", " X: folded", "X: a\rb", "X: \x01"] {
            assert_eq!(body(&chunked(&format!("0\r\n{bad}\r\n\r\n"))), Err("malformed trailer".into()), "{bad:?}");
        }
        let many = |n: usize| chunked(&format!("0\r\n{}\r\n", "X: 1\r\n".repeat(n)));
        assert!(body(&many(100)).is_ok());
        assert_eq!(body(&many(101)), Err("more than 100 trailers".into()));
        // The section with its CRLFs and blank line stays under 16 KiB.
        let long = |total: usize| {
            let line = format!("X: {}", "v".repeat(4000));
            let last = format!("Y: {}", "v".repeat(total - 4 * (line.len() + 2) - 2 - 2 - 3));
            chunked(&format!("0\r\n{}{last}\r\n\r\n", format!("{line}\r\n").repeat(4)))
        };
        assert!(body(&long(16 * 1024 - 1)).is_ok());
        assert_eq!(body(&long(16 * 1024)), Err("trailers over 16 KiB".into()));
    }

    #[test]
    fn chunk_size_lines_as_hyper_reads_them() {
        for (framing, size) in [
            ("5\r\nhello\r\n0\r\n\r\n", 5),
            ("5 \t;ext=1;b=\"q\"\r\nhello\r\n0\r\n\r\n", 5),
            ("0000000000000000005\r\nhello\r\n0\r\n\r\n", 5), // leading zeros, 19 digits
            ("A\r\n0123456789\r\n0\r\n\r\n", 10),
        ] {
            let (_, got) = body(&chunked(framing)).unwrap_or_else(|e| panic!("{framing:?}: {e}"));
            assert_eq!(got.len(), size, "{framing:?}");
        }
        // Found by fuzzing: a size line led by whitespace (" 0", "\r0;…") was taken.
        for bad in [
            " 5\r\nhello\r\n",
            "\r5\r\nhello\r\n",
            "5 x\r\nhello\r\n",
            "5\x0c\r\nhello\r\n",
            "5;a\rb\r\nhello\r\n",
            "+5\r\nhello\r\n",
            ";\r\n",
        ] {
            assert_eq!(body(&chunked(bad)), Err("malformed chunk size".into()), "{bad:?}");
        }
        assert_eq!(body(&chunked("10000000000000000\r\n")), Err("chunk size overflows".into()));
        assert_eq!(body(&chunked("5\nhello\r\n")), Err("chunk framing line not ended by CRLF".into()));
        assert_eq!(body(&chunked("5\r\nhelloX\r\n")), Err("chunk data not followed by CRLF".into()));
        // The line limit does not depend on where the reads split the line.
        let ext = |n: usize| chunked(&format!("0;{}\r\n\r\n", "e".repeat(n)));
        assert!(body(&ext(MAX_CHUNK_LINE - 3)).is_ok());
        assert_eq!(body(&ext(MAX_CHUNK_LINE - 2)), Err("chunk framing line too long".into()));
    }

    #[test]
    fn transfer_encoding_is_chunked_only_in_visible_ascii() {
        // hyper reads a value with obs-text as not chunked: the body runs to the end.
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xff, chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(body(response), Ok((BodyFraming::UntilClose, b"0\r\n\r\n".to_vec())));
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: \tChunked \r\n\r\n0\r\n\r\n";
        assert_eq!(body(response), Ok((BodyFraming::Chunked, Vec::new())));
    }

    #[test]
    fn a_head_over_the_limit_is_refused_however_it_is_read() {
        let head = |n: usize| format!("HTTP/1.1 200 OK\r\nX: {}\r\nContent-Length: 0\r\n\r\n", "a".repeat(n));
        let fits = head(MAX_HEAD - head(0).len());
        assert!(body(fits.as_bytes()).is_ok());
        let over = head(MAX_HEAD - head(0).len() + 1);
        assert_eq!(response_to_get([over.as_bytes()]), ResponseDecision::Refused("response head over 64 KiB".into()));
        let request = |n: usize| format!("GET /r/a/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(n));
        let over = request(MAX_HEAD - request(0).len() + 1);
        let mut buf = BytesMut::from(over.as_bytes());
        assert!(matches!(parse_request(&mut buf, &Via::Direct, &mut Vec::new(), &mut HeaderMap::new()), Parsed::Unfit));
        assert!(parse(&mut BytesMut::from(request(MAX_HEAD - request(0).len()).as_bytes())).is_some());
    }

    #[test]
    fn the_request_wrapper_reports_what_was_taken() {
        use super::fuzzing::{RequestDecision, request};
        let input = b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
        let RequestDecision::Complete(head) = request(input, true) else { panic!("a tunnelled request") };
        assert_eq!((head.method.as_str(), head.uri.as_str(), head.body_len), ("POST", "/v1/x", 2));
        assert_eq!(head.head_len, input.len() - 2);
        assert_eq!(request(input, false), RequestDecision::Unfit, "not a route or forward request");
    }
}

/// The codec's decisions as plain data, for the fuzz targets in `fuzz/` (`crate::fuzzing`,
/// built with `--cfg fuzzing`) and this crate's tests; not part of the API otherwise.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use super::*;

    /// How the fast path frames the body of a response to a GET.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BodyFraming {
        /// No body (204, 304).
        Empty,
        Length(u64),
        Chunked,
        UntilClose,
    }

    /// What the fast path makes of a whole upstream response to a GET, the connection
    /// closed after its last byte.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ResponseDecision {
        Accepted {
            status: u16,
            /// Interim (1xx) heads passed on before the final one.
            interim: usize,
            framing: BodyFraming,
            /// The body as decoded.
            body: Vec<u8>,
            /// The final head as it goes to the agent, before its framing headers and the
            /// blank line.
            head: Vec<u8>,
        },
        /// Refused, with the reason `h1` gives.
        Refused(String),
    }

    /// Feeds `pieces` (what successive reads return, then end of stream) through the steps
    /// `h1` takes with a response to a GET on a connection with nothing redacted:
    /// `read_head` (heads until a final one; 101 refused), `forward` (204 and 304 have no
    /// body) and `respond` / `stream_chunked` (the body by its framing). The I/O is left
    /// out; the decisions are the codec's own functions.
    pub fn response_to_get<'p>(pieces: impl IntoIterator<Item = &'p [u8]>) -> ResponseDecision {
        let mut pieces = pieces.into_iter();
        let mut buf = BytesMut::new();
        let mut read = |buf: &mut BytesMut| pieces.next().map(|p| buf.extend_from_slice(p)).is_some();
        let mut head = BytesMut::new();
        let refused = |why: &str| ResponseDecision::Refused(why.to_owned());
        let mut interim = 0;
        let resp = loop {
            match parse_response(&buf, &mut head) {
                Ok(Some((len, resp))) => {
                    buf.advance(len);
                    if resp.status == StatusCode::SWITCHING_PROTOCOLS {
                        return refused("upstream switched protocols without being asked to");
                    }
                    if !resp.status.is_informational() {
                        break resp;
                    }
                    interim += 1;
                }
                Ok(None) => {
                    if !read(&mut buf) {
                        return refused("connection closed before a response");
                    }
                }
                Err(message) => return ResponseDecision::Refused(message),
            }
        };
        let framing = match resp.status {
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED => Framing::Empty,
            _ => resp.framing,
        };
        let mut body = Vec::new();
        let mut decoder = match framing {
            Framing::Empty => None,
            Framing::Length(n) => Some(Decoder::Length(n)),
            Framing::Chunked => Some(Decoder::Chunked(ChunkState::Size)),
            Framing::UntilClose => Some(Decoder::UntilClose),
        };
        while let Some(d) = &mut decoder {
            match d.next(&mut buf) {
                Ok(Piece::Data(data)) => body.extend_from_slice(&data),
                Ok(Piece::End) => break,
                Ok(Piece::NeedMore) if read(&mut buf) => {}
                Ok(Piece::NeedMore) if matches!(d, Decoder::UntilClose) => break,
                Ok(Piece::NeedMore) => return refused("unexpected end of file"),
                Err(message) => return refused(message),
            }
        }
        let framing = match framing {
            Framing::Empty => BodyFraming::Empty,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked,
            Framing::UntilClose => BodyFraming::UntilClose,
        };
        ResponseDecision::Accepted { status: resp.status.as_u16(), interim, framing, body, head: head.to_vec() }
    }

    /// A request head the fast path took.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RequestHead {
        pub method: String,
        pub uri: String,
        /// In order, values byte for byte.
        pub headers: Vec<(String, Vec<u8>)>,
        pub body_len: u64,
        pub close: bool,
        /// Bytes the head took off the front of the input.
        pub head_len: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RequestDecision {
        Complete(RequestHead),
        Partial,
        Unfit,
    }

    /// `parse_request` on `input`, straight on the listener or (`tunnel`) inside a CONNECT
    /// tunnel; panics when the bytes it leaves are not the input less the head it took.
    pub fn request(input: &[u8], tunnel: bool) -> RequestDecision {
        let via = if tunnel {
            Via::Mitm { host: "example.com".into(), port: 443, sni: None, tls: true }
        } else {
            Via::Direct
        };
        let mut buf = BytesMut::from(input);
        let decision = match parse_request(&mut buf, &via, &mut Vec::new(), &mut HeaderMap::new()) {
            Parsed::Complete(head) => RequestDecision::Complete(RequestHead {
                method: head.parts.method.to_string(),
                uri: head.parts.uri.to_string(),
                headers: (head.parts.headers.iter())
                    .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                    .collect(),
                body_len: head.body_len,
                close: head.close,
                head_len: input.len() - buf.len(),
            }),
            Parsed::Partial => RequestDecision::Partial,
            Parsed::Unfit => RequestDecision::Unfit,
        };
        let left = match &decision {
            RequestDecision::Complete(head) => &input[head.head_len..],
            _ => input,
        };
        assert_eq!(&buf[..], left, "the bytes after the head are not what the parse left");
        decision
    }
}
