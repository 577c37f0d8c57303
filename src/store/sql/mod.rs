//! The `Store` implementation, written once in SQL that both engines accept (numbered
//! parameters, BIGINT milliseconds, `RETURNING`). Reads go straight to the pool; writes run
//! in a transaction that first locks the tenant's audit head, so audit records of one tenant
//! are appended strictly in order. Audit records that stand alone (reads, failures) are
//! group-committed by a single writer task: many requests, one transaction.
//!
//! This file holds `SqlStore` (opening it, starting its writer tasks, beginning a write)
//! and the `Store` trait impl, whose methods each call the function of the same name in
//! the file of their aggregate:
//!
//! - `tenants`, `credentials` (keys, agents, tokens), `approvals`, `secrets`, `providers`
//!   (provider configs), `audit`
//!   (recording, listing, verifying) and `rewrap` (master-key rotation): the queries;
//! - `audit_chain`: appending to a tenant's chain, and the group commit of lone records;
//! - `create_batch`: creates committed together by one writer task;
//! - `write_lock`: SQLite's single writer, queued in this process;
//! - `wal`: SQLite WAL upkeep (checkpoints, and starting the log over);
//! - `rows`: column lists and `*_from_row` mapping; `filters`: the list queries' WHERE
//!   clauses.

mod approvals;
mod audit;
mod audit_chain;
mod create_batch;
mod credentials;
mod filters;
mod providers;
mod rewrap;
mod rows;
mod secret_ops;
mod secrets;
mod tenants;
mod wal;
mod write_lock;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::mpsc;

use audit_chain::{AuditJob, audit_writer, lock_head};
use create_batch::{CreateJob, create_writer};
use wal::{WAL_RESTART_FRAMES, checkpoint};
use write_lock::{Head, WriteGuard, WriteLock};

use super::engine::Engine;
use super::{
    Approval, AuditFilter, AuditHead, AuditVerdict, Credential, CredentialKind, Filed, ListFilter, MetaChange,
    NewVersion, OpDone, OpRequest, ProviderConfig, ProviderConfigChange, ResealFn, Result, SecretMeta, Store,
    StoreError, Tenant, VersionRow, WrappedVersion,
};
use crate::crypto::Sealed;
use crate::domain::audit::{AuditDraft, AuditRecord};

type Tx = Transaction<'static, Any>;

pub struct SqlStore {
    pool: AnyPool,
    engine: Engine,
    audit_jobs: mpsc::Sender<AuditJob>,
    /// Creates go through one writer that commits whatever is waiting together.
    creates: mpsc::Sender<CreateJob>,
    /// SQLite has one writer: writers of this process queue here, in order, instead of
    /// polling SQLite's lock with its sleeping busy handler (which ruins tail latency).
    writer: WriteLock,
}

