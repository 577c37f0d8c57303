//! `/v1/agents` and `/v1/policies`: agents are named credentials whose power comes from
//! their policy file; an agent key can only mint tokens within that policy.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;
use super::auth::{Authed, Caller, issue};
use super::changes::{ALL_TENANTS, Change};
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use super::policies::ReloadError;
use super::tenancy::check_name;
use crate::api::agents::{AgentCreated, AgentList, AgentSummary, CreateAgent};
use crate::api::policy::{Policy, PolicyReload};
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::domain::{Scope, SecretValue};
use crate::store::{CredentialKind, StoreError};

fn require_manage(caller: &Caller) -> ApiResult<()> {
    if caller.has(&Scope::AgentsManage) { Ok(()) } else { Err(ApiError::permission_denied(None, "agents:manage")) }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentCreated>)> {
    require_manage(&caller)?;
    check_name(&b.name)?;
    let existing = state.store.list_credentials(caller.tenant(), CredentialKind::AgentKey).await?;
    if existing.iter().any(|a| a.name == b.name) {
        return Err(ApiError::conflict(format!("an agent named '{}' already exists", b.name)));
    }
    let (mut agent, secret) =
        issue(CredentialKind::AgentKey, caller.tenant(), &b.name, vec![Scope::TokensCreate.to_string()]);
    agent.agent_id = Some(agent.id.clone());
    agent.minted_by = Some(caller.credential.id.clone());
    agent.description = b.description;
    let mut audit = caller.draft(kind::AGENT_CREATE, None);
    audit.detail = json!({ "agent_id": agent.id, "name": agent.name });
    state.store.insert_credential(&agent, audit).await?;
    let has_policy = state.policy_for(caller.tenant(), &agent.name).await.is_ok();
    let body = AgentCreated { id: agent.id, name: agent.name, key: SecretValue::new(secret), has_policy };
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<AgentList>> {
    require_manage(&caller)?;
    let agents = state.store.list_credentials(caller.tenant(), CredentialKind::AgentKey).await?;
    let mut out = Vec::with_capacity(agents.len());
    for a in &agents {
        let has_policy = state.policy_for(caller.tenant(), &a.name).await.is_ok();
        out.push(AgentSummary {
            id: a.id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            created_at: to_rfc3339(a.created_at),
            has_policy,
        });
    }
    Ok(Json(AgentList { agents: out }))
}

/// Deleting an agent revokes its key and every token it holds.
pub async fn delete(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<StatusCode> {
    require_manage(&caller)?;
    let not_found = || ApiError::not_found(format!("no agent '{id}' in this tenant"));
    let agent = state.store.credential_by_id(caller.tenant(), &id).await?;
    agent.filter(|a| a.kind == CredentialKind::AgentKey).ok_or_else(not_found)?;
    let mut audit = caller.draft(kind::AGENT_DELETE, None);
    audit.detail = json!({ "agent_id": id });
    match state.store.revoke_credential(caller.tenant(), &id, now_ms(), audit).await {
        Ok(()) => {
            state.credentials.invalidate_all();
            state.changes.publish(Change::new(caller.tenant(), "token.revoked").agent(&id));
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

pub async fn self_policy(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<Policy>> {
    let agent = caller
        .agent()
        .ok_or_else(|| ApiError::invalid("only an agent key, or a token minted for an agent, has a policy"))?;
    let policy = state.policy_for(caller.tenant(), &agent.name).await?;
    Ok(Json(policy))
}

pub async fn reload(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<PolicyReload>> {
    require_manage(&caller)?;
    let result = state.policies.reload();
    let mut audit = caller.draft(kind::POLICY_RELOAD, None);
    audit.success = result.is_ok();
    audit.detail = match &result {
        Ok(set) => json!({ "policies": set.len() }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    state.store.record(caller.tenant(), audit, None).await?;
    match result {
        Ok(set) => {
            state.changes.publish(Change::new(ALL_TENANTS, "policy.updated"));
            let cancelled = super::approvals::cancel_lapsed(&state, "policy_reload").await;
            Ok(Json(PolicyReload { reloaded: true, policies: set.len(), cancelled_approvals: cancelled }))
        }
        Err(e @ ReloadError::NoDirectory) => Err(ApiError::conflict(e.to_string())),
        Err(e @ ReloadError::Invalid(_)) => Err(ApiError::validation(e.to_string())),
    }
}
