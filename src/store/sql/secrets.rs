//! Secrets and their versions: reading (metadata, a version, both in one query), listing
//! and counting, writing a new version (with check-and-set), patching metadata, soft
//! deletes, undeletes, purges and destroying versions. Creates go through the create
//! batcher (`create_batch`).

use sqlx::Row;
use tokio::sync::oneshot;

use super::audit_chain::append;
use super::create_batch::CreateJob;
use super::filters::{Param, secret_conditions};
use super::rows::{
    SECRET_COLUMNS, VERSION_COLUMNS, meta_from_row, to_json, version_columns, version_from_row, write_tags,
};
use super::{SqlStore, Tx};
use crate::crypto::Sealed;
use crate::domain::audit::AuditDraft;
use crate::store::{ListFilter, MetaChange, NewVersion, Result, SecretMeta, StoreError, VersionContent, VersionRow};

pub(super) async fn create_secret(
    store: &SqlStore,
    tenant: &str,
    m: &SecretMeta,
    sealed: Option<&Sealed>,
    audit: AuditDraft,
) -> Result<()> {
    let (done, answer) = oneshot::channel();
    let job = CreateJob { tenant: tenant.to_owned(), meta: m.clone(), sealed: sealed.cloned(), audit, done };
    store.creates.send(job).await.map_err(|_| StoreError::AuditClosed)?;
    answer.await.map_err(|_| StoreError::AuditClosed)?
}

pub(super) async fn secret_meta(store: &SqlStore, tenant: &str, path: &str) -> Result<Option<SecretMeta>> {
    let row = sqlx::query(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE tenant_id = $1 AND path = $2"))
        .bind(tenant)
        .bind(path)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(meta_from_row).transpose()
}

pub(super) async fn secret_version(store: &SqlStore, secret_id: &str, version: i64) -> Result<Option<VersionRow>> {
    let row =
        sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM secret_versions WHERE secret_id = $1 AND version = $2"))
            .bind(secret_id)
            .bind(version)
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(version_from_row).transpose()
}

pub(super) async fn secret_for_read(
    store: &SqlStore,
    tenant: &str,
    path: &str,
    version: Option<i64>,
) -> Result<Option<(SecretMeta, Option<VersionRow>)>> {
    let columns: Vec<String> = SECRET_COLUMNS.split(", ").map(|c| format!("s.{}", c.trim())).collect();
    let sql = format!(
        "SELECT {}, v.version AS v_version, v.kid AS v_kid, v.wrapped_key AS v_wrapped_key, v.ciphertext AS v_ciphertext, \
         v.created_at AS v_created_at, v.expires_at AS v_expires_at, v.external_ref AS v_external_ref, \
         v.provider_version_ref AS v_provider_version_ref \
         FROM secrets s LEFT JOIN secret_versions v ON v.secret_id = s.id AND v.version = COALESCE($3, s.current_version) \
         WHERE s.tenant_id = $1 AND s.path = $2",
        columns.join(", ")
    );
    let row = sqlx::query(&sql).bind(tenant).bind(path).bind(version).fetch_optional(&store.pool).await?;
    let Some(row) = row else { return Ok(None) };
    let meta = meta_from_row(&row)?;
    let v_version: Option<i64> = row.try_get("v_version")?;
    let version = v_version.map(|_| version_columns(&row, "v_")).transpose()?;
    Ok(Some((meta, version)))
}

pub(super) async fn list_secrets(store: &SqlStore, tenant: &str, filter: &ListFilter) -> Result<Vec<SecretMeta>> {
    let mut c = secret_conditions(tenant, filter);
    if let Some(after) = &filter.after {
        c.push("path > ?", Param::Text(after.clone()));
    }
    let limit_at = c.next_index();
    let sql =
        format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE {} ORDER BY path LIMIT ${limit_at}", c.where_clause());
    let rows = c.bind(sqlx::query(&sql)).bind(filter.limit).fetch_all(&store.pool).await?;
    rows.iter().map(meta_from_row).collect()
}

pub(super) async fn count_secrets(store: &SqlStore, tenant: &str, filter: &ListFilter) -> Result<i64> {
    let c = secret_conditions(tenant, filter);
    let sql = format!("SELECT COUNT(*) FROM secrets WHERE {}", c.where_clause());
    let row = c.bind(sqlx::query(&sql)).fetch_one(&store.pool).await?;
    Ok(row.try_get(0)?)
}

pub(super) async fn write_version(
    store: &SqlStore,
    tenant: &str,
    path: &str,
    change: NewVersion<'_>,
    audit: AuditDraft,
) -> Result<(SecretMeta, i64)> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut meta = meta_in(&mut tx, tenant, path).await?;
    if meta.deleted_at.is_some() {
        return Err(StoreError::NotFound);
    }
    let previous = meta.current_version;
    if let Some(cas) = change.cas
        && cas != previous
    {
        return Err(StoreError::Conflict(format!(
            "check-and-set failed: the current version of '{path}' is {previous}, not {cas}"
        )));
    }
    let now = crate::domain::time::now_ms();
    let version = previous + 1;
    match &change.content {
        VersionContent::Sealed(seal) => {
            insert_version(&mut tx, &meta.id, version, Some(&seal(version)?), None, now).await?
        }
        VersionContent::External { external_ref, provider_version_ref } => {
            let external = (external_ref.as_str(), provider_version_ref.as_deref());
            insert_version(&mut tx, &meta.id, version, None, Some(external), now).await?;
            meta.external_ref = Some(external_ref.clone());
            meta.provider_version_ref = provider_version_ref.clone();
        }
    }
    if let Some(until) = change.previous_expires_at {
        sqlx::query("UPDATE secret_versions SET expires_at = $1 WHERE secret_id = $2 AND version = $3")
            .bind(until)
            .bind(&meta.id)
            .bind(previous)
            .execute(&mut *tx)
            .await?;
    }
    meta.apply(&change.meta);
    meta.current_version = version;
    meta.updated_at = now;
    meta.last_rotated_at = Some(now);
    update_meta(&mut tx, &meta).await?;
    if change.meta.tags.is_some() {
        write_tags(&mut tx, &meta.id, &meta.tags).await?;
    }
    let audit = with_detail(with_detail(audit, "version", version.into()), "previous_version", previous.into());
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok((meta, previous))
}

