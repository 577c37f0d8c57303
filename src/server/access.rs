//! Access events from proxies: `POST /v1/access-events` (idempotent by the proxy's event id,
//! recorded in the audit chain as type `access`) and `GET /v1/secrets/{path}/access-events`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Authed;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParam, QueryParams};
use crate::api::access::{AccessEventPage, AccessReceipt, AccessReport, Outcome};
use crate::api::audit::AuditEvent;
use crate::domain::audit::kind;
use crate::domain::time::parse_rfc3339;
use crate::domain::{SecretAction, SecretPath};
use crate::store::AuditFilter;

/// The `kind`s of access event a proxy may report (`AccessEvent::kind`).
const ACCESS_KINDS: [&str; 2] = ["body_field", "aws_sigv4"];

const MAX_BATCH: usize = 500;
const MAX_COUNT: u64 = 1_000_000_000;

fn check_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!("event id '{id}' must be 1-64 characters of [A-Za-z0-9_-]")))
    }
}

pub async fn report(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<AccessReport>,
) -> ApiResult<(StatusCode, Json<AccessReceipt>)> {
    let agent = caller.agent().ok_or_else(|| ApiError::permission_denied(None, "an agent credential"))?;
    if b.events.len() > MAX_BATCH {
        return Err(ApiError::validation(format!("at most {MAX_BATCH} events per report")));
    }
    // The events are the calling agent's: it is named by the credential, never by the body,
    // and a use it reports must be of a secret its policy grants.
    // No policy: nothing is granted. A store that cannot say is an error to retry, never a
    // batch of uses recorded as refused (event ids make every record final).
    let policy = state.with_policy(caller.tenant(), &agent.name, |p| p.cloned()).await?;
    let mut drafts = Vec::with_capacity(b.events.len());
    let mut refused = 0;
    for (i, e) in b.events.into_iter().enumerate() {
        check_id(&e.id)?;
        if let Some(named) = e.agent.as_deref().filter(|named| *named != agent.name) {
            return Err(ApiError::invalid(format!(
                "events[{i}].agent: '{named}' is not the agent this credential belongs to ('{}'); omit the field \
                 or send that name",
                agent.name
            )));
        }
        let path = e
            .path
            .as_deref()
            .map(SecretPath::parse)
            .transpose()
            .map_err(|err| ApiError::validation(format!("event {}: path: {err}", e.id)))?;
        let timestamp_ms =
            parse_rfc3339(&e.timestamp).map_err(|err| ApiError::validation(format!("event {}: {err}", e.id)))?;
        if let Some(kind) = e.kind.as_deref().filter(|k| !ACCESS_KINDS.contains(k)) {
            return Err(ApiError::validation(format!(
                "event {}: kind '{}' is not one of {}",
                e.id,
                kind.chars().take(32).collect::<String>(),
                ACCESS_KINDS.join(", ")
            )));
        }
        let count = e.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(ApiError::validation(format!("event {}: count must be 1 to {MAX_COUNT}", e.id)));
        }
        let granted = path.as_ref().is_none_or(|p| policy.as_ref().is_some_and(|policy| policy.grant_for(p).is_some()));
        let mut draft = caller.draft(if granted { kind::ACCESS } else { kind::ACCESS_REFUSED }, e.path.as_deref());
        draft.id = format!("acc_{}", e.id);
        draft.timestamp_ms = timestamp_ms;
        draft.success = granted && e.outcome == Outcome::Injected;
        draft.actor_description = Some(agent.name.clone());
        draft.detail = json!({
            "version": e.version, "host": e.host, "method": e.method, "url_path": e.url_path,
            "outcome": e.outcome.as_str(), "error_code": e.error_code, "status": e.status, "latency_ms": e.latency_ms,
            "count": count,
        });
        if let Some(kind) = &e.kind {
            draft.detail["kind"] = json!(kind);
        }
        if !granted {
            refused += 1;
            draft.detail["reason"] = json!(format!("the policy of agent '{}' grants no such secret", agent.name));
        }
        drafts.push(draft);
    }
    let (accepted, duplicates) = state.store.record_access(caller.tenant(), drafts).await?;
    Ok((StatusCode::ACCEPTED, Json(AccessReceipt { accepted, duplicates, refused })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<AccessEventPage>> {
    if !caller.can(SecretAction::ReadMetadata, &path) {
        return Err(ApiError::permission_denied(Some(path.as_str()), &format!("secrets:read_metadata:{path}")));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 1000, not {limit}")));
    }
    let before_seq =
        q.cursor.as_deref().map(|c| c.parse::<i64>().map_err(|_| ApiError::invalid("bad cursor"))).transpose()?;
    let filter = AuditFilter {
        path: Some(path.to_string()),
        kinds: vec![kind::ACCESS.into(), kind::ACCESS_REFUSED.into()],
        before_seq,
        limit,
        ..AuditFilter::default()
    };
    let events = state.store.list_audit(caller.tenant(), &filter).await?;
    let next_cursor = (events.len() as i64 == limit).then(|| events.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(AccessEventPage { events: events.iter().map(AuditEvent::from).collect(), next_cursor }))
}
