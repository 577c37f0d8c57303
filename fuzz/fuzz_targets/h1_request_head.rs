//! Differential: the bytes as what an agent sends on a connection, taken by the fast path's
//! request parser (straight on the listener and inside a CONNECT tunnel) and by hyper's
//! HTTP/1 server, configured as the proxy's fallback is (64 KiB buffer).
//!
//! What the fast path does not take (`Unfit`, `Partial`) goes to hyper whole, so only its
//! `Complete` is held against hyper: hyper must read the same first request — method,
//! target, every header byte for byte in order — and a body of exactly our `Content-Length`
//! starting right after the head we took. A head we take that hyper refuses is a failure.
//! When we leave bytes, they are the input less the head we took, byte for byte (checked
//! inside `request`).
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::fuzzing::{RequestDecision, RequestHead, request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    for tunnel in [false, true] {
        if let RequestDecision::Complete(ours) = request(data, tunnel) {
            compare(data, &ours);
        }
    }
});

fn compare(data: &[u8], ours: &RequestHead) {
    let theirs = hyper_serve(data);
    let Some(theirs) = theirs else { panic!("we take a request hyper refuses: {ours:?}") };
    assert_eq!(ours.method, theirs.method, "method");
    assert_eq!(ours.uri, theirs.uri, "target");
    assert_eq!(ours.headers, theirs.headers, "headers");
    let available = &data[ours.head_len..];
    let want = usize::try_from(ours.body_len).unwrap_or(usize::MAX);
    if available.len() >= want {
        assert_eq!(theirs.body, Ok(available[..want].to_vec()), "body of {} bytes", ours.body_len);
    } else {
        // The connection ends inside the body: hyper has read what there is, then failed.
        match &theirs.body {
            Err(read) => assert!(available.starts_with(read), "body: hyper read {read:?}"),
            Ok(body) => panic!("hyper read a whole body of {} bytes; ours is {}", body.len(), ours.body_len),
        }
    }
}

#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The whole body, or what was read of it before an error.
    body: Result<Vec<u8>, Vec<u8>>,
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
}

/// hyper's HTTP/1 server reads `data`, then end of stream; the first request it hands its
/// service, with its body.
fn hyper_serve(data: &[u8]) -> Option<Seen> {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
            let record = seen.clone();
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let record = record.clone();
                async move {
                    if record.lock().unwrap().is_none() {
                        let (parts, mut body) = req.into_parts();
                        let mut read = Vec::new();
                        let body = loop {
                            match body.frame().await {
                                None => break Ok(read),
                                Some(Ok(frame)) => read.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                                Some(Err(_)) => break Err(read),
                            }
                        };
                        *record.lock().unwrap() = Some(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: (parts.headers.iter())
                                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                                .collect(),
                            body,
                        });
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                }
            });
            let (agent, server) = tokio::io::duplex(data.len() + 64 * 1024);
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .half_close(true)
                .serve_connection(TokioIo::new(server), service);
            let agent = async move {
                let mut agent = agent;
                let _ = agent.write_all(data).await;
                let _ = agent.shutdown().await;
                // Read what hyper answers, so that its writes never wait on a full pipe.
                let mut sink = Vec::new();
                let _ = agent.read_to_end(&mut sink).await;
            };
            // hyper's verdict on the connection is not needed: what its service saw is.
            let run = async {
                let (_verdict, ()) = tokio::join!(conn, agent);
            };
            tokio::time::timeout(Duration::from_secs(10), run).await.expect("hyper took more than 10 s");
            seen.lock().unwrap().take()
        })
    })
}