impl SqlStore {
    /// Connects, migrates and starts the audit writer.
    pub async fn open(url: &str) -> Result<Arc<SqlStore>> {
        let engine = Engine::of_url(url)
            .ok_or_else(|| StoreError::Corrupt(format!("unsupported database URL scheme in '{}'", redact_url(url))))?;
        let pool = engine.connect(url).await?;
        let (tx, rx) = mpsc::channel(4096);
        let writer = WriteLock::for_engine(engine);
        tokio::spawn(audit_writer(pool.clone(), engine, writer.clone(), rx));
        let (creates, create_rx) = mpsc::channel(1024);
        tokio::spawn(create_writer(pool.clone(), engine, writer.clone(), create_rx));
        if engine == Engine::Sqlite {
            let file: String = sqlx::query("PRAGMA database_list").fetch_one(&pool).await?.try_get(2)?;
            tokio::spawn(checkpoint(pool.clone(), writer.clone(), file.into(), WAL_RESTART_FRAMES));
        }
        Ok(Arc::new(SqlStore { pool, engine, audit_jobs: tx, creates, writer }))
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A write transaction, and on SQLite the process's write lock with it.
    ///
    /// The begin runs in a task of its own. sqlx (0.8.6) leaves a connection inside its
    /// transaction when a `begin` future is dropped after the database ran `BEGIN` but
    /// before the future took the answer: nothing rolls it back, the connection goes back to
    /// the pool holding SQLite's write lock, and every later writer waits out the busy
    /// timeout. In its own task the begin always finishes; a caller that went away meanwhile
    /// drops the transaction there, which rolls it back.
    async fn begin(&self) -> Result<(Tx, WriteGuard)> {
        let (pool, sql, writer) = (self.pool.clone(), self.engine.begin_sql(), self.writer.clone());
        let begun = tokio::spawn(async move {
            let guard = writer.acquire().await;
            pool.begin_with(sql).await.map(|tx| (tx, guard))
        });
        // The task fails only if it panicked or the runtime is shutting down.
        begun.await.map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?.map_err(StoreError::from)
    }

    async fn lock_head(&self, tx: &mut Tx, tenant: &str) -> Result<Head> {
        lock_head(tx, self.engine, tenant).await
    }
}

/// Hides the password of a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        tenants::ping(self).await
    }

    async fn create_tenant(&self, tenant: &Tenant, admin: &Credential, audit: AuditDraft) -> Result<()> {
        tenants::create_tenant(self, tenant, admin, audit).await
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        tenants::tenant_by_name(self, name).await
    }

    async fn insert_credential(&self, c: &Credential, audit: AuditDraft) -> Result<()> {
        credentials::insert_credential(self, c, audit).await
    }

    async fn credential_by_hash(&self, secret_hash: &str) -> Result<Option<Credential>> {
        credentials::credential_by_hash(self, secret_hash).await
    }

    async fn list_credentials(&self, tenant: &str, kind: CredentialKind) -> Result<Vec<Credential>> {
        credentials::list_credentials(self, tenant, kind).await
    }

    async fn revoke_credential(&self, tenant: &str, id: &str, now: i64, audit: AuditDraft) -> Result<()> {
        credentials::revoke_credential(self, tenant, id, now, audit).await
    }

    async fn credential_by_id(&self, tenant: &str, id: &str) -> Result<Option<Credential>> {
        credentials::credential_by_id(self, tenant, id).await
    }

    async fn consume_use(&self, id: &str) -> Result<bool> {
        credentials::consume_use(self, id).await
    }

    async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>> {
        tenants::tenant_name(self, tenant_id).await
    }

    async fn approval(&self, tenant: &str, id: &str) -> Result<Option<Approval>> {
        approvals::approval(self, tenant, id).await
    }

    async fn decide_approval(
        &self,
        tenant: &str,
        id: &str,
        status: &str,
        by: &str,
        note: Option<&str>,
        audit: AuditDraft,
    ) -> Result<Approval> {
        approvals::decide_approval(self, tenant, id, status, by, note, audit).await
    }

    async fn issue_approved_token(
        &self,
        tenant: &str,
        id: &str,
        token: &Credential,
        audit: AuditDraft,
    ) -> Result<bool> {
        approvals::issue_approved_token(self, tenant, id, token, audit).await
    }

    async fn file_approval(&self, a: &Approval, max_pending: i64, audit: AuditDraft) -> Result<Filed> {
        approvals::file_approval(self, a, max_pending, audit).await
    }

    async fn list_approvals_before(
        &self,
        tenant: &str,
        status: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Approval>> {
        approvals::list_approvals_before(self, tenant, status, before, limit).await
    }

    async fn count_approvals(&self, tenant: &str, status: Option<&str>) -> Result<i64> {
        approvals::count_approvals(self, tenant, status).await
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>> {
        approvals::pending_approvals(self).await
    }

    async fn cancel_approval(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
        note: &str,
        audit: AuditDraft,
    ) -> Result<Approval> {
        approvals::cancel_approval(self, tenant, id, by, note, audit).await
    }

    async fn create_secret(
        &self,
        tenant: &str,
        m: &SecretMeta,
        sealed: Option<&Sealed>,
        audit: AuditDraft,
    ) -> Result<()> {
        secrets::create_secret(self, tenant, m, sealed, audit).await
    }

    async fn secret_meta(&self, tenant: &str, path: &str) -> Result<Option<SecretMeta>> {
        secrets::secret_meta(self, tenant, path).await
    }

    async fn secret_version(&self, secret_id: &str, version: i64) -> Result<Option<VersionRow>> {
        secrets::secret_version(self, secret_id, version).await
    }

    async fn secret_for_read(
        &self,
        tenant: &str,
        path: &str,
        version: Option<i64>,
    ) -> Result<Option<(SecretMeta, Option<VersionRow>)>> {
        secrets::secret_for_read(self, tenant, path, version).await
    }

    async fn list_secrets(&self, tenant: &str, filter: &ListFilter) -> Result<Vec<SecretMeta>> {
        secrets::list_secrets(self, tenant, filter).await
    }

    async fn count_secrets(&self, tenant: &str, filter: &ListFilter) -> Result<i64> {
        secrets::count_secrets(self, tenant, filter).await
    }

    async fn write_version(
        &self,
        tenant: &str,
        path: &str,
        change: NewVersion<'_>,
        audit: AuditDraft,
    ) -> Result<(SecretMeta, i64)> {
        secrets::write_version(self, tenant, path, change, audit).await
    }

    async fn patch_secret(
        &self,
        tenant: &str,
        path: &str,
        change: &MetaChange,
        audit: AuditDraft,
    ) -> Result<SecretMeta> {
        secrets::patch_secret(self, tenant, path, change, audit).await
    }

    async fn list_versions(&self, secret_id: &str) -> Result<Vec<VersionRow>> {
        secrets::list_versions(self, secret_id).await
    }

    async fn soft_delete(&self, tenant: &str, path: &str, now: i64, audit: AuditDraft) -> Result<()> {
        secrets::soft_delete(self, tenant, path, now, audit).await
    }

    async fn undelete(&self, tenant: &str, path: &str, audit: AuditDraft) -> Result<SecretMeta> {
        secrets::undelete(self, tenant, path, audit).await
    }

    async fn purge_secret(&self, tenant: &str, path: &str, audit: AuditDraft) -> Result<()> {
        secrets::purge_secret(self, tenant, path, audit).await
    }

    async fn destroy_versions(&self, tenant: &str, path: &str, versions: &[i64], audit: AuditDraft) -> Result<u64> {
        secrets::destroy_versions(self, tenant, path, versions, audit).await
    }

    async fn apply_ops(
        &self,
        tenant: &str,
        ops: Vec<OpRequest<'_>>,
        atomic: bool,
    ) -> Result<(Vec<Option<Result<OpDone>>>, bool)> {
        secret_ops::apply_ops(self, tenant, ops, atomic).await
    }

    async fn move_secret(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        overwrite: bool,
        reseal: &ResealFn<'_>,
        audit: Vec<AuditDraft>,
    ) -> Result<SecretMeta> {
        secret_ops::move_secret(self, tenant, from, to, overwrite, reseal, audit).await
    }

    async fn deleted_before(&self, cutoff: i64) -> Result<Vec<(String, String)>> {
        secrets::deleted_before(self, cutoff).await
    }

    async fn record(&self, tenant: &str, audit: AuditDraft, accessed_secret: Option<&str>) -> Result<()> {
        audit::record(self, tenant, audit, accessed_secret).await
    }

    async fn record_access(&self, tenant: &str, events: Vec<AuditDraft>) -> Result<Vec<String>> {
        audit::record_access(self, tenant, events).await
    }

    async fn list_audit(&self, tenant: &str, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        audit::list_audit(self, tenant, f).await
    }

    async fn last_uses(&self, tenant: &str, path: &str) -> Result<Vec<(String, i64)>> {
        audit::last_uses(self, tenant, path).await
    }

    async fn verify_audit(&self, tenant: &str) -> Result<AuditVerdict> {
        audit::verify_audit(self, tenant).await
    }

    async fn audit_heads(&self) -> Result<Vec<AuditHead>> {
        audit::audit_heads(self).await
    }

    async fn wrapped_not_under(&self, kid: &str, limit: i64) -> Result<Vec<WrappedVersion>> {
        rewrap::wrapped_not_under(self, kid, limit).await
    }

    async fn replace_wrap(&self, v: &WrappedVersion, new: &Sealed) -> Result<bool> {
        rewrap::replace_wrap(self, v, new).await
    }

    async fn create_provider_config(&self, c: &ProviderConfig, audit: AuditDraft) -> Result<()> {
        providers::create_provider_config(self, c, audit).await
    }

    async fn provider_config(&self, tenant: &str, id: &str) -> Result<Option<ProviderConfig>> {
        providers::provider_config(self, tenant, id).await
    }

    async fn list_provider_configs(&self, tenant: &str) -> Result<Vec<ProviderConfig>> {
        providers::list_provider_configs(self, tenant).await
    }

    async fn update_provider_config(
        &self,
        tenant: &str,
        id: &str,
        change: &ProviderConfigChange,
        audit: AuditDraft,
    ) -> Result<ProviderConfig> {
        providers::update_provider_config(self, tenant, id, change, audit).await
    }

    async fn delete_provider_config(&self, tenant: &str, id: &str, audit: AuditDraft) -> Result<()> {
        providers::delete_provider_config(self, tenant, id, audit).await
    }

    async fn set_default_provider_config(&self, tenant: &str, id: &str, audit: AuditDraft) -> Result<ProviderConfig> {
        providers::set_default_provider_config(self, tenant, id, audit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_hidden() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
