//! The listener: HTTP/1.1 and HTTP/2 on one port. Plain requests go to the pipeline;
//! `CONNECT host:port` is admitted and egress-checked, then either tunnelled untouched
//! (`egress.passthrough`) or terminated with a certificate from the local CA so every
//! request inside is seen by the same pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Proxy;
use super::body::{Body, BoxError, full};
use super::error::ProxyError;
use super::h1::{self, ConnectionEnd};
use super::io::Rewind;
use super::local::{SWEEP_EVERY, ThreadCache};
use super::pipeline::{self, proxy_authorized};
use super::request::Via;

/// Accepts on the caller's runtime and deals the connections out, in turn, to `workers`
/// threads that each run a single-threaded runtime: a connection and everything it does
/// (its upstream connection included) stay on one thread, so no request is handed between
/// threads. Dropping the returned future stops the workers and their connections.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, workers: usize) {
    let mut lanes = Vec::with_capacity(workers);
    for n in 0..workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        let proxy = proxy.clone();
        let spawned = std::thread::Builder::new().name(format!("airlock-proxy-{n}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "cannot start a proxy worker"),
            };
            runtime.block_on(work(proxy, rx));
        });
        match spawned {
            Ok(_) => lanes.push(tx),
            Err(e) => tracing::error!(error = %e, "cannot start a proxy worker thread"),
        }
    }
    if lanes.is_empty() {
        tracing::error!("no proxy worker could start; serving on the main runtime");
    }
    let mut next = 0usize;
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
        if lanes.is_empty() {
            tokio::spawn(serve_connection(proxy.clone(), stream, peer));
            continue;
        }
        let Ok(stream) = stream.into_std() else { continue };
        next = (next + 1) % lanes.len();
        if let Err(mpsc::error::SendError((stream, peer))) = lanes[next].send((stream, peer)) {
            // That worker is gone: serve here rather than drop the agent.
            lanes.remove(next);
            if let Ok(stream) = TcpStream::from_std(stream) {
                tokio::spawn(serve_connection(proxy.clone(), stream, peer));
            }
        }
    }
}

/// One worker: serves the connections dealt to it until the acceptor goes away, and drops
/// this thread's out-of-date copies of shared state (`ThreadCache::sweep`) every second.
async fn work(proxy: Arc<Proxy>, mut rx: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>) {
    let sweeper = proxy.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            ThreadCache::sweep(&sweeper);
        }
    });
    while let Some((stream, peer)) = rx.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                tokio::spawn(serve_connection(proxy.clone(), stream, peer));
            }
            Err(e) => tracing::warn!(error = %e, "cannot take over an accepted connection"),
        }
    }
}

/// An agent connection: HTTP/1.1 on the fast path while its requests fit it, hyper
/// (HTTP/1.1 and HTTP/2, CONNECT, upgrades) for the rest.
async fn serve_connection(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let io = match h1::serve(&proxy, stream, &Via::Direct).await {
        ConnectionEnd::Done => return,
        ConnectionEnd::Fallback(io) => io,
    };
    let timeouts = proxy.timeouts;
    let handle = move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            if req.method() == Method::CONNECT {
                connect(proxy, req).await.unwrap_or_else(ProxyError::into_response)
            } else {
                let Ok(resp) = pipeline::handle(proxy, req, Via::Direct).await;
                resp
            }
        }
    };
    if let Err(e) = serve_with_hyper(io, timeouts, handle).await {
        tracing::debug!(%peer, error = %e, "agent connection ended with an error");
    }
}

/// Serves the rest of an agent connection with hyper (HTTP/1.1 and HTTP/2, upgrades) under
/// the fast path's limits: a request head of 64 KiB at most, read within the header-read
/// timeout, and the connection closed once no request has been in flight for the idle
/// timeout. (Hyper's HTTP/1 header timer also runs while a connection waits for its next
/// request, so there an idle connection closes after the header-read timeout.)
async fn serve_with_hyper<IO, F, Fut>(io: IO, timeouts: super::Timeouts, handle: F) -> Result<(), BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let busy = Busy::begin(&tracked);
        let answer = handle(req);
        async move {
            let resp = answer.await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| InFlight { body, _busy: busy }.boxed()))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.header_read).max_buf_size(h1::MAX_HEAD);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return done,
        () = activity.idle_for(timeouts.idle) => {
            tracing::debug!("agent connection closed: no request in flight for the idle timeout");
            conn.as_mut().graceful_shutdown();
        }
    }
    // A connection told to shut down finishes what it is writing; one that does not is cut.
    tokio::time::timeout(timeouts.header_read, conn).await.unwrap_or(Ok(()))
}

