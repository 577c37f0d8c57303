//! Operations on secrets beyond one write: a batch (`apply_ops`: bulk, undelete by version,
//! copy), applied in one transaction or one by one, and a move with the whole history.

use super::audit_chain::append;
use super::rows::{NEW_SECRET_BINDS, SECRET_COLUMNS, VERSION_COLUMNS, bind_new_secret, version_from_row, write_tags};
use super::secrets::{insert_version, meta_in, update_meta};
use super::{SqlStore, Tx};
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::time::now_ms;
use crate::store::engine::Engine;
use crate::store::{OpDone, OpRequest, ResealFn, Result, SecretMeta, SecretOp, StoreError, VersionRow};

pub(super) async fn apply_ops(
    store: &SqlStore,
    tenant: &str,
    ops: Vec<OpRequest<'_>>,
    atomic: bool,
) -> Result<(Vec<Option<Result<OpDone>>>, bool)> {
    let mut results: Vec<Option<Result<OpDone>>> = ops.iter().map(|_| None).collect();
    if atomic {
        let (mut tx, _write) = store.begin().await?;
        let head = store.lock_head(&mut tx, tenant).await?;
        let mut drafts = Vec::with_capacity(ops.len());
        for (i, req) in ops.into_iter().enumerate() {
            match apply_one(&mut tx, store.engine, tenant, &req).await {
                Ok(done) => {
                    drafts.push(recorded(req.audit, &done));
                    results[i] = Some(Ok(done));
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    tx.rollback().await?;
                    return Ok((results, false));
                }
            }
        }
        append(&mut tx, store.engine, tenant, head, drafts).await?;
        tx.commit().await?;
        return Ok((results, true));
    }
    let mut any = false;
    for (i, req) in ops.into_iter().enumerate() {
        let (mut tx, _write) = store.begin().await?;
        let head = store.lock_head(&mut tx, tenant).await?;
        match apply_one(&mut tx, store.engine, tenant, &req).await {
            Ok(done) => {
                append(&mut tx, store.engine, tenant, head, vec![recorded(req.audit, &done)]).await?;
                tx.commit().await?;
                any = true;
                results[i] = Some(Ok(done));
            }
            Err(e) => {
                tx.rollback().await?;
                results[i] = Some(Err(e));
            }
        }
    }
    Ok((results, any))
}

/// The audit record of an applied operation, with the versions it wrote.
fn recorded(mut audit: AuditDraft, done: &OpDone) -> AuditDraft {
    if !audit.detail.is_object() {
        audit.detail = serde_json::json!({});
    }
    if let Some(previous) = done.previous_version {
        audit.detail["version"] = done.meta.current_version.into();
        audit.detail["previous_version"] = previous.into();
    } else if done.created {
        audit.detail["version"] = 1.into();
        if audit.kind == kind::SECRET_UPDATE {
            audit.kind = kind::SECRET_CREATE;
        }
    }
    audit
}

/// A bulk `set` or `rotate` writes a value; an external secret's versions hold references.
fn no_value_for_external(meta: &SecretMeta) -> Result<()> {
    if meta.is_external() {
        return Err(StoreError::Invalid(format!(
            "'{}' is an external_reference secret: its value stays in the provider; give it a new \
             external_ref with PUT or rotate",
            meta.path
        )));
    }
    Ok(())
}

