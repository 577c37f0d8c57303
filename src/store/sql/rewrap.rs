//! Master-key rewrap: finding versions whose data key is wrapped under another master key,
//! and replacing a wrap only if nobody changed it meanwhile.

use sqlx::Row;

use super::SqlStore;
use super::rows::version_from_row;
use crate::crypto::Sealed;
use crate::store::{Result, StoreError, WrappedVersion};

pub(super) async fn wrapped_not_under(store: &SqlStore, kid: &str, limit: i64) -> Result<Vec<WrappedVersion>> {
    let rows = sqlx::query(
        "SELECT s.tenant_id, s.path, v.secret_id, v.version, v.kid, v.wrapped_key, v.ciphertext, v.created_at, v.expires_at, v.external_ref, v.provider_version_ref \
         FROM secret_versions v JOIN secrets s ON s.id = v.secret_id \
         WHERE v.kid IS NOT NULL AND v.kid <> $1 ORDER BY v.secret_id, v.version LIMIT $2",
    )
    .bind(kid)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let v = version_from_row(r)?;
            Ok(WrappedVersion {
                tenant_id: r.try_get("tenant_id")?,
                path: r.try_get("path")?,
                secret_id: r.try_get("secret_id")?,
                version: v.version,
                sealed: v.sealed.ok_or_else(|| StoreError::Corrupt("half-destroyed version".into()))?,
            })
        })
        .collect()
}

pub(super) async fn replace_wrap(store: &SqlStore, v: &WrappedVersion, new: &Sealed) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE secret_versions SET kid = $1, wrapped_key = $2 \
         WHERE secret_id = $3 AND version = $4 AND kid = $5 AND wrapped_key = $6",
    )
    .bind(&new.kid)
    .bind(new.wrapped_key.clone())
    .bind(&v.secret_id)
    .bind(v.version)
    .bind(&v.sealed.kid)
    .bind(v.sealed.wrapped_key.clone())
    .execute(&store.pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}