/// When an agent connection last started or finished a request, and how many it has in
/// flight.
struct Activity {
    since: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `since` to the last start or finish.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { since: tokio::time::Instant::now(), in_flight: AtomicUsize::new(0), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet_since = self.since + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && tokio::time::Instant::now() >= quiet_since + idle {
                return;
            }
            let next = if busy { tokio::time::Instant::now() + idle } else { quiet_since + idle };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A request in flight, from its head until its response body's end (or drop).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight while it streams.
struct InFlight {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for InFlight {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn connect(proxy: Arc<Proxy>, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if let Some(key) = &proxy.session_key {
        proxy_authorized(req.headers(), key)?;
    }
    let authority = req.uri().authority().ok_or_else(|| ProxyError::bad_request("CONNECT needs host:port"))?;
    let host = authority.host().trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    // Taken before the policy is read: the tunnel closes on the first update under which it
    // would not have been opened as it was.
    let watch = proxy.central.watch_policy();
    let policy = proxy.central.policy();
    if !policy.host_allowed(&host) {
        return Err(ProxyError::egress_denied(&host));
    }
    let addrs = proxy.resolver.resolve(&host, port, policy.egress().deny_private_networks).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    if policy.is_passthrough(&host) {
        let private = addrs.iter().any(|a| super::egress::is_private(a.ip())) && !proxy.resolver.is_pinned(&host);
        let tunnelled = host.clone();
        let revoked = watch.until_disallowed(move |p| {
            p.host_allowed(&tunnelled) && p.is_passthrough(&tunnelled) && !(private && p.egress().deny_private_networks)
        });
        tokio::spawn(async move {
            let dial = super::upstream::connect_any(&addrs, proxy.timeouts.upstream_connect);
            match (upgrade.await, dial.await) {
                (Ok(agent), Ok(mut upstream)) => {
                    let mut agent = TokioIo::new(agent);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut agent, &mut upstream) => {}
                        _ = revoked => {
                            tracing::info!(%host, "passthrough tunnel closed: the updated policy would not open it");
                        }
                    }
                }
                (Err(e), _) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                (_, Err(e)) => tracing::info!(%host, error = %e, "passthrough upstream unreachable"),
            }
        });
    } else {
        let intercepted = host.clone();
        let revoked = watch.until_disallowed(move |p| p.host_allowed(&intercepted) && !p.is_passthrough(&intercepted));
        tokio::spawn(async move {
            tokio::select! {
                _ = intercept(proxy, upgrade, host.clone(), port) => {}
                _ = revoked => {
                    tracing::info!(%host, "intercepted tunnel closed: the updated policy would not open it");
                }
            }
        });
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
    let agent = Rewind::new(Bytes::copy_from_slice(&first), agent);
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
    let sni = start.client_hello().server_name().map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    // A leaf is minted for the host the tunnel was opened to (which the egress check passed)
    // and no other: a ClientHello naming another host ends the handshake here.
    if let Some(other) = sni.as_deref().filter(|name| *name != host) {
        return tracing::info!(%host, sni = %other, "CONNECT refused: the TLS SNI names another host than the tunnel");
    }
    let config = match proxy.ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => return tracing::error!(%host, error = %e, "cannot mint a leaf certificate"),
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
    let io = match h1::serve(&proxy, io, &via).await {
        ConnectionEnd::Done => return,
        ConnectionEnd::Fallback(io) => io,
    };
    let timeouts = proxy.timeouts;
    let handle = move |req: Request<Incoming>| {
        let answer = pipeline::handle(proxy.clone(), req, via.clone());
        async move {
            let Ok(resp) = answer.await;
            resp
        }
    };
    if let Err(e) = serve_with_hyper(io, timeouts, handle).await {
        tracing::debug!(error = %e, "tunnelled connection ended with an error");
    }
}

/// The first byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;
