//! The listener: HTTP/1.1 and HTTP/2 on one port. Plain requests go to the pipeline;
//! `CONNECT host:port` is admitted and egress-checked, then either tunnelled untouched
//! (`egress.passthrough`) or terminated with a certificate from the local CA so every
//! request inside is seen by the same pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use super::Proxy;
use super::error::ProxyError;
use super::pipeline::{self, Via, proxy_authorized};
use super::upstream::{Body, full};

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(proxy.clone(), stream, peer));
    }
}

async fn serve_connection(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            if req.method() == Method::CONNECT {
                Ok::<_, std::convert::Infallible>(connect(proxy, req).await.unwrap_or_else(ProxyError::into_response))
            } else {
                pipeline::handle(proxy, req, Via::Direct).await
            }
        }
    });
    if let Err(e) =
        auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(stream), service).await
    {
        tracing::debug!(%peer, error = %e, "agent connection ended with an error");
    }
}

async fn connect(proxy: Arc<Proxy>, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if let Some(key) = &proxy.session_key {
        proxy_authorized(req.headers(), key)?;
    }
    let authority = req.uri().authority().ok_or_else(|| ProxyError::bad_request("CONNECT needs host:port"))?;
    let host = authority.host().trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    let policy = proxy.central.policy();
    if !policy.host_allowed(&host) {
        return Err(ProxyError::policy("egress_denied", format!("'{host}' is not in this agent's egress.allow")));
    }
    let addrs = proxy.resolver.resolve(&host, port, policy.egress.deny_private_networks).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    if policy.is_passthrough(&host) {
        tokio::spawn(async move {
            match (upgrade.await, TcpStream::connect(&addrs[..]).await) {
                (Ok(agent), Ok(mut upstream)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(agent), &mut upstream).await;
                }
                (Err(e), _) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                (_, Err(e)) => tracing::info!(%host, error = %e, "passthrough upstream unreachable"),
            }
        });
    } else {
        tokio::spawn(intercept(proxy, upgrade, host, port));
    }
    Ok(Response::new(full("")))
}

/// Terminates the agent's TLS with a leaf for the server name it asked for (or, when the
/// tunnel carries plain HTTP, reads it as is) and serves the requests inside through the
/// pipeline.
async fn intercept(proxy: Arc<Proxy>, upgrade: hyper::upgrade::OnUpgrade, host: String, port: u16) {
    let mut agent = match upgrade.await {
        Ok(io) => TokioIo::new(io),
        Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
    };
    let mut first = [0u8; 1];
    if tokio::io::AsyncReadExt::read_exact(&mut agent, &mut first).await.is_err() {
        return;
    }
    let agent = Prefixed { first: Some(first[0]), inner: agent };
    if first[0] != TLS_HANDSHAKE {
        let via = Via::Mitm { host, port, sni: None, tls: false };
        return serve_tunnel(proxy, agent, via).await;
    }
    let start = match tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), agent).await {
        Ok(start) => start,
        Err(e) => {
            return tracing::info!(%host, error = %e, "agent TLS handshake failed (does the agent trust the Airlock CA?)");
        }
    };
    let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
    let cert_host = sni.clone().unwrap_or_else(|| host.clone());
    let config = match proxy.ca.server_config(&cert_host) {
        Ok(c) => c,
        Err(e) => return tracing::error!(%cert_host, error = %e, "cannot mint a leaf certificate"),
    };
    let tls = match start.into_stream(config).await {
        Ok(tls) => tls,
        Err(e) => {
            return tracing::info!(%host, error = %e, "agent TLS handshake failed (does the agent trust the Airlock CA?)");
        }
    };
    serve_tunnel(proxy, tls, Via::Mitm { host, port, sni, tls: true }).await
}

async fn serve_tunnel<IO>(proxy: Arc<Proxy>, io: IO, via: Via)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| pipeline::handle(proxy.clone(), req, via.clone()));
    if let Err(e) =
        auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(io), service).await
    {
        tracing::debug!(error = %e, "tunnelled connection ended with an error");
    }
}

/// The first byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// A stream with one byte already read from it put back in front.
struct Prefixed<T> {
    first: Option<u8>,
    inner: T,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(b) = self.first.take() {
            buf.put_slice(&[b]);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
