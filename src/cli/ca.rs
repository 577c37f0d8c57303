//! `airlock ca export`: the proxy's local CA certificate, for agents (and their images) to
//! trust before the proxy serves them. Made here if the data dir holds none yet, exactly as
//! the proxy's first start would make it.
//!
//! `airlock ca server-cert`: a CA and a certificate it signed for the central API's HTTPS
//! (`airlock server --tls-cert/--tls-key`, clients `--server-ca`), for deployments without a
//! PKI of their own. The CA's key is not kept: a renewal makes a new CA, to be handed out
//! again.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::proxy::tls::LocalCa;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) of a proxy's data dir, creating the CA if there is none
    Export(ExportArgs),
    /// Make a CA and a server certificate for the central API's HTTPS: writes ca.pem,
    /// server.pem and server-key.pem (0600) into --out-dir
    ServerCert(ServerCertArgs),
}

#[derive(Args, Debug)]
pub struct ServerCertArgs {
    /// A name or IP address clients use to reach the server (repeat for several)
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    /// Where to write the files
    #[arg(long)]
    out_dir: PathBuf,
    /// How long the certificates are valid, in days
    #[arg(long, default_value_t = 397)]
    days: u32,
    /// When server.pem is already there, change nothing and succeed (for start-up scripts)
    #[arg(long, conflicts_with = "force")]
    if_missing: bool,
    /// Replace existing files
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The proxy's data directory (as `airlock proxy --data-dir`)
    #[arg(long, default_value = ".airlock/proxy")]
    data_dir: PathBuf,
    /// Write the certificate to this file instead of standard output
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    let args = match cmd {
        CaCommand::Export(args) => args,
        CaCommand::ServerCert(args) => return server_cert(&args),
    };
    let ca = LocalCa::load_or_create(&args.data_dir)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, ca.ca_pem()).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote the CA certificate of {} to {}", args.data_dir.display(), path.display());
        }
        None => std::io::stdout().write_all(ca.ca_pem().as_bytes())?,
    }
    Ok(())
}

fn server_cert(args: &ServerCertArgs) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let [ca_path, cert_path, key_path] = ["ca.pem", "server.pem", "server-key.pem"].map(|f| args.out_dir.join(f));
    if cert_path.exists() && !args.force {
        if args.if_missing {
            eprintln!("{} exists; nothing changed", cert_path.display());
            return Ok(());
        }
        anyhow::bail!("{} exists; give --force to replace it (clients then need the new ca.pem)", cert_path.display());
    }
    if args.days == 0 {
        anyhow::bail!("--days must be 1 or more");
    }
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (now - time::Duration::hours(1), now + time::Duration::days(i64::from(args.days)));
    let key_for = |what: &str| {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).with_context(|| format!("cannot generate the {what} key"))
    };

    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Airlock server CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca_key = key_for("CA")?;
    let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA certificate")?;

    // Names and IP literals become DNS and IP subject alternative names.
    let mut leaf = CertificateParams::new(args.hosts.clone())
        .with_context(|| format!("--host {:?}: not a host name or IP address", args.hosts))?;
    leaf.distinguished_name.push(DnType::CommonName, args.hosts[0].as_str());
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (not_before, not_after);
    let leaf_key = key_for("server")?;
    let leaf_cert =
        leaf.signed_by(&leaf_key, &Issuer::new(ca, ca_key)).context("cannot sign the server certificate")?;

    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    // The key first, so a certificate never appears without its key.
    write_new(&key_path, zeroize::Zeroizing::new(leaf_key.serialize_pem()).as_bytes(), 0o600)?;
    write_new(&cert_path, leaf_cert.pem().as_bytes(), 0o644)?;
    write_new(&ca_path, ca_cert.pem().as_bytes(), 0o644)?;
    eprintln!(
        "wrote {} and {} (airlock server --tls-cert/--tls-key) and {} (clients: --server-ca), valid {} days for {}",
        cert_path.display(),
        key_path.display(),
        ca_path.display(),
        args.days,
        args.hosts.join(", ")
    );
    Ok(())
}

/// Writes `bytes` to `path` with `mode`, replacing what was there, through a temporary file.
fn write_new(path: &std::path::Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
