//! The policy set as the running server holds it: loaded from `--policies DIR` at start,
//! replaced whole on SIGHUP or `POST /v1/policies/reload` only when every file parses, so a
//! typo leaves the previous set in force. Reading the directory is here, not in the domain:
//! `load_dir` gathers the files' text and `PolicySet::from_files` parses them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::domain::policy::{PolicyError, PolicySet};

pub struct Policies {
    dir: Option<PathBuf>,
    set: RwLock<Arc<PolicySet>>,
}

impl Policies {
    /// Loads the directory (if any); an invalid file stops the server from starting.
    pub fn load(dir: Option<PathBuf>) -> Result<Policies, PolicyError> {
        let set = match &dir {
            Some(d) => load_dir(d)?,
            None => PolicySet::default(),
        };
        Ok(Policies { dir, set: RwLock::new(Arc::new(set)) })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.set.read().expect("policy lock poisoned").clone()
    }

    /// Re-reads the directory; on error the previous set stays and the error is returned.
    pub fn reload(&self) -> Result<Arc<PolicySet>, ReloadError> {
        let dir = self.dir.as_ref().ok_or(ReloadError::NoDirectory)?;
        let set = Arc::new(load_dir(dir).map_err(ReloadError::Invalid)?);
        *self.set.write().expect("policy lock poisoned") = set.clone();
        tracing::info!(dir = %dir.display(), policies = set.len(), "policies reloaded");
        Ok(set)
    }
}

/// Loads every `*.toml` file in `dir` (sorted by name; hidden files and other files are
/// ignored). All or nothing: the first error is returned and no set is built.
fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    PolicySet::from_files(&read_dir(dir)?)
}

/// The `(file name, text)` of every `*.toml` file in `dir`, sorted by name, as the server
/// loads them (`airlock policy check` reads a directory with it too).
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let dir_error = |e: std::io::Error| PolicyError {
        file: dir.display().to_string(),
        line: 0,
        message: format!("cannot read the policy directory: {e}"),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let name = entry.map_err(dir_error)?.file_name().to_string_lossy().into_owned();
        // `metadata` follows symlinks, as in Kubernetes ConfigMap mounts.
        let is_file = std::fs::metadata(dir.join(&name)).is_ok_and(|m| m.is_file());
        if name.ends_with(".toml") && !name.starts_with('.') && is_file {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).map_err(|e| PolicyError {
            file: name.clone(),
            line: 0,
            message: format!("cannot read the policy file: {e}"),
        })?;
        files.push((name, text));
    }
    Ok(files)
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the server was started without --policies, so there is nothing to reload")]
    NoDirectory,
    #[error("{0}; the previous policies stay in force")]
    Invalid(PolicyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESEARCH: &str = include_str!("../../policies/research-agent.toml");
    const PAYMENTS: &str = include_str!("../../policies/payments-agent.toml");

    #[test]
    fn policy_set_load_dir() {
        let dir = std::env::temp_dir().join(format!("airlock-policy-test-{}", std::process::id()));
        let missing = load_dir(&dir).unwrap_err();
        assert!(missing.message.contains("cannot read the policy directory"), "{missing}");

        std::fs::create_dir_all(dir.join("sub.toml")).unwrap();
        std::fs::write(dir.join("research.toml"), RESEARCH).unwrap();
        std::fs::write(dir.join("payments.toml"), PAYMENTS).unwrap();
        std::fs::write(dir.join("notes.md"), "not a policy").unwrap();
        std::fs::write(dir.join(".hidden.toml"), "garbage").unwrap();
        let set = load_dir(&dir);
        std::fs::write(dir.join("zz-broken.toml"), "[agent]\nname = 3\n").unwrap();
        let broken = load_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();

        let set = set.unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("default", "research-agent").unwrap().source(), "research.toml");
        let broken = broken.unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("zz-broken.toml", 2));
    }
}
