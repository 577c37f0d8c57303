//! HTTPS for the central API (`--tls-cert FILE --tls-key FILE`): agent keys, tokens and
//! secret values cross the network between proxies and the server, so they go encrypted.
//!
//! The certificate chain and key are read at start (a file that does not load stops the
//! server with the file's name and the reason) and again on SIGHUP; a reload that fails is
//! logged and the certificate in use stays. Handshakes run in their own tasks, each within
//! [`HANDSHAKE_TIMEOUT`], so a client that opens a connection and sends nothing delays no
//! one else's.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; further connections wait to be accepted.
const HANDSHAKES_AT_ONCE: usize = 256;

/// Where the certificate chain and its private key are read from (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate chain {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS private key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the TLS private key {} does not belong to the certificate {}: {reason}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

/// The certificate the server presents, replaced in place by [`Certs::reload`].
#[derive(Debug)]
pub struct Certs {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    pub fn load(files: TlsFiles) -> Result<Arc<Certs>, TlsError> {
        let current = RwLock::new(Arc::new(read(&files)?));
        Ok(Arc::new(Certs { files, current }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read(&self.files)?);
        // A poisoned lock only means a reader panicked; the value is a whole `Arc` either way.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn acceptor(self: &Arc<Certs>) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        // The API is served over HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn read(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert { path: files.cert.clone(), reason };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM CERTIFICATE block in it".into()));
    }
    // The key file's content never goes into a message, only what kind of problem it has.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: files.key.clone(), reason: pem_reason(e) })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM block of the expected kind in it".into(),
        Error::MissingSectionEnd { .. } | Error::IllegalSectionStart { .. } => "a PEM block is cut short".into(),
        Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        _ => "it is not a PEM file".into(),
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, certs: &Arc<Certs>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, certs.acceptor(), tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    let at_once = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let Ok(permit) = at_once.clone().acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not completed in time"),
            }
            drop(permit);
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
