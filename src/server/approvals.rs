//! `/v1/approvals`: token requests that a policy says a human must approve. The requester
//! polls `GET /v1/approvals/{id}`; after approval that call mints the token and hands its
//! value out exactly once. Deciders need `approvals:decide` and never decide their own.
//!
//! An agent asking again for what it already waits for gets the pending request back rather
//! than a new one, and it may have only so many pending (`--max-pending-approvals-per-agent`),
//! so a flood cannot bury a genuine request. An approval never outlives its grant: the
//! request is checked against the policy in force when it is approved and when its token is
//! collected, and a policy change cancels the pending requests it no longer grants.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use super::auth::{AgentRef, Authed, Caller, new_id};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{QueryParams, parse_json};
use super::minting::{TokenRequest, minted_body, recheck, vet_address};
use crate::api::approvals::{self as api, ApproveBody, DenyBody};
use crate::api::tokens::{MintedToken, PendingApproval};
use crate::domain::Scope;
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::policy::Policy;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::store::{Approval, Filed, StoreError};

/// Every status a request can have; `cancelled`: the policy stopped granting it before its
/// token was handed out.
const STATUSES: [&str; 4] = ["pending", "approved", "denied", "cancelled"];
/// The actor of what the server does on its own.
const SERVER_ACTOR: &str = "airlock-server";

/// Files a pending approval for a vetted token request; returns the 202 body.
pub async fn open_request(
    state: &AppState,
    caller: &Caller,
    request: &TokenRequest,
    reason: String,
    headers: &HeaderMap,
) -> ApiResult<PendingApproval> {
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
    let max = i64::from(state.config.max_pending_approvals_per_agent);
    let (approval, new) = match state.store.file_approval(&approval, max, audit).await? {
        Filed::New => {
            tracing::info!(approval = %approval.id, agent = ?approval.agent_name, "token request waits for approval");
            (approval, true)
        }
        // Asked again for what it already waits for: the pending request answers, unchanged.
        Filed::Existing(pending) => (*pending, false),
        Filed::TooMany(pending) => return Err(too_many_pending(state, caller, pending, max).await),
    };
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:7878");
    // The console's page of the request, where an operator approves or denies it.
    let link = |base: &str| format!("{base}{}", console_link(&approval.id));
    let scheme = if state.config.tls.is_some() { "https" } else { "http" };
    let approve_url = match &state.config.public_url {
        Some(base) => link(base),
        None => link(&format!("{scheme}://{host}")),
    };
    let mut message =
        format!("approval required ({}); an operator with approvals:decide must approve it", approval.reason);
    if new && !state.webhooks.is_empty() {
        // What reaches approvers never holds a host a request named (its `Host` header): the
        // server's --public-url, or the path alone.
        let announced = state.config.public_url.as_deref().map_or_else(|| link(""), link);
        let notified = announce(state, &approval, request, &announced).await;
        message.push_str(&format!("; {notified} approval webhook(s) will be notified"));
    }
    Ok(PendingApproval {
        approval_status: "pending".to_owned(),
        message,
        approve_url,
        approval_request_id: approval.id,
    })
}

/// The path of the console page of approval request `id` (ids are the server's own,
/// `apr_` and a ULID: nothing to encode).
pub fn console_link(id: &str) -> String {
    format!("/console/approvals/{id}")
}

/// The grants (of the agent's policy in force, those that need approval) and the hosts a
/// request with `scopes` is for.
pub(super) async fn grants_and_hosts(
    state: &AppState,
    tenant: &str,
    agent: Option<&str>,
    scopes: &[String],
) -> (Vec<String>, Vec<String>) {
    let (mut grants, mut hosts) = (Vec::new(), Vec::new());
    if let Some(agent) = agent
        && let Ok(policy) = state.policy_for(tenant, agent).await
        && let Ok(scopes) = crate::domain::ScopeSet::parse_list(scopes)
    {
        for scope in scopes.iter() {
            let Scope::Secrets { glob, .. } = scope else { continue };
            let Some(grant) = policy.grant_covering(glob).filter(|g| g.approval()) else { continue };
            grants.push(grant.secrets().to_string());
            hosts.extend(grant.hosts().iter().map(|h| h.to_string()));
        }
    }
    grants.dedup();
    hosts.sort();
    hosts.dedup();
    (grants, hosts)
}

