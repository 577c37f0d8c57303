//! A recording stand-in for the real services behind the proxy: an HTTP/1.1 + HTTP/2 server on
//! 127.0.0.1, either TLS with a leaf certificate for chosen host names (signed by a fresh test CA
//! written to a temp dir, so the proxy can be pointed at it with `--upstream-ca` and
//! `--resolve host=127.0.0.1:PORT`) or plain (HTTP/1.1 and h2c prior knowledge).
//!
//! Every request is recorded, body included, before it is answered, so a test can assert what
//! arrived upstream — and that nothing did. The server runs on its own thread with its own tokio
//! runtime; dropping the [`Upstream`] stops it.
//!
//! Endpoints (any method):
//! - `/sse…`: `text/event-stream`, five events `data: {n}\n\n` handed to hyper 200 ms apart.
//! - `/ws…`: a WebSocket echo server (RFC 6455; text, binary, ping → pong, close).
//! - `/status/{code}…`: that status, empty body.
//! - anything else: a JSON echo of the request; the `authorization` request header is also
//!   echoed in the `x-echo-authorization` response header; `size=N` in the query adds a
//!   `"padding"` of N `x`s.

// Each test uses only part of the fixture.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// RFC 6455 section 1.3 (its example: key `dGhlIHNhbXBsZSBub25jZQ==` gives `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest WebSocket payload either side accepts, so a garbled length cannot exhaust memory.
const WS_MAX_PAYLOAD: u64 = 64 << 20;
const SSE_EVENTS: u32 = 5;
const SSE_INTERVAL: Duration = Duration::from_millis(200);

