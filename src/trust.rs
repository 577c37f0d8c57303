//! Which certificates a client of the central API trusts: the system's roots and, when the
//! operator names one with `--server-ca FILE` (`AIRLOCK_SERVER_CA`), a private CA's (or a
//! self-signed server's) certificate as well. It is one setting per process, read once at
//! start, so the operator CLI, the proxy's API client and its change stream, and the proxy
//! `airlock run` starts all check the server the same way.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static SERVER_CA: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read --server-ca {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("--server-ca {}: no PEM CERTIFICATE block in it", path.display())]
    Empty { path: PathBuf },
    #[error("--server-ca {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("--server-ca was set twice in one process")]
    AlreadySet,
}

/// Trusts the certificates in the PEM file at `path` for the central API, besides the
/// system's roots.
pub fn trust_server_ca(path: &Path) -> Result<(), TrustError> {
    let pem = std::fs::read(path).map_err(|e| TrustError::Read { path: path.into(), reason: e.to_string() })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| TrustError::Invalid { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TrustError::Empty { path: path.into() });
    }
    SERVER_CA.set(certs).map_err(|_| TrustError::AlreadySet)
}

/// An HTTP client builder for the central API, trusting what [`trust_server_ca`] added.
pub fn central_client() -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder();
    for cert in SERVER_CA.get().into_iter().flatten() {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder
}
