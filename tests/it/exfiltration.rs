//! A value never comes back: a hostile upstream written at the byte level answers exactly
//! what each case needs (the value in a reason phrase, a header name, a trailer, an echo of
//! what the proxy wrote, bytes left over for the next request, a coded body), and an agent
//! that sends exactly the bytes it wants reads everything the proxy gives back, on every
//! path a request can take: the HTTP/1.1 fast path, the hyper path (a chunked request body,
//! HTTP/1.0), HTTP/2 to the agent, route mode and inside a CONNECT tunnel.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::raw::{Agent, Hostile, Received, Reply, contains};
use crate::sidecar::{Sidecar, access_events, uses};
use crate::support::{MARKER, secret_value, until};

const BEARER: &str = "Authorization: Bearer {{secret:production/openai/api-key}}";

/// How the agent's request reaches the proxy.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Route mode, plain keep-alive HTTP/1.1: the fast path.
    FastRoute,
    /// Route mode with a chunked request body: the hyper path.
    HyperRoute,
    /// Route mode, HTTP/1.0: the hyper path.
    Http10Route,
    /// Route mode over cleartext HTTP/2 (prior knowledge).
    H2Route,
    /// HTTPS through a CONNECT tunnel, HTTP/1.1 inside (the fast path in the tunnel).
    Connect,
    /// HTTPS through a CONNECT tunnel, HTTP/2 inside.
    ConnectH2,
}

const EVERY_WAY: [Way; 6] =
    [Way::FastRoute, Way::HyperRoute, Way::Http10Route, Way::H2Route, Way::Connect, Way::ConnectH2];

/// Everything the agent received (status line, headers, body, trailers, and any error text)
/// for `GET …/v1/echo{query}` with the extra header lines `headers`, sent the `way` given.
fn agent_sees(sc: &Sidecar, way: Way, headers: &[&str], query: &str) -> String {
    let raw = |method: &str, version: &str, framing: &str, body: &str| {
        let mut agent = Agent::connect(&sc.proxy_addr);
        let mut head = format!("{method} /r/openai/echo{query} {version}\r\nHost: airlock\r\n{framing}");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        agent.send(format!("{head}\r\n{body}").as_bytes());
        let got = if version == "HTTP/1.0" { agent.read_to_end() } else { agent.read_response() };
        String::from_utf8_lossy(&got).into_owned()
    };
    let header_args: Vec<String> = headers.iter().flat_map(|h| ["-H".to_owned(), h.to_string()]).collect();
    let curl = |args: &[&str], url: String| -> String {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-g", "--max-time", "20", "--cacert"])
            .arg(sc.ca_path())
            .args(args)
            .args(&header_args)
            .arg(url)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let proxy = format!("http://{}", sc.proxy_addr);
    match way {
        Way::FastRoute => raw("GET", "HTTP/1.1", "", ""),
        Way::HyperRoute => raw("POST", "HTTP/1.1", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        Way::Http10Route => raw("GET", "HTTP/1.0", "", ""),
        Way::H2Route => curl(&["--http2-prior-knowledge"], format!("{proxy}/r/openai/echo{query}")),
        Way::Connect => curl(&["--http1.1", "--proxy", &proxy], format!("https://api.openai.com/v1/echo{query}")),
        Way::ConnectH2 => curl(&["--http2", "--proxy", &proxy], format!("https://api.openai.com/v1/echo{query}")),
    }
}

/// A response with `head` lines and `body`, framed by `Content-Length`.
fn response(status: &str, head: &[String], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for line in head {
        out.push_str(line);
        out.push_str("\r\n");
    }
    format!("{out}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn assert_no_value(seen: &str, value: &str, way: Way) {
    assert!(!seen.contains(value), "{way:?}: the agent received the value: {seen}");
    assert!(
        !seen.to_ascii_lowercase().contains(&value.to_ascii_lowercase()),
        "{way:?}: the agent received the value in another case: {seen}"
    );
}

#[test]
fn a_reason_phrase_never_carries_a_value_back() {
    let value = secret_value("openai");
    let phrase = format!("401 Bad key {value}");
    let hostile = Hostile::start(move |_| Reply::Send(response(&phrase, &[], "no")));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("401"), "{way:?}: {seen}");
        assert_no_value(&seen, &value, way);
    }
    assert!(hostile.received().iter().all(|r| contains(&r.bytes, &value)), "every way injected the value");
}

#[test]
fn a_header_name_never_carries_a_value_back() {
    let value = secret_value("openai");
    let lines =
        vec![format!("X-{value}: 1"), format!("X-Upper-{}: 2", value.to_ascii_uppercase()), "X-Ok: yes".to_owned()];
    let hostile = Hostile::start(move |_| Reply::Send(response("200 OK", &lines, "ok")));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.to_ascii_lowercase().contains("x-ok: yes"), "{way:?}: the rest of the response arrives: {seen}");
        assert_no_value(&seen, &value, way);
    }
}

