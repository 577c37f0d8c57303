//! The store's terms for operations on secrets beyond one write: a batch of operations
//! (bulk, applied in one transaction or one by one), undelete by version, and a move with
//! the whole history to another path.

use crate::crypto::{CryptoError, Sealed};
use crate::domain::audit::AuditDraft;

use super::{MetaChange, SecretMeta};

/// Seals the value for the version number the store assigns.
pub type OwnedSealFn<'a> = Box<dyn Fn(i64) -> std::result::Result<Sealed, CryptoError> + Send + Sync + 'a>;

/// Re-seals version N's value, sealed under the old path, under the new one.
pub type ResealFn<'a> = dyn Fn(i64, &Sealed) -> std::result::Result<Sealed, CryptoError> + Send + Sync + 'a;

/// One operation on the secret at a path.
pub enum SecretOp<'a> {
    /// A new version; `cas: Some(0)` = only if there is no secret at the path, `Some(N)` =
    /// only if the current version is N. With `create`, a path with no secret (not even a
    /// deleted one) gets this secret, its value as version 1.
    Set { cas: Option<i64>, seal: OwnedSealFn<'a>, meta: MetaChange, create: Option<Box<SecretMeta>> },
    /// A new version; the replaced one stays readable until `previous_expires_at`.
    Rotate { seal: OwnedSealFn<'a>, previous_expires_at: i64 },
    /// A soft delete.
    Delete { now: i64 },
    /// Undoes a soft delete; `versions` also makes those versions readable again (a rotated-out
    /// version's grace is lifted). Each listed version must exist and hold its value.
    Undelete { versions: Option<Vec<i64>> },
    /// Wipes these versions' ciphertext; each must exist.
    Destroy { versions: Vec<i64> },
}

impl SecretOp<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            SecretOp::Set { .. } => "set",
            SecretOp::Rotate { .. } => "rotate",
            SecretOp::Delete { .. } => "delete",
            SecretOp::Undelete { .. } => "undelete",
            SecretOp::Destroy { .. } => "destroy",
        }
    }
}

/// An operation, its path and the audit record it writes when it is applied.
pub struct OpRequest<'a> {
    pub path: String,
    pub op: SecretOp<'a>,
    pub audit: AuditDraft,
}

/// What an applied operation left: the secret's metadata after it, the version it replaced
/// (set, rotate) and whether it made the secret.
#[derive(Debug, Clone)]
pub struct OpDone {
    pub meta: SecretMeta,
    pub previous_version: Option<i64>,
    pub created: bool,
}
