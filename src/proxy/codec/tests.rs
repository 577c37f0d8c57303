//! The codec's unit tests: request heads as the fast path takes or hands over, and
//! response framing, chunk lines and trailers held against what hyper reads.

use bytes::Buf;

use super::*;

fn parse(buf: &mut BytesMut) -> Option<Head> {
    match parse_request(buf, &Via::Direct, false, None, &mut Vec::new(), &mut HeaderMap::new()) {
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
            matches!(
                parse_request(&mut buf, &Via::Direct, false, None, &mut Vec::new(), &mut HeaderMap::new()),
                Parsed::Unfit
            ),
            "{request:?}"
        );
        assert_eq!(&buf[..], request.as_bytes(), "{request:?}");
    }
    let many = format!("GET /r/a/ HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
    let mut buf = BytesMut::from(many.as_bytes());
    assert!(matches!(
        parse_request(&mut buf, &Via::Direct, false, None, &mut Vec::new(), &mut HeaderMap::new()),
        Parsed::Unfit
    ));
    assert_eq!(&buf[..], many.as_bytes());

    let mut buf = BytesMut::from(&b"GET /r/a/ HTTP/1.1\r\nHost: x\r\n"[..]);
    assert!(matches!(
        parse_request(&mut buf, &Via::Direct, false, None, &mut Vec::new(), &mut HeaderMap::new()),
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
    assert!(matches!(
        parse_request(&mut buf, &Via::Direct, false, None, &mut Vec::new(), &mut HeaderMap::new()),
        Parsed::Unfit
    ));
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
