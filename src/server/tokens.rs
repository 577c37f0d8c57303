//! `/v1/tokens`: minting short-lived scoped tokens, introspection and revocation.
//! A token never holds more than its minter: a user key mints within its own scopes; an
//! agent mints within its policy's grants and `token_ttl`, and a grant marked
//! `approval = true` turns the request into an approval request instead.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::approvals::open_request;
use super::auth::{AgentRef, Authed, Caller, issue};
use super::changes::Change;
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use crate::domain::audit::kind;
use crate::domain::policy::Policy;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::domain::{Scope, ScopeSet, SecretAction};
use crate::store::{Credential, CredentialKind};

/// Longest TTL a user key may ask for.
const MAX_TTL_SECONDS: u64 = 24 * 3600;
const DEFAULT_TTL_SECONDS: u64 = 900;

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    pub scope: OneOrMany,
    pub ttl_seconds: Option<u64>,
    pub description: Option<String>,
    pub allowed_ips: Option<Vec<String>>,
    pub max_uses: Option<i64>,
}

/// A token request that passed every check: what will be minted, now or after approval.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub ttl_seconds: u64,
    pub description: Option<String>,
    pub allowed_ips: Vec<String>,
    pub max_uses: Option<i64>,
}

impl TokenRequest {
    /// The token row this request becomes, minted now by `minter` (for `agent`).
    pub fn mint(&self, tenant: &str, minter: &str, agent: Option<&AgentRef>) -> (Credential, String) {
        let name = agent.map_or("token", |a| a.name.as_str());
        let (mut credential, secret) = issue(CredentialKind::Token, tenant, name, self.scopes.clone());
        credential.agent_id = agent.map(|a| a.id.clone());
        credential.minted_by = Some(minter.to_owned());
        credential.description = self.description.clone();
        credential.allowed_ips = self.allowed_ips.clone();
        credential.max_uses = self.max_uses;
        credential.expires_at = Some(credential.created_at + self.ttl_seconds as i64 * 1000);
        (credential, secret)
    }
}

pub fn minted_body(c: &Credential, secret: &str, ttl_seconds: u64) -> Value {
    json!({
        "id": c.id,
        "value": secret,
        "scope": scope_json(&c.scopes),
        "ttl_seconds": ttl_seconds,
        "expires_at": c.expires_at.map(to_rfc3339),
        "approval_status": "approved",
        "approval_request_id": null,
    })
}

fn scope_json(scopes: &[String]) -> Value {
    match scopes {
        [one] => Value::String(one.clone()),
        many => json!(many),
    }
}

fn parse_nets(ips: &[String]) -> ApiResult<Vec<ipnet::IpNet>> {
    ips.iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ApiError::validation(format!("allowed_ips entry '{s}' is not an IP address or CIDR")))
        })
        .collect()
}

/// Checks a request against the minter; returns it normalised and whether it needs approval
/// (with the reason).
async fn vet(state: &AppState, caller: &Caller, b: &MintBody) -> ApiResult<(TokenRequest, Option<String>)> {
    let scopes = ScopeSet::parse_list(&b.scope.items()).map_err(|e| ApiError::validation(format!("scope: {e}")))?;
    if scopes.iter().next().is_none() {
        return Err(ApiError::validation("scope must name at least one scope"));
    }
    if b.max_uses.is_some_and(|n| n < 1) {
        return Err(ApiError::validation("max_uses must be 1 or more"));
    }
    let nets = parse_nets(b.allowed_ips.as_deref().unwrap_or(&[]))?;
    let mut request = TokenRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ttl_seconds: b.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS),
        description: b.description.clone(),
        allowed_ips: nets.iter().map(|n| n.to_string()).collect(),
        max_uses: b.max_uses,
    };
    if request.ttl_seconds == 0 {
        return Err(ApiError::validation("ttl_seconds must be 1 or more"));
    }
    match caller.agent() {
        Some(agent) => {
            let policy = state.policy_for(caller.tenant(), &agent.name).await?;
            vet_address(&policy, caller)?;
            vet_against_policy(&policy, &scopes, &nets, b.ttl_seconds, &mut request)
        }
        None => {
            if let Some(uncovered) = caller.scopes.first_uncovered(&scopes) {
                return Err(ApiError::permission_denied(None, &uncovered.to_string()));
            }
            if request.ttl_seconds > MAX_TTL_SECONDS {
                return Err(ApiError::validation(format!("ttl_seconds may be at most {MAX_TTL_SECONDS}")));
            }
            Ok((request, None))
        }
    }
}

/// An agent's credential is used only from the addresses its policy allows.
pub(super) fn vet_address(policy: &Policy, caller: &Caller) -> ApiResult<()> {
    if !policy.allows_ip(caller.ip) {
        return Err(ApiError::permission_denied(None, &format!("agent.allowed_ips containing {}", caller.ip)));
    }
    Ok(())
}