/// Tells the approval webhooks of a new request: which grants and hosts it is for.
async fn announce(state: &AppState, a: &Approval, request: &TokenRequest, approve_url: &str) -> usize {
    let (grants, hosts) = grants_and_hosts(state, &a.tenant_id, a.agent_name.as_deref(), &request.scopes).await;
    let notice = super::notify::Notice {
        tenant: a.tenant_id.clone(),
        id: a.id.clone(),
        agent: a.agent_name.clone(),
        grants,
        hosts,
        scopes: request.scopes.clone(),
        ttl_seconds: request.ttl_seconds,
        approve_url: approve_url.to_owned(),
    };
    super::notify::notify(state, notice)
}

/// The 429 for a requester at the cap, audited as a refused mint (`token.denied`).
async fn too_many_pending(state: &AppState, caller: &Caller, pending: i64, max: i64) -> ApiError {
    let who = caller.agent().map_or_else(|| caller.credential.name.clone(), |a| a.name);
    let mut e = ApiError::new(
        ErrorCode::TooManyPendingApprovals,
        format!(
            "agent '{who}' has {pending} approval requests pending, the most this server allows \
             (--max-pending-approvals-per-agent {max}); wait until an operator decides them \
             (airlock approval ls), or ask again for one of them: an identical request is answered \
             with the pending one's id"
        ),
    );
    e.extra.insert("pending".into(), pending.into());
    e.extra.insert("max_pending".into(), max.into());
    super::minting::deny(state, caller, e).await
}

/// What the policy in force says of a request filed earlier.
enum Standing {
    /// Still granted: the request as that policy normalises it, and the policy (none for a
    /// request that no agent made).
    Granted(TokenRequest, Option<Box<Policy>>),
    /// No longer granted, and why.
    Lapsed(String),
}

/// Checks a filed request against the policy in force as a new request would be checked
/// (`minting::recheck`): an agent without a policy, a scope no grant covers, a TTL over the
/// agent's `token_ttl` or addresses outside its `allowed_ips` make it lapse.
async fn standing(state: &AppState, a: &Approval) -> ApiResult<Standing> {
    let request: TokenRequest = serde_json::from_value(a.request.clone()).map_err(|e| ApiError::internal(&e))?;
    let Some(agent) = a.agent_name.as_deref() else { return Ok(Standing::Granted(request, None)) };
    let policy = match state.policy_for(&a.tenant_id, agent).await {
        Ok(policy) => policy,
        Err(e) if e.code == ErrorCode::PermissionDenied => return Ok(Standing::Lapsed(e.message)),
        Err(e) => return Err(e),
    };
    Ok(match recheck(&policy, &request) {
        Ok(request) => Standing::Granted(request, Some(Box::new(policy))),
        Err(e) => Standing::Lapsed(e.message),
    })
}

/// Cancels a request whose grant lapsed (`why`), audited as `approval.cancel` by `draft`'s actor;
/// `on` says what found it lapsed: `approve`, `collect`, `policy_change`.
async fn cancel(state: &AppState, mut draft: AuditDraft, a: &Approval, why: &str, on: &str) -> ApiResult<Approval> {
    draft.detail = json!({
        "approval_request_id": a.id, "agent": a.agent_name, "scope": a.request["scopes"], "reason": why, "on": on,
    });
    let by = draft.actor.clone();
    let cancelled = state.store.cancel_approval(&a.tenant_id, &a.id, &by, why, draft).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::conflict(m),
        e => e.into(),
    })?;
    tracing::info!(approval = %a.id, agent = ?a.agent_name, on, "approval request cancelled: the policy no longer grants it");
    Ok(cancelled)
}