type ResBody = BoxBody<Bytes, Infallible>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `:authority` (HTTP/2, or an absolute-form HTTP/1.1 target), else the `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
    /// Lower-case names, values decoded as lossy UTF-8, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The full body (whatever had arrived if the client aborted); empty for WebSocket upgrades.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether `needle` occurs anywhere in what was received: target, headers or body.
    pub fn contains(&self, needle: &str) -> bool {
        self.host.contains(needle)
            || self.path.contains(needle)
            || self.headers.iter().any(|(n, v)| n.contains(needle) || v.contains(needle))
            || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    last_sse_sent: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Upstream {
    pub port: u16,
    /// PEM of the CA that signed the server certificate (also written for plain upstreams, whose
    /// CA signed nothing).
    pub ca_pem: PathBuf,
    pub tls: bool,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// TLS on 127.0.0.1:0 with one leaf certificate whose SANs are `hosts` (DNS names; IP SANs
    /// for IP literals), signed by a fresh test CA written to `ca_pem`. ALPN offers `h2` and
    /// `http/1.1`; the protocol is chosen by ALPN (sniffed when the client offers none).
    pub fn start_tls(hosts: &[&str]) -> Upstream {
        let (ca_pem, config) = tls_config(hosts, &[b"h2", b"http/1.1"]);
        Upstream::start(&ca_pem, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// Plain HTTP/1.1 (and h2c with prior knowledge) on 127.0.0.1:0. Absolute-form request
    /// targets are accepted, so it can stand in for a forward proxy too.
    pub fn start_plain() -> Upstream {
        let (ca_pem, _) = new_ca();
        Upstream::start(&ca_pem, None)
    }

    fn start(ca_pem: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, ca_pem).expect("write CA PEM");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let is_tls = tls.is_some();
        let server_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
                rt.block_on(serve(listener, tls, server_state, shutdown_rx));
                // Drops every connection task still running.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn upstream thread");
        Upstream {
            port,
            ca_pem: ca_path,
            tls: is_tls,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests and the last SSE instant.
    pub fn clear(&self) {
        lock(&self.state.requests).clear();
        *lock(&self.state.last_sse_sent) = None;
    }

    /// `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// When the last event of the most recent `/sse` response was handed to hyper.
    pub fn last_sse_sent(&self) -> Option<Instant> {
        *lock(&self.state.last_sse_sent)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fresh self-signed CA: its PEM and the issuer to sign leaves with.
fn new_ca() -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Airlock test upstream CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("generate CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate whose SANs are `hosts` (DNS names; IP SANs for IP literals), signed by
/// a fresh test CA: the CA's PEM, the leaf and its key.
fn signed_leaf(hosts: &[&str]) -> (String, rcgen::Certificate, KeyPair) {
    assert!(!hosts.is_empty(), "a certificate needs at least one host name");
    let (ca_pem, issuer) = new_ca();
    let mut params = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("bad host names {hosts:?} for a certificate: {e}"));
    params.distinguished_name.push(DnType::CommonName, hosts[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate leaf key");
    let leaf = params.signed_by(&key, &issuer).expect("sign leaf certificate");
    (ca_pem, leaf, key)
}

/// A server configuration with one leaf certificate whose SANs are `hosts`, signed by a
/// fresh test CA; returns the CA's PEM too. `alpn` is offered.
pub fn tls_config(hosts: &[&str], alpn: &[&[u8]]) -> (String, rustls::ServerConfig) {
    let (ca_pem, leaf, key) = signed_leaf(hosts);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca_pem, config)
}

/// PEM files of a fresh test CA and of a leaf for `hosts` it signed.
pub struct PemFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PemFiles {
    /// Writes `{prefix}ca.pem`, `{prefix}cert.pem` and `{prefix}key.pem` into `dir`.
    pub fn write(dir: &std::path::Path, prefix: &str, hosts: &[&str]) -> PemFiles {
        let (ca_pem, leaf, key) = signed_leaf(hosts);
        let files = PemFiles {
            ca: dir.join(format!("{prefix}ca.pem")),
            cert: dir.join(format!("{prefix}cert.pem")),
            key: dir.join(format!("{prefix}key.pem")),
        };
        std::fs::write(&files.ca, ca_pem).expect("write CA PEM");
        std::fs::write(&files.cert, leaf.pem()).expect("write certificate PEM");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key PEM");
        files
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, tls.clone(), state.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<State>) {
    let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
    let Some(acceptor) = tls else {
        let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let _ = auto.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
        return;
    };
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
        return;
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(stream);
    match alpn.as_deref() {
        Some(b"h2") => {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
        }
        Some(_) => {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
        }
        None => {
            let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = auto.serve_connection_with_upgrades(io, service).await;
        }
    }
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn full(body: impl Into<Bytes>) -> ResBody {
    BoxBody::new(Full::new(body.into()))
}

fn plain_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

async fn handle(mut req: Request<Incoming>, state: Arc<State>) -> Result<Response<ResBody>, Infallible> {
    let uri = req.uri();
    let mut recorded = Recorded {
        method: req.method().to_string(),
        host: uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req.headers().get(header::HOST).map(lossy))
            .unwrap_or_default(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        version: format!("{:?}", req.version()),
        headers: req.headers().iter().map(|(n, v)| (n.as_str().to_owned(), lossy(v))).collect(),
        body: Vec::new(),
    };
    let route = uri.path().to_owned();

    if route.starts_with("/ws") {
        lock(&state.requests).push(recorded);
        return Ok(websocket(&mut req));
    }

    let (parts, mut body) = req.into_parts();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    recorded.body.extend_from_slice(data);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    lock(&state.requests).push(recorded.clone());
    if !complete {
        return Ok(plain_response(StatusCode::BAD_REQUEST, "request body aborted"));
    }

    if route.starts_with("/sse") {
        return Ok(sse(state));
    }
    if let Some(rest) = route.strip_prefix("/status/") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        return Ok(match digits.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) => plain_response(status, Bytes::new()),
            None => plain_response(StatusCode::BAD_REQUEST, format!("bad status code {rest:?}")),
        });
    }
    Ok(echo(&recorded, &parts.headers))
}

fn echo(recorded: &Recorded, headers: &HeaderMap) -> Response<ResBody> {
    let mut echoed = serde_json::Map::new();
    for (name, value) in &recorded.headers {
        match echoed.get_mut(name) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                echoed.insert(name.clone(), value.clone().into());
            }
        }
    }
    let mut json = serde_json::json!({
        "method": recorded.method,
        "host": recorded.host,
        "path": recorded.path,
        "version": recorded.version,
        "headers": echoed,
        "body": String::from_utf8_lossy(&recorded.body),
    });
    let size = recorded.path.split_once('?').and_then(|(_, query)| {
        query.split('&').find_map(|pair| pair.strip_prefix("size=")).and_then(|n| n.parse::<usize>().ok())
    });
    if let Some(n) = size {
        json["padding"] = "x".repeat(n).into();
    }
    let mut resp = plain_response(StatusCode::OK, serde_json::to_vec(&json).expect("serialize echo"));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        resp.headers_mut().insert("x-echo-authorization", auth.clone());
    }
    resp
}