#[test]
fn a_trailer_never_carries_a_value_back() {
    let value = secret_value("openai");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Leak, X-{value}\r\n\r\n2\r\nok\r\n0\r\nX-Leak: {value}\r\nX-{value}: 1\r\n\r\n"
    );
    let hostile = Hostile::start(move |_| Reply::Send(answer.clone().into_bytes()));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &[BEARER, "TE: trailers"], "");
        assert!(seen.contains("ok"), "{way:?}: {seen}");
        assert_no_value(&seen, &value, way);
    }
}

/// A value full of what encoders change: a quote and a slash (JSON), a space, `&`, `=`, `+`
/// and `?` (percent-encoding), and enough length that base64 fragments are long.
fn special_value() -> String {
    format!("sk-{MARKER}-mu\"lti/+ &=?x-0123456789")
}

#[test]
fn an_echo_of_what_the_proxy_wrote_never_comes_back_in_any_form() {
    let value = special_value();
    let token = STANDARD.encode(format!("user:{value}"));
    let forms = {
        let json = serde_json::to_string(&value).unwrap();
        vec![
            value.clone(),
            json.trim_matches('"').to_owned(),
            json.trim_matches('"').replace('/', "\\/"),
            STANDARD.encode(&value),
            STANDARD.encode(format!("a{value}")),
            STANDARD.encode(format!("ab{value}")),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&value),
            token.clone(),
        ]
    };
    // The upstream answers with the request it got, then every form of the value in it.
    let sent_forms = forms.clone();
    let hostile = Hostile::start(move |r: &Received| {
        let body = format!("{}\n{}\n", r.text(), sent_forms[1..].join("\n"));
        Reply::Send(response("200 OK", &["Content-Type: text/plain".to_owned()], &body))
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    sc.server.create("production/multi/key", &value);
    let basic = format!("Authorization: Basic {}", STANDARD.encode("user:{{secret:production/multi/key}}"));
    let query = "?key=%7B%7Bsecret:production/multi/key%7D%7D&n=1";
    for way in EVERY_WAY {
        for (headers, query) in [(vec![basic.as_str()], ""), (vec![], query)] {
            let seen = agent_sees(&sc, way, &headers, query);
            assert!(seen.contains("200"), "{way:?}: {seen}");
            // What the proxy wrote: the whole Basic token, or the value percent-encoded in
            // the query as it went out (which the upstream echoed).
            let sent = hostile.received().last().unwrap().text();
            let wrote = match sent.split_once("key=") {
                Some((_, rest)) => rest.split('&').next().unwrap().to_owned(),
                None => token.clone(),
            };
            assert!(sent.contains(&wrote) && wrote.len() > 20, "{way:?}: {sent}");
            for form in forms.iter().chain([&wrote]) {
                assert!(!seen.contains(form.as_str()), "{way:?}: the agent received the form {form:?}: {seen}");
            }
        }
    }
}

#[test]
fn bytes_an_upstream_sends_after_a_response_never_answer_the_next_request() {
    let value = secret_value("openai");
    let later = response("200 OK", &[], &format!("stale {value}"));
    // Bytes right behind the response (same write), and bytes that come while the
    // connection sits idle.
    let glued = later.clone();
    let hostile = Hostile::start(move |r: &Received| {
        let mut first = response("200 OK", &[], "first");
        if contains(&r.bytes, "glued") {
            first.extend_from_slice(&glued);
            Reply::Send(first)
        } else if contains(&r.bytes, "idle") {
            Reply::SendThenLater(first, Duration::from_millis(200), later.clone())
        } else {
            Reply::Send(response("200 OK", &[], "clean"))
        }
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for (mode, framing, body) in
        [("glued", "", ""), ("idle", "", ""), ("glued", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n")]
    {
        let mut agent = Agent::connect(&sc.proxy_addr);
        let method = if body.is_empty() { "GET" } else { "POST" };
        agent.send(
            format!("{method} /r/openai/echo HTTP/1.1\r\nHost: a\r\nX-Mode: {mode}\r\n{BEARER}\r\n{framing}\r\n{body}")
                .as_bytes(),
        );
        let first = String::from_utf8_lossy(&agent.read_response()).into_owned();
        assert!(first.contains("first"), "{mode}: {first}");
        std::thread::sleep(Duration::from_millis(600));
        agent.send(format!("{method} /r/openai/echo HTTP/1.1\r\nHost: a\r\n{framing}\r\n{body}").as_bytes());
        let second = String::from_utf8_lossy(&agent.read_response()).into_owned();
        assert!(!second.contains(&value), "{mode} {framing}: the next request got the stale bytes: {second}");
        assert!(second.contains("clean"), "{mode} {framing}: {second}");
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.argv[1].encode()))", text])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn a_coded_response_to_a_request_with_values_is_refused_not_passed_unscanned() {
    let value = secret_value("openai");
    let coded = gzip(&format!("your key is {value}"));
    let hostile = Hostile::start(move |r: &Received| {
        let (name, framing) = if contains(&r.bytes, "x-te") {
            ("Transfer-Encoding", "gzip, chunked")
        } else {
            ("Content-Encoding", "gzip")
        };
        let mut out = format!("HTTP/1.1 200 OK\r\n{name}: {framing}\r\n").into_bytes();
        if name == "Transfer-Encoding" {
            out.extend_from_slice(format!("\r\n{:x}\r\n", coded.len()).as_bytes());
            out.extend_from_slice(&coded);
            out.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", coded.len()).as_bytes());
            out.extend_from_slice(&coded);
        }
        Reply::Send(out)
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    // To a host that was never sent a value there is nothing to scrub: a coded body passes.
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &["Accept: */*"], "");
        assert!(seen.contains("200") && !seen.contains("unscannable_response"), "{way:?}: {seen}");
    }
    for way in EVERY_WAY {
        for extra in [vec![BEARER], vec![BEARER, "X-TE: 1"]] {
            let seen = agent_sees(&sc, way, &extra, "");
            assert!(seen.contains("502") && seen.contains("unscannable_response"), "{way:?} {extra:?}: {seen}");
            assert!(!seen.contains(&value), "{way:?}");
        }
    }
    // Once it was, its responses are scanned whatever the request carried.
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &["Accept: */*"], "");
        assert!(seen.contains("502") && seen.contains("unscannable_response"), "{way:?}: {seen}");
    }
}

// ---- protocol hygiene on the fast path ----------------------------------------------

#[test]
fn transfer_encoding_with_content_length_never_leaves_the_upstream_connection_for_reuse() {
    let hostile = Hostile::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let mut agent = Agent::connect(&sc.proxy_addr);
    for _ in 0..2 {
        agent.send(format!("GET /r/openai/echo HTTP/1.1\r\nHost: a\r\n{BEARER}\r\n\r\n").as_bytes());
        let seen = String::from_utf8_lossy(&agent.read_response()).into_owned();
        assert!(seen.contains("hello"), "{seen}");
    }
    assert_eq!(hostile.connections_used(), 2, "the second request went on a fresh connection");
}

#[test]
fn an_http_1_0_response_with_transfer_encoding_is_faulty_framing() {
    let hostile = Hostile::start(|_| {
        Reply::SendAndClose(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec())
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in [Way::FastRoute, Way::Connect] {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("HTTP/1.1 502") && seen.contains("faulty framing"), "{way:?}: {seen}");
    }
}

#[test]
fn headers_named_in_connection_are_removed_both_ways() {
    let hostile = Hostile::start(|_| {
        Reply::Send(response("200 OK", &["Connection: x-hop-back".to_owned(), "X-Hop-Back: 1".to_owned()], "ok"))
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in [Way::FastRoute, Way::Connect, Way::HyperRoute] {
        let seen = agent_sees(&sc, way, &["Connection: X-Hop-Out", "X-Hop-Out: 1", "X-Kept: 1"], "");
        assert!(seen.contains("200"), "{way:?}: {seen}");
        assert!(!seen.to_ascii_lowercase().contains("x-hop-back"), "{way:?}: {seen}");
    }
    for r in hostile.received() {
        assert!(r.header("x-hop-out").is_none(), "{}", r.text());
        assert!(r.header("x-kept").is_some(), "{}", r.text());
    }
}

#[test]
fn upgrade_is_a_token_in_connection_not_a_substring() {
    let hostile = Hostile::start(|_| Reply::Send(response("200 OK", &[], "plain")));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"GET /r/openai/echo HTTP/1.1\r\nHost: a\r\nConnection: x-no-upgrade\r\nUpgrade: websocket\r\n\r\n");
    let seen = String::from_utf8_lossy(&agent.read_response()).into_owned();
    assert!(seen.starts_with("HTTP/1.1 200") && seen.ends_with("plain"), "{seen}");
    let got = hostile.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].header("upgrade").is_none(), "an ordinary request carries no Upgrade: {}", got[0].text());
}

#[test]
fn a_request_without_exactly_one_host_is_refused_and_sends_nothing() {
    let hostile = Hostile::start(|_| Reply::Send(response("200 OK", &[], "ok")));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let heads = [
        format!("GET /r/openai/echo HTTP/1.1\r\n{BEARER}\r\n\r\n"),
        format!("GET /r/openai/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n{BEARER}\r\n\r\n"),
        format!(
            "POST /r/openai/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n{BEARER}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    ];
    for head in heads {
        let mut agent = Agent::connect(&sc.proxy_addr);
        agent.send(head.as_bytes());
        let seen = String::from_utf8_lossy(&agent.read_response()).into_owned();
        assert!(seen.starts_with("HTTP/1.1 400"), "{head:?}: {seen}");
    }
    assert!(hostile.received().is_empty(), "nothing went upstream");
}

#[test]
fn an_informational_response_is_forwarded_and_scrubbed() {
    let value = secret_value("openai");
    let answer = format!(
        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Hint: {value}\r\n\r\n{}",
        String::from_utf8(response("200 OK", &[], "final")).unwrap()
    );
    let hostile = Hostile::start(move |_| Reply::Send(answer.clone().into_bytes()));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    for way in [Way::FastRoute, Way::Connect] {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("103") && seen.contains("rel=preload"), "{way:?}: {seen}");
        assert!(seen.contains("final"), "{way:?}: {seen}");
        assert_no_value(&seen, &value, way);
    }
}

#[test]
fn a_connect_whose_sni_names_another_host_is_refused_before_a_leaf_is_minted() {
    let sc = Sidecar::start();
    // The tunnel is opened to api.openai.com, the TLS inside asks for api.evil.example.
    let (_, out) = sc.curl(&[
        "--connect-to",
        "api.evil.example:443:api.openai.com:443",
        "-H",
        BEARER,
        "https://api.evil.example/v1/echo",
    ]);
    assert!(out.contains("curl: (35)"), "the TLS handshake fails: {out}");
    assert!(sc.upstream.requests().is_empty(), "nothing went upstream");
    let log = sc.log();
    assert!(
        !log.lines().any(|l| l.contains("minted a leaf") && l.contains("api.evil.example")),
        "no leaf for the other name"
    );
    assert!(log.contains("the TLS SNI names another host"), "the refusal says why");
}

/// Reads one HTTP/1.1 response framed by `Content-Length` (or without a body) off `stream`.
fn read_response(stream: &mut impl std::io::Read) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-head: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    got.extend(body);
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP/2 `CONNECT api.openai.com:443` (`:method` and `:authority` only) sent inside a
/// TLS tunnel to api.openai.com; its response status.
fn h2_connect_inside_a_tunnel(sc: &Sidecar) -> u16 {
    let tcp = crate::raw::tunnel(&sc.proxy_addr, "api.openai.com:443");
    let config = std::sync::Arc::new(crate::raw::client_config(&sc.ca_path(), &[b"h2"]));
    crate::support::block_on(async move {
        tcp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 inside the tunnel");
        let io = hyper_util::rt::TokioIo::new(tls);
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let connect =
            http::Request::connect("api.openai.com:443").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(15), send.send_request(connect)).await.unwrap().unwrap();
        resp.status().as_u16()
    })
}

/// A `CONNECT` is how a tunnel is opened to the proxy, never a request the proxy forwards:
/// one sent inside a tunnel the proxy intercepts (where an `[[inject]]` rule would put a
/// value in it) is answered 405 and nothing goes upstream, on every path a request inside a
/// tunnel takes: HTTP/1.1 after a fast-path request on the same connection, HTTP/1.1 in a
/// plain tunnel, HTTP/2 `CONNECT`, and HTTP/2 extended `CONNECT`. A `CONNECT` naming a route
/// is refused as well.
#[test]
fn a_connect_inside_an_intercepted_tunnel_is_refused_and_sends_nothing() {
    use std::io::Write;
    let rule = "[[inject]]\nhost = \"api.openai.com\"\nheader = \"authorization\"\n\
                value = \"Bearer {{secret:production/openai/api-key}}\"\n";
    let hostile = Hostile::start(|_| Reply::Send(response("200 OK", &[], "ok")));
    let sc = Sidecar::start_against(rule, &[], hostile.port, &hostile.ca_pem);
    let nested = b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n";
    let refused = |seen: &str, way: &str| {
        assert!(seen.starts_with("HTTP/1.1 405"), "{way}: {seen}");
        assert!(seen.contains("connect_not_allowed"), "{way}: {seen}");
        assert!(seen.to_ascii_lowercase().contains("\r\nallow: "), "{way}: a 405 says what is allowed: {seen}");
    };

    // HTTP/1.1 inside TLS: a request on the fast path, then the CONNECT (which hyper takes).
    let tunnel = crate::raw::tunnel(&sc.proxy_addr, "api.openai.com:443");
    let mut tls = crate::raw::tls_over(tunnel, "api.openai.com", &sc.ca_path(), &[b"http/1.1"]);
    tls.write_all(b"GET /v1/first HTTP/1.1\r\nHost: api.openai.com\r\n\r\n").unwrap();
    assert!(read_response(&mut tls).starts_with("HTTP/1.1 200"), "the tunnel works");
    tls.write_all(nested).unwrap();
    refused(&read_response(&mut tls), "HTTP/1.1 in TLS");
    // The connection goes on serving requests.
    tls.write_all(b"GET /v1/second HTTP/1.1\r\nHost: api.openai.com\r\n\r\n").unwrap();
    assert!(read_response(&mut tls).starts_with("HTTP/1.1 200"), "the tunnel still works");

    // HTTP/1.1 in a tunnel that carries plain HTTP.
    let mut plain = crate::raw::tunnel(&sc.proxy_addr, "api.openai.com:443");
    plain.write_all(nested).unwrap();
    refused(&read_response(&mut plain), "HTTP/1.1 in a plain tunnel");

    // HTTP/2 inside TLS.
    assert_eq!(h2_connect_inside_a_tunnel(&sc), 405, "HTTP/2 CONNECT");

    // HTTP/2 extended CONNECT (RFC 8441: `:protocol`), which the proxy does not offer: the
    // stream is refused one way or the other.
    let tunnel = crate::raw::tunnel(&sc.proxy_addr, "api.openai.com:443");
    let tls = crate::raw::tls_over(tunnel, "api.openai.com", &sc.ca_path(), &[b"h2"]);
    let mut h2 = crate::raw::H2::start(tls);
    let fields = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "api.openai.com"),
        (":path", "/v1/socket"),
    ];
    h2.send(&crate::raw::headers_frame(1, &fields, false));
    loop {
        let f = h2.next_frame();
        assert_ne!(f.kind, crate::raw::h2::GOAWAY, "extended CONNECT: {f:?}");
        if f.stream != 1 {
            continue;
        }
        if f.kind == crate::raw::h2::RST_STREAM {
            break;
        }
        if f.kind == crate::raw::h2::DATA {
            assert!(contains(&f.payload, "connect_not_allowed"), "extended CONNECT: {f:?}");
            break;
        }
    }

    // Route mode: a CONNECT naming a route is no tunnel and no request to forward.
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"CONNECT /r/openai/models HTTP/1.1\r\nHost: airlock\r\n\r\n");
    let seen = String::from_utf8_lossy(&agent.read_response()).into_owned();
    assert!(seen.starts_with("HTTP/1.1 4"), "CONNECT to a route: {seen}");

    let received = hostile.received();
    assert_eq!(received.len(), 2, "only the two GETs went upstream: {received:?}");
    assert!(received.iter().all(|r| r.text().starts_with("GET ")), "{received:?}");
}