/// What the requester of a cancelled request is answered: no token, and why.
fn cancelled_error(a: &Approval, why: &str) -> ApiError {
    let mut e = ApiError::conflict(format!(
        "approval request '{}' is cancelled: {why}; the policy no longer grants what it asks for, so no token \
         is issued for it (file a new token request if the policy grants it again)",
        a.id
    ));
    e.extra.insert("approval_status".into(), "cancelled".into());
    e.extra.insert("approval_request_id".into(), a.id.clone().into());
    e
}

/// After the policy set changed (a reload, or a start with the files changed meanwhile):
/// cancels every pending request it no longer grants, audited as `approval.cancel` by the
/// server. Returns how many were cancelled. A failure is logged: the checks when a request
/// is approved and when its token is collected still hold.
pub async fn cancel_lapsed(state: &AppState, trigger: &'static str) -> usize {
    match sweep(state, trigger).await {
        Ok(0) => 0,
        Ok(n) => {
            tracing::info!(cancelled = n, trigger, "cancelled the approval requests the policies no longer grant");
            n
        }
        Err(e) => {
            tracing::error!(error = %e.message, trigger, "could not cancel the approval requests the policies no longer grant");
            0
        }
    }
}

async fn sweep(state: &AppState, trigger: &'static str) -> ApiResult<usize> {
    let mut cancelled = 0;
    for a in state.store.pending_approvals().await? {
        let Standing::Lapsed(why) = standing(state, &a).await? else { continue };
        let draft = AuditDraft {
            id: new_id("evt"),
            kind: kind::APPROVAL_CANCEL,
            path: None,
            actor: SERVER_ACTOR.into(),
            actor_description: Some(trigger.replace('_', " ")),
            ip: None,
            user_agent: None,
            timestamp_ms: now_ms(),
            success: true,
            detail: json!({}),
        };
        match cancel(state, draft, &a, &why, "policy_change").await {
            Ok(_) => cancelled += 1,
            // Decided meanwhile.
            Err(e) if e.code == ErrorCode::Conflict => {}
            Err(e) => return Err(e),
        }
    }
    Ok(cancelled)
}

fn view(a: &Approval) -> api::Approval {
    api::Approval {
        id: a.id.clone(),
        status: a.status.clone(),
        requester: a.requester_id.clone(),
        agent: a.agent_name.clone(),
        request: a.request.clone(),
        reason: a.reason.clone(),
        created_at: to_rfc3339(a.created_at),
        decided_at: a.decided_at.map(to_rfc3339),
        decided_by: a.decided_by.clone(),
        note: a.note.clone(),
        token_id: a.token_id.clone(),
        approval_status: None,
        approval_request_id: None,
        token: None,
    }
}

fn is_requester(caller: &Caller, a: &Approval) -> bool {
    caller.credential.id == a.requester_id
        || caller.agent().is_some_and(|agent| a.agent_id.as_deref() == Some(agent.id.as_str()))
}

