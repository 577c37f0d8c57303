//! Tenants: creating one (its row, its audit chain's genesis head and its first admin key,
//! in one transaction) and looking tenants up. `ping` checks the database answers.

use sqlx::Row;

use super::SqlStore;
use super::audit_chain::append;
use super::credentials;
use crate::domain::audit::AuditDraft;
use crate::store::{Credential, Result, StoreError, Tenant};

pub(super) async fn ping(store: &SqlStore) -> Result<()> {
    sqlx::query("SELECT 1").execute(&store.pool).await?;
    Ok(())
}

pub(super) async fn create_tenant(
    store: &SqlStore,
    tenant: &Tenant,
    admin: &Credential,
    audit: AuditDraft,
) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let taken: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(&tenant.name)
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(StoreError::Conflict(format!("a tenant named '{}' already exists", tenant.name)));
    }
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)")
        .bind(&tenant.id)
        .bind(crate::domain::audit::GENESIS_HASH)
        .execute(&mut *tx)
        .await?;
    credentials::insert_row(&mut tx, admin).await?;
    let head = store.lock_head(&mut tx, &tenant.id).await?;
    append(&mut tx, store.engine, &tenant.id, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn tenant_by_name(store: &SqlStore, name: &str) -> Result<Option<Tenant>> {
    let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(&store.pool)
        .await?;
    row.map(|r| Ok(Tenant { id: r.try_get(0)?, name: r.try_get(1)?, created_at: r.try_get(2)? })).transpose()
}

pub(super) async fn tenant_name(store: &SqlStore, tenant_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1").bind(tenant_id).fetch_optional(&store.pool).await?)
}
