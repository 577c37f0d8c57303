//! The per-request metrics: how many requests carried values and how many none, and how
//! long each took. Each thread tallies into a shard of its own (`Sharded`) and the tallies
//! go into the shared counter and histogram in batches, so the hot path touches no memory
//! another core writes to.

use std::time::Instant;

use super::Proxy;
use super::sharded::Sharded;

/// Where a request is counted: as a request that carried values, or none, or elsewhere (a
/// refusal, with its code; an answer of the proxy's own; a connection that broke).
#[derive(Clone, Copy)]
pub(super) enum CountAs {
    Injected,
    Passed,
    Elsewhere,
}

/// Every request, whatever its outcome, ends here.
pub(super) fn finished(proxy: &Proxy, started: Instant, counted: CountAs) {
    let mut tally = proxy.meters.shards.mine();
    match counted {
        CountAs::Injected => tally.injected += 1,
        CountAs::Passed => tally.passed += 1,
        CountAs::Elsewhere => {}
    }
    tally.durations.push(started.elapsed().as_secs_f64());
    if tally.durations.len() >= POUR_EVERY {
        proxy.meters.pour(&mut tally);
    }
}

/// The per-request metrics, registered once (a lookup by name and labels per request is
/// measurable on the hot path). Refusals keep the macro: their labels vary.
///
/// A request does not touch the shared counter and histogram: each thread tallies into a
/// shard of its own (`sharded::Sharded`), one lock per request, which goes into them
/// every `POUR_EVERY` requests and whenever the metrics are read (`gather`).
pub(super) struct Meters {
    duration: metrics::Histogram,
    injected: metrics::Counter,
    passed: metrics::Counter,
    shards: Sharded<Tally>,
}

#[derive(Default)]
struct Tally {
    injected: u64,
    passed: u64,
    /// Seconds per request.
    durations: Vec<f64>,
}

/// Requests a thread tallies before they go into the shared metrics.
const POUR_EVERY: usize = 64;

impl Meters {
    /// Registers with the recorder installed now (none: the metrics go nowhere).
    pub(super) fn register() -> Meters {
        Meters {
            duration: metrics::histogram!("airlock_proxy_request_duration_seconds"),
            injected: metrics::counter!("airlock_proxy_requests_total", "outcome" => "injected"),
            passed: metrics::counter!("airlock_proxy_requests_total", "outcome" => "passed"),
            shards: Sharded::default(),
        }
    }

    fn pour(&self, tally: &mut Tally) {
        self.injected.increment(std::mem::take(&mut tally.injected));
        self.passed.increment(std::mem::take(&mut tally.passed));
        for seconds in tally.durations.drain(..) {
            self.duration.record(seconds);
        }
    }

    /// Puts every thread's tally into the shared metrics (before they are read).
    pub(super) fn gather(&self) {
        for mut tally in self.shards.each() {
            self.pour(&mut tally);
        }
    }
}
