//! `airlock ca export`: the proxy's local CA certificate, for agents (and their images) to
//! trust before the proxy serves them. Made here if the data dir holds none yet, exactly as
//! the proxy's first start would make it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::proxy::tls::LocalCa;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) of a proxy's data dir, creating the CA if there is none
    Export(ExportArgs),
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
    let CaCommand::Export(args) = cmd;
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
