//! `GET /v1/secrets/{path}/usage`: which agents' policies grant a secret, through which
//! grant, inject rules and routes, and when each last used it. Authorized like the secret's
//! access events (`secrets:read_metadata` on the path).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::Authed;
use super::error::{ApiError, ApiResult};
use super::extract::PathParam;
use crate::api::usage::{AgentUsage, InjectUse, Placement, RouteUse, SecretUsage, SignUse};
use crate::domain::policy::{Policy, SignKind};
use crate::domain::time::to_rfc3339;
use crate::domain::{SecretAction, SecretPath};
use crate::store::CredentialKind;

pub async fn usage(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
) -> ApiResult<Json<SecretUsage>> {
    if !caller.can(SecretAction::ReadMetadata, &path) {
        return Err(ApiError::permission_denied(Some(path.as_str()), &format!("secrets:read_metadata:{path}")));
    }
    let tenant_name = state.tenant_name(caller.tenant()).await?;
    let policies = state.policies.current();
    let granting: Vec<&Policy> =
        policies.iter().filter(|p| p.agent().tenant == tenant_name && p.grant_for(&path).is_some()).collect();
    if granting.is_empty() {
        return Ok(Json(SecretUsage { path: path.to_string(), agents: Vec::new() }));
    }
    let ids: HashMap<String, String> = state
        .store
        .list_credentials(caller.tenant(), CredentialKind::AgentKey)
        .await?
        .into_iter()
        .map(|agent| (agent.name, agent.id))
        .collect();
    let last_uses: HashMap<String, i64> =
        state.store.last_uses(caller.tenant(), path.as_str()).await?.into_iter().collect();
    let agents = granting
        .into_iter()
        .filter_map(|policy| {
            let name = &policy.agent().name;
            let mut usage = agent_usage(policy, &path)?;
            usage.agent_id = ids.get(name).cloned();
            usage.last_used = last_uses.get(name).copied().map(to_rfc3339);
            Some(usage)
        })
        .collect();
    Ok(Json(SecretUsage { path: path.to_string(), agents }))
}

/// What `policy` lets its agent do with the value at `path`, if it grants it (without the
/// agent's id and last use, which the store knows).
pub fn agent_usage(policy: &Policy, path: &SecretPath) -> Option<AgentUsage> {
    let grant = policy.grant_for(path)?;
    let injects = policy
        .injects()
        .iter()
        .filter(|rule| rule.placeholders().iter().any(|p| p.path() == path))
        .map(|rule| InjectUse { host: rule.host().to_string(), header: rule.header().to_string() })
        .collect();
    let routes = policy
        .routes()
        .iter()
        .filter(|route| grant.allows_host(route.upstream().host()))
        .map(|route| RouteUse { name: route.name().to_owned(), upstream: route.upstream().to_string() })
        .collect();
    let mut signs = Vec::new();
    for rule in policy.signs() {
        let roles = [("access_key", Some(rule.access_key())), ("secret_key", Some(rule.secret_key()))];
        for (role, placeholder) in roles.into_iter().chain([("session_token", rule.session_token())]) {
            if placeholder.is_some_and(|p| p.path() == path) {
                let kind = match rule.kind() {
                    SignKind::AwsSigV4 => "aws-sigv4",
                };
                signs.push(SignUse { host: rule.host().to_string(), kind: kind.to_owned(), role: role.to_owned() });
            }
        }
    }
    Some(AgentUsage {
        agent: policy.agent().name.clone(),
        agent_id: None,
        policy: policy.source().to_owned(),
        grant: grant.secrets().to_string(),
        hosts: grant.hosts().iter().map(ToString::to_string).collect(),
        placement: Placement { headers: grant.headers().to_vec(), query: grant.query() },
        approval_required: grant.approval(),
        injects,
        routes,
        signs,
        last_used: None,
    })
}
