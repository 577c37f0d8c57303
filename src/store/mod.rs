//! Persistence. One `Store` trait speaks in the server's terms (tenants, credentials,
//! secret versions, the audit chain); `sql` implements it once for both engines, and
//! `engine` holds what differs between SQLite and PostgreSQL. Every mutation writes its
//! audit record in the same transaction, so there is never a change without its record,
//! nor a record of a change that did not happen.

mod engine;
mod provider_configs;
mod secret_ops;
mod sql;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::crypto::{CryptoError, Sealed};
use crate::domain::audit::{AuditDraft, AuditRecord, BrokenLink};

pub use engine::Engine;
pub use provider_configs::{ProviderConfig, ProviderConfigChange};
pub use secret_ops::{OpDone, OpRequest, OwnedSealFn, ResealFn, SecretOp};
pub use sql::{SqlStore, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the audit writer is not running")]
    AuditClosed,
    /// A request the data refutes (a version that does not exist): 422.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// What a credential is: a user's API key, an agent's key, or a scoped token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    UserKey,
    AgentKey,
    Token,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::UserKey => "user_key",
            CredentialKind::AgentKey => "agent_key",
            CredentialKind::Token => "token",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "user_key" => Ok(CredentialKind::UserKey),
            "agent_key" => Ok(CredentialKind::AgentKey),
            "token" => Ok(CredentialKind::Token),
            other => Err(StoreError::Corrupt(format!("unknown credential kind '{other}'"))),
        }
    }
}

/// A stored credential. Only the SHA-256 of its secret part is kept.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub tenant_id: String,
    pub kind: CredentialKind,
    pub name: String,
    pub role: Option<String>,
    /// Scope strings as stored; parsed by the server.
    pub scopes: Vec<String>,
    pub secret_hash: String,
    pub agent_id: Option<String>,
    pub minted_by: Option<String>,
    pub description: Option<String>,
    pub allowed_ips: Vec<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    pub id: String,
    pub path: String,
    pub current_version: i64,
    pub tier: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allowed_hosts: Vec<String>,
    pub owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub accessed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub not_before: Option<i64>,
    pub deleted_at: Option<i64>,
    /// `airlock_managed` (Airlock holds the value) or `external_reference` (read from a
    /// provider at read time; see `secret_mode`).
    pub managed_mode: String,
    /// `active`, `disabled` or `archived`: only an active secret resolves.
    pub status: String,
    /// The provider config an external secret is read through.
    pub provider_config_id: Option<String>,
    /// The current version's reference and version pointer (external secrets).
    pub external_ref: Option<String>,
    pub provider_version_ref: Option<String>,
    /// When the latest version was written by an update or a rotation (None: never since
    /// the create).
    pub last_rotated_at: Option<i64>,
    /// The credential that created the secret (its id and description); kept through
    /// owner changes, moves and undeletes.
    pub created_by_id: Option<String>,
    pub created_by_description: Option<String>,
}

/// A new secret is managed and active unless it says otherwise: whatever makes one with
/// `..SecretMeta::default()` (create, import, copy, a bulk `set`) gets a secret that reads.
impl Default for SecretMeta {
    fn default() -> SecretMeta {
        SecretMeta {
            id: String::new(),
            path: String::new(),
            current_version: 0,
            tier: String::new(),
            description: None,
            tags: BTreeMap::new(),
            allowed_hosts: Vec::new(),
            owner: None,
            created_at: 0,
            updated_at: 0,
            accessed_at: None,
            expires_at: None,
            not_before: None,
            deleted_at: None,
            managed_mode: secret_mode::MANAGED.to_owned(),
            status: secret_mode::ACTIVE.to_owned(),
            provider_config_id: None,
            external_ref: None,
            provider_version_ref: None,
            last_rotated_at: None,
            created_by_id: None,
            created_by_description: None,
        }
    }
}

