//! SQLite WAL upkeep. SQLite's own checkpoints are off: a task checkpoints beside the
//! writers, and when the log has grown past a restart point it checkpoints once more with
//! this process's writers held back, so that the next write starts the WAL over. Under
//! steady load SQLite alone never starts it over, and the log grows without end.

use sqlx::{AnyPool, Row};

use super::write_lock::WriteLock;
use crate::store::Result;

/// How often the WAL is copied back into the database file (SQLite's own checkpoints are
/// off). Often enough that each copy, and the fsyncs that end it, stay short: a long fsync
/// stalls the writes beside it, and every read waits on a write (its audit record).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// WAL frames (4 KiB pages) after which the log is started over from its beginning.
pub(super) const WAL_RESTART_FRAMES: i64 = 16384;

/// Checkpoints beside the writers, instead of inside the commit that crosses SQLite's
/// threshold (where every request waiting on that commit would pay for it).
///
/// A PASSIVE checkpoint copies the log back without waiting for anyone, but SQLite starts
/// the log over only when a write begins after everything is copied and no reader still
/// looks into the log. Under steady load that moment never comes: the next audit commit
/// lands a millisecond after each checkpoint and the WAL grows without end (300 MB in ten
/// seconds of reads, measured). So once the log is past `restart_frames`, the
/// checkpoint is repeated with this process's writers held back (`restart_wal`). It then
/// has only the frames of the last moments to copy, and the next write starts the log over.
/// `journal_size_limit` (128 MiB, above the restart point so that steady load overwrites
/// the same file) gives back the space of a log that grew past it meanwhile.
pub(super) async fn checkpoint(
    pool: AnyPool,
    writer: WriteLock,
    database_file: std::path::PathBuf,
    restart_frames: i64,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let result = match passive_checkpoint(&pool).await {
            Ok(frames) if frames > restart_frames => restart_wal(&pool, &writer, &database_file).await,
            other => other.map(drop),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// Checkpoints with this process's writers held back, so that the next write starts the
/// WAL over. A checkpoint that copies everything ends with a sync of the database file, and
/// that sync would flush every page the checkpoints before it copied (unsynced: SQLite
/// syncs only a checkpoint that completes): 15-50 ms with the writers waiting, measured. So
/// the file is flushed first, with nobody waiting, and the sync inside the hold has only
/// the last moments' pages to write.
async fn restart_wal(pool: &AnyPool, writer: &WriteLock, database_file: &std::path::Path) -> Result<()> {
    // Writes go on while the file is flushed, and the next checkpoint copies them: flush
    // again while that still takes long, a few times at most.
    for _ in 0..4 {
        let file = database_file.to_owned();
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_data()).await {
            Ok(Ok(())) if started.elapsed() >= std::time::Duration::from_millis(3) => {
                passive_checkpoint(pool).await?;
            }
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not flush the database file ahead of the WAL restart");
                break;
            }
            Err(_) => break, // the blocking pool is shutting down
        }
    }
    let started = std::time::Instant::now();
    let _writers_wait = writer.acquire().await;
    let held = std::time::Instant::now();
    let result = passive_checkpoint(pool).await.map(drop);
    tracing::debug!(
        waited_ms = (held - started).as_secs_f64() * 1e3,
        held_ms = held.elapsed().as_secs_f64() * 1e3,
        "WAL checkpointed with writers held back, so that the next write restarts it"
    );
    result
}

/// Runs a PASSIVE checkpoint and answers the number of frames in the WAL.
async fn passive_checkpoint(pool: &AnyPool) -> Result<i64> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    Ok(row.try_get(1)?)
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Engine;

    /// Under reads and writes that never pause, SQLite alone never starts its WAL over.
    /// The checkpoint task must, so the file stops growing near the restart point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_started_over_while_reads_and_writes_go_on() {
        const RESTART_FRAMES: i64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let pool = Engine::Sqlite.connect(&Engine::sqlite_url(dir.path())).await.unwrap();
        let writer = WriteLock::for_engine(Engine::Sqlite);
        tokio::spawn(checkpoint(pool.clone(), writer.clone(), dir.path().join("airlock.db"), RESTART_FRAMES));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    // Reads all along, each reader up to ~1,000 a second. Unpaced, three readers
                    // on a machine busy with other tests kept a read in the log at every restart
                    // chance for half a second (the WAL reached 20 MB once).
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sqlx::query("SELECT count(*) FROM audit_heads").fetch_one(&pool).await.unwrap();
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        let wal = dir.path().join("airlock.db-wal");
        let mut largest = 0;
        // A WAL started over gets new salts in its header (bytes 16..24): each change of them
        // is a restart.
        let salts = || std::fs::read(&wal).ok().and_then(|b| b.get(16..24).map(<[u8]>::to_vec));
        let (mut last_salts, mut restarts) = (salts(), 0);
        for i in 0..4000 {
            let _write = writer.acquire().await;
            sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)")
                .bind(format!("t{i}"))
                .bind("0".repeat(64))
                .execute(&pool)
                .await
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            let now = salts();
            if now.is_some() && now != last_salts {
                restarts += usize::from(last_salts.is_some());
                last_salts = now;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        let frame = 4096 + 24;
        // 4000 commits of a frame or more: 36 MB measured, and no restart, if the log is never
        // started over; about 20 restarts when each comes on time. The bounds leave room for
        // restarts missed on a machine busy with other tests (up to 13 MB seen with paced
        // readers alongside the unit suite).
        assert!(restarts >= 2, "the WAL was started over {restarts} times");
        assert!(largest < 30 * RESTART_FRAMES as u64 * frame, "the WAL grew to {largest} bytes");
    }
}
