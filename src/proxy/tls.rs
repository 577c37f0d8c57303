//! The proxy's TLS on both sides of a CONNECT tunnel (DESIGN §3): the local CA that lives in
//! the proxy's data dir (created on first start, key kept 0600) and mints a leaf certificate
//! for each host the agent reaches, cached per host, so the agent-facing side can be
//! terminated and inspected; and the client configuration for the real upstream, which
//! trusts the system roots plus an operator-given `--upstream-ca` and verifies normally.
//! Every config is built with the ring provider explicitly, never a process-wide default.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CA_COMMON_NAME: &str = "Airlock local CA";
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(30);
/// A cached leaf is replaced this long after it was minted, a week before it expires, so a
/// proxy that runs for months never presents an expired certificate.
const LEAF_RENEW_AFTER: std::time::Duration = std::time::Duration::from_secs(23 * 24 * 3600);
/// Certificates start this far in the past so a client whose clock runs behind accepts them.
const CLOCK_SKEW: Duration = Duration::hours(1);
const LEAF_CACHE_CAPACITY: usize = 10_000;
/// X.509's upper bound for a common name; longer host names go in the SAN only.
const MAX_COMMON_NAME_LEN: usize = 64;
/// What the agent side offers by ALPN.
const AGENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Signed by the CA at load time to prove that `ca.pem` and `ca.key` belong together.
const SELF_CHECK_HOST: &str = "self-check.airlock.invalid";

