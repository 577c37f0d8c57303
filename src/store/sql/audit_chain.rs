//! The audit chain: appending records after a tenant's head inside a write transaction, and
//! the group commit of records that stand alone (reads, failures): a single writer task
//! takes whatever audit jobs are waiting and writes them in one transaction (tenants in a
//! fixed order, so concurrent writers cannot deadlock), many requests, one transaction.
//! Every append chains each record to the one before it and moves the tenant's head in the
//! same transaction, so a tenant's records are appended strictly in order.

use sqlx::{Any, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::Tx;
use super::rows::AUDIT_COLUMNS;
use super::write_lock::{Head, KnownHeads, WriteLock};
use crate::domain::audit::{AuditDraft, AuditRecord};
use crate::store::{Engine, Result, StoreError};

pub(super) struct AuditJob {
    pub(super) tenant: String,
    pub(super) draft: AuditDraft,
    pub(super) accessed_secret: Option<String>,
    pub(super) done: oneshot::Sender<Result<()>>,
}

const AUDIT_BATCH: usize = 512;

pub(super) async fn lock_head(tx: &mut Tx, engine: Engine, tenant: &str) -> Result<Head> {
    read_head(&mut **tx, engine, tenant).await
}

/// The tenant's chain head; in a transaction on PostgreSQL, locked for the rest of it.
async fn read_head<'c, E: sqlx::Executor<'c, Database = Any>>(conn: E, engine: Engine, tenant: &str) -> Result<Head> {
    let sql = format!("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1{}", engine.lock_clause());
    let row = sqlx::query(&sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("tenant '{tenant}' has no audit chain head")))?;
    Ok(Head { seq: row.try_get(0)?, hash: row.try_get(1)? })
}

/// Appends records after `head` and moves the head. The head must be locked by `tx`.
pub(super) async fn append(
    tx: &mut Tx,
    engine: Engine,
    tenant: &str,
    head: Head,
    drafts: Vec<AuditDraft>,
) -> Result<()> {
    append_touching(tx, engine, tenant, head, drafts, &[]).await
}

