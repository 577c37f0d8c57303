//! The codec's decisions as plain data, for the fuzz targets in `fuzz/` (`crate::fuzzing`,
//! built with `--cfg fuzzing`) and this crate's tests; not part of the API otherwise.

use bytes::Buf;

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
    let via =
        if tunnel { Via::Mitm { host: "example.com".into(), port: 443, sni: None, tls: true } } else { Via::Direct };
    let mut buf = BytesMut::from(input);
    let decision = match parse_request(&mut buf, &via, false, None, &mut Vec::new(), &mut HeaderMap::new()) {
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