// ---- timeouts: a peer that stalls is let go ------------------------------------------

const SHORT: [&str; 6] = ["--header-read-timeout", "1s", "--idle-timeout", "1s", "--upstream-first-byte-timeout", "1s"];

/// Long enough for a 1 s timeout on a loaded machine, far shorter than any default.
const WITHIN: Duration = Duration::from_secs(8);

#[test]
fn an_agent_that_stalls_its_head_or_sits_idle_is_let_go_on_every_path() {
    let hostile = Hostile::start(|_| Reply::Send(response("200 OK", &[], "ok")));
    let sc = Sidecar::start_against("", &SHORT, hostile.port, &hostile.ca_pem);
    // Connected, never a byte.
    assert!(Agent::connect(&sc.proxy_addr).closed_within(WITHIN), "idle before the first request");
    // Half a head on the fast path.
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"GET /r/openai/echo HTTP/1.1\r\nHost: a\r\n");
    assert!(agent.closed_within(WITHIN), "a head that never ends (fast path)");
    // Idle after a request on the fast path.
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"GET /r/openai/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(String::from_utf8_lossy(&agent.read_response()).ends_with("ok"));
    assert!(agent.closed_within(WITHIN), "idle keep-alive (fast path)");
    // On hyper's path (a chunked request moved the connection there): half a head.
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"POST /r/openai/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(String::from_utf8_lossy(&agent.read_response()).contains("ok"));
    agent.send(b"GET /r/openai/echo HTTP/1.1\r\nHost: a\r\n");
    assert!(agent.closed_within(WITHIN), "a head that never ends (hyper path)");
    // Cleartext HTTP/2, preface and settings, then nothing.
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    assert!(agent.closed_within(WITHIN), "an idle HTTP/2 connection");
}

