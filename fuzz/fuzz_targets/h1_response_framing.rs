//! Differential: the bytes as an upstream's whole response to a GET (the connection closed
//! after the last byte), read by the fast path's codec and by hyper's HTTP/1 client.
//!
//! Our decision must be hyper's: the same status and the same body bytes, with a framing
//! hyper agrees with (a length it gives as the body's exact size, or none), and the same
//! decision wherever the reads split the bytes. We never accept what hyper refuses. We may
//! refuse what hyper accepts only for these deliberate, stricter choices (each checked
//! against the bytes below, in `deliberate`):
//!
//! 1. 101 Switching Protocols to a request that asked for no upgrade (hyper hands the
//!    connection over as upgraded).
//! 2. `Content-Length` other than one decimal number of 1 to 18 digits, or repeated with
//!    different values, on any head: hyper takes comma lists (`5, 5`) and longer numbers,
//!    and ignores the header on 1xx, 204 and 304 heads and next to `Transfer-Encoding`.
//! 3. `Transfer-Encoding` in an HTTP/1.0 head, whatever its status (hyper refuses it too,
//!    except on 1xx, 204 and 304 heads, which it reads no further).
//! 4. A head over 64 KiB (hyper's client takes up to its buffer limit).
//! 5. A chunk-size or trailer line over 4 KiB (hyper: 16 KiB of extensions per body).
//! 6. A bare LF inside a trailer line (hyper reads trailer lines up to CR, so it keeps a LF
//!    in the line and hands the trailers to httparse, which takes a bare LF as a line end).
//!
//! Known difference the other way, not reachable at the default input size: hyper refuses a
//! body whose chunk extensions add up to 16 KiB or more; we take any number of chunk lines
//! of up to 4 KiB each.
#![no_main]

use std::time::Duration;

use airlock::fuzzing::{BodyFraming, ResponseDecision, response_to_get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_HEAD: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let ours = response_to_get([data]);
    // The same bytes as reads would bring them, in pieces of 1 to 16 bytes.
    let step = 1 + data.iter().fold(0usize, |a, &b| a.wrapping_mul(31).wrapping_add(b as usize)) % 16;
    let in_pieces = response_to_get(data.chunks(step));
    assert_eq!(ours, in_pieces, "the decision depends on how reads split the bytes (pieces of {step})");

    let theirs = hyper_get(data);
    match (&ours, &theirs) {
        (ResponseDecision::Accepted { status, framing, body, head, .. }, Ok(h)) => {
            assert_eq!(*status, h.status, "status");
            assert!(*body == h.body, "body: ours {:?}, hyper's {:?}", Bytes::from(body.clone()), h.body);
            match framing {
                BodyFraming::Empty => assert_eq!(h.exact, Some(0), "framing: ours empty"),
                BodyFraming::Length(n) => assert_eq!(h.exact, Some(*n), "framing: ours Length({n})"),
                BodyFraming::Chunked | BodyFraming::UntilClose => {
                    assert_eq!(h.exact, None, "framing: ours {framing:?}, hyper's exact size")
                }
            }
            check_head(head, h);
        }
        (ResponseDecision::Accepted { .. }, Err(e)) => panic!("we accept what hyper refuses ({e}): {ours:?}"),
        (ResponseDecision::Refused(why), Ok(h)) => {
            assert!(deliberate(why, data, h), "we refuse ({why}) what hyper accepts: {h:?}")
        }
        (ResponseDecision::Refused(_), Err(_)) => {}
    }
});

#[derive(Debug)]
struct HyperResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// The body's exact size as hyper announces it before reading it.
    exact: Option<u64>,
    body: Bytes,
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
}

