//! Byte-level peers for hostile tests: an upstream that is a raw TLS listener answering exactly
//! the bytes a case needs, and an agent that sends exactly the bytes it wants to the proxy.
//!
//! The upstream presents a certificate for api.openai.com signed by its own CA (pin it with
//! `Sidecar::start_against(…, hostile.port, &hostile.ca_pem)`), offers only `http/1.1` by
//! ALPN, and answers each request it reads with what the test's `answer` says. It records
//! every request, with the connection it came on.

// Each test uses only part of the fixture.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the hostile upstream read it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which connection (0, 1, …, in accept order) it came on.
    pub connection: usize,
    /// Its number on that connection (0 for the first).
    pub index: usize,
    /// Head and body, as read.
    pub bytes: Vec<u8>,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// What the upstream does after reading a request.
pub enum Reply {
    /// Writes these bytes in one write and reads the next request on the connection.
    Send(Vec<u8>),
    /// Writes these bytes, then closes.
    SendAndClose(Vec<u8>),
    /// Writes these bytes, waits, then writes the second ones (which arrive on an idle
    /// connection) and reads on.
    SendThenLater(Vec<u8>, Duration, Vec<u8>),
    /// Never answers; holds the connection open until the proxy goes away.
    Silence,
}

type Answer = dyn Fn(&Received) -> Reply + Send + Sync;

