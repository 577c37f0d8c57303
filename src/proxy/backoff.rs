//! One retry schedule for every loop that waits on the central API (the change stream,
//! minting and renewing tokens, delivering access events): exponential from `first` to
//! `cap`, each wait drawn at random from the upper half of its step ("equal jitter"), so
//! proxies that lost the same server do not all come back to it at the same instant.

use std::time::Duration;

pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
    /// xorshift64 state: the jitter needs spread, not secrecy.
    state: u64,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        let mut seed = [0u8; 8];
        // Without the OS's randomness the clock spreads proxies well enough.
        if getrandom::getrandom(&mut seed).is_err() {
            seed = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
                as u64)
                .to_le_bytes();
        }
        Backoff { first, cap, step: first, state: u64::from_le_bytes(seed) | 1 }
    }

    /// After a success: the next failure waits from `first` again.
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    /// How long to wait before the next attempt; each call doubles the step up to `cap`.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let half = step / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.state % (spread + 1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn waits_grow_to_the_cap_within_the_upper_half_of_each_step_and_start_over_on_reset() {
        let (first, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(first, cap);
        let mut step = first;
        for _ in 0..10 {
            let wait = b.next_wait();
            assert!(wait >= step / 2 && wait <= step, "{wait:?} outside [{:?}, {step:?}]", step / 2);
            step = (step * 2).min(cap);
        }
        b.reset();
        assert!(b.next_wait() <= first);
    }

    #[test]
    fn two_proxies_do_not_wait_in_step() {
        let (first, cap) = (Duration::from_secs(1), Duration::from_secs(10));
        let (mut a, mut b) = (Backoff::new(first, cap), Backoff::new(first, cap));
        let same = (0..8).filter(|_| a.next_wait() == b.next_wait()).count();
        assert!(same < 8, "eight identical waits in a row");
    }
}
