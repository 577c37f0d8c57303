//! SQLite's single writer, queued inside this process. SQLite has one writer: writers of
//! this process queue on this lock, in order, instead of polling SQLite's lock with its
//! sleeping busy handler (which ruins tail latency). On PostgreSQL there is no lock. The
//! lock also keeps the audit chain heads the audit writer last left (`KnownHeads`).

use std::sync::Arc;

use crate::store::Engine;

/// Held for the life of a write transaction on SQLite; absent on PostgreSQL.
pub(super) type WriteGuard = Option<tokio::sync::OwnedMutexGuard<KnownHeads>>;

#[derive(Clone)]
pub(super) struct WriteLock(Option<Arc<tokio::sync::Mutex<KnownHeads>>>);

/// Audit chain heads (tenant to head) as the audit writer last left them. They live under
/// the write lock and hold only while nobody else writes: every writer of this process
/// takes the lock, and all but the audit writer forget them when they do. A writer in
/// another process cannot be seen, but it cannot fork the chain either: a stale head
/// makes the next append collide with the record at its `seq` (the primary key), and the
/// audit writer then reads the heads again.
#[derive(Default)]
pub(super) struct KnownHeads(pub(super) std::collections::HashMap<String, Head>);

impl WriteLock {
    pub(super) fn for_engine(engine: Engine) -> WriteLock {
        WriteLock((engine == Engine::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(KnownHeads::default()))))
    }

    /// The lock, for a writer that may move chain heads: the known heads are forgotten.
    pub(super) async fn acquire(&self) -> WriteGuard {
        let mut guard = self.acquire_keeping_heads().await;
        if let Some(heads) = guard.as_deref_mut() {
            heads.0.clear();
        }
        guard
    }

    /// The lock with the known heads, for the audit writer, which keeps them up to date.
    pub(super) async fn acquire_keeping_heads(&self) -> WriteGuard {
        match &self.0 {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }
}

/// A tenant's audit chain head: the seq and hash of its last record.
#[derive(Clone)]
pub(super) struct Head {
    pub(super) seq: i64,
    pub(super) hash: String,
}