pub struct Hostile {
    pub port: u16,
    pub ca_pem: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted, whether or not they carried a request (or finished the TLS
    /// handshake).
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Hostile {
    /// A raw TLS upstream for api.openai.com on 127.0.0.1 that answers each request with
    /// `answer(request)`.
    pub fn start(answer: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Hostile {
        let (ca, config) = crate::upstream::tls_config(&["api.openai.com"], &[b"http/1.1"]);
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("hostile-ca.pem");
        std::fs::write(&ca_pem, ca).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (config, answer): (Arc<rustls::ServerConfig>, Arc<Answer>) = (Arc::new(config), Arc::new(answer));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (log, stopped, connections) = (received.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = connections.fetch_add(1, Ordering::SeqCst);
                let (config, answer, log, stopped) = (config.clone(), answer.clone(), log.clone(), stopped.clone());
                std::thread::spawn(move || serve(stream, n, config, &*answer, &log, &stopped));
            }
        });
        Hostile { port, ca_pem, received, accepted, stop, _dir: dir }
    }

    /// How many connections the proxy opened to this upstream (each accepted one counts,
    /// even one closed before its TLS handshake).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request read so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many connections carried at least one request.
    pub fn connections_used(&self) -> usize {
        let mut seen: Vec<usize> = self.received().iter().map(|r| r.connection).collect();
        seen.dedup();
        seen.len()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    tcp: TcpStream,
    connection: usize,
    config: Arc<rustls::ServerConfig>,
    answer: &Answer,
    log: &Mutex<Vec<Received>>,
    stop: &AtomicBool,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    for index in 0.. {
        let Some(bytes) = read_request(&mut tls, &mut buf, stop) else { return };
        let request = Received { connection, index, bytes };
        log.lock().unwrap().push(request.clone());
        let reply = answer(&request);
        let done = match reply {
            Reply::Send(bytes) => tls.write_all(&bytes).is_err(),
            Reply::SendAndClose(bytes) => {
                let _ = tls.write_all(&bytes);
                true
            }
            Reply::SendThenLater(first, wait, later) => {
                let failed = tls.write_all(&first).is_err();
                std::thread::sleep(wait);
                failed || tls.write_all(&later).is_err()
            }
            Reply::Silence => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                true
            }
        };
        let _ = tls.flush();
        if done {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

/// One request off the connection (head, then a `Content-Length` or chunked body), with what
/// was read beyond it kept in `buf`; `None` when the connection ends or the test is over.
fn read_request<S: Read>(stream: &mut S, buf: &mut Vec<u8>, stop: &AtomicBool) -> Option<Vec<u8>> {
    let mut fill = |buf: &mut Vec<u8>| -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Some(());
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    };
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        fill(buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    let end = if head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
        loop {
            if let Some(at) = find(&buf[head_end..], b"0\r\n\r\n") {
                break head_end + at + 5;
            }
            fill(buf)?;
        }
    } else {
        let end = head_end + length.unwrap_or(0);
        while buf.len() < end {
            fill(buf)?;
        }
        end
    };
    Some(buf.drain(..end).collect())
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    find(haystack, needle.as_bytes()).is_some()
}

/// An agent connection to the proxy that sends exactly the bytes it is given.
pub struct Agent {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Agent {
    pub fn connect(proxy_addr: &str) -> Agent {
        let stream = TcpStream::connect(proxy_addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Agent { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Everything until the proxy closes the connection (or 15 s pass).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let _ = self.stream.read_to_end(&mut out);
        out
    }

    /// One response: every interim 1xx head, then the final head and its body (by
    /// `Content-Length` or chunked framing, trailers included); raw bytes as received.
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let head_end = self.until(|b| find(b, b"\r\n\r\n").map(|at| at + 4));
            let head: Vec<u8> = self.buf.drain(..head_end).collect();
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            out.extend_from_slice(&head);
            if text.starts_with("http/1.1 1") && !text.starts_with("http/1.1 101") {
                continue;
            }
            let body_end = if text.contains("transfer-encoding: chunked") {
                self.until(|b| {
                    find(b, b"\r\n0\r\n")
                        .or(b.starts_with(b"0\r\n").then_some(0))
                        .and_then(|at| find(&b[at..], b"\r\n\r\n").map(|end| at + end + 4))
                })
            } else {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                self.until(|b| (b.len() >= length).then_some(length))
            };
            out.extend(self.buf.drain(..body_end));
            return out;
        }
    }

    /// Reads until `complete` finds where what it wants ends.
    fn until(&mut self, complete: impl Fn(&[u8]) -> Option<usize>) -> usize {
        loop {
            if let Some(end) = complete(&self.buf) {
                return end;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("the proxy answered in time");
            assert!(
                n > 0,
                "the proxy closed the connection mid-response; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the proxy closed the connection within `wait` (whatever it sent before).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        loop {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { return false };
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let read = self.stream.read(&mut chunk);
            if crate::sidecar::saw_closed(&read) {
                return true;
            }
            if read.is_err() {
                return false;
            }
        }
    }
}

/// A `CONNECT authority` tunnel through the proxy, its `200` read: what is written next goes
/// into the tunnel.
pub fn tunnel(proxy_addr: &str, authority: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy_addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes()).unwrap();
    // Byte by byte: nothing past the response head may be taken from the tunnel.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the proxy closed during the CONNECT response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT refused: {}", String::from_utf8_lossy(&head));
    stream
}

/// The agent's side of TLS to `host` over `tcp` (a tunnel), trusting only the CA in `ca`
/// (the proxy's), offering `alpn`; the handshake is done.
pub fn tls_over(
    tcp: TcpStream,
    host: &str,
    ca: &std::path::Path,
    alpn: &[&[u8]],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = Arc::new(client_config(ca, alpn));
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake with the proxy");
    }
    tls
}

/// A client config trusting only the CA in `ca`, offering `alpn`.
pub fn client_config(ca: &std::path::Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// HTTP/2 frame types and flags the raw client uses (RFC 9113 §6).
pub mod h2 {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;
}

/// One HTTP/2 frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// An HTTP/2 client at the byte level: it writes exactly the frames a test builds (a whole
/// burst in one write, say) and reads frames one at a time.
pub struct H2<S> {
    io: S,
    buf: Vec<u8>,
}

impl H2<TcpStream> {
    /// Cleartext HTTP/2 with prior knowledge, straight to the proxy's listener.
    pub fn prior_knowledge(proxy_addr: &str) -> H2<TcpStream> {
        let stream = TcpStream::connect(proxy_addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream.set_nodelay(true).unwrap();
        H2::start(stream)
    }
}

impl<S: Read + Write> H2<S> {
    /// Sends the connection preface and empty SETTINGS over `io`.
    pub fn start(io: S) -> H2<S> {
        let mut h2 = H2 { io, buf: Vec::new() };
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend(frame(h2::SETTINGS, 0, 0, &[]));
        h2.send(&preface);
        h2
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).unwrap();
        self.io.flush().unwrap();
    }

    /// The next frame; the server's SETTINGS are acknowledged on the way.
    pub fn next_frame(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let frame = Frame { kind: head[3], flags: head[4], stream, payload };
                    if frame.kind == h2::SETTINGS && frame.flags & h2::ACK == 0 {
                        self.send(&self::frame(h2::SETTINGS, h2::ACK, 0, &[]));
                    }
                    return frame;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.io.read(&mut chunk).expect("the proxy sent a frame in time");
            assert!(n > 0, "the proxy closed the HTTP/2 connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the PING acknowledgement carrying `data`: the proxy has then read and
    /// handled every frame sent before the PING.
    pub fn ping_pong(&mut self, data: [u8; 8]) {
        self.send(&frame(h2::PING, 0, 0, &data));
        loop {
            let f = self.next_frame();
            assert_ne!(f.kind, h2::GOAWAY, "the proxy ended the connection: {f:?}");
            if f.kind == h2::PING && f.flags & h2::ACK != 0 && f.payload == data {
                return;
            }
        }
    }

    /// The response on `stream`: the raw header blocks (HPACK, not decoded) and the body,
    /// read until the stream ends; frames of other streams are skipped.
    pub fn response(&mut self, stream: u32) -> (Vec<u8>, Vec<u8>) {
        let (mut headers, mut body) = (Vec::new(), Vec::new());
        loop {
            let f = self.next_frame();
            assert_ne!(f.kind, h2::GOAWAY, "the proxy ended the connection: {f:?}");
            if f.stream != stream {
                continue;
            }
            match f.kind {
                h2::HEADERS => headers.extend_from_slice(&f.payload),
                h2::DATA => body.extend_from_slice(&f.payload),
                h2::RST_STREAM => panic!("the proxy reset stream {stream}: {f:?}"),
                _ => {}
            }
            if f.flags & h2::END_STREAM != 0 && matches!(f.kind, h2::HEADERS | h2::DATA) {
                return (headers, body);
            }
        }
    }
}

/// One HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS frame (END_HEADERS, and END_STREAM when `end`) carrying `fields` as HPACK
/// literals without indexing and without Huffman coding: readable in a capture, and no
/// state shared between blocks.
pub fn headers_frame(stream: u32, fields: &[(&str, &str)], end: bool) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        for s in [name, value] {
            hpack_int(&mut block, s.len(), 7);
            block.extend_from_slice(s.as_bytes());
        }
    }
    let flags = h2::END_HEADERS | if end { h2::END_STREAM } else { 0 };
    frame(h2::HEADERS, flags, stream, &block)
}

/// RST_STREAM with CANCEL: what a client sends for a request it gave up on.
pub fn rst_frame(stream: u32) -> Vec<u8> {
    frame(h2::RST_STREAM, 0, stream, &h2::CANCEL.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's other bits zero.
fn hpack_int(out: &mut Vec<u8>, mut value: usize, n: u32) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}