/// A body fed by a channel that notes when its last frame is handed to hyper.
struct SseBody {
    rx: mpsc::Receiver<(Bytes, bool)>,
    state: Arc<State>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((data, last))) => {
                if last {
                    *lock(&self.state.last_sse_sent) = Some(Instant::now());
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn sse(state: Arc<State>) -> Response<ResBody> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for n in 1..=SSE_EVENTS {
            if n > 1 {
                tokio::time::sleep(SSE_INTERVAL).await;
            }
            if tx.send((Bytes::from(format!("data: {n}\n\n")), n == SSE_EVENTS)).await.is_err() {
                return; // the client went away
            }
        }
    });
    let mut resp = Response::new(BoxBody::new(SseBody { rx, state }));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn ws_accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    B64.encode(sha.finalize())
}

fn websocket(req: &mut Request<Incoming>) -> Response<ResBody> {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).and_then(|k| k.to_str().ok()).map(str::trim);
    let problem = if req.method() != Method::GET {
        Some("a WebSocket upgrade must be a GET")
    } else if !header_has_token(headers, header::CONNECTION, "upgrade") {
        Some("missing `Connection: upgrade`")
    } else if !header_has_token(headers, header::UPGRADE, "websocket") {
        Some("missing `Upgrade: websocket`")
    } else if !key.is_some_and(|k| B64.decode(k).is_ok_and(|raw| raw.len() == 16)) {
        Some("missing or malformed Sec-WebSocket-Key")
    } else {
        None
    };
    if let Some(problem) = problem {
        return plain_response(StatusCode::BAD_REQUEST, problem);
    }
    let accept = ws_accept_key(key.unwrap_or_default());
    // `/ws-headers…`: each echo also says what Authorization header the upgrade carried.
    let told = req.uri().path().starts_with("/ws-headers").then(|| {
        let auth = headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        format!(" | authorization={}", auth.unwrap_or_default())
    });
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let _ = ws_echo(TokioIo::new(upgraded), told.unwrap_or_default()).await;
        }
    });
    let mut resp = plain_response(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a header value"));
    resp
}

struct WsFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// One RFC 6455 frame; masked (client to server) when `mask` is given.
fn encode_ws_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Parses the first two header bytes: (fin, opcode, masked, 7-bit length).
fn ws_head(b: [u8; 2]) -> std::io::Result<(bool, u8, bool, u8)> {
    if b[0] & 0x70 != 0 {
        return Err(invalid("WebSocket frame with reserved bits set (no extensions were negotiated)"));
    }
    Ok((b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0, b[1] & 0x7f))
}

fn ws_unmask(payload: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(mask) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
}

async fn read_ws_frame_async<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<WsFrame> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let (fin, opcode, masked, len7) = ws_head(head)?;
    let len = match len7 {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > WS_MAX_PAYLOAD {
        return Err(invalid("WebSocket frame too large"));
    }
    let mut mask = None;
    if masked {
        let mut m = [0u8; 4];
        r.read_exact(&mut m).await?;
        mask = Some(m);
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    ws_unmask(&mut payload, mask);
    Ok(WsFrame { fin, opcode, payload })
}

fn read_ws_frame<R: Read>(r: &mut R) -> std::io::Result<WsFrame> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let (fin, opcode, masked, len7) = ws_head(head)?;
    let len = match len7 {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > WS_MAX_PAYLOAD {
        return Err(invalid("WebSocket frame too large"));
    }
    let mut mask = None;
    if masked {
        let mut m = [0u8; 4];
        r.read_exact(&mut m)?;
        mask = Some(m);
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    ws_unmask(&mut payload, mask);
    Ok(WsFrame { fin, opcode, payload })
}

/// Echoes data frames (with their opcode and FIN bit, `suffix` appended), answers ping with
/// pong, close with close.
async fn ws_echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, suffix: String) -> std::io::Result<()> {
    loop {
        let frame = read_ws_frame_async(&mut io).await?;
        match frame.opcode {
            0x8 => {
                io.write_all(&encode_ws_frame(true, 0x8, &frame.payload, None)).await?;
                io.flush().await?;
                return io.shutdown().await;
            }
            0x9 => io.write_all(&encode_ws_frame(true, 0xA, &frame.payload, None)).await?,
            0xA => {}
            opcode => {
                let payload = [&frame.payload[..], suffix.as_bytes()].concat();
                io.write_all(&encode_ws_frame(frame.fin, opcode, &payload, None)).await?
            }
        }
        io.flush().await?;
    }
}

/// 20 unpredictable-enough bytes for a WebSocket key (16) and mask (4); no RNG crate needed.
fn ws_nonce() -> [u8; 20] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut sha = Sha1::new();
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    sha.update(nanos.to_le_bytes());
    sha.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    sha.update(std::process::id().to_le_bytes());
    sha.finalize().into()
}