#[test]
fn an_upstream_that_never_answers_gets_504_and_the_use_is_recorded() {
    let hostile = Hostile::start(|_| Reply::Silence);
    let sc = Sidecar::start_against("", &SHORT, hostile.port, &hostile.ca_pem);
    for way in [Way::FastRoute, Way::HyperRoute, Way::Connect, Way::H2Route] {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("504") && seen.contains("upstream_timeout"), "{way:?}: {seen}");
    }
    assert!(hostile.received().len() >= 4, "every request went out before the wait");
}

#[test]
fn an_upstream_that_accepts_but_never_shakes_hands_fails_within_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.incoming().take(2).filter_map(Result::ok).collect::<Vec<_>>());
    let hostile = Hostile::start(|_| Reply::Silence);
    let sc = Sidecar::start_against("", &["--upstream-connect-timeout", "1s"], port, &hostile.ca_pem);
    for way in [Way::FastRoute, Way::HyperRoute] {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("502") && seen.contains("timed out"), "{way:?}: {seen}");
    }
    drop(held);
}

#[test]
fn a_request_head_over_64_kib_is_431_on_both_paths() {
    let hostile = Hostile::start(|_| Reply::Send(response("200 OK", &[], "ok")));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let big = "a".repeat(70 * 1024);
    for framing in ["", "Transfer-Encoding: chunked\r\n"] {
        let mut agent = Agent::connect(&sc.proxy_addr);
        agent.send(format!("POST /r/openai/echo HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n{framing}\r\n").as_bytes());
        let seen = String::from_utf8_lossy(&agent.read_to_end()).into_owned();
        assert!(seen.starts_with("HTTP/1.1 431"), "{framing:?}: {seen}");
    }
    assert!(hostile.received().is_empty());
}