pub(super) fn require_decider(caller: &Caller) -> ApiResult<()> {
    if caller.has(&Scope::ApprovalsDecide) {
        Ok(())
    } else {
        Err(ApiError::permission_denied(None, "approvals:decide"))
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[schemars(extend("enum" = ["pending", "approved", "denied", "cancelled"]))]
    status: Option<String>,
    #[schemars(range(min = 1, max = 500))]
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Where the next page starts: after the last request of this one (newest first).
#[derive(serde::Serialize, Deserialize)]
struct Cursor {
    created_at: i64,
    id: String,
}

fn encode_cursor(a: &Approval) -> String {
    let cursor = Cursor { created_at: a.created_at, id: a.id.clone() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

fn decode_cursor(s: &str) -> ApiResult<Cursor> {
    let bad = || ApiError::invalid("bad cursor; pass back the next_cursor of a previous page unchanged");
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Newest first, a page at a time: `next_cursor` fetches the next one (null on the last),
/// and `total` counts every request with that status.
pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<api::ApprovalList>> {
    require_decider(&caller)?;
    if let Some(s) = q.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::invalid(format!("status '{s}' is not one of {}", STATUSES.join(", "))));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 500, not {limit}")));
    }
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let before = cursor.as_ref().map(|c| (c.created_at, c.id.as_str()));
    let status = q.status.as_deref();
    let mut items = state.store.list_approvals_before(caller.tenant(), status, before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let total = state.store.count_approvals(caller.tenant(), status).await?;
    let next_cursor = more.then(|| items.last().map(encode_cursor)).flatten();
    Ok(Json(api::ApprovalList { approvals: items.iter().map(view).collect(), total, next_cursor }))
}

/// For the requester after approval: the token value, once. For deciders: the request.
pub async fn get(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Approval>> {
    let not_found = || ApiError::not_found(format!("no approval request '{id}'"));
    let approval = state.store.approval(caller.tenant(), &id).await?.ok_or_else(not_found)?;
    let requester = is_requester(&caller, &approval);
    if !requester && !caller.has(&Scope::ApprovalsDecide) {
        return Err(not_found());
    }
    // An error, not a status: a requester that polls for `approved` or `denied` stops here.
    if requester && approval.status == "cancelled" {
        return Err(cancelled_error(&approval, approval.note.as_deref().unwrap_or("its grant lapsed")));
    }
    let mut body = view(&approval);
    body.approval_status = Some(approval.status.clone());
    body.approval_request_id = Some(approval.id.clone());
    if requester && approval.status == "approved" && approval.token_id.is_none() {
        // Approved under the policy of then: minted only if the policy of now still grants it.
        match standing(&state, &approval).await? {
            Standing::Granted(request, policy) => {
                if let Some(policy) = &policy {
                    vet_address(policy, &caller)?;
                }
                body.token = collect(&state, &caller, &approval, &request).await?;
            }
            Standing::Lapsed(why) => {
                cancel(&state, caller.draft(kind::APPROVAL_CANCEL, None), &approval, &why, "collect").await?;
                return Err(cancelled_error(&approval, &why));
            }
        }
    }
    Ok(Json(body))
}

/// Mints the approved token for its requester, if nobody collected it yet: `request` as the
/// policy in force normalises it.
async fn collect(
    state: &AppState,
    caller: &Caller,
    approval: &Approval,
    request: &TokenRequest,
) -> ApiResult<Option<MintedToken>> {
    let agent = approval.agent_id.clone().zip(approval.agent_name.clone()).map(|(id, name)| AgentRef { id, name });
    let (token, secret) = request.mint(caller.tenant(), &approval.requester_id, agent.as_ref());
    let mut audit = caller.draft(kind::TOKEN_CREATE, None);
    audit.detail = json!({ "token_id": token.id, "approval_request_id": approval.id, "scope": request.scopes });
    let issued = state.store.issue_approved_token(caller.tenant(), &approval.id, &token, audit).await?;
    Ok(issued.then(|| minted_body(&token, secret, request.ttl_seconds)))
}

/// A body that may be left out entirely.
fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(None) } else { parse_json(body).map(Some) }
}

pub async fn approve(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<api::Approval>> {
    let note = optional_json::<ApproveBody>(&body)?.and_then(|b| b.comment);
    decide(&state, &caller, &id, "approved", note).await
}

pub async fn deny(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<api::Approval>> {
    let note = optional_json::<DenyBody>(&body)?.and_then(|b| b.reason);
    decide(&state, &caller, &id, "denied", note).await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: &str,
    note: Option<String>,
) -> ApiResult<Json<api::Approval>> {
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
    // Approving what the policy no longer grants would hand out what it no longer allows.
    if status == "approved"
        && approval.status == "pending"
        && let Standing::Lapsed(why) = standing(state, &approval).await?
    {
        cancel(state, caller.draft(kind::APPROVAL_CANCEL, None), &approval, &why, "approve").await?;
        return Err(cancelled_error(&approval, &why));
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
