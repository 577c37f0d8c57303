//! A token request, from what is asked for to the token row: `MintRequest` checked against
//! the minter (`vet`: a user key's scopes, or an agent's policy with its grants, `token_ttl`
//! and `allowed_ips`) into a `TokenRequest`, which `TokenRequest::mint` turns into a token
//! and `minted_body` into the answer that hands its value out.
//!
//! Both `/v1/tokens` (`tokens`, minting at once) and `/v1/approvals` (`approvals`, minting
//! what was approved, after `recheck` against the policy in force) use it, so neither of
//! them takes anything from the other here. A refused mint is audited by `deny` wherever
//! it is refused. Filing an approval request (`approvals::open_request`) stays with the
//! approvals: `tokens` calls it, and `approvals` never calls back into `tokens`.

use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{AgentRef, Caller, issue};
use super::error::{ApiError, ApiResult};
use crate::api::tokens::{MintRequest, MintedToken, OneOrMany};
use crate::domain::audit::kind;
use crate::domain::policy::Policy;
use crate::domain::time::to_rfc3339;
use crate::domain::{Scope, ScopeSet, SecretAction, SecretValue};
use crate::store::{Credential, CredentialKind};

/// Longest TTL a user key may ask for.
const MAX_TTL_SECONDS: u64 = 24 * 3600;
const DEFAULT_TTL_SECONDS: u64 = 900;

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

/// The answer that hands a minted token's value out, once.
pub fn minted_body(c: &Credential, secret: String, ttl_seconds: u64) -> MintedToken {
    MintedToken {
        id: c.id.clone(),
        value: SecretValue::new(secret),
        scope: OneOrMany::of(&c.scopes),
        ttl_seconds,
        expires_at: c.expires_at.map(to_rfc3339),
        approval_status: "approved".to_owned(),
        approval_request_id: None,
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
pub(super) async fn vet(
    state: &AppState,
    caller: &Caller,
    b: &MintRequest,
) -> ApiResult<(TokenRequest, Option<String>)> {
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
            e.message =
                format!("the policy of agent '{}' ({}) grants no '{scope}'", policy.agent().name, policy.source());
            return Err(e);
        };
        if grant.approval() {
            approval_grants.push(grant.secrets().to_string());
        }
    }
    let max_ttl = policy.agent().token_ttl.as_secs();
    request.ttl_seconds = ttl.unwrap_or(max_ttl);
    if request.ttl_seconds > max_ttl {
        return Err(ApiError::validation(format!(
            "ttl_seconds {} exceeds the agent's token_ttl of {max_ttl} s",
            request.ttl_seconds
        )));
    }
    let allowed = &policy.agent().allowed_ips;
    if nets.is_empty() {
        request.allowed_ips = allowed.iter().map(|n| n.to_string()).collect();
    } else if !allowed.is_empty() && !nets.iter().all(|n| allowed.iter().any(|a| a.contains(n))) {
        return Err(ApiError::validation("allowed_ips must lie within the agent policy's allowed_ips"));
    }
    let reason =
        (!approval_grants.is_empty()).then(|| format!("grants requiring approval: {}", approval_grants.join(", ")));
    Ok((request.clone(), reason))
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