pub(super) async fn patch_secret(
    store: &SqlStore,
    tenant: &str,
    path: &str,
    change: &MetaChange,
    audit: AuditDraft,
) -> Result<SecretMeta> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut meta = meta_in(&mut tx, tenant, path).await?;
    if meta.deleted_at.is_some() {
        return Err(StoreError::NotFound);
    }
    meta.apply(change);
    meta.updated_at = crate::domain::time::now_ms();
    update_meta(&mut tx, &meta).await?;
    if change.tags.is_some() {
        write_tags(&mut tx, &meta.id, &meta.tags).await?;
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(meta)
}

pub(super) async fn list_versions(store: &SqlStore, secret_id: &str) -> Result<Vec<VersionRow>> {
    let rows =
        sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM secret_versions WHERE secret_id = $1 ORDER BY version"))
            .bind(secret_id)
            .fetch_all(&store.pool)
            .await?;
    rows.iter().map(version_from_row).collect()
}

pub(super) async fn soft_delete(store: &SqlStore, tenant: &str, path: &str, now: i64, audit: AuditDraft) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let n = sqlx::query("UPDATE secrets SET deleted_at = $1 WHERE tenant_id = $2 AND path = $3 AND deleted_at IS NULL")
        .bind(now)
        .bind(tenant)
        .bind(path)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn undelete(store: &SqlStore, tenant: &str, path: &str, audit: AuditDraft) -> Result<SecretMeta> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let n = sqlx::query(
        "UPDATE secrets SET deleted_at = NULL WHERE tenant_id = $1 AND path = $2 AND deleted_at IS NOT NULL",
    )
    .bind(tenant)
    .bind(path)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let meta = meta_in(&mut tx, tenant, path).await?;
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(meta)
}

