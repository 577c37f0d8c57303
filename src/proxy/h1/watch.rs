//! The timer of an agent connection: one `tokio` sleep per connection watches every
//! deadline it has in turn (idle, header read, an upstream's first byte), so a request in
//! the steady state registers no timer of its own.

use std::time::Duration;

/// A deadline watched by one timer for the life of a connection. Moving the deadline costs
/// nothing (no timer is registered per request); the timer is re-armed only when it fires
/// before the deadline. Every deadline is set at least `step` ahead and the timer is armed
/// at most `step` ahead, so it never fires after the deadline.
pub(super) struct Watch {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    step: Duration,
    deadline: tokio::time::Instant,
}

impl Watch {
    pub(super) fn new(step: Duration) -> Watch {
        let deadline = tokio::time::Instant::now() + step;
        Watch { timer: Box::pin(tokio::time::sleep_until(deadline)), step, deadline }
    }

    /// The deadline is `after` from now (`after` ≥ `step`).
    pub(super) fn set(&mut self, after: Duration) {
        self.deadline = tokio::time::Instant::now() + after.max(self.step);
    }

    /// Resolves once the deadline has passed. Cancel-safe: dropped, it resumes where it was.
    pub(super) async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            let now = tokio::time::Instant::now();
            if now >= self.deadline {
                return;
            }
            self.timer.as_mut().reset(self.deadline.min(now + self.step));
        }
    }
}
