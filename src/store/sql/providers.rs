//! Provider configurations: one row each, the settings as JSON text. Every change appends
//! its audit record in the same transaction; a name is unique within a tenant, and making
//! one config the default clears the flag on the others of its type.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit_chain::append;
use super::{SqlStore, Tx};
use crate::domain::audit::AuditDraft;
use crate::store::{ProviderConfig, ProviderConfigChange, Result, StoreError};

const COLUMNS: &str = "id, tenant_id, name, kind, config, is_default, cache_ttl_seconds, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ProviderConfig> {
    let config: String = row.try_get(4)?;
    Ok(ProviderConfig {
        id: row.try_get(0)?,
        tenant_id: row.try_get(1)?,
        name: row.try_get(2)?,
        kind: row.try_get(3)?,
        config: serde_json::from_str(&config)
            .map_err(|_| StoreError::Corrupt("a provider config's settings are not JSON".into()))?,
        is_default: row.try_get::<i64, _>(5)? != 0,
        cache_ttl_seconds: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

async fn name_taken(tx: &mut Tx, tenant: &str, name: &str, except: &str) -> Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM provider_configs WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some_and(|id| id != except))
}

async fn row_in(tx: &mut Tx, tenant: &str, id: &str) -> Result<ProviderConfig> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM provider_configs WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(super) async fn create_provider_config(store: &SqlStore, c: &ProviderConfig, audit: AuditDraft) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, &c.tenant_id).await?;
    if name_taken(&mut tx, &c.tenant_id, &c.name, "").await? {
        return Err(StoreError::Conflict(format!("a provider config named '{}' already exists", c.name)));
    }
    if c.is_default {
        clear_default(&mut tx, &c.tenant_id, &c.kind).await?;
    }
    sqlx::query(&format!("INSERT INTO provider_configs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.name)
        .bind(&c.kind)
        .bind(c.config.to_string())
        .bind(i64::from(c.is_default))
        .bind(c.cache_ttl_seconds)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await?;
    append(&mut tx, store.engine, &c.tenant_id, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn provider_config(store: &SqlStore, tenant: &str, id: &str) -> Result<Option<ProviderConfig>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM provider_configs WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn list_provider_configs(store: &SqlStore, tenant: &str) -> Result<Vec<ProviderConfig>> {
    let rows =
        sqlx::query(&format!("SELECT {COLUMNS} FROM provider_configs WHERE tenant_id = $1 ORDER BY created_at, id"))
            .bind(tenant)
            .fetch_all(&store.pool)
            .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn update_provider_config(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    change: &ProviderConfigChange,
    audit: AuditDraft,
) -> Result<ProviderConfig> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut c = row_in(&mut tx, tenant, id).await?;
    if let Some(name) = &change.name {
        if name_taken(&mut tx, tenant, name, id).await? {
            return Err(StoreError::Conflict(format!("a provider config named '{name}' already exists")));
        }
        c.name = name.clone();
    }
    if let Some(config) = &change.config {
        c.config = config.clone();
    }
    if let Some(ttl) = change.cache_ttl_seconds {
        c.cache_ttl_seconds = ttl;
    }
    c.updated_at = change.updated_at;
    sqlx::query(
        "UPDATE provider_configs SET name = $1, config = $2, cache_ttl_seconds = $3, updated_at = $4 \
         WHERE tenant_id = $5 AND id = $6",
    )
    .bind(&c.name)
    .bind(c.config.to_string())
    .bind(c.cache_ttl_seconds)
    .bind(c.updated_at)
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(c)
}

pub(super) async fn delete_provider_config(store: &SqlStore, tenant: &str, id: &str, audit: AuditDraft) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let deleted = sqlx::query("DELETE FROM provider_configs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn set_default_provider_config(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    audit: AuditDraft,
) -> Result<ProviderConfig> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut c = row_in(&mut tx, tenant, id).await?;
    clear_default(&mut tx, tenant, &c.kind).await?;
    sqlx::query("UPDATE provider_configs SET is_default = 1 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    c.is_default = true;
    Ok(c)
}

async fn clear_default(tx: &mut Tx, tenant: &str, kind: &str) -> Result<()> {
    sqlx::query("UPDATE provider_configs SET is_default = 0 WHERE tenant_id = $1 AND kind = $2 AND is_default <> 0")
        .bind(tenant)
        .bind(kind)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
