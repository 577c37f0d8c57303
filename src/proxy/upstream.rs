//! Connections to upstreams: a pooled keep-alive client (HTTP/1.1, or HTTP/2 when the
//! upstream's TLS offers it by ALPN) whose connector dials only the addresses the egress
//! check resolved, and verifies upstream certificates normally (plus `--upstream-ca`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::{Body, BoxError};
use super::egress::Resolver;

pub type Upstreams = Client<Dialer, Body>;

/// Builds the pooled client (the hyper path: HTTP/2 when the upstream offers it).
pub fn client(dialer: Dialer) -> Upstreams {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .set_host(true)
        .build(dialer)
}

/// Opens upstream connections to addresses the egress check resolved, and only those.
#[derive(Clone)]
pub struct Dialer {
    resolver: Arc<Resolver>,
    /// Offers h2 and http/1.1 (the pooled hyper client speaks both).
    tls: TlsConnector,
    /// Offers http/1.1 alone (the HTTP/1.1 fast path).
    tls_h1: TlsConnector,
    /// Longest time a dial (TCP and TLS handshake) may take.
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("upstream URI without a host")?.trim_matches(['[', ']']).to_owned();
            let tls = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let stream = this.open(&host, port, tls, Alpn::H2OrH1).await?;
            let h2 = matches!(&stream, Stream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2"));
            Ok(UpstreamIo { inner: TokioIo::new(stream), h2 })
        })
    }
}

/// What a TLS upstream is offered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2OrH1,
    H1,
}

impl Dialer {
    pub fn new(
        resolver: Arc<Resolver>,
        extra_ca: Option<&std::path::Path>,
        connect_timeout: Duration,
    ) -> Result<Dialer, super::tls::TlsError> {
        let tls = super::tls::upstream_client_config(extra_ca, &[b"h2", b"http/1.1"])?;
        let tls_h1 = super::tls::upstream_client_config(extra_ca, &[b"http/1.1"])?;
        Ok(Dialer { resolver, tls: TlsConnector::from(tls), tls_h1: TlsConnector::from(tls_h1), connect_timeout })
    }

    /// A connection to `host:port` (TLS verified against the system roots and
    /// `--upstream-ca`), dialled at the addresses the egress check resolved for it; each
    /// address and the TLS handshake get the connect timeout.
    pub async fn open(&self, host: &str, port: u16, tls: bool, alpn: Alpn) -> Result<Stream, BoxError> {
        let addrs = self
            .resolver
            .checked(host, port)
            .ok_or_else(|| format!("'{host}:{port}' was not resolved by the egress check"))?;
        let tcp = connect_any(&addrs, self.connect_timeout).await?;
        tcp.set_nodelay(true)?;
        if !tls {
            return Ok(Stream::Plain(tcp));
        }
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| format!("'{host}' is not a valid TLS server name"))?;
        let connector = if alpn == Alpn::H1 { &self.tls_h1 } else { &self.tls };
        match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(tls_failure(host, port, &e).into()),
            Err(_) => Err(format!("the TLS handshake with {host}:{port} timed out").into()),
        }
    }
}

/// A failed TLS handshake with an upstream, in words that say what to do.
fn tls_failure(host: &str, port: u16, e: &io::Error) -> String {
    use rustls::CertificateError as C;
    let cert = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => c,
        _ => return format!("the TLS handshake with {host}:{port} failed: {e}"),
    };
    let trust = "if the upstream uses a private CA, give the proxy that CA with --upstream-ca FILE";
    let why = match cert {
        C::UnknownIssuer => format!("its certificate is not signed by a CA this proxy trusts; {trust}"),
        C::Expired | C::ExpiredContext { .. } => "its certificate has expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "its certificate is not valid yet (check the clocks)".to_owned()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("its certificate is not issued for the name '{host}'")
        }
        C::Revoked => "its certificate is revoked".to_owned(),
        C::BadSignature | C::BadEncoding => "its certificate is malformed or badly signed".to_owned(),
        C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
            "it presented a CA certificate (one marked CA:TRUE, as a self-signed certificate made to sign others \
             is) as its own certificate; give it a certificate issued by that CA, and {trust}"
        ),
        C::Other(other) if format!("{other:?}").contains("SelfSigned") => {
            format!("it presented a self-signed certificate; {trust}")
        }
        other => format!("its certificate was refused ({other:?}); {trust}"),
    };
    format!("the TLS handshake with {host}:{port} failed: {why}")
}

/// The first of `addrs` that accepts, each given `limit`.
pub async fn connect_any(addrs: &[std::net::SocketAddr], limit: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => {
                let secs = limit.as_secs_f64();
                last =
                    io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out after {secs} s"));
            }
        }
    }
    Err(last)
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle keep-alive connection can take another request: nothing (no data,
    /// no EOF) has arrived on it since its last response. Costs no system call unless the
    /// reactor saw the socket become readable, then one `MSG_PEEK`.
    pub fn idle_and_open(&self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        tcp.poll_peek(&mut cx, &mut tokio::io::ReadBuf::new(&mut byte)).is_pending()
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connection the pool keeps; says whether ALPN chose HTTP/2.
pub struct UpstreamIo {
    inner: TokioIo<Stream>,
    h2: bool,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for webpki's error of that name, which rustls wraps in `OtherError`.
    #[derive(Debug)]
    struct CaUsedAsEndEntity;
    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CaUsedAsEndEntity")
        }
    }
    impl std::error::Error for CaUsedAsEndEntity {}

    fn handshake_error(e: rustls::CertificateError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(e))
    }

    #[test]
    fn a_refused_upstream_certificate_is_told_in_words() {
        let other = rustls::OtherError(std::sync::Arc::new(CaUsedAsEndEntity));
        let said = tls_failure("self.test", 443, &handshake_error(rustls::CertificateError::Other(other)));
        assert!(said.contains("self.test:443") && said.contains("presented a CA certificate"), "{said}");
        assert!(said.contains("--upstream-ca") && !said.contains("OtherError"), "{said}");
        let said = tls_failure("x.test", 8443, &handshake_error(rustls::CertificateError::UnknownIssuer));
        assert!(said.contains("not signed by a CA this proxy trusts"), "{said}");
        let said = tls_failure("x.test", 443, &handshake_error(rustls::CertificateError::NotValidForName));
        assert!(said.contains("not issued for the name 'x.test'"), "{said}");
        let said = tls_failure("x.test", 443, &io::Error::other("reset"));
        assert!(said.ends_with("failed: reset"), "{said}");
    }
}
