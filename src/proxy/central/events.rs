//! The change stream: `GET /v1/events`, followed for as long as the proxy runs, so that a
//! changed or deleted secret, a revoked token and a policy update take effect at once;
//! reconnected with backoff (on the next address when this one cannot be reached) when it
//! ends or goes silent. The SSE framing is `eventsource-stream`'s; this module bounds what it
//! is fed: each chunk within the silence limit (the server's keep-alive comments count) and no
//! line longer than [`MAX_LINE`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Central;
use super::api::{CentralError, decode, refuses_the_agent};
use crate::api::changes::{
    ChangeEvent, POLICY_UPDATED, RESYNC, Resync, SECRET_DELETED, SECRET_ROTATED, SECRET_UPDATED, TOKEN_REVOKED,
};
use crate::proxy::backoff::Backoff;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;

/// The longest line of the change stream the proxy holds (its events are a few hundred
/// bytes); a longer one ends the stream rather than grow memory without bound.
const MAX_LINE: usize = 1 << 20;

/// Why the stream of chunks fed to the SSE parser ended early.
#[derive(Debug, thiserror::Error)]
enum Gap {
    #[error("the change stream was silent for {0} s (keep-alives stopped)")]
    Silent(f64),
    #[error("{0}")]
    Transport(String),
    #[error("a change stream line is longer than {MAX_LINE} bytes")]
    TooLong,
}