/// Why a TLS set-up step failed, worded so the operator knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Pem(String),
    #[error("{0}")]
    Cert(String),
    #[error(
        "{} is accessible by group or others, so the proxy refuses to use this CA key; \
         run `chmod 600 {}` and start again",
        .0.display(),
        .0.display()
    )]
    KeyPermissions(PathBuf),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The proxy's own certificate authority, which the agent trusts for intercepted hosts.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// Per host: its config, and when its leaf was minted.
    leaves: Mutex<HashMap<String, (Arc<ServerConfig>, std::time::Instant)>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.leaves.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("LocalCa").field("issuer", &self.issuer).field("cached_leaves", &cached).finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA from `dir/ca.pem` and `dir/ca.key`, or creates both (and `dir`, 0700)
    /// on first start.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, TlsError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let have_cert = cert_path.try_exists().map_err(io_err(&cert_path))?;
        let have_key = key_path.try_exists().map_err(io_err(&key_path))?;
        match (have_cert, have_key) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => Self::create(&cert_path, &key_path),
            (true, false) => Err(half_ca(&cert_path, &key_path)),
            (false, true) => Err(half_ca(&key_path, &cert_path)),
        }
    }

    /// The CA certificate in PEM, as agents must trust it (`/_airlock/ca.pem`).
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The agent-facing server config for `host` (a DNS name or an IP address): a leaf
    /// certificate minted by this CA, offering `h2` and `http/1.1`. Cached per host.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_at(host, std::time::Instant::now())
    }

    /// `server_config` as of `now`: a cached leaf minted `LEAF_RENEW_AFTER` ago or earlier
    /// is replaced.
    fn server_config_at(&self, host: &str, now: std::time::Instant) -> Result<Arc<ServerConfig>, TlsError> {
        let host = normalize_host(host);
        let current = |entry: &(Arc<ServerConfig>, std::time::Instant)| {
            (now.saturating_duration_since(entry.1) < LEAF_RENEW_AFTER).then(|| Arc::clone(&entry.0))
        };
        if let Some(config) = self.cached_leaves().get(&host).and_then(current) {
            return Ok(config);
        }
        // Minted outside the lock so one new host does not stall handshakes for the others.
        let config = Arc::new(self.mint_server_config(&host)?);
        tracing::debug!(%host, "minted a leaf certificate");
        let mut leaves = self.cached_leaves();
        if let Some(raced) = leaves.get(&host).and_then(current) {
            return Ok(raced);
        }
        if leaves.len() >= LEAF_CACHE_CAPACITY
            && !leaves.contains_key(&host)
            && let Some(victim) = leaves.keys().next().cloned()
        {
            leaves.remove(&victim);
        }
        leaves.insert(host, (Arc::clone(&config), now));
        Ok(config)
    }

    fn create(cert_path: &Path, key_path: &Path) -> Result<LocalCa, TlsError> {
        let key = generate_key()?;
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params();
        params.serial_number = Some(random_serial());
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Cert(format!("cannot create the local CA certificate: {e}")))?;
        let cert_pem = cert.pem();
        // Key first: ca.pem only appears once its key is safely on disk, so agents are never
        // handed a CA whose key was lost; a crash in between is reported at the next start.
        write_atomic(key_path, Zeroizing::new(key.serialize_pem()).as_bytes(), 0o600)?;
        write_atomic(cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "created the proxy's local CA");
        Ok(LocalCa::new(key, cert.der().clone(), cert_pem))
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<LocalCa, TlsError> {
        let key_pem = read_private(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            TlsError::Pem(format!(
                "{} is not a usable private key ({e}); restore it, or move ca.pem and ca.key \
                 aside to have a new CA created",
                key_path.display()
            ))
        })?;
        let cert_pem = fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Pem(format!("{} holds no usable PEM certificate: {e}", cert_path.display())))?;
        let ca = LocalCa::new(key, cert_der, cert_pem);
        ca.self_check().map_err(|e| {
            TlsError::Cert(format!(
                "{} and {} do not belong together ({e}); restore the matching pair, or move \
                 both aside to have a new CA created (agents must then trust the new ca.pem)",
                cert_path.display(),
                key_path.display()
            ))
        })?;
        Ok(ca)
    }

    fn new(key: KeyPair, cert_der: CertificateDer<'static>, cert_pem: String) -> LocalCa {
        // Leaves name their issuer from these params, so they must match what `create`
        // put in the certificate; `self_check` proves it for a loaded pair.
        let issuer = Issuer::new(ca_params(), key);
        LocalCa { issuer, cert_der, cert_pem, leaves: Mutex::new(HashMap::new()) }
    }

    /// Mints a leaf and verifies it against the CA certificate, as a client would.
    fn self_check(&self) -> Result<(), String> {
        let (leaf, _key) = self.mint_leaf(SELF_CHECK_HOST).map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(|e| e.to_string())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(SELF_CHECK_HOST).map_err(|e| e.to_string())?;
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).map(drop).map_err(|e| e.to_string())
    }

    fn mint_server_config(&self, host: &str) -> Result<ServerConfig, TlsError> {
        let (leaf, key) = self.mint_leaf(host)?;
        let chain = vec![leaf, self.cert_der.clone()];
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = AGENT_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn mint_leaf(&self, host: &str) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
        let cert_err = |e: rcgen::Error| TlsError::Cert(format!("cannot mint a certificate for {host:?}: {e}"));
        let key = generate_key()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![subject_alt_name(host)?];
        params.distinguished_name = DistinguishedName::new();
        if host.len() <= MAX_COMMON_NAME_LEN {
            params.distinguished_name.push(DnType::CommonName, host);
        }
        params.serial_number = Some(random_serial());
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + LEAF_VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        Ok((cert.der().clone(), key_der.into()))
    }

    fn cached_leaves(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<ServerConfig>, std::time::Instant)>> {
        // A panic elsewhere cannot leave the map half-updated, so a poisoned lock is usable.
        self.leaves.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The client config for connections to real upstreams: system roots plus every certificate
/// in `extra_ca_pem`, normal webpki verification, and `alpn` offered in order.
pub fn upstream_client_config(extra_ca_pem: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match extra_ca_pem {
        None => Arc::clone(system_roots()),
        Some(path) => {
            let mut roots = RootCertStore::clone(system_roots());
            add_pem_roots(&mut roots, path)?;
            Arc::new(roots)
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Loaded once per process, so problems with the system store are logged once.
fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not read part of the system trust store");
        }
        let mut roots = RootCertStore::empty();
        let (added, skipped) = roots.add_parsable_certificates(found.certs);
        if skipped > 0 {
            tracing::warn!(skipped, "skipped system trust roots that could not be parsed");
        }
        if added == 0 {
            tracing::warn!(
                "no system trust roots found; upstream TLS will trust only --upstream-ca \
                 (install the ca-certificates package to trust public hosts)"
            );
        }
        tracing::debug!(added, "loaded system trust roots");
        Arc::new(roots)
    })
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Pem(format!("{}: {e}", path.display())))?;
        count += 1;
        roots.add(cert).map_err(|e| {
            TlsError::Cert(format!("{}: certificate #{count} cannot be used as a trust root: {e}", path.display()))
        })?;
    }
    if count == 0 {
        return Err(TlsError::Pem(format!(
            "{} holds no certificate (expected a -----BEGIN CERTIFICATE----- block)",
            path.display()
        )));
    }
    Ok(())
}

