//! `/v1/secrets…`: create, read, list, update, patch, rotate, versions, delete, undelete
//! and destroy. Each handler checks the caller's scope for the path first, records a
//! failed attempt in the audit trail, and lets the store write the change and its audit
//! record together.
//!
//! The handlers live by what they do: `write` (create, update, patch, rotate, with the
//! checks on what a write may carry), `read` (read, list, versions) and `lifecycle`
//! (delete, undelete, destroy). This module holds what they share: the caller's scope
//! check, the audit of a failed attempt, and the metadata view; it re-exports the
//! handlers so the router names them `secrets::create` and so on.

mod lifecycle;
mod read;
mod write;

use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorCode};
use crate::api::secrets::SecretMetadata;
use crate::domain::audit::AuditDraft;
use crate::domain::time::to_rfc3339;
use crate::domain::{SecretAction, SecretPath};
use crate::store::{SecretMeta, StoreError};

pub use self::lifecycle::{delete, destroy, undelete};
pub use self::read::{list, read, versions};
pub use self::write::{create, patch, rotate, update};

/// Metadata as the API shows it (never with a value).
pub(in crate::server) fn metadata(m: &SecretMeta) -> SecretMetadata {
    SecretMetadata {
        path: m.path.clone(),
        version: m.current_version,
        tier: m.tier.clone(),
        description: m.description.clone(),
        tags: m.tags.clone(),
        allowed_hosts: m.allowed_hosts.clone(),
        owner: m.owner.clone(),
        created_at: to_rfc3339(m.created_at),
        updated_at: to_rfc3339(m.updated_at),
        accessed_at: m.accessed_at.map(to_rfc3339),
        expires_at: m.expires_at.map(to_rfc3339),
        not_before: m.not_before.map(to_rfc3339),
    }
}

fn scope_name(action: SecretAction, path: &SecretPath) -> String {
    format!("secrets:{}:{}", action.as_str(), path)
}

/// Checks the caller's scope; a refusal is audited before it is returned.
async fn authorize(
    state: &AppState,
    caller: &Caller,
    action: SecretAction,
    path: &SecretPath,
    kind: &'static str,
) -> ApiResult<()> {
    if caller.can(action, path) {
        return Ok(());
    }
    let required = scope_name(action, path);
    audit_failure(state, caller, caller.draft(kind, Some(path.as_str())), ErrorCode::PermissionDenied).await?;
    Err(ApiError::permission_denied(Some(path.as_str()), &required))
}

/// Turns a store failure into the API error and audits it as a failed attempt.
async fn fail(state: &AppState, caller: &Caller, kind: &'static str, path: &SecretPath, e: StoreError) -> ApiError {
    let err = ApiError::from(e);
    let draft = caller.draft(kind, Some(path.as_str()));
    match audit_failure(state, caller, draft, err.code).await {
        Ok(()) => err,
        Err(audit_err) => audit_err,
    }
}

/// Records an unsuccessful operation; if even that cannot be written the request fails.
pub(super) async fn audit_failure(
    state: &AppState,
    caller: &Caller,
    mut draft: AuditDraft,
    code: ErrorCode,
) -> ApiResult<()> {
    draft.success = false;
    draft.detail = json!({ "error": code.as_str() });
    state.store.record(caller.tenant(), draft, None).await.map_err(ApiError::from)
}