/// Sends one text message over a plain `ws://` connection made through the HTTP forward proxy at
/// `proxy_addr` (absolute-form `GET http://target_host:target_port/path`) and returns the text of
/// the first frame that comes back. Panics, with the proxy's answer, on any failure.
pub fn ws_echo_via(proxy_addr: &str, target_host: &str, target_port: u16, path: &str, message: &str) -> String {
    try_ws_echo_via(proxy_addr, target_host, target_port, path, "", message).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`ws_echo_via`], with `extra_headers` (whole lines, each ending in CRLF) in the upgrade
/// request; an upgrade the proxy refuses (or any other failure) is an `Err` describing it; a
/// refusal's message starts with the response's status line.
pub fn try_ws_echo_via(
    proxy_addr: &str,
    target_host: &str,
    target_port: u16,
    path: &str,
    extra_headers: &str,
    message: &str,
) -> Result<String, String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("WebSocket via {proxy_addr}: {what}: {e}")
    };
    let mut stream = std::net::TcpStream::connect(proxy_addr).map_err(io("connect"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io("set timeout"))?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(io("set timeout"))?;
    let _ = stream.set_nodelay(true);

    let nonce = ws_nonce();
    let key = B64.encode(&nonce[..16]);
    let mask: [u8; 4] = nonce[16..20].try_into().expect("4 bytes");
    let host = if target_host.contains(':') && !target_host.starts_with('[') {
        format!("[{target_host}]")
    } else {
        target_host.to_owned()
    };
    let authority = format!("{host}:{target_port}");
    let slash = if path.starts_with('/') { "" } else { "/" };
    let request = format!(
        "GET http://{authority}{slash}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io("send upgrade request"))?;

    let mut reader = BufReader::new(stream.try_clone().map_err(io("clone stream"))?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io("read upgrade response"))? == 0 {
            return Err(format!("WebSocket via {proxy_addr}: connection closed during the response head: {head:?}"));
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let head_value = |wanted: &str| {
        head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case(wanted).then(|| value.trim().to_owned())
        })
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        // Show (the start of) the refusal's body without waiting on a kept-alive connection.
        let body = match head_value("content-length").and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => {
                let mut body = Vec::new();
                let _ = reader.by_ref().take(n.min(4096)).read_to_end(&mut body);
                body
            }
            None => {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut body = vec![0u8; 4096];
                let n = reader.read(&mut body).unwrap_or(0);
                body.truncate(n);
                body
            }
        };
        return Err(format!("{status} (expected 101)\n{head}\n{}", String::from_utf8_lossy(&body)));
    }
    if head_value("sec-websocket-accept").as_deref() != Some(ws_accept_key(&key).as_str()) {
        return Err(format!("WebSocket via {proxy_addr}: wrong Sec-WebSocket-Accept in\n{head}"));
    }

    stream.write_all(&encode_ws_frame(true, 0x1, message.as_bytes(), Some(mask))).map_err(io("send frame"))?;
    let reply = loop {
        let frame = read_ws_frame(&mut reader).map_err(io("read frame"))?;
        match frame.opcode {
            0x9 => stream.write_all(&encode_ws_frame(true, 0xA, &frame.payload, Some(mask))).map_err(io("pong"))?,
            0xA => {}
            0x8 => return Err(format!("WebSocket via {proxy_addr}: closed before the echo arrived")),
            _ => break frame,
        }
    };
    // Close politely; the echo is what matters, so errors here are ignored.
    let _ = stream.write_all(&encode_ws_frame(true, 0x8, &1000u16.to_be_bytes(), Some(mask)));
    let _ = read_ws_frame(&mut reader);
    String::from_utf8(reply.payload).map_err(|e| format!("WebSocket via {proxy_addr}: echo is not UTF-8: {e}"))
}
