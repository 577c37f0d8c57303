//! Approval requests: filing one (deduplicated, under a per-agent cap), listing and paging,
//! deciding, cancelling, and issuing the token an approved request grants, each change with
//! its audit record in the same transaction.

use super::SqlStore;
use super::audit_chain::append;
use super::credentials;
use super::rows::{APPROVAL_COLUMNS, approval_from_row};
use crate::domain::audit::AuditDraft;
use crate::store::{Approval, Credential, Filed, Result, StoreError};

pub(super) async fn approval(store: &SqlStore, tenant: &str, id: &str) -> Result<Option<Approval>> {
    let row = sqlx::query(&format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(approval_from_row).transpose()
}

pub(super) async fn decide_approval(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    status: &str,
    by: &str,
    note: Option<&str>,
    audit: AuditDraft,
) -> Result<Approval> {
    settle_approval(store, tenant, id, status, false, by, note, audit).await
}

pub(super) async fn issue_approved_token(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    token: &Credential,
    audit: AuditDraft,
) -> Result<bool> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let n = sqlx::query(
        "UPDATE approvals SET token_id = $1 WHERE tenant_id = $2 AND id = $3 AND status = 'approved' AND token_id IS NULL",
    )
    .bind(&token.id)
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    credentials::insert_row(&mut tx, token).await?;
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn file_approval(
    store: &SqlStore,
    a: &Approval,
    max_pending: i64,
    audit: AuditDraft,
) -> Result<Filed> {
    let (mut tx, _write) = store.begin().await?;
    // The chain head lock serialises this with every other filing in the tenant, so two
    // identical requests at once cannot both be filed, nor two requests both be under the cap.
    let head = store.lock_head(&mut tx, &a.tenant_id).await?;
    let requester = a.agent_id.as_deref().unwrap_or(&a.requester_id);
    let request = a.request.to_string();
    let same = sqlx::query(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND status = 'pending' \
         AND COALESCE(agent_id, requester_id) = $2 AND request = $3 ORDER BY created_at, id LIMIT 1"
    ))
    .bind(&a.tenant_id)
    .bind(requester)
    .bind(&request)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = same {
        return Ok(Filed::Existing(Box::new(approval_from_row(&row)?)));
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approvals WHERE tenant_id = $1 AND status = 'pending' \
         AND COALESCE(agent_id, requester_id) = $2",
    )
    .bind(&a.tenant_id)
    .bind(requester)
    .fetch_one(&mut *tx)
    .await?;
    if pending >= max_pending {
        return Ok(Filed::TooMany(pending));
    }
    sqlx::query(&format!(
        "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL, NULL)"
    ))
    .bind(&a.id)
    .bind(&a.tenant_id)
    .bind(&a.requester_id)
    .bind(&a.agent_id)
    .bind(&a.agent_name)
    .bind(&a.status)
    .bind(request)
    .bind(&a.reason)
    .bind(a.created_at)
    .execute(&mut *tx)
    .await?;
    append(&mut tx, store.engine, &a.tenant_id, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(Filed::New)
}

pub(super) async fn list_approvals_before(
    store: &SqlStore,
    tenant: &str,
    status: Option<&str>,
    before: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Approval>> {
    let (created_at, id) = before.unwrap_or((i64::MAX, ""));
    let rows = sqlx::query(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND ($2 = '' OR status = $2) \
         AND ($3 = 0 OR created_at < $4 OR (created_at = $4 AND id < $5)) \
         ORDER BY created_at DESC, id DESC LIMIT $6"
    ))
    .bind(tenant)
    .bind(status.unwrap_or(""))
    .bind(i64::from(before.is_some()))
    .bind(created_at)
    .bind(id)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(approval_from_row).collect()
}

pub(super) async fn count_approvals(store: &SqlStore, tenant: &str, status: Option<&str>) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE tenant_id = $1 AND ($2 = '' OR status = $2)")
        .bind(tenant)
        .bind(status.unwrap_or(""))
        .fetch_one(&store.pool)
        .await?)
}

pub(super) async fn pending_approvals(store: &SqlStore) -> Result<Vec<Approval>> {
    let rows = sqlx::query(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = 'pending' ORDER BY created_at, id"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(approval_from_row).collect()
}

pub(super) async fn cancel_approval(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    by: &str,
    note: &str,
    audit: AuditDraft,
) -> Result<Approval> {
    settle_approval(store, tenant, id, "cancelled", true, by, Some(note), audit).await
}

/// Moves a pending approval request (and, with `uncollected`, an approved one whose token
/// was not collected yet) to `status`, with its audit record in the same transaction; a
/// request in any other state is a conflict that changes nothing.
#[allow(clippy::too_many_arguments)]
async fn settle_approval(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    status: &str,
    uncollected: bool,
    by: &str,
    note: Option<&str>,
    audit: AuditDraft,
) -> Result<Approval> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let n = sqlx::query(
        "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3, note = $4 \
         WHERE tenant_id = $5 AND id = $6 \
         AND (status = 'pending' OR ($7 AND status = 'approved' AND token_id IS NULL))",
    )
    .bind(status)
    .bind(audit.timestamp_ms)
    .bind(by)
    .bind(note)
    .bind(tenant)
    .bind(id)
    .bind(uncollected)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row = sqlx::query(&format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let approval = approval_from_row(&row)?;
    if n == 0 {
        let state = if uncollected && approval.token_id.is_some() { "collected" } else { approval.status.as_str() };
        return Err(StoreError::Conflict(format!("approval request '{id}' was already {state}")));
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(approval)
}