/// The values `SecretMeta::managed_mode` and `SecretMeta::status` take.
pub mod secret_mode {
    pub const MANAGED: &str = "airlock_managed";
    pub const EXTERNAL: &str = "external_reference";
    pub const ACTIVE: &str = "active";
    pub const DISABLED: &str = "disabled";
    pub const ARCHIVED: &str = "archived";
    pub const STATUSES: [&str; 3] = [ACTIVE, DISABLED, ARCHIVED];
}

impl SecretMeta {
    pub fn is_external(&self) -> bool {
        self.managed_mode == secret_mode::EXTERNAL
    }
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i64,
    /// None once destroyed, and for an external reference.
    pub sealed: Option<Sealed>,
    /// What an external secret's version reads (never a value).
    pub external_ref: Option<String>,
    pub provider_version_ref: Option<String>,
    pub created_at: i64,
    /// Set on a version replaced by a rotation: readable until then.
    pub expires_at: Option<i64>,
}

/// Metadata changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetaChange {
    pub tier: Option<String>,
    pub description: Option<Option<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub owner: Option<Option<String>>,
    pub status: Option<String>,
    /// The validity window: `Some(None)` clears it.
    pub expires_at: Option<Option<i64>>,
    pub not_before: Option<Option<i64>>,
}

/// Seals a value for the version number the store assigns.
pub type SealFn<'a> = &'a (dyn Fn(i64) -> std::result::Result<Sealed, CryptoError> + Sync);

/// What a new version holds: a value sealed by Airlock, or a reference to a provider's.
pub enum VersionContent<'a> {
    Sealed(SealFn<'a>),
    External { external_ref: String, provider_version_ref: Option<String> },
}

/// A new version of an existing secret.
pub struct NewVersion<'a> {
    /// Required current version (check-and-set).
    pub cas: Option<i64>,
    pub content: VersionContent<'a>,
    pub meta: MetaChange,
    /// Rotation: the replaced version stays readable until this instant.
    pub previous_expires_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub namespace: Option<String>,
    pub tag: Option<(String, Option<String>)>,
    /// Only secrets with this status.
    pub status: Option<String>,
    /// Only secrets whose current version references exactly this.
    pub external_ref: Option<String>,
    /// Exclusive lower bound on path.
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub namespace: Option<String>,
    /// Exactly this path.
    pub path: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    /// Any of these kinds (none: any kind); with `kind`, both apply.
    pub kinds: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Newest first: only records with seq below this.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditVerdict {
    pub ok: bool,
    pub checked: u64,
    pub head_seq: i64,
    pub first_broken: Option<BrokenLink>,
}

/// Where one tenant's audit chain ends: its stored head.
#[derive(Debug, Clone)]
pub struct AuditHead {
    pub tenant_id: String,
    pub seq: i64,
    pub hash: String,
}

/// A token request waiting for (or past) a human decision.
#[derive(Debug, Clone)]
pub struct Approval {
    pub id: String,
    pub tenant_id: String,
    pub requester_id: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    /// pending | approved | denied | cancelled (the policy stopped granting it before its
    /// token was handed out)
    pub status: String,
    /// The token request as JSON (scopes, ttl_seconds, description, allowed_ips, max_uses).
    pub request: serde_json::Value,
    /// Why approval is needed (the grants that ask for it).
    pub reason: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
    /// Set once the requester has collected the token.
    pub token_id: Option<String>,
}

/// What filing an approval request came to (`Store::file_approval`).
#[derive(Debug, Clone)]
pub enum Filed {
    /// Filed as a new pending request.
    New,
    /// The same requester has an identical request pending: that one stands for both.
    Existing(Box<Approval>),
    /// The requester already has this many requests pending (the cap or more).
    TooMany(i64),
}

/// A version whose data key is wrapped by some master key other than the active one.
#[derive(Debug, Clone)]
pub struct WrappedVersion {
    pub tenant_id: String,
    pub path: String,
    pub secret_id: String,
    pub version: i64,
    pub sealed: Sealed,
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn ping(&self) -> Result<()>;

