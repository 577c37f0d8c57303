//! Reading and recording the audit trail: records that stand alone (handed to the group
//! commit in `audit_chain`), access events a sidecar reports (deduplicated by id), listing
//! with filters, verifying a tenant's chain, and the chain heads of every tenant.

use sqlx::Row;
use tokio::sync::oneshot;

use super::SqlStore;
use super::audit_chain::{AUDIT_ROWS_PER_INSERT, AuditJob, append};
use super::filters::audit_conditions;
use super::rows::{AUDIT_COLUMNS, audit_from_row};
use crate::domain::audit::{AuditDraft, AuditRecord, ChainVerifier};
use crate::store::{AuditFilter, AuditHead, AuditVerdict, Result, StoreError};

pub(super) async fn record(
    store: &SqlStore,
    tenant: &str,
    audit: AuditDraft,
    accessed_secret: Option<&str>,
) -> Result<()> {
    let (done, answer) = oneshot::channel();
    let job =
        AuditJob { tenant: tenant.to_owned(), draft: audit, accessed_secret: accessed_secret.map(str::to_owned), done };
    store.audit_jobs.send(job).await.map_err(|_| StoreError::AuditClosed)?;
    answer.await.map_err(|_| StoreError::AuditClosed)?
}

pub(super) async fn record_access(store: &SqlStore, tenant: &str, events: Vec<AuditDraft>) -> Result<Vec<String>> {
    let (mut tx, _write) = store.begin().await?;
    let head = store.lock_head(&mut tx, tenant).await?;
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in events.chunks(AUDIT_ROWS_PER_INSERT * 4) {
        let sql = format!("SELECT id FROM audit_events WHERE id IN {}", store.engine.values_list(1, chunk.len()));
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for e in chunk {
            query = query.bind(&e.id);
        }
        seen.extend(query.fetch_all(&mut *tx).await?);
    }
    let (mut fresh, mut skipped) = (Vec::with_capacity(events.len()), Vec::new());
    for e in events {
        if seen.insert(e.id.clone()) {
            fresh.push(e);
        } else {
            skipped.push(e.id);
        }
    }
    append(&mut tx, store.engine, tenant, head, fresh).await?;
    tx.commit().await?;
    Ok(skipped)
}

pub(super) async fn list_audit(store: &SqlStore, tenant: &str, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let c = audit_conditions(tenant, f);
    let limit_at = c.next_index();
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq DESC LIMIT ${limit_at}",
        c.where_clause()
    );
    let rows = c.bind(sqlx::query(&sql)).bind(f.limit).fetch_all(&store.pool).await?;
    rows.iter().map(audit_from_row).collect()
}

/// The latest successful `access` event of each agent (its name, `actor_description`) for
/// one path.
pub(super) async fn last_uses(store: &SqlStore, tenant: &str, path: &str) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT actor_description, MAX(timestamp_ms) FROM audit_events \
         WHERE tenant_id = $1 AND path = $2 AND kind = $3 AND success = 1 AND actor_description IS NOT NULL \
         GROUP BY actor_description",
    )
    .bind(tenant)
    .bind(path)
    .bind(crate::domain::audit::kind::ACCESS)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?))).collect()
}

pub(super) async fn verify_audit(store: &SqlStore, tenant: &str) -> Result<AuditVerdict> {
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&store.pool)
        .await?;
    let (head_seq, head_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
    let mut verifier = ChainVerifier::default();
    let mut after = 0i64;
    let verdict = |verifier: &ChainVerifier, first_broken: Option<crate::domain::audit::BrokenLink>| AuditVerdict {
        ok: first_broken.is_none(),
        checked: verifier.checked,
        head_seq,
        first_broken,
    };
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT 1000"
        ))
        .bind(tenant)
        .bind(after)
        .bind(head_seq)
        .fetch_all(&store.pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let record = audit_from_row(row)?;
            if let Err(broken) = verifier.check(&record) {
                return Ok(verdict(&verifier, Some(broken)));
            }
            after = record.seq;
        }
    }
    Ok(verdict(&verifier, verifier.finish(head_seq, &head_hash).err()))
}

pub(super) async fn audit_heads(store: &SqlStore) -> Result<Vec<AuditHead>> {
    let rows =
        sqlx::query("SELECT tenant_id, seq, hash FROM audit_heads ORDER BY tenant_id").fetch_all(&store.pool).await?;
    rows.iter().map(|r| Ok(AuditHead { tenant_id: r.try_get(0)?, seq: r.try_get(1)?, hash: r.try_get(2)? })).collect()
}
