//! A value kept once per shard of threads, each shard under its own lock on cache lines of
//! its own: what every worker thread writes on every request (access events, metrics) is
//! written without waiting on, or bouncing cache lines with, the other threads.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// One `T` per shard of threads, each under its own lock on cache lines of its own: for what
/// every worker thread writes on every request (access events, metrics), so that the threads
/// neither wait on each other nor contend for a line (adjacent lines are fetched in pairs,
/// hence 128 bytes). A thread takes the shards in turn as it first asks.
pub(super) struct Sharded<T>(Box<[Padded<T>]>);

#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(Mutex<T>);

/// Shards: more than the proxy has worker threads on the machines it runs on.
const SHARDS: usize = 8;

impl<T: Default> Default for Sharded<T> {
    fn default() -> Sharded<T> {
        Sharded((0..SHARDS).map(|_| Padded::default()).collect())
    }
}

impl<T> Sharded<T> {
    /// This thread's shard (a lock poisoned by a panic elsewhere is taken as it is).
    pub fn mine(&self) -> MutexGuard<'_, T> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        let i = SHARD.with(|s| *s);
        self.0[i].0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard, one after the other.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.0.iter().map(|p| p.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
