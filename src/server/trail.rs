//! `/v1/audit`: reading and verifying the tenant's hash-chained audit trail, the latter
//! also against the newest signed checkpoint of the chain (`checkpoint`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authed, Caller};
use super::error::{ApiError, ApiResult};
use super::extract::QueryParams;
use crate::api::audit::{AuditEvent, AuditPage};
use crate::domain::Scope;
use crate::domain::time::parse_rfc3339;
use crate::store::AuditFilter;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
    namespace: Option<String>,
    actor: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    since: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    until: Option<String>,
    cursor: Option<String>,
}

fn require_audit(caller: &Caller) -> ApiResult<()> {
    if caller.has(&Scope::AuditRead) { Ok(()) } else { Err(ApiError::permission_denied(None, "audit:read")) }
}

fn parse_bound(name: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    v.as_deref().map(|s| parse_rfc3339(s).map_err(|e| ApiError::invalid(format!("{name}: {e}")))).transpose()
}

/// Newest first. The cursor is the `seq` of the last record of the previous page.
pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    require_audit(&caller)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 1000, not {limit}")));
    }
    let before_seq =
        match &q.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid("bad cursor; pass back the next_cursor of a previous page unchanged")
            })?),
        };
    let filter = AuditFilter {
        namespace: q.namespace,
        path: None,
        actor: q.actor,
        kind: q.kind,
        kinds: Vec::new(),
        since_ms: parse_bound("since", &q.since)?,
        until_ms: parse_bound("until", &q.until)?,
        before_seq,
        limit,
    };
    let events = state.store.list_audit(caller.tenant(), &filter).await?;
    let next_cursor = (events.len() as i64 == limit).then(|| events.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(AuditPage { events: events.iter().map(AuditEvent::from).collect(), next_cursor }))
}

/// The chain must verify and hold its newest signed checkpoint: records removed from its
/// end together with the stored head leave a chain that verifies, but not one that holds.
pub async fn verify(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<Value>> {
    require_audit(&caller)?;
    let tenant = caller.tenant();
    // Read before the chain, so the chain can only have grown past it.
    let latest = state.checkpoints.latest(tenant).await;
    let verdict = state.store.verify_audit(tenant).await?;
    let checkpoint =
        state.checkpoints.report(state.store.as_ref(), &state.keys, tenant, latest, verdict.head_seq).await?;
    let ok = verdict.ok && checkpoint.ok();
    if !ok {
        tracing::warn!(
            tenant,
            broken = ?verdict.first_broken,
            checkpoint = checkpoint.status,
            reason = %checkpoint.message,
            "audit chain verification failed"
        );
    }
    let first_broken = verdict.first_broken.clone().or_else(|| checkpoint.broken.clone());
    let mut body = serde_json::to_value(verdict).map_err(|e| ApiError::internal(&e))?;
    body["ok"] = json!(ok);
    body["first_broken"] = serde_json::to_value(first_broken).map_err(|e| ApiError::internal(&e))?;
    body["checkpoint"] = serde_json::to_value(checkpoint).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(body))
}
