//! Create batching: creates go through one writer task that commits whatever creates are
//! waiting in one transaction (multi-row inserts, one audit append per tenant), answering
//! each with its own result, so one bad create never fails the others.

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::Tx;
use super::audit_chain::{append, lock_head};
use super::rows::{NEW_SECRET_BINDS, SECRET_COLUMNS, bind_new_secret, write_tags};
use super::write_lock::WriteLock;
use crate::crypto::Sealed;
use crate::domain::audit::AuditDraft;
use crate::store::{Engine, Result, SecretMeta, StoreError};

pub(super) struct CreateJob {
    pub(super) tenant: String,
    pub(super) meta: SecretMeta,
    /// None for an external reference (the meta holds it).
    pub(super) sealed: Option<Sealed>,
    pub(super) audit: AuditDraft,
    pub(super) done: oneshot::Sender<Result<()>>,
}

/// Creates committed together at most (each is a few rows and one audit record).
const CREATE_BATCH: usize = 128;

/// Group commit for creates: takes whatever creates are waiting and writes them in one
/// transaction (multi-row inserts, one audit append per tenant), answering each with its
/// own result: a path that exists, or that an earlier create of the batch takes, is a
/// conflict for that create alone. If the batch fails as a whole (a database error, or on
/// PostgreSQL a create racing another replica), each create is written again on its own,
/// so one bad create never fails the others.
pub(super) async fn create_writer(
    pool: AnyPool,
    engine: Engine,
    writer: WriteLock,
    mut jobs: mpsc::Receiver<CreateJob>,
) {
    let mut batch = Vec::with_capacity(CREATE_BATCH);
    while jobs.recv_many(&mut batch, CREATE_BATCH).await > 0 {
        batch.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let guard = writer.acquire().await;
        let answers = match write_create_batch(&pool, engine, &batch).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, creates = batch.len(), "batched create failed; writing each on its own");
                let mut answers = Vec::with_capacity(batch.len());
                for job in &batch {
                    answers.push(write_one_create(&pool, engine, job).await);
                }
                answers
            }
        };
        drop(guard);
        for (job, answer) in batch.drain(..).zip(answers) {
            let _ = job.done.send(answer);
        }
    }
}

/// One transaction for all of `jobs` (sorted by tenant); the answer of each, in order.
async fn write_create_batch(pool: &AnyPool, engine: Engine, jobs: &[CreateJob]) -> Result<Vec<Result<()>>> {
    let mut tx = pool.begin_with(engine.begin_sql()).await?;
    let mut answers = Vec::with_capacity(jobs.len());
    let mut i = 0;
    while i < jobs.len() {
        let tenant = jobs[i].tenant.as_str();
        let end = jobs[i..].iter().position(|j| j.tenant != tenant).map_or(jobs.len(), |n| i + n);
        let head = lock_head(&mut tx, engine, tenant).await?;
        let existing = existing_paths(&mut tx, engine, tenant, &jobs[i..end]).await?;
        let mut accepted: Vec<&CreateJob> = Vec::new();
        for job in &jobs[i..end] {
            let path = job.meta.path.as_str();
            let taken = existing.iter().find(|(p, _)| p == path).map(|(_, deleted)| *deleted);
            let taken = taken.or_else(|| accepted.iter().any(|a| a.meta.path == path).then_some(false));
            match taken {
                Some(deleted) => answers.push(Err(create_conflict(path, deleted))),
                None => {
                    accepted.push(job);
                    answers.push(Ok(()));
                }
            }
        }
        for rows in accepted.chunks(CREATE_ROWS_PER_INSERT) {
            insert_secrets(&mut tx, engine, tenant, rows).await?;
            insert_versions(&mut tx, engine, rows).await?;
        }
        for job in accepted.iter().filter(|j| !j.meta.tags.is_empty()) {
            write_tags(&mut tx, &job.meta.id, &job.meta.tags).await?;
        }
        append(&mut tx, engine, tenant, head, accepted.iter().map(|j| j.audit.clone()).collect()).await?;
        i = end;
    }
    tx.commit().await?;
    Ok(answers)
}

/// One create in its own transaction (the write lock is held by the caller).
async fn write_one_create(pool: &AnyPool, engine: Engine, job: &CreateJob) -> Result<()> {
    let mut answers = write_create_batch(pool, engine, std::slice::from_ref(job)).await?;
    answers.pop().expect("one answer per create")
}

fn create_conflict(path: &str, deleted: bool) -> StoreError {
    StoreError::Conflict(if deleted {
        format!("a deleted secret exists at '{path}'; undelete it or delete it permanently first")
    } else {
        format!("a secret already exists at '{path}'; use PUT to add a version")
    })
}

/// Creates per multi-row insert: 21 parameters per secret row, well under both databases'
/// limits per statement.
const CREATE_ROWS_PER_INSERT: usize = 64;

/// The paths of `jobs` that already hold a secret of `tenant`, with whether it is deleted.
async fn existing_paths(tx: &mut Tx, engine: Engine, tenant: &str, jobs: &[CreateJob]) -> Result<Vec<(String, bool)>> {
    let mut found = Vec::new();
    for chunk in jobs.chunks(CREATE_ROWS_PER_INSERT) {
        let sql = format!(
            "SELECT path, deleted_at FROM secrets WHERE tenant_id = {} AND path IN ({})",
            engine.param_list(1, 1),
            engine.param_list(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(tenant);
        for job in chunk {
            query = query.bind(&job.meta.path);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let deleted_at: Option<i64> = row.try_get(1)?;
            found.push((row.try_get(0)?, deleted_at.is_some()));
        }
    }
    Ok(found)
}

async fn insert_secrets(tx: &mut Tx, engine: Engine, tenant: &str, jobs: &[&CreateJob]) -> Result<()> {
    let sql = format!(
        "INSERT INTO secrets (tenant_id, {SECRET_COLUMNS}) VALUES {}",
        engine.values_list(jobs.len(), NEW_SECRET_BINDS)
    );
    let mut query = sqlx::query(&sql);
    for job in jobs {
        query = bind_new_secret(query, tenant, &job.meta);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn insert_versions(tx: &mut Tx, engine: Engine, jobs: &[&CreateJob]) -> Result<()> {
    let sql = format!(
        "INSERT INTO secret_versions (secret_id, version, kid, wrapped_key, ciphertext, created_at, expires_at, \
         external_ref, provider_version_ref) VALUES {}",
        engine.values_list(jobs.len(), 9)
    );
    let mut query = sqlx::query(&sql);
    for job in jobs {
        let (m, sealed) = (&job.meta, &job.sealed);
        query = query
            .bind(&m.id)
            .bind(m.current_version)
            .bind(sealed.as_ref().map(|s| s.kid.clone()))
            .bind(sealed.as_ref().map(|s| s.wrapped_key.clone()))
            .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
            .bind(m.created_at)
            .bind(None::<i64>)
            .bind(&m.external_ref)
            .bind(&m.provider_version_ref);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
