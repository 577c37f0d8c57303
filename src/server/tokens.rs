//! `/v1/tokens`: minting short-lived scoped tokens, introspection and revocation.
//! A token never holds more than its minter: a user key mints within its own scopes; an
//! agent mints within its policy's grants and `token_ttl`, and a grant marked
//! `approval = true` turns the request into an approval request instead.
//!
//! These are the HTTP handlers; what a token request is, how it is checked and how it
//! becomes a token live in `minting`, shared with `approvals`. The approval request is filed
//! by `approvals::open_request`: this module calls it, and `approvals` takes nothing from
//! this one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::approvals::open_request;
use super::auth::Authed;
use super::changes::Change;
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use super::minting::{deny, minted_body, vet};
use crate::api::tokens::{AgentIdentity, MintRequest, OneOrMany, TokenInfo};
use crate::domain::Scope;
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::store::CredentialKind;

pub async fn mint(
    State(state): State<AppState>,
    caller: Authed,
    headers: HeaderMap,
    JsonBody(b): JsonBody<MintRequest>,
) -> ApiResult<Response> {
    if !caller.has(&Scope::TokensCreate) {
        return Err(deny(&state, &caller, ApiError::permission_denied(None, "tokens:create")).await);
    }
    let (request, approval) = match vet(&state, &caller, &b).await {
        Ok(vetted) => vetted,
        Err(e) => return Err(deny(&state, &caller, e).await),
    };
    if let Some(reason) = approval {
        let body = open_request(&state, &caller, &request, reason, &headers).await?;
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let agent = caller.agent();
    let (token, secret) = request.mint(caller.tenant(), &caller.credential.id, agent.as_ref());
    let mut audit = caller.draft(kind::TOKEN_CREATE, None);
    audit.detail = json!({ "token_id": token.id, "scope": request.scopes, "ttl_seconds": request.ttl_seconds });
    state.store.insert_credential(&token, audit).await?;
    Ok((StatusCode::CREATED, Json(minted_body(&token, secret, request.ttl_seconds))).into_response())
}

pub async fn introspect(caller: Authed) -> Json<TokenInfo> {
    let c = &caller.credential;
    Json(TokenInfo {
        id: c.id.clone(),
        kind: c.kind.as_str().to_owned(),
        scope: OneOrMany::of(&c.scopes),
        agent: caller.agent().map(|a| AgentIdentity { id: a.id, name: a.name }),
        description: c.description.clone(),
        allowed_ips: c.allowed_ips.clone(),
        max_uses: c.max_uses,
        uses: c.uses + i64::from(c.max_uses.is_some()),
        created_at: to_rfc3339(c.created_at),
        expires_at: c.expires_at.map(to_rfc3339),
    })
}

pub async fn revoke(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let not_found = || ApiError::not_found(format!("no active token '{id}' in this tenant"));
    let token = state.store.credential_by_id(caller.tenant(), &id).await?;
    let token = token.filter(|t| t.kind == CredentialKind::Token && t.revoked_at.is_none()).ok_or_else(not_found)?;
    let own = token.minted_by.as_deref() == Some(caller.credential.id.as_str())
        || token.id == caller.credential.id
        || caller.agent().is_some_and(|a| token.agent_id.as_deref() == Some(a.id.as_str()));
    if !own && !caller.has(&Scope::KeysManage) {
        return Err(ApiError::permission_denied(None, "keys:manage"));
    }
    let mut audit = caller.draft(kind::TOKEN_REVOKE, None);
    audit.detail = json!({ "token_id": id });
    state.store.revoke_credential(caller.tenant(), &id, now_ms(), audit).await?;
    let mut change = Change::new(caller.tenant(), "token.revoked").token(&id);
    change.agent_id = token.agent_id.clone();
    state.credentials.invalidate_all();
    state.changes.publish(change);
    Ok(StatusCode::NO_CONTENT)
}
