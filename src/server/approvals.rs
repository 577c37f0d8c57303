//! `/v1/approvals`: token requests that a policy says a human must approve. The requester
//! polls `GET /v1/approvals/{id}`; after approval that call mints the token and hands its
//! value out exactly once. Deciders need `approvals:decide` and never decide their own.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{AgentRef, Authed, Caller, new_id};
use super::error::{ApiError, ApiResult};
use super::extract::{QueryParams, parse_json};
use super::tokens::{TokenRequest, minted_body};
use crate::domain::Scope;
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::store::{Approval, StoreError};

/// Files a pending approval for a vetted token request; returns the 202 body.
pub async fn open_request(
    state: &AppState,
    caller: &Caller,
    request: &TokenRequest,
    reason: String,
    headers: &HeaderMap,
) -> ApiResult<Value> {
    let agent = caller.agent();
    let approval = Approval {
        id: new_id("apr"),
        tenant_id: caller.tenant().to_owned(),
        requester_id: caller.credential.id.clone(),
        agent_id: agent.as_ref().map(|a| a.id.clone()),
        agent_name: agent.as_ref().map(|a| a.name.clone()),
        status: "pending".into(),
        request: serde_json::to_value(request).map_err(|e| ApiError::internal(&e))?,
        reason: reason.clone(),
        created_at: now_ms(),
        decided_at: None,
        decided_by: None,
        note: None,
        token_id: None,
    };
    let mut audit = caller.draft(kind::APPROVAL_REQUEST, None);
    audit.detail = json!({ "approval_request_id": approval.id, "scope": request.scopes, "reason": reason });
    state.store.create_approval(&approval, audit).await?;
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:7878");
    tracing::info!(approval = %approval.id, agent = ?approval.agent_name, "token request waits for approval");
    Ok(json!({
        "approval_status": "pending",
        "approval_request_id": approval.id,
        "message": format!("approval required ({reason}); an operator with approvals:decide must approve it"),
        "approve_url": format!("http://{host}/v1/approvals/{}", approval.id),
    }))
}

fn view(a: &Approval) -> Value {
    json!({
        "id": a.id,
        "status": a.status,
        "requester": a.requester_id,
        "agent": a.agent_name,
        "request": a.request,
        "reason": a.reason,
        "created_at": to_rfc3339(a.created_at),
        "decided_at": a.decided_at.map(to_rfc3339),
        "decided_by": a.decided_by,
        "note": a.note,
        "token_id": a.token_id,
    })
}

fn is_requester(caller: &Caller, a: &Approval) -> bool {
    caller.credential.id == a.requester_id
        || caller.agent().is_some_and(|agent| a.agent_id.as_deref() == Some(agent.id.as_str()))
}

fn require_decider(caller: &Caller) -> ApiResult<()> {
    if caller.has(&Scope::ApprovalsDecide) {
        Ok(())
    } else {
        Err(ApiError::permission_denied(None, "approvals:decide"))
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    require_decider(&caller)?;
    if let Some(s) = q.status.as_deref().filter(|s| !["pending", "approved", "denied"].contains(s)) {
        return Err(ApiError::invalid(format!("status '{s}' is not one of pending, approved, denied")));
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let items = state.store.list_approvals(caller.tenant(), q.status.as_deref(), limit).await?;
    Ok(Json(json!({ "approvals": items.iter().map(view).collect::<Vec<_>>() })))
}

/// For the requester after approval: the token value, once. For deciders: the request.
pub async fn get(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found(format!("no approval request '{id}'"));
    let approval = state.store.approval(caller.tenant(), &id).await?.ok_or_else(not_found)?;
    let requester = is_requester(&caller, &approval);
    if !requester && !caller.has(&Scope::ApprovalsDecide) {
        return Err(not_found());
    }
    let mut body = view(&approval);
    body["approval_status"] = approval.status.clone().into();
    body["approval_request_id"] = approval.id.clone().into();
    if requester
        && approval.status == "approved"
        && approval.token_id.is_none()
        && let Some(token) = collect(&state, &caller, &approval).await?
    {
        body["token"] = token;
    }
    Ok(Json(body))
}

/// Mints the approved token for its requester, if nobody collected it yet.
async fn collect(state: &AppState, caller: &Caller, approval: &Approval) -> ApiResult<Option<Value>> {
    let request: TokenRequest = serde_json::from_value(approval.request.clone()).map_err(|e| ApiError::internal(&e))?;
    let agent = approval.agent_id.clone().zip(approval.agent_name.clone()).map(|(id, name)| AgentRef { id, name });
    let (token, secret) = request.mint(caller.tenant(), &approval.requester_id, agent.as_ref());
    let mut audit = caller.draft(kind::TOKEN_CREATE, None);
    audit.detail = json!({ "token_id": token.id, "approval_request_id": approval.id, "scope": request.scopes });
    let issued = state.store.issue_approved_token(caller.tenant(), &approval.id, &token, audit).await?;
    Ok(issued.then(|| minted_body(&token, &secret, request.ttl_seconds)))
}

/// A body that may be left out entirely.
fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(None) } else { parse_json(body).map(Some) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    reason: Option<String>,
}

pub async fn approve(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let note = optional_json::<ApproveBody>(&body)?.and_then(|b| b.comment);
    decide(&state, &caller, &id, "approved", note).await
}

pub async fn deny(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let note = optional_json::<DenyBody>(&body)?.and_then(|b| b.reason);
    decide(&state, &caller, &id, "denied", note).await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: &str,
    note: Option<String>,
) -> ApiResult<Json<Value>> {
    let event = if status == "approved" { kind::APPROVAL_APPROVE } else { kind::APPROVAL_DENY };
    let refuse = |e: ApiError| async move {
        let mut draft = caller.draft(event, None);
        draft.success = false;
        draft.detail = json!({ "approval_request_id": id, "error": e.code.as_str() });
        state.store.record(caller.tenant(), draft, None).await.map(|_| e).unwrap_or_else(ApiError::from)
    };
    if let Err(e) = require_decider(caller) {
        return Err(refuse(e).await);
    }
    let Some(approval) = state.store.approval(caller.tenant(), id).await? else {
        return Err(ApiError::not_found(format!("no approval request '{id}'")));
    };
    if is_requester(caller, &approval) {
        let mut e = ApiError::permission_denied(None, "approvals:decide");
        e.message = "nobody decides their own approval request; ask another operator".into();
        return Err(refuse(e).await);
    }
    let mut audit = caller.draft(event, None);
    audit.detail = json!({ "approval_request_id": id, "note": note });
    match state.store.decide_approval(caller.tenant(), id, status, &caller.credential.id, note.as_deref(), audit).await
    {
        Ok(a) => Ok(Json(view(&a))),
        Err(StoreError::Conflict(m)) => Err(ApiError::conflict(m)),
        Err(e) => Err(e.into()),
    }
}
