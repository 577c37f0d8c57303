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
        let (log, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let connections = AtomicUsize::new(0);
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
        Hostile { port, ca_pem, received, stop, _dir: dir }
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