impl Central {
    /// Follows `GET /v1/events` and invalidates at once; reconnects with backoff, also when
    /// the stream has been silent for `silence` (the server sends keep-alives, so silence
    /// means a partition that closed nothing). While disconnected, the cache TTL bounds how
    /// stale a value can be.
    pub async fn watch(self: Arc<Self>, silence: Duration) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            let from = self.current.load(Ordering::Relaxed) % self.bases.len();
            let ended = self.follow_events(silence).await;
            if ended.is_ok() {
                backoff.reset();
            }
            let wait = backoff.next_wait();
            if let Err(e) = ended {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "change stream interrupted");
                if matches!(e, CentralError::Unreachable { .. }) {
                    self.move_on(from);
                }
            }
            // Whatever changed while we were not listening is unknown: refetch when possible.
            // (The last known values stay available for stale-if-error.)
            self.invalidate_values();
            tokio::time::sleep(wait).await;
        }
    }

    async fn follow_events(self: &Arc<Self>, silence: Duration) -> Result<(), CentralError> {
        let base = self.base().to_owned();
        let url = format!("{base}/v1/events");
        let unreachable =
            |e: reqwest::Error| CentralError::Unreachable { url: base.clone(), reason: e.without_url().to_string() };
        let http =
            crate::trust::central_client().connect_timeout(Duration::from_secs(5)).build().map_err(unreachable)?;
        let resp = http.get(&url).bearer_auth(self.agent_key.as_str()).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if refuses_the_agent(status) {
            // The agent or its key is gone (deleted while the stream was down): reading the
            // policy is refused too, which closes the proxy.
            self.refresh_policy().await?;
        }
        if status != 200 {
            return Err(CentralError::Refused { status, code: "events".into(), message: String::new() });
        }
        tracing::info!("following the central API's change stream");
        // Subscribed first, then read: a policy change made while the stream was down (or
        // before it first came up) is seen here, and any later one arrives as an event.
        self.refresh_policy().await?;
        // Each chunk must come within `silence`, and no line may outgrow MAX_LINE.
        let chunks = futures_util::stream::unfold(Some((resp, 0usize)), move |state| async move {
            let (mut resp, open_line) = state?;
            let next = match tokio::time::timeout(silence, resp.chunk()).await {
                Err(_) => Err(Gap::Silent(silence.as_secs_f64())),
                Ok(Err(e)) => Err(Gap::Transport(e.without_url().to_string())),
                Ok(Ok(None)) => return None,
                Ok(Ok(Some(chunk))) => match open_line_after(open_line, &chunk) {
                    open if open > MAX_LINE => Err(Gap::TooLong),
                    open => Ok((chunk, open)),
                },
            };
            match next {
                Ok((chunk, open)) => Some((Ok(chunk), Some((resp, open)))),
                // The error is the stream's last item.
                Err(gap) => Some((Err(gap), None)),
            }
        });
        let mut events = std::pin::pin!(chunks.eventsource());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.on_change(&event.event, &event.data).await?,
                Err(EventStreamError::Transport(Gap::Silent(s))) => {
                    metrics::counter!("airlock_proxy_change_stream_reconnects_total", "reason" => "silent")
                        .increment(1);
                    return Err(CentralError::Unreachable { url: base, reason: Gap::Silent(s).to_string() });
                }
                Err(EventStreamError::Transport(Gap::Transport(reason))) => {
                    return Err(CentralError::Unreachable { url: base, reason });
                }
                Err(e) => return Err(CentralError::Protocol(format!("GET /v1/events: {e}"))),
            }
        }
        Ok(())
    }

    /// Acts on one change (`data` is its JSON). An error (the updated policy could not be
    /// read, or the data is not the API's) ends the stream, so it reconnects with backoff,
    /// drops the cached values and reads the policy again. A type this proxy does not know
    /// is left alone.
    async fn on_change(self: &Arc<Self>, kind: &str, data: &str) -> Result<(), CentralError> {
        let endpoint = format!("GET /v1/events (event {kind})");
        match kind {
            // Events were lost: any of them could have been a policy change.
            RESYNC => {
                decode::<Resync>(&endpoint, data.as_bytes())?;
                tracing::debug!(kind, "change received");
                self.forget_all().await;
                return self.refresh_policy().await;
            }
            SECRET_UPDATED | SECRET_ROTATED | SECRET_DELETED | TOKEN_REVOKED | POLICY_UPDATED => {}
            _ => return Ok(()),
        }
        let change: ChangeEvent = decode(&endpoint, data.as_bytes())?;
        tracing::debug!(kind, path = ?change.path, "change received");
        match kind {
            SECRET_UPDATED | SECRET_ROTATED | SECRET_DELETED => {
                if let Some(path) = &change.path {
                    self.forget(path).await;
                }
            }
            // A deleted agent has no policy any more: reading it again closes the proxy.
            TOKEN_REVOKED if self.on_revoked(&change).await => self.refresh_policy().await?,
            POLICY_UPDATED => self.refresh_policy().await?,
            _ => {}
        }
        Ok(())
    }

    /// Drops the revoked token (or, when the agent was deleted, every token) and the values
    /// fetched with it; returns whether the agent was deleted.
    pub(super) async fn on_revoked(&self, change: &ChangeEvent) -> bool {
        // Deleting the agent names it; revoking its key through `/v1/keys/{id}` names the key,
        // whose id is the agent's.
        let token_id = change.token_id.as_deref();
        let agent_gone = (change.agent_id.as_deref() == Some(self.agent_id.as_str()) && token_id.is_none())
            || token_id == Some(self.agent_id.as_str());
        let mut hit = agent_gone;
        for slot in self.slots().iter() {
            let mut token = slot.token.write().await;
            let ours = token.as_ref().is_some_and(|t| Some(t.id.as_str()) == token_id);
            if ours || agent_gone {
                *token = None;
                slot.remint.notify_one();
                hit = true;
            }
        }
        if hit {
            tracing::warn!(agent_deleted = agent_gone, "a credential of this proxy was revoked; cached values dropped");
            self.forget_all().await;
        }
        agent_gone
    }
}

/// How long the line still open (not ended by `\n`) is after `chunk`, when `open` bytes of it
/// came before.
fn open_line_after(open: usize, chunk: &[u8]) -> usize {
    match chunk.iter().rposition(|b| *b == b'\n') {
        Some(i) => chunk.len() - i - 1,
        None => open + chunk.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_measured_across_chunks_and_ends_at_a_newline() {
        assert_eq!(open_line_after(0, b"event: x\ndata: {"), 7);
        assert_eq!(open_line_after(7, b"\"a\":1"), 12);
        assert_eq!(open_line_after(12, b"}\n\n"), 0);
        // A server that never ends its line is cut off once the line passes MAX_LINE.
        let mut open = 0;
        let chunk = vec![b'x'; 64 * 1024];
        let mut chunks = 0;
        while open <= MAX_LINE {
            open = open_line_after(open, &chunk);
            chunks += 1;
        }
        assert_eq!(chunks, MAX_LINE / chunk.len() + 1);
    }
}