/// Checks a request vetted earlier (an approval request) against `policy` as it is now,
/// as a new request would be (`vet_against_policy`); returns it normalised by that policy
/// (its `allowed_ips` filled in when it named none).
pub(super) fn recheck(policy: &Policy, request: &TokenRequest) -> ApiResult<TokenRequest> {
    let scopes = ScopeSet::parse_list(&request.scopes).map_err(|e| ApiError::validation(format!("scope: {e}")))?;
    let nets = parse_nets(&request.allowed_ips)?;
    vet_against_policy(policy, &scopes, &nets, Some(request.ttl_seconds), &mut request.clone()).map(|(r, _)| r)
}

fn vet_against_policy(
    policy: &Policy,
    scopes: &ScopeSet,
    nets: &[ipnet::IpNet],
    ttl: Option<u64>,
    request: &mut TokenRequest,
) -> ApiResult<(TokenRequest, Option<String>)> {
    let mut approval_grants = Vec::new();
    for scope in scopes.iter() {
        let grant = match scope {
            Scope::Secrets { action: SecretAction::Read | SecretAction::ReadMetadata, glob } => {
                policy.grant_covering(glob)
            }
            _ => None,
        };
        let Some(grant) = grant else {
            let mut e = ApiError::permission_denied(None, &scope.to_string());
            e.message = format!("the policy of agent '{}' ({}) grants no '{scope}'", policy.agent.name, policy.source);
            return Err(e);
        };
        if grant.approval {
            approval_grants.push(grant.secrets.to_string());
        }
    }
    let max_ttl = policy.agent.token_ttl.as_secs();
    request.ttl_seconds = ttl.unwrap_or(max_ttl);
    if request.ttl_seconds > max_ttl {
        return Err(ApiError::validation(format!(
            "ttl_seconds {} exceeds the agent's token_ttl of {max_ttl} s",
            request.ttl_seconds
        )));
    }
    let allowed = &policy.agent.allowed_ips;
    if nets.is_empty() {
        request.allowed_ips = allowed.iter().map(|n| n.to_string()).collect();
    } else if !allowed.is_empty() && !nets.iter().all(|n| allowed.iter().any(|a| a.contains(n))) {
        return Err(ApiError::validation("allowed_ips must lie within the agent policy's allowed_ips"));
    }
    let reason =
        (!approval_grants.is_empty()).then(|| format!("grants requiring approval: {}", approval_grants.join(", ")));
    Ok((request.clone(), reason))
}

pub async fn mint(
    State(state): State<AppState>,
    caller: Authed,
    headers: HeaderMap,
    JsonBody(b): JsonBody<MintBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !caller.has(&Scope::TokensCreate) {
        return Err(deny(&state, &caller, ApiError::permission_denied(None, "tokens:create")).await);
    }
    let (request, approval) = match vet(&state, &caller, &b).await {
        Ok(vetted) => vetted,
        Err(e) => return Err(deny(&state, &caller, e).await),
    };
    if let Some(reason) = approval {
        let body = open_request(&state, &caller, &request, reason, &headers).await?;
        return Ok((StatusCode::ACCEPTED, Json(body)));
    }
    let agent = caller.agent();
    let (token, secret) = request.mint(caller.tenant(), &caller.credential.id, agent.as_ref());
    let mut audit = caller.draft(kind::TOKEN_CREATE, None);
    audit.detail = json!({ "token_id": token.id, "scope": request.scopes, "ttl_seconds": request.ttl_seconds });
    state.store.insert_credential(&token, audit).await?;
    Ok((StatusCode::CREATED, Json(minted_body(&token, &secret, request.ttl_seconds))))
}

/// Audits a refused mint as `token.denied` and passes the error on.
pub(super) async fn deny(state: &AppState, caller: &Caller, e: ApiError) -> ApiError {
    let mut draft = caller.draft(kind::TOKEN_DENIED, None);
    draft.success = false;
    draft.detail = json!({ "error": e.code.as_str(), "reason": e.message });
    match state.store.record(caller.tenant(), draft, None).await {
        Ok(()) => e,
        Err(audit) => audit.into(),
    }
}

pub async fn introspect(caller: Authed) -> Json<Value> {
    let c = &caller.credential;
    Json(json!({
        "id": c.id,
        "kind": c.kind.as_str(),
        "scope": scope_json(&c.scopes),
        "agent": caller.agent().map(|a| json!({ "id": a.id, "name": a.name })),
        "description": c.description,
        "allowed_ips": c.allowed_ips,
        "max_uses": c.max_uses,
        "uses": c.uses + i64::from(c.max_uses.is_some()),
        "created_at": to_rfc3339(c.created_at),
        "expires_at": c.expires_at.map(to_rfc3339),
    }))
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
