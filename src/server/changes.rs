//! The change stream, `GET /v1/events` (server-sent events): secret, token and policy
//! changes with paths and ids, never values. Proxies subscribe and invalidate at once.
//! Within one process a broadcast channel carries changes to every subscriber.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::AppState;
use super::auth::Authed;
use crate::domain::time::{now_ms, serialize_ms};

/// Every tenant sees changes published for this one (policy reloads are server-wide).
pub const ALL_TENANTS: &str = "*";

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    #[serde(skip)]
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(serialize_with = "serialize_ms")]
    pub timestamp: i64,
}

impl Change {
    pub fn new(tenant: &str, kind: &'static str) -> Change {
        Change {
            tenant: tenant.to_owned(),
            kind,
            path: None,
            version: None,
            token_id: None,
            agent_id: None,
            timestamp: now_ms(),
        }
    }
    pub fn path(mut self, path: &str) -> Change {
        self.path = Some(path.to_owned());
        self
    }
    pub fn version(mut self, version: i64) -> Change {
        self.version = Some(version);
        self
    }
    pub fn token(mut self, id: &str) -> Change {
        self.token_id = Some(id.to_owned());
        self
    }
    pub fn agent(mut self, id: &str) -> Change {
        self.agent_id = Some(id.to_owned());
        self
    }
}

pub struct Changes {
    tx: broadcast::Sender<Change>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes { tx: broadcast::channel(1024).0 }
    }
}

impl Changes {
    pub fn publish(&self, change: Change) {
        tracing::debug!(kind = change.kind, path = ?change.path, "change published");
        let _ = self.tx.send(change);
    }
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let tenant = caller.tenant().to_owned();
    let rx = state.changes.tx.subscribe();
    let events = futures_util::stream::unfold((rx, tenant), |(mut rx, tenant)| async move {
        loop {
            match rx.recv().await {
                Ok(c) if c.tenant == tenant || c.tenant == ALL_TENANTS => {
                    let event = Event::default().event(c.kind).json_data(&c).unwrap_or_default();
                    return Some((Ok(event), (rx, tenant)));
                }
                Ok(_) => continue,
                // A subscriber that fell behind is told to resynchronise (drop its caches).
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let event = Event::default().event("resync").data(format!("{{\"missed\":{n}}}"));
                    return Some((Ok(event), (rx, tenant)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
