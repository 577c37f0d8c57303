//! `airlock policy check PATH` (offline: parses and validates a policy file or a directory
//! of them as the server would load it, printing every error as `file:line: message`) and
//! `airlock policy reload` (asks the server to re-read its `--policies` directory).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::client::Client;
use crate::domain::policy::{Policy, PolicyError, PolicySet};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and validate a policy file, or every *.toml in a directory, without a server;
    /// prints each error as file:line: message and exits 1 if there is any
    Check {
        /// A policy file or a directory of them (as given to `airlock server --policies`)
        path: PathBuf,
        /// Print {"valid", "summary", "errors": [{"file", "line", "message"}]} as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make the server re-read its --policies directory (all or nothing: a file with an
    /// error keeps the previous set in force); needs agents:manage
    Reload,
}

/// Whether `check` found the policies valid.
pub enum Checked {
    Valid,
    Invalid,
}

pub fn check(path: &Path, json: bool) -> Checked {
    if json {
        let (summary, errors) = match errors_in(path) {
            Ok((summary, errors)) => (Some(summary).filter(|_| errors.is_empty()), errors),
            Err(e) => (None, vec![e]),
        };
        let errors: Vec<_> = errors
            .iter()
            .map(|e| serde_json::json!({ "file": e.file, "line": e.line, "message": e.message }))
            .collect();
        let valid = errors.is_empty();
        let printed = super::output::print_json(&serde_json::json!({
            "valid": valid, "summary": summary, "errors": errors,
        }));
        return if valid && printed.is_ok() { Checked::Valid } else { Checked::Invalid };
    }
    let errors = match errors_in(path) {
        Ok((summary, errors)) if errors.is_empty() => {
            println!("{summary}");
            return Checked::Valid;
        }
        Ok((_, errors)) => errors,
        Err(e) => vec![e],
    };
    for e in &errors {
        eprintln!("{e}");
    }
    eprintln!("{}: {} error(s)", path.display(), errors.len());
    Checked::Invalid
}

/// A one-line summary of the valid set, and every error found: each file's own first, then
/// (when each file parses) those between files, like two files for one agent.
fn errors_in(path: &Path) -> Result<(String, Vec<PolicyError>), PolicyError> {
    let unreadable = |e: std::io::Error| PolicyError {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read it: {e}"),
    };
    let is_dir = path.is_dir();
    let files = if is_dir {
        crate::server::policies::read_dir(path)?
    } else {
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        vec![(name, text)]
    };
    // Errors name a file by its path as given, not by its name in the directory alone.
    let located = |mut e: PolicyError| {
        e.file = if is_dir { path.join(&e.file) } else { path.to_path_buf() }.display().to_string();
        e
    };
    let mut errors: Vec<PolicyError> =
        files.iter().filter_map(|(name, text)| Policy::parse(name, text).err()).map(&located).collect();
    if files.is_empty() {
        errors.push(PolicyError {
            file: path.display().to_string(),
            line: 0,
            message: "holds no *.toml policy file".into(),
        });
    }
    if !errors.is_empty() {
        return Ok((String::new(), errors));
    }
    match PolicySet::from_files(&files) {
        Ok(set) => {
            let agents: Vec<String> = set.iter().map(|p| format!("{}/{}", p.agent().tenant, p.agent().name)).collect();
            Ok((format!("{}: {} valid policies ({})", path.display(), set.len(), agents.join(", ")), vec![]))
        }
        Err(e) => Ok((String::new(), vec![located(e)])),
    }
}

pub async fn reload(client: &Client) -> anyhow::Result<()> {
    let body: crate::api::policy::PolicyReload =
        client.call_bodiless(reqwest::Method::POST, "/v1/policies/reload").await?;
    println!(
        "reloaded: {} policies in force; {} pending approval request(s) cancelled (no longer granted)",
        body.policies, body.cancelled_approvals
    );
    Ok(())
}