#[test]
fn a_host_that_was_sent_a_value_cannot_return_it_to_a_request_without_one() {
    let value = secret_value("openai");
    let leak = value.clone();
    // The upstream remembers nothing it needs to: it knows the value and sends it to every
    // request, whether or not that request carried it.
    let hostile = Hostile::start(move |_| Reply::Send(response("200 OK", &[format!("X-Key: {leak}")], &leak)));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let first = agent_sees(&sc, Way::FastRoute, &[BEARER], "");
    assert_no_value(&first, &value, Way::FastRoute);
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &["X-Plain: no value here"], "");
        assert!(seen.contains("200"), "{way:?}: {seen}");
        assert_no_value(&seen, &value, way);
    }
    let plain = hostile.received().into_iter().filter(|r| !contains(&r.bytes, &value)).collect::<Vec<_>>();
    assert_eq!(plain.len(), EVERY_WAY.len(), "the later requests carried no value");
    assert!(plain.iter().all(|r| r.header("accept-encoding").as_deref() == Some("identity")), "scanned, so identity");
}

#[test]
fn a_use_is_recorded_when_the_agent_goes_away_before_its_response() {
    let hostile = Hostile::start(|_| {
        Reply::SendThenLater(Vec::new(), Duration::from_millis(500), response("200 OK", &[], "late"))
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    let mut agent = Agent::connect(&sc.proxy_addr);
    agent.send(format!("GET /r/openai/echo HTTP/1.1\r\nHost: a\r\n{BEARER}\r\n\r\n").as_bytes());
    while hostile.received().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(agent); // gone before the response
    until(Duration::from_secs(10), || uses(&access_events(&sc)) >= 1);
    assert_eq!(uses(&access_events(&sc)), 1, "the value went out, so the use is on record");
}

#[test]
fn a_use_is_recorded_when_an_http2_agent_abandons_its_request() {
    let hostile = Hostile::start(|_| {
        Reply::SendThenLater(Vec::new(), Duration::from_millis(1500), response("200 OK", &[], "late"))
    });
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    // curl gives up (and the stream goes) while the upstream is still answering.
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "0.7", "-H", BEARER])
        .arg(format!("http://{}/r/openai/echo", sc.proxy_addr))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl timed out");
    assert_eq!(hostile.received().len(), 1, "the value went out");
    until(Duration::from_secs(10), || uses(&access_events(&sc)) >= 1);
    assert_eq!(uses(&access_events(&sc)), 1, "the use is on record");
}

#[test]
fn a_host_cannot_return_another_value_it_was_sent_to_a_request_carrying_one() {
    let other = secret_value("other");
    let leak = other.clone();
    let hostile = Hostile::start(move |_| Reply::Send(response("200 OK", &[], &format!("yours: {leak}"))));
    let sc = Sidecar::start_against("", &[], hostile.port, &hostile.ca_pem);
    sc.server.create("production/openai/other", &other);
    // The host is sent `other` once, then answers every later request with it.
    let first = agent_sees(&sc, Way::FastRoute, &["Authorization: Bearer {{secret:production/openai/other}}"], "");
    assert_no_value(&first, &other, Way::FastRoute);
    for way in EVERY_WAY {
        let seen = agent_sees(&sc, way, &[BEARER], "");
        assert!(seen.contains("yours:"), "{way:?}: {seen}");
        assert_no_value(&seen, &other, way);
    }
}