    // Tenants and credentials.
    async fn create_tenant(&self, tenant: &Tenant, admin: &Credential, audit: AuditDraft) -> Result<()>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    async fn insert_credential(&self, c: &Credential, audit: AuditDraft) -> Result<()>;
    async fn credential_by_hash(&self, secret_hash: &str) -> Result<Option<Credential>>;
    async fn list_credentials(&self, tenant: &str, kind: CredentialKind) -> Result<Vec<Credential>>;
    async fn credential_by_id(&self, tenant: &str, id: &str) -> Result<Option<Credential>>;
    /// Revokes a credential, every token minted from it and, for an agent, every token it holds.
    async fn revoke_credential(&self, tenant: &str, id: &str, now: i64, audit: AuditDraft) -> Result<()>;
    /// Counts one use of a credential with `max_uses`; false when none is left. Atomic.
    async fn consume_use(&self, id: &str) -> Result<bool>;
    async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>>;

    // Approvals.
    async fn approval(&self, tenant: &str, id: &str) -> Result<Option<Approval>>;
    /// Moves a pending approval to `status`; Conflict if it was already decided.
    async fn decide_approval(
        &self,
        tenant: &str,
        id: &str,
        status: &str,
        by: &str,
        note: Option<&str>,
        audit: AuditDraft,
    ) -> Result<Approval>;
    /// Hands the approved token out once: records `token` as issued for the approval,
    /// or returns false if it was already collected.
    async fn issue_approved_token(&self, tenant: &str, id: &str, token: &Credential, audit: AuditDraft)
    -> Result<bool>;
    /// Files a pending approval, unless its requester (its agent, or its credential when it
    /// has none) has an identical request pending (`Existing`: nothing is written) or already
    /// `max_pending` requests pending (`TooMany`). Checked and written in one transaction.
    async fn file_approval(&self, a: &Approval, max_pending: i64, audit: AuditDraft) -> Result<Filed>;
    /// A page of approvals, newest first: those older than `before` (created_at, id) if given.
    async fn list_approvals_before(
        &self,
        tenant: &str,
        status: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Approval>>;
    async fn count_approvals(&self, tenant: &str, status: Option<&str>) -> Result<i64>;
    /// The pending approvals of every tenant.
    async fn pending_approvals(&self) -> Result<Vec<Approval>>;
    /// Cancels a request whose token was not handed out (pending, or approved and not yet
    /// collected), recording `by` and why in `note`; Conflict if it was denied, cancelled or
    /// collected already.
    async fn cancel_approval(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
        note: &str,
        audit: AuditDraft,
    ) -> Result<Approval>;

    // Secrets.
    /// Creates a secret at version 1: its value sealed, or (`None`) the meta's external reference.
    async fn create_secret(
        &self,
        tenant: &str,
        meta: &SecretMeta,
        sealed: Option<&Sealed>,
        audit: AuditDraft,
    ) -> Result<()>;
    /// The secret's metadata, deleted or not.
    async fn secret_meta(&self, tenant: &str, path: &str) -> Result<Option<SecretMeta>>;
    async fn secret_version(&self, secret_id: &str, version: i64) -> Result<Option<VersionRow>>;
    /// A secret and one of its versions (the current one when `version` is None) in one query.
    async fn secret_for_read(
        &self,
        tenant: &str,
        path: &str,
        version: Option<i64>,
    ) -> Result<Option<(SecretMeta, Option<VersionRow>)>>;
    async fn list_secrets(&self, tenant: &str, filter: &ListFilter) -> Result<Vec<SecretMeta>>;
    async fn count_secrets(&self, tenant: &str, filter: &ListFilter) -> Result<i64>;
    /// Writes a new version; returns the metadata after the write and the replaced version.
    async fn write_version(
        &self,
        tenant: &str,
        path: &str,
        change: NewVersion<'_>,
        audit: AuditDraft,
    ) -> Result<(SecretMeta, i64)>;
    async fn patch_secret(
        &self,
        tenant: &str,
        path: &str,
        change: &MetaChange,
        audit: AuditDraft,
    ) -> Result<SecretMeta>;
    async fn list_versions(&self, secret_id: &str) -> Result<Vec<VersionRow>>;
    async fn soft_delete(&self, tenant: &str, path: &str, now: i64, audit: AuditDraft) -> Result<()>;
    async fn undelete(&self, tenant: &str, path: &str, audit: AuditDraft) -> Result<SecretMeta>;
    async fn purge_secret(&self, tenant: &str, path: &str, audit: AuditDraft) -> Result<()>;
    /// Removes the ciphertext of these versions; returns how many were destroyed.
    async fn destroy_versions(&self, tenant: &str, path: &str, versions: &[i64], audit: AuditDraft) -> Result<u64>;
    /// Applies operations in order, each with its audit record: `atomic`, in one transaction
    /// that the first failure rolls back whole (then no record is written); otherwise each
    /// in its own. Per operation: its outcome, or `None` when it was never tried (after an
    /// atomic batch failed). The flag says whether the changes were kept.
    async fn apply_ops(
        &self,
        tenant: &str,
        ops: Vec<OpRequest<'_>>,
        atomic: bool,
    ) -> Result<(Vec<Option<Result<OpDone>>>, bool)>;
    /// Moves the secret at `from`, with every version (re-sealed under the new path by
    /// `reseal`), to `to`; `overwrite` first purges a secret at `to`. One transaction with
    /// `audit`.
    async fn move_secret(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        overwrite: bool,
        reseal: &ResealFn<'_>,
        audit: Vec<AuditDraft>,
    ) -> Result<SecretMeta>;
    /// (tenant, path) of secrets soft-deleted before `cutoff`, for the retention sweep.
    async fn deleted_before(&self, cutoff: i64) -> Result<Vec<(String, String)>>;

    // Audit.
    /// Appends one record on its own (reads, failures). Batched with concurrent appends.
    async fn record(&self, tenant: &str, audit: AuditDraft, accessed_secret: Option<&str>) -> Result<()>;
    /// Appends proxy access events in one transaction, skipping ids already recorded;
    /// returns the ids it skipped (one entry per skipped event: an id twice in `events` is
    /// recorded once and skipped once).
    async fn record_access(&self, tenant: &str, events: Vec<AuditDraft>) -> Result<Vec<String>>;
    async fn list_audit(&self, tenant: &str, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// For each agent (by name) that used the value at `path`: the time of its last use on
    /// record (an `access` event that succeeded), in Unix milliseconds.
    async fn last_uses(&self, tenant: &str, path: &str) -> Result<Vec<(String, i64)>>;
    async fn verify_audit(&self, tenant: &str) -> Result<AuditVerdict>;
    /// Every tenant's chain head, for the signed checkpoints kept outside the database.
    async fn audit_heads(&self) -> Result<Vec<AuditHead>>;

    // Master key rotation.
    async fn wrapped_not_under(&self, kid: &str, limit: i64) -> Result<Vec<WrappedVersion>>;
    /// Replaces the wrap of one version if it is still the one read; false if it changed.
    async fn replace_wrap(&self, v: &WrappedVersion, new: &Sealed) -> Result<bool>;

    // Provider configs (`provider_configs.rs`).
    /// Conflict if the tenant has a config of that name; a default clears the others' flag.
    async fn create_provider_config(&self, c: &ProviderConfig, audit: AuditDraft) -> Result<()>;
    async fn provider_config(&self, tenant: &str, id: &str) -> Result<Option<ProviderConfig>>;
    async fn list_provider_configs(&self, tenant: &str) -> Result<Vec<ProviderConfig>>;
    async fn update_provider_config(
        &self,
        tenant: &str,
        id: &str,
        change: &ProviderConfigChange,
        audit: AuditDraft,
    ) -> Result<ProviderConfig>;
    async fn delete_provider_config(&self, tenant: &str, id: &str, audit: AuditDraft) -> Result<()>;
    /// Makes `id` its type's default in the tenant.
    async fn set_default_provider_config(&self, tenant: &str, id: &str, audit: AuditDraft) -> Result<ProviderConfig>;
}