/// `append`, after setting `accessed_at` of the secrets in `accessed` (id, time).
///
/// On SQLite all of it goes as one multi-statement query: one round trip to the
/// connection's worker thread instead of one per statement (sqlx binds anonymous
/// parameters across the statements, in order). PostgreSQL takes one statement per query
/// with parameters.
async fn append_touching(
    tx: &mut Tx,
    engine: Engine,
    tenant: &str,
    head: Head,
    drafts: Vec<AuditDraft>,
    accessed: &[(&str, i64)],
) -> Result<()> {
    let (records, head) = chain(tenant, head, drafts);
    match engine {
        Engine::Sqlite => {
            let mut sql = String::new();
            push_append_sql(&mut sql, accessed.len(), records.len());
            bind_append(sqlx::query(&sql), tenant, accessed, &records, &head).execute(&mut **tx).await?;
        }
        Engine::Postgres => {
            for rows in accessed.chunks(ACCESSED_ROWS_PER_UPDATE) {
                let sql = touch_sql(engine, rows.len());
                bind_accessed(sqlx::query(&sql), rows).execute(&mut **tx).await?;
            }
            for rows in records.chunks(AUDIT_ROWS_PER_INSERT) {
                let sql = insert_audit_sql(engine, rows.len());
                bind_audit_rows(sqlx::query(&sql), rows).execute(&mut **tx).await?;
            }
            sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE tenant_id = $3")
                .bind(head.seq)
                .bind(&head.hash)
                .bind(tenant)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The records of `drafts`, chained after `head`, and the head after them.
fn chain(tenant: &str, mut head: Head, drafts: Vec<AuditDraft>) -> (Vec<AuditRecord>, Head) {
    let mut records = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let record = AuditRecord::chain(tenant, head.seq + 1, &head.hash, draft);
        head = Head { seq: record.seq, hash: record.hash.clone() };
        records.push(record);
    }
    (records, head)
}

/// SQLite statements (anonymous `?` parameters, bound by `bind_append`) that set
/// `accessed_at` of `accessed` secrets, insert `records` audit records and move the head.
fn push_append_sql(sql: &mut String, accessed: usize, records: usize) {
    type Statement = fn(Engine, usize) -> String;
    let statements: [(usize, usize, Statement); 2] =
        [(accessed, ACCESSED_ROWS_PER_UPDATE, touch_sql), (records, AUDIT_ROWS_PER_INSERT, insert_audit_sql)];
    for (mut left, per_statement, statement) in statements {
        while left > 0 {
            let rows = left.min(per_statement);
            sql.push_str(&statement(Engine::Sqlite, rows));
            sql.push_str(";\n");
            left -= rows;
        }
    }
    sql.push_str("UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant_id = ?;\n");
}

/// Binds the parameters of `push_append_sql`, in its order.
fn bind_append<'q>(
    query: AnyQuery<'q>,
    tenant: &'q str,
    accessed: &[(&'q str, i64)],
    records: &'q [AuditRecord],
    head: &'q Head,
) -> AnyQuery<'q> {
    bind_audit_rows(bind_accessed(query, accessed), records).bind(head.seq).bind(&head.hash).bind(tenant)
}

/// Rows per multi-row INSERT: 14 parameters each, well under SQLite's and PostgreSQL's
/// limits on parameters per statement.
pub(super) const AUDIT_ROWS_PER_INSERT: usize = 32;

fn insert_audit_sql(engine: Engine, rows: usize) -> String {
    format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {}", engine.values_list(rows, 14))
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds the 14 values of each record, in `AUDIT_COLUMNS` order.
fn bind_audit_rows<'q>(mut query: AnyQuery<'q>, rows: &'q [AuditRecord]) -> AnyQuery<'q> {
    for r in rows {
        query = query
            .bind(&r.tenant_id)
            .bind(r.seq)
            .bind(&r.id)
            .bind(&r.kind)
            .bind(&r.path)
            .bind(&r.actor)
            .bind(&r.actor_description)
            .bind(&r.ip)
            .bind(&r.user_agent)
            .bind(r.timestamp_ms)
            .bind(r.success as i64)
            .bind(r.detail.to_string())
            .bind(&r.prev_hash)
            .bind(&r.hash);
    }
    query
}

/// Group commit: takes whatever audit jobs are waiting, writes them in one transaction
/// (tenants in a fixed order, so concurrent writers cannot deadlock) and answers each.
pub(super) async fn audit_writer(pool: AnyPool, engine: Engine, writer: WriteLock, mut jobs: mpsc::Receiver<AuditJob>) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while jobs.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        batch.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let groups = tenant_groups(&batch);
        let mut guard = writer.acquire_keeping_heads().await;
        let result = match guard.as_deref_mut() {
            Some(heads) => write_audit_batch_sqlite(&pool, heads, &groups).await,
            None => write_audit_batch(&pool, engine, &groups).await,
        };
        drop(guard);
        if let Err(e) = &result {
            tracing::error!(error = %e, records = batch.len(), "audit batch failed; the operations it recorded fail closed");
        }
        for job in batch.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Corrupt(format!("audit write failed: {e}"))),
            };
            let _ = job.done.send(answer);
        }
    }
}

/// One tenant's part of an audit batch: its records, and the secrets read (one
/// `accessed_at` per secret, its latest read).
struct TenantGroup<'a> {
    tenant: &'a str,
    drafts: Vec<AuditDraft>,
    accessed: Vec<(&'a str, i64)>,
}

/// Splits a batch sorted by tenant into its tenants' groups.
fn tenant_groups(batch: &[AuditJob]) -> Vec<TenantGroup<'_>> {
    let mut groups: Vec<TenantGroup> = Vec::new();
    for job in batch {
        let group = match groups.last_mut() {
            Some(g) if g.tenant == job.tenant => g,
            _ => {
                groups.push(TenantGroup { tenant: &job.tenant, drafts: Vec::new(), accessed: Vec::new() });
                groups.last_mut().expect("just pushed")
            }
        };
        group.drafts.push(job.draft.clone());
        if let Some(secret) = job.accessed_secret.as_deref() {
            match group.accessed.iter_mut().find(|(id, _)| *id == secret) {
                Some((_, at)) => *at = (*at).max(job.draft.timestamp_ms),
                None => group.accessed.push((secret, job.draft.timestamp_ms)),
            }
        }
    }
    groups
}

