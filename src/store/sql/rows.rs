//! Row mapping: the column lists of each table, in the order the inserts bind them, the
//! `*_from_row` functions that turn a row back into the store's types (a JSON column that
//! does not parse is corrupt data, never a panic), and the encodings that writes of
//! several aggregates share (JSON columns, a secret's tag rows).

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Tx;

use crate::crypto::Sealed;
use crate::domain::audit::AuditRecord;
use crate::store::{Approval, Credential, CredentialKind, Result, SecretMeta, StoreError, VersionRow};

pub(super) const SECRET_COLUMNS: &str = "id, path, current_version, tier, description, tags, allowed_hosts, owner, \
     created_at, updated_at, accessed_at, expires_at, not_before, deleted_at, managed_mode, status, \
     provider_config_id, external_ref, provider_version_ref, last_rotated_at, created_by_id, created_by_description";
/// The columns of `secret_versions` that `version_from_row` reads.
pub(super) const VERSION_COLUMNS: &str =
    "version, kid, wrapped_key, ciphertext, created_at, expires_at, external_ref, provider_version_ref";
pub(super) const CREDENTIAL_COLUMNS: &str = "id, tenant_id, kind, name, role, scopes, secret_hash, agent_id, minted_by, \
     description, allowed_ips, max_uses, uses, created_at, expires_at, revoked_at";
pub(super) const AUDIT_COLUMNS: &str = "tenant_id, seq, id, kind, path, actor, actor_description, ip, user_agent, \
     timestamp_ms, success, detail, prev_hash, hash";
pub(super) const APPROVAL_COLUMNS: &str = "id, tenant_id, requester_id, agent_id, agent_name, status, request, reason, \
     created_at, decided_at, decided_by, note, token_id";

fn json_or_default<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> Result<T> {
    match s {
        None => Ok(T::default()),
        Some(s) => serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("bad JSON column: {e}"))),
    }
}

pub(super) fn meta_from_row(row: &AnyRow) -> Result<SecretMeta> {
    Ok(SecretMeta {
        id: row.try_get("id")?,
        path: row.try_get("path")?,
        current_version: row.try_get("current_version")?,
        tier: row.try_get("tier")?,
        description: row.try_get("description")?,
        tags: json_or_default(row.try_get("tags")?)?,
        allowed_hosts: json_or_default(row.try_get("allowed_hosts")?)?,
        owner: row.try_get("owner")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        accessed_at: row.try_get("accessed_at")?,
        expires_at: row.try_get("expires_at")?,
        not_before: row.try_get("not_before")?,
        deleted_at: row.try_get("deleted_at")?,
        managed_mode: row.try_get("managed_mode")?,
        status: row.try_get("status")?,
        provider_config_id: row.try_get("provider_config_id")?,
        external_ref: row.try_get("external_ref")?,
        provider_version_ref: row.try_get("provider_version_ref")?,
        last_rotated_at: row.try_get("last_rotated_at")?,
        created_by_id: row.try_get("created_by_id")?,
        created_by_description: row.try_get("created_by_description")?,
    })
}

pub(super) fn credential_from_row(row: &AnyRow) -> Result<Credential> {
    Ok(Credential {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        kind: CredentialKind::parse(&row.try_get::<String, _>("kind")?)?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        scopes: json_or_default(row.try_get("scopes")?)?,
        secret_hash: row.try_get("secret_hash")?,
        agent_id: row.try_get("agent_id")?,
        minted_by: row.try_get("minted_by")?,
        description: row.try_get("description")?,
        allowed_ips: json_or_default(row.try_get("allowed_ips")?)?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) fn approval_from_row(row: &AnyRow) -> Result<Approval> {
    let request: String = row.try_get("request")?;
    Ok(Approval {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        requester_id: row.try_get("requester_id")?,
        agent_id: row.try_get("agent_id")?,
        agent_name: row.try_get("agent_name")?,
        status: row.try_get("status")?,
        request: serde_json::from_str(&request).map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        note: row.try_get("note")?,
        token_id: row.try_get("token_id")?,
    })
}

pub(super) fn version_from_row(row: &AnyRow) -> Result<VersionRow> {
    version_columns(row, "")
}

/// A version from columns named `{prefix}version`, `{prefix}kid`, …
pub(super) fn version_columns(row: &AnyRow, prefix: &str) -> Result<VersionRow> {
    let col = |name: &str| format!("{prefix}{name}");
    let kid: Option<String> = row.try_get(col("kid").as_str())?;
    let wrapped: Option<Vec<u8>> = row.try_get(col("wrapped_key").as_str())?;
    let ciphertext: Option<Vec<u8>> = row.try_get(col("ciphertext").as_str())?;
    let sealed = match (kid, wrapped, ciphertext) {
        (Some(kid), Some(wrapped_key), Some(ciphertext)) => Some(Sealed { kid, wrapped_key, ciphertext }),
        _ => None,
    };
    Ok(VersionRow {
        version: row.try_get(col("version").as_str())?,
        sealed,
        created_at: row.try_get(col("created_at").as_str())?,
        expires_at: row.try_get(col("expires_at").as_str())?,
        external_ref: row.try_get(col("external_ref").as_str())?,
        provider_version_ref: row.try_get(col("provider_version_ref").as_str())?,
    })
}

pub(super) fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        path: row.try_get("path")?,
        actor: row.try_get("actor")?,
        actor_description: row.try_get("actor_description")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        timestamp_ms: row.try_get("timestamp_ms")?,
        success: row.try_get::<i64, _>("success")? != 0,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl SecretMeta {
    pub(super) fn allowed_hosts_json(&self) -> Option<String> {
        (!self.allowed_hosts.is_empty()).then(|| to_json(&self.allowed_hosts))
    }
}

/// Replaces the tag rows of a secret (in the caller's transaction).
pub(super) async fn write_tags(tx: &mut Tx, secret_id: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    sqlx::query("DELETE FROM secret_tags WHERE secret_id = $1").bind(secret_id).execute(&mut **tx).await?;
    for (k, v) in tags {
        sqlx::query("INSERT INTO secret_tags (secret_id, key, value) VALUES ($1, $2, $3)")
            .bind(secret_id)
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// How many values `bind_new_secret` binds: `tenant_id` and each of `SECRET_COLUMNS`.
pub(super) const NEW_SECRET_BINDS: usize = 23;

/// Binds a new secret's row (`tenant_id, SECRET_COLUMNS`), never read nor deleted yet.
pub(super) fn bind_new_secret<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    tenant: &'q str,
    m: &'q SecretMeta,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(tenant)
        .bind(&m.id)
        .bind(&m.path)
        .bind(m.current_version)
        .bind(&m.tier)
        .bind(&m.description)
        .bind(to_json(&m.tags))
        .bind(m.allowed_hosts_json())
        .bind(&m.owner)
        .bind(m.created_at)
        .bind(m.updated_at)
        .bind(None::<i64>) // accessed_at
        .bind(m.expires_at)
        .bind(m.not_before)
        .bind(None::<i64>) // deleted_at
        .bind(&m.managed_mode)
        .bind(&m.status)
        .bind(&m.provider_config_id)
        .bind(&m.external_ref)
        .bind(&m.provider_version_ref)
        .bind(m.last_rotated_at)
        .bind(&m.created_by_id)
        .bind(&m.created_by_description)
}
