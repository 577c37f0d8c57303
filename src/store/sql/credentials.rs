//! Credentials: users' API keys, agents' keys and scoped tokens (one table, told apart by
//! `kind`); inserting, looking up, counting a use, and revoking (which revokes what the
//! credential minted too).

use super::audit_chain::append;
use super::rows::{CREDENTIAL_COLUMNS, credential_from_row, to_json};
use super::{SqlStore, Tx};
use crate::domain::audit::AuditDraft;
use crate::store::{Credential, CredentialKind, Result, StoreError};

pub(super) async fn insert_credential(store: &SqlStore, c: &Credential, audit: AuditDraft) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, &c.tenant_id).await?;
    insert_row(&mut tx, c).await?;
    append(&mut tx, store.engine, &c.tenant_id, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn credential_by_hash(store: &SqlStore, secret_hash: &str) -> Result<Option<Credential>> {
    let row = sqlx::query(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE secret_hash = $1"))
        .bind(secret_hash)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(credential_from_row).transpose()
}

pub(super) async fn list_credentials(store: &SqlStore, tenant: &str, kind: CredentialKind) -> Result<Vec<Credential>> {
    let rows = sqlx::query(&format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE tenant_id = $1 AND kind = $2 AND revoked_at IS NULL \
         ORDER BY created_at, id"
    ))
    .bind(tenant)
    .bind(kind.as_str())
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(credential_from_row).collect()
}

pub(super) async fn revoke_credential(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    now: i64,
    audit: AuditDraft,
) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let revoked =
        sqlx::query("UPDATE credentials SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if revoked == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query(
        "UPDATE credentials SET revoked_at = $1 WHERE tenant_id = $2 AND minted_by = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn credential_by_id(store: &SqlStore, tenant: &str, id: &str) -> Result<Option<Credential>> {
    let row = sqlx::query(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(credential_from_row).transpose()
}

pub(super) async fn consume_use(store: &SqlStore, id: &str) -> Result<bool> {
    let n =
        sqlx::query("UPDATE credentials SET uses = uses + 1 WHERE id = $1 AND (max_uses IS NULL OR uses < max_uses)")
            .bind(id)
            .execute(&store.pool)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Inserts a credential row (in the caller's transaction, which appends its audit record).
pub(super) async fn insert_row(tx: &mut Tx, c: &Credential) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(&c.id)
    .bind(&c.tenant_id)
    .bind(c.kind.as_str())
    .bind(&c.name)
    .bind(&c.role)
    .bind(to_json(&c.scopes))
    .bind(&c.secret_hash)
    .bind(&c.agent_id)
    .bind(&c.minted_by)
    .bind(&c.description)
    .bind((!c.allowed_ips.is_empty()).then(|| to_json(&c.allowed_ips)))
    .bind(c.max_uses)
    .bind(c.uses)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.revoked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