async fn apply_one(tx: &mut Tx, engine: Engine, tenant: &str, req: &OpRequest<'_>) -> Result<OpDone> {
    let path = req.path.as_str();
    match &req.op {
        SecretOp::Set { cas, seal, meta: change, create } => {
            let existing = find(tx, tenant, path).await?;
            let Some(mut meta) = existing else {
                let Some(new) = create else { return Err(StoreError::NotFound) };
                if cas.is_some_and(|c| c != 0) {
                    return Err(StoreError::NotFound);
                }
                let sealed = seal(1)?;
                insert_secret(tx, engine, tenant, new).await?;
                insert_version(tx, &new.id, 1, Some(&sealed), None, new.created_at).await?;
                write_tags(tx, &new.id, &new.tags).await?;
                return Ok(OpDone { meta: (**new).clone(), previous_version: None, created: true });
            };
            no_value_for_external(&meta)?;
            if meta.deleted_at.is_some() {
                return Err(StoreError::Conflict(format!(
                    "'{path}' is deleted; undelete it (or delete it permanently) first"
                )));
            }
            let previous = meta.current_version;
            match cas {
                Some(0) => return Err(StoreError::Conflict(format!("'{path}' exists (version {previous})"))),
                Some(c) if *c != previous => {
                    return Err(StoreError::Conflict(format!(
                        "check-and-set failed: the current version of '{path}' is {previous}, not {c}"
                    )));
                }
                _ => {}
            }
            let now = now_ms();
            let sealed = seal(previous + 1)?;
            insert_version(tx, &meta.id, previous + 1, Some(&sealed), None, now).await?;
            apply_change(&mut meta, change);
            meta.current_version = previous + 1;
            meta.updated_at = now;
            update_meta(tx, &meta).await?;
            if change.tags.is_some() {
                write_tags(tx, &meta.id, &meta.tags).await?;
            }
            Ok(OpDone { meta, previous_version: Some(previous), created: false })
        }
        SecretOp::Rotate { seal, previous_expires_at } => {
            let mut meta = live(tx, tenant, path).await?;
            no_value_for_external(&meta)?;
            let (previous, now) = (meta.current_version, now_ms());
            let sealed = seal(previous + 1)?;
            insert_version(tx, &meta.id, previous + 1, Some(&sealed), None, now).await?;
            sqlx::query("UPDATE secret_versions SET expires_at = $1 WHERE secret_id = $2 AND version = $3")
                .bind(*previous_expires_at)
                .bind(&meta.id)
                .bind(previous)
                .execute(&mut **tx)
                .await?;
            meta.current_version = previous + 1;
            meta.updated_at = now;
            update_meta(tx, &meta).await?;
            Ok(OpDone { meta, previous_version: Some(previous), created: false })
        }
        SecretOp::Delete { now } => {
            let mut meta = live(tx, tenant, path).await?;
            sqlx::query("UPDATE secrets SET deleted_at = $1 WHERE id = $2")
                .bind(*now)
                .bind(&meta.id)
                .execute(&mut **tx)
                .await?;
            meta.deleted_at = Some(*now);
            Ok(OpDone { meta, previous_version: None, created: false })
        }
        SecretOp::Undelete { versions } => {
            let mut meta = find(tx, tenant, path).await?.ok_or(StoreError::NotFound)?;
            if meta.deleted_at.is_none() && versions.is_none() {
                return Err(StoreError::NotFound);
            }
            if let Some(versions) = versions {
                let rows = versions_of(tx, &meta.id).await?;
                for v in versions {
                    match rows.iter().find(|r| r.version == *v) {
                        None => return Err(StoreError::Invalid(format!("'{path}' has no version {v}"))),
                        Some(r) if r.sealed.is_none() => {
                            return Err(StoreError::Invalid(format!(
                                "version {v} of '{path}' was destroyed and cannot be undeleted"
                            )));
                        }
                        Some(_) => {}
                    }
                }
                for v in versions {
                    sqlx::query("UPDATE secret_versions SET expires_at = NULL WHERE secret_id = $1 AND version = $2")
                        .bind(&meta.id)
                        .bind(*v)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            sqlx::query("UPDATE secrets SET deleted_at = NULL WHERE id = $1").bind(&meta.id).execute(&mut **tx).await?;
            meta.deleted_at = None;
            Ok(OpDone { meta, previous_version: None, created: false })
        }
        SecretOp::Destroy { versions } => {
            let meta = find(tx, tenant, path).await?.ok_or(StoreError::NotFound)?;
            let rows = versions_of(tx, &meta.id).await?;
            if let Some(v) = versions.iter().find(|v| !rows.iter().any(|r| r.version == **v)) {
                return Err(StoreError::Invalid(format!("'{path}' has no version {v}")));
            }
            for v in versions {
                sqlx::query(
                    "UPDATE secret_versions SET kid = NULL, wrapped_key = NULL, ciphertext = NULL \
                     WHERE secret_id = $1 AND version = $2",
                )
                .bind(&meta.id)
                .bind(*v)
                .execute(&mut **tx)
                .await?;
            }
            Ok(OpDone { meta, previous_version: None, created: false })
        }
    }
}

fn apply_change(meta: &mut SecretMeta, change: &crate::store::MetaChange) {
    if let Some(t) = &change.tier {
        meta.tier = t.clone();
    }
    if let Some(d) = &change.description {
        meta.description = d.clone();
    }
    if let Some(t) = &change.tags {
        meta.tags = t.clone();
    }
    if let Some(h) = &change.allowed_hosts {
        meta.allowed_hosts = h.clone();
    }
    if let Some(o) = &change.owner {
        meta.owner = o.clone();
    }
    if let Some(t) = change.expires_at {
        meta.expires_at = t;
    }
    if let Some(t) = change.not_before {
        meta.not_before = t;
    }
}

/// The secret at `path`, deleted or not.
async fn find(tx: &mut Tx, tenant: &str, path: &str) -> Result<Option<SecretMeta>> {
    match meta_in(tx, tenant, path).await {
        Ok(m) => Ok(Some(m)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The secret at `path`, not deleted.
async fn live(tx: &mut Tx, tenant: &str, path: &str) -> Result<SecretMeta> {
    match find(tx, tenant, path).await? {
        Some(m) if m.deleted_at.is_none() => Ok(m),
        _ => Err(StoreError::NotFound),
    }
}

async fn versions_of(tx: &mut Tx, secret_id: &str) -> Result<Vec<VersionRow>> {
    let rows =
        sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM secret_versions WHERE secret_id = $1 ORDER BY version"))
            .bind(secret_id)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter().map(version_from_row).collect()
}

async fn insert_secret(tx: &mut Tx, engine: Engine, tenant: &str, m: &SecretMeta) -> Result<()> {
    let sql =
        format!("INSERT INTO secrets (tenant_id, {SECRET_COLUMNS}) VALUES {}", engine.values_list(1, NEW_SECRET_BINDS));
    bind_new_secret(sqlx::query(&sql), tenant, m).execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn move_secret(
    store: &SqlStore,
    tenant: &str,
    from: &str,
    to: &str,
    overwrite: bool,
    reseal: &ResealFn<'_>,
    audit: Vec<AuditDraft>,
) -> Result<SecretMeta> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut meta = live(&mut tx, tenant, from).await?;
    if let Some(there) = find(&mut tx, tenant, to).await? {
        if !overwrite {
            let deleted = if there.deleted_at.is_some() { " (deleted, still undoable)" } else { "" };
            return Err(StoreError::Conflict(format!("'{to}' exists{deleted}; pass overwrite to replace it")));
        }
        for sql in [
            "DELETE FROM secret_versions WHERE secret_id = $1",
            "DELETE FROM secret_tags WHERE secret_id = $1",
            "DELETE FROM secrets WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&there.id).execute(&mut *tx).await?;
        }
    }
    for row in versions_of(&mut tx, &meta.id).await? {
        let Some(sealed) = row.sealed else { continue };
        let moved = reseal(row.version, &sealed)?;
        sqlx::query(
            "UPDATE secret_versions SET kid = $1, wrapped_key = $2, ciphertext = $3 WHERE secret_id = $4 AND version = $5",
        )
        .bind(&moved.kid)
        .bind(moved.wrapped_key.clone())
        .bind(moved.ciphertext.clone())
        .bind(&meta.id)
        .bind(row.version)
        .execute(&mut *tx)
        .await?;
    }
    let now = now_ms();
    sqlx::query("UPDATE secrets SET path = $1, updated_at = $2 WHERE id = $3")
        .bind(to)
        .bind(now)
        .bind(&meta.id)
        .execute(&mut *tx)
        .await?;
    meta.path = to.to_owned();
    meta.updated_at = now;
    append(&mut tx, store.engine, tenant, head, audit).await?;
    tx.commit().await?;
    Ok(meta)
}