async fn write_audit_batch(pool: &AnyPool, engine: Engine, groups: &[TenantGroup<'_>]) -> Result<()> {
    let mut tx = pool.begin_with(engine.begin_sql()).await?;
    for g in groups {
        let head = lock_head(&mut tx, engine, g.tenant).await?;
        append_touching(&mut tx, engine, g.tenant, head, g.drafts.clone(), &g.accessed).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The audit batch on SQLite: one multi-statement query from `BEGIN IMMEDIATE` to
/// `COMMIT`, one round trip to the connection's thread where a transaction takes five
/// (begin, head, append, commit), with the chain heads this process already knows. A
/// batch that fails on known heads is written again once, after reading them afresh.
async fn write_audit_batch_sqlite(pool: &AnyPool, heads: &mut KnownHeads, groups: &[TenantGroup<'_>]) -> Result<()> {
    let knew_some = groups.iter().any(|g| heads.0.contains_key(g.tenant));
    match append_batch_sqlite(pool, heads, groups).await {
        Err(e) if knew_some => {
            tracing::warn!(error = %e, "audit append on the known chain heads failed; reading the heads again");
            heads.0.clear();
            append_batch_sqlite(pool, heads, groups).await
        }
        done => done,
    }
}

async fn append_batch_sqlite(pool: &AnyPool, heads: &mut KnownHeads, groups: &[TenantGroup<'_>]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let mut appended = Vec::with_capacity(groups.len());
    for g in groups {
        let head = match heads.0.get(g.tenant) {
            Some(head) => head.clone(),
            // Read outside the transaction: this process's writers are held back, so
            // nothing moves it before the BEGIN.
            None => read_head(&mut *conn, Engine::Sqlite, g.tenant).await?,
        };
        appended.push(chain(g.tenant, head, g.drafts.clone()));
    }
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for (g, (records, _)) in groups.iter().zip(&appended) {
        push_append_sql(&mut sql, g.accessed.len(), records.len());
    }
    sql.push_str("COMMIT");
    let mut query = sqlx::query(&sql);
    for (g, (records, head)) in groups.iter().zip(&appended) {
        query = bind_append(query, g.tenant, &g.accessed, records, head);
    }
    if let Err(e) = query.execute(&mut *conn).await {
        // A statement failed after BEGIN: roll back here, as no `Transaction` will.
        // If that fails too, the connection is closed rather than given back.
        if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            conn.close_on_drop();
        }
        heads.0.clear();
        return Err(e.into());
    }
    for (g, (_, head)) in groups.iter().zip(appended) {
        heads.0.insert(g.tenant.to_owned(), head);
    }
    Ok(())
}

/// Secrets per `accessed_at` update: two parameters each.
const ACCESSED_ROWS_PER_UPDATE: usize = 200;

/// Sets `accessed_at` of several secrets in one statement (one round trip to the database
/// instead of one per secret read in the batch).
fn touch_sql(engine: Engine, rows: usize) -> String {
    format!(
        "WITH v(id, at) AS (VALUES {}) UPDATE secrets SET accessed_at = v.at FROM v WHERE secrets.id = v.id",
        engine.values_list(rows, 2)
    )
}

/// Binds (secret id, time) pairs, in `touch_sql` order.
fn bind_accessed<'q>(mut query: AnyQuery<'q>, rows: &[(&'q str, i64)]) -> AnyQuery<'q> {
    for &(secret_id, at) in rows {
        query = query.bind(secret_id).bind(at);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqlStore, Store};

    /// The audit writer appends on the chain heads it knows. Another writer of the same
    /// file (another process) moves a head behind its back: the append collides with the
    /// record at that `seq`, is written again on the heads read afresh, and nothing is lost.
    #[tokio::test]
    async fn an_audit_head_moved_by_another_process_is_read_again() {
        const TENANT: &str = crate::server::auth::SYSTEM_TENANT;
        let draft = |n: i64| AuditDraft {
            id: crate::server::auth::new_id("evt"),
            kind: crate::domain::audit::kind::SECRET_READ,
            path: Some(format!("team/secret-{n}")),
            actor: "key_test".into(),
            actor_description: None,
            ip: None,
            user_agent: None,
            timestamp_ms: n,
            success: true,
            detail: serde_json::json!({}),
        };
        let dir = tempfile::tempdir().unwrap();
        let url = Engine::sqlite_url(dir.path());
        let ours = SqlStore::open(&url).await.unwrap();
        let theirs = SqlStore::open(&url).await.unwrap();
        let start = ours.verify_audit(TENANT).await.unwrap().head_seq;
        ours.record(TENANT, draft(1), None).await.unwrap();
        theirs.record(TENANT, draft(2), None).await.unwrap();
        ours.record(TENANT, draft(3), None).await.expect("the append is written again on the head read afresh");
        ours.record(TENANT, draft(4), None).await.unwrap();
        let verdict = ours.verify_audit(TENANT).await.unwrap();
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(verdict.head_seq, start + 4);
    }
}