/// hyper's HTTP/1 client sends a GET, reads `data` as the answer, then end of stream.
fn hyper_get(data: &[u8]) -> Result<HyperResponse, String> {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let run = async {
                let (client, mut server) = tokio::io::duplex(data.len() + 64 * 1024);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(client)).await.map_err(|e| e.to_string())?;
                let request = http::Request::get("/")
                    .header("host", "example.com")
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                // The answer goes out once the request is in: bytes before it would be a
                // different case (hyper refuses data on an idle connection).
                let upstream = async move {
                    let mut seen = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match server.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = server.write_all(data).await;
                    let _ = server.shutdown().await;
                    server
                };
                let exchange = async {
                    let resp = sender.send_request(request).await.map_err(|e| e.to_string())?;
                    let status = resp.status().as_u16();
                    let headers =
                        (resp.headers().iter()).map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
                    let exact = resp.body().size_hint().exact();
                    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    Ok::<_, String>(HyperResponse { status, headers, exact, body })
                };
                let (_, _server, answer) = tokio::join!(conn, upstream, exchange);
                answer
            };
            tokio::time::timeout(Duration::from_secs(10), run).await.expect("hyper took more than 10 s")
        })
    })
}

/// The head we pass on is one HTTP/1.1 head with the same status, without framing or
/// connection headers, and each header name in it has the values hyper read for that
/// name, in hyper's order (a header map keeps the values of one name together).
fn check_head(head: &[u8], h: &HyperResponse) {
    let mut whole = head.to_vec();
    whole.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed.parse(&whole);
    assert!(matches!(status, Ok(httparse::Status::Complete(n)) if n == whole.len()), "our head: {status:?}");
    assert_eq!(parsed.code, Some(h.status));
    let ours: Vec<(String, &[u8])> = parsed.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value)).collect();
    for (name, _) in &ours {
        assert!(!["content-length", "transfer-encoding", "connection"].contains(&name.as_str()), "we pass on {name}");
        let values = |all: &mut dyn Iterator<Item = (&str, &[u8])>| -> Vec<Vec<u8>> {
            all.filter(|(n, _)| n == name).map(|(_, v)| v.to_vec()).collect()
        };
        let our_values = values(&mut ours.iter().map(|(n, v)| (n.as_str(), *v)));
        let their_values = values(&mut h.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        assert_eq!(our_values, their_values, "the values of {name}");
    }
}

/// One head as httparse reads it (our codec and hyper both read heads with httparse).
struct Head {
    len: usize,
    code: u16,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
}

fn heads(data: &[u8]) -> Vec<Head> {
    let mut heads = Vec::new();
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = r.parse(&data[at..]) else { return heads };
        let head = Head {
            len,
            code: r.code.unwrap_or(0),
            http10: r.version == Some(0),
            headers: r.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect(),
        };
        at += len;
        let interim = (100..200).contains(&head.code) && head.code != 101;
        heads.push(head);
        if !interim {
            return heads;
        }
    }
}

/// Whether our refusal (`why`) of bytes hyper accepted is one of the deliberate choices
/// listed at the top, as the bytes show.
fn deliberate(why: &str, data: &[u8], h: &HyperResponse) -> bool {
    let heads = heads(data);
    let cl_bad = |head: &Head| {
        let values: Vec<&Vec<u8>> =
            head.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v).collect();
        values.iter().any(|v| v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit))
            || values.windows(2).any(|w| w[0] != w[1])
    };
    let te_in_10 = |head: &Head| head.http10 && head.headers.iter().any(|(n, _)| n == "transfer-encoding");
    // Where the bodies start: after the last head.
    let body_at = heads.iter().map(|h| h.len).sum::<usize>();
    let lines_after_head = || data[body_at.min(data.len())..].split(|&b| b == b'\n');
    if why == "upstream switched protocols without being asked to" {
        h.status == 101
    } else if why == "invalid Content-Length in the response" {
        heads.iter().any(cl_bad)
    } else if why.starts_with("an HTTP/1.0 response with Transfer-Encoding") {
        heads.iter().any(te_in_10)
    } else if why == "response head over 64 KiB" {
        data.len() > MAX_HEAD
    } else if why == "chunk framing line too long" {
        lines_after_head().any(|l| l.len() > MAX_CHUNK_LINE)
    } else if why == "chunk framing line not ended by CRLF" {
        // A bare LF in the body's framing (hyper keeps one inside a trailer line).
        data[body_at.min(data.len())..].windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n')
    } else {
        false
    }
}