/// Subject, basic constraints and key usages of the CA; also what leaves name as issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn generate_key() -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Cert(format!("cannot generate an ECDSA P-256 key: {e}")))
}

/// A positive, non-zero 128-bit serial.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Lower-cased, without IPv6 brackets or a trailing root dot, as the cache key and SAN.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn subject_alt_name(host: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let not_a_host = || {
        TlsError::Cert(format!("cannot mint a certificate for {host:?}: it is neither a DNS name nor an IP address"))
    };
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(_)) => host.try_into().map(SanType::DnsName).map_err(|_| not_a_host()),
        _ => Err(not_a_host()),
    }
}

fn half_ca(present: &Path, missing: &Path) -> TlsError {
    TlsError::Cert(format!(
        "{} exists but {} does not (an interrupted first start, or a file was removed); \
         restore the missing file, or remove {} to have a new CA created",
        present.display(),
        missing.display(),
        present.display()
    ))
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

fn read_private(path: &Path) -> Result<Zeroizing<String>, TlsError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(TlsError::KeyPermissions(path.to_path_buf()));
    }
    let mut pem = Zeroizing::new(String::with_capacity(meta.len() as usize));
    file.read_to_string(&mut pem).map_err(io_err(path))?;
    Ok(pem)
}

/// Write to a temp file beside `path` with `mode`, fsync, rename over `path`, fsync the dir.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or("file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn client_trusting(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn certificate_error(err: &io::Error) -> Option<&CertificateError> {
        match err.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(e) => Some(e),
            _ => None,
        }
    }

    /// Runs a handshake plus one round trip; returns the ALPN the client negotiated.
    async fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let (client_io, server_io) = duplex(64 * 1024);
        let server_side = async move {
            let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.flush().await
        };
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let client_side = async move {
            let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
            tls.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            Ok::<_, io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };
        let (server_result, client_result) = tokio::join!(server_side, client_side);
        let alpn = client_result?;
        server_result?;
        Ok(alpn)
    }

    #[test]
    fn ca_is_created_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("proxy");
        let first = LocalCa::load_or_create(&ca_dir).unwrap();
        let second = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join(CA_CERT_FILE)) & 0o600, 0o600);
        assert_eq!(fs::read_dir(&ca_dir).unwrap().count(), 2, "no temp files left behind");
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_chmod_advice() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        let key_path = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalCa::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, TlsError::KeyPermissions(ref p) if *p == key_path));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn certificate_from_another_ca_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        LocalCa::load_or_create(a.path()).unwrap();
        LocalCa::load_or_create(b.path()).unwrap();
        fs::copy(b.path().join(CA_CERT_FILE), a.path().join(CA_CERT_FILE)).unwrap();
        let err = LocalCa::load_or_create(a.path()).unwrap_err();
        assert!(err.to_string().contains("do not belong together"), "{err}");
    }

    #[test]
    fn half_written_ca_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = LocalCa::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not"), "{err}");
        assert!(dir.path().join(CA_KEY_FILE).exists());
    }

    #[tokio::test]
    async fn agent_trusting_the_ca_handshakes_and_gets_h2() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let server = ca.server_config("API.OpenAI.com").unwrap();
        let client = client_trusting(ca.ca_pem(), &AGENT_ALPN);
        let alpn = handshake(client, server, "api.openai.com").await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        let http1_only = client_trusting(ca.ca_pem(), &[b"http/1.1"]);
        let server = ca.server_config("api.openai.com").unwrap();
        let alpn = handshake(http1_only, server, "api.openai.com").await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    }

    #[tokio::test]
    async fn leaf_for_another_name_is_rejected_by_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let client = client_trusting(ca.ca_pem(), &AGENT_ALPN);
        let err = handshake(client, ca.server_config("a.example").unwrap(), "b.example").await.unwrap_err();
        assert!(
            matches!(
                certificate_error(&err),
                Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ip_host_gets_an_ip_san_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let client = client_trusting(ca.ca_pem(), &AGENT_ALPN);
        handshake(client.clone(), ca.server_config("127.0.0.1").unwrap(), "127.0.0.1").await.unwrap();
        handshake(client, ca.server_config("[::1]").unwrap(), "::1").await.unwrap();
    }

    #[test]
    fn unusable_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        for host in ["", "bad host", "a..b"] {
            let err = ca.server_config(host).unwrap_err();
            assert!(matches!(err, TlsError::Cert(_)), "{host:?}: {err}");
        }
    }

    #[test]
    fn same_host_returns_the_cached_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let first = ca.server_config("api.openai.com").unwrap();
        let second = ca.server_config("API.OPENAI.COM").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let other = ca.server_config("api.anthropic.com").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn a_cached_leaf_is_minted_again_a_week_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let start = std::time::Instant::now();
        let first = ca.server_config_at("api.openai.com", start).unwrap();
        let day = std::time::Duration::from_secs(24 * 3600);
        let later = ca.server_config_at("api.openai.com", start + 22 * day).unwrap();
        assert!(Arc::ptr_eq(&first, &later), "still cached after 22 days");
        let renewed = ca.server_config_at("api.openai.com", start + 23 * day).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "minted again after 23 of its 30 days");
        assert!(LEAF_RENEW_AFTER + 7 * day <= LEAF_VALIDITY.unsigned_abs());
        let again = ca.server_config_at("api.openai.com", start + 24 * day).unwrap();
        assert!(Arc::ptr_eq(&renewed, &again), "the new leaf is cached in turn");
    }

    #[tokio::test]
    async fn upstream_config_trusts_an_extra_ca_file() {
        let (proxy_dir, upstream_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let upstream_ca = LocalCa::load_or_create(upstream_dir.path()).unwrap();
        let upstream = upstream_ca.server_config("upstream.test").unwrap();
        let pem_path = proxy_dir.path().join("upstream-ca.pem");
        fs::write(&pem_path, upstream_ca.ca_pem()).unwrap();

        let client = upstream_client_config(Some(&pem_path), &[b"http/1.1"]).unwrap();
        let alpn = handshake(client, upstream.clone(), "upstream.test").await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

        let system_only = upstream_client_config(None, &AGENT_ALPN).unwrap();
        let err = handshake(system_only, upstream, "upstream.test").await.unwrap_err();
        assert!(matches!(certificate_error(&err), Some(CertificateError::UnknownIssuer)), "{err}");
    }

    #[test]
    fn extra_ca_file_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let err = upstream_client_config(Some(&path), &[b"http/1.1"]).unwrap_err();
        assert!(matches!(err, TlsError::Pem(_)), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = upstream_client_config(Some(&missing), &[b"http/1.1"]).unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
    }
}
