//! Tenants and user API keys: `/v1/tenants` (for the bootstrap key) and `/v1/keys`.
//! A key's secret is shown once, at creation; only its hash is stored.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;
use super::auth::{Authed, Caller, issue, new_id};
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use crate::api::keys::{CreateKey, CreateTenant, KeyCreated, KeyList, KeySummary, TenantCreated};
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::domain::{Role, Scope, SecretValue};
use crate::store::{Credential, CredentialKind, Tenant};

fn require(caller: &Caller, scope: Scope) -> ApiResult<()> {
    if caller.has(&scope) { Ok(()) } else { Err(ApiError::permission_denied(None, &scope.to_string())) }
}

pub(super) fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!("name '{name}' must be 1-64 characters of [A-Za-z0-9._-]")))
    }
}

/// A user key of `role` for `tenant`, with its one-time secret.
pub fn user_key(tenant: &str, name: &str, role: Role, extra: &[Scope]) -> (Credential, String) {
    let mut scopes: Vec<String> = role.scopes().iter().map(|s| s.to_string()).collect();
    scopes.extend(extra.iter().map(|s| s.to_string()));
    let (mut credential, secret) = issue(CredentialKind::UserKey, tenant, name, scopes);
    credential.role = Some(role.as_str().to_owned());
    (credential, secret)
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    require(&caller, Scope::KeysManage)?;
    check_name(&b.name)?;
    let (credential, secret) = user_key(caller.tenant(), &b.name, b.role, &[]);
    let mut audit = caller.draft(kind::KEY_CREATE, None);
    audit.detail = json!({ "key_id": credential.id, "name": b.name, "role": b.role.as_str() });
    state.store.insert_credential(&credential, audit).await?;
    let body = KeyCreated { id: credential.id, name: b.name, role: b.role, key: SecretValue::new(secret) };
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list_keys(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<KeyList>> {
    require(&caller, Scope::KeysManage)?;
    let keys = state.store.list_credentials(caller.tenant(), CredentialKind::UserKey).await?;
    let keys = keys
        .iter()
        .map(|k| KeySummary {
            id: k.id.clone(),
            name: k.name.clone(),
            role: k.role.clone(),
            created_at: to_rfc3339(k.created_at),
        })
        .collect();
    Ok(Json(KeyList { keys }))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require(&caller, Scope::KeysManage)?;
    let mut audit = caller.draft(kind::KEY_REVOKE, None);
    audit.detail = json!({ "key_id": id });
    state.store.revoke_credential(caller.tenant(), &id, now_ms(), audit).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => ApiError::not_found(format!("no active key '{id}' in this tenant")),
        other => other.into(),
    })?;
    state.credentials.invalidate_all();
    state.changes.publish(super::changes::Change::new(caller.tenant(), "token.revoked").token(&id));
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    require(&caller, Scope::TenantsCreate)?;
    check_name(&b.name)?;
    let tenant = Tenant { id: new_id("ten"), name: b.name.clone(), created_at: now_ms() };
    let (admin, secret) = user_key(&tenant.id, "admin", Role::Admin, &[]);
    let mut audit = caller.draft(kind::TENANT_CREATE, None);
    audit.detail = json!({ "tenant_id": tenant.id, "name": b.name, "created_by_tenant": caller.tenant() });
    state.store.create_tenant(&tenant, &admin, audit).await?;
    let body = TenantCreated { id: tenant.id, name: tenant.name, admin_key: SecretValue::new(secret) };
    Ok((StatusCode::CREATED, Json(body)))
}