pub(super) async fn purge_secret(store: &SqlStore, tenant: &str, path: &str, audit: AuditDraft) -> Result<()> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let id = secret_id(&mut tx, tenant, path, false).await?;
    for sql in [
        "DELETE FROM secret_versions WHERE secret_id = $1",
        "DELETE FROM secret_tags WHERE secret_id = $1",
        "DELETE FROM secrets WHERE id = $1",
    ] {
        sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn destroy_versions(
    store: &SqlStore,
    tenant: &str,
    path: &str,
    versions: &[i64],
    audit: AuditDraft,
) -> Result<u64> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let id = secret_id(&mut tx, tenant, path, false).await?;
    let mut destroyed = 0;
    for v in versions {
        destroyed += sqlx::query(
            "UPDATE secret_versions SET kid = NULL, wrapped_key = NULL, ciphertext = NULL \
             WHERE secret_id = $1 AND version = $2 AND ciphertext IS NOT NULL",
        )
        .bind(&id)
        .bind(*v)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    append(&mut tx, store.engine, tenant, head, vec![audit]).await?;
    tx.commit().await?;
    Ok(destroyed)
}

pub(super) async fn deleted_before(store: &SqlStore, cutoff: i64) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT tenant_id, path FROM secrets WHERE deleted_at IS NOT NULL AND deleted_at < $1")
        .bind(cutoff)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

async fn secret_id(tx: &mut Tx, tenant: &str, path: &str, live_only: bool) -> Result<String> {
    let sql = if live_only {
        "SELECT id FROM secrets WHERE tenant_id = $1 AND path = $2 AND deleted_at IS NULL"
    } else {
        "SELECT id FROM secrets WHERE tenant_id = $1 AND path = $2"
    };
    sqlx::query_scalar(sql).bind(tenant).bind(path).fetch_optional(&mut **tx).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn meta_in(tx: &mut Tx, tenant: &str, path: &str) -> Result<SecretMeta> {
    let row = sqlx::query(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE tenant_id = $1 AND path = $2"))
        .bind(tenant)
        .bind(path)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    meta_from_row(&row)
}

pub(super) async fn update_meta(tx: &mut Tx, m: &SecretMeta) -> Result<()> {
    sqlx::query(
        "UPDATE secrets SET current_version = $1, tier = $2, description = $3, tags = $4, allowed_hosts = $5, \
         owner = $6, updated_at = $7, status = $8, external_ref = $9, provider_version_ref = $10, \
         last_rotated_at = $11, expires_at = $12, not_before = $13 WHERE id = $14",
    )
    .bind(m.current_version)
    .bind(&m.tier)
    .bind(&m.description)
    .bind(to_json(&m.tags))
    .bind(m.allowed_hosts_json())
    .bind(&m.owner)
    .bind(m.updated_at)
    .bind(&m.status)
    .bind(&m.external_ref)
    .bind(&m.provider_version_ref)
    .bind(m.last_rotated_at)
    .bind(m.expires_at)
    .bind(m.not_before)
    .bind(&m.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a version: a sealed value, or an external reference and version pointer. The one
/// place a version row is written (one write, bulk, copy), so they cannot drift apart.
pub(super) async fn insert_version(
    tx: &mut Tx,
    secret_id: &str,
    version: i64,
    sealed: Option<&Sealed>,
    external: Option<(&str, Option<&str>)>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret_versions (secret_id, version, kid, wrapped_key, ciphertext, created_at, expires_at, \
         external_ref, provider_version_ref) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
    )
    .bind(secret_id)
    .bind(version)
    .bind(sealed.map(|s| s.kid.clone()))
    .bind(sealed.map(|s| s.wrapped_key.clone()))
    .bind(sealed.map(|s| s.ciphertext.clone()))
    .bind(now)
    .bind(external.map(|e| e.0.to_owned()))
    .bind(external.and_then(|e| e.1.map(str::to_owned)))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SecretMeta {
    fn apply(&mut self, change: &MetaChange) {
        if let Some(t) = &change.tier {
            self.tier = t.clone();
        }
        if let Some(d) = &change.description {
            self.description = d.clone();
        }
        if let Some(t) = &change.tags {
            self.tags = t.clone();
        }
        if let Some(h) = &change.allowed_hosts {
            self.allowed_hosts = h.clone();
        }
        if let Some(o) = &change.owner {
            self.owner = o.clone();
        }
        if let Some(s) = &change.status {
            self.status = s.clone();
        }
        if let Some(t) = change.expires_at {
            self.expires_at = t;
        }
        if let Some(t) = change.not_before {
            self.not_before = t;
        }
    }
}

fn with_detail(mut audit: AuditDraft, key: &str, value: serde_json::Value) -> AuditDraft {
    if let serde_json::Value::Object(map) = &mut audit.detail {
        map.insert(key.to_owned(), value);
    } else {
        audit.detail = serde_json::json!({ key: value });
    }
    audit
}
