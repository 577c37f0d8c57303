//! The policy set as the running server holds it: loaded from `--policies DIR` at start,
//! replaced whole on SIGHUP or `POST /v1/policies/reload` only when every file parses, so a
//! typo leaves the previous set in force.

use std::path::PathBuf;
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
            Some(d) => PolicySet::load_dir(d)?,
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
        let set = Arc::new(PolicySet::load_dir(dir).map_err(ReloadError::Invalid)?);
        *self.set.write().expect("policy lock poisoned") = set.clone();
        tracing::info!(dir = %dir.display(), policies = set.len(), "policies reloaded");
        Ok(set)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the server was started without --policies, so there is nothing to reload")]
    NoDirectory,
    #[error("{0}; the previous policies stay in force")]
    Invalid(PolicyError),
}
