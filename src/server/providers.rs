//! `/v1/providers` and `/v1/provider-configs`: the external stores this server can read
//! (`crate::providers`) and each tenant's configurations of them. A config holds settings
//! only: a body with a key that names a credential, at any depth, is refused (422, naming
//! the key) before anything is written. Managing configs and checking their health needs
//! `keys:manage`, as credentials do; every change is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authed, Caller, new_id};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, parse_json};
use super::tenancy::check_name;
use crate::domain::Scope;
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::providers::{self, Environment, ProviderKind};
use crate::store::{ProviderConfig, ProviderConfigChange, StoreError};

/// The longest cache TTL a config may ask for: a day.
const MAX_CACHE_TTL_SECONDS: i64 = 86_400;

fn require_manage(caller: &Caller) -> ApiResult<()> {
    if caller.has(&Scope::KeysManage) { Ok(()) } else { Err(ApiError::permission_denied(None, "keys:manage")) }
}

/// The body as JSON, refused whole if any key names a credential.
fn no_credentials(body: &Value) -> ApiResult<()> {
    match providers::find_sensitive_key(body, "") {
        Some(key) => Err(ApiError::validation(format!(
            "'{}' names a credential; provider configs hold settings only (the server reads credentials \
             from its environment or from files it is pointed at)",
            key.trim_start_matches('.')
        ))),
        None => Ok(()),
    }
}

fn typed<T: serde::de::DeserializeOwned>(body: &Value) -> ApiResult<T> {
    parse_json(body.to_string().as_bytes())
}

fn check_config(kind: ProviderKind, config: &Value) -> ApiResult<()> {
    if !config.is_object() {
        return Err(ApiError::validation("config must be a JSON object"));
    }
    providers::check_config(kind, config).map_err(|e| ApiError::validation(e.to_string()))
}

fn check_ttl(ttl: Option<i64>) -> ApiResult<()> {
    match ttl {
        Some(t) if !(0..=MAX_CACHE_TTL_SECONDS).contains(&t) => {
            Err(ApiError::validation(format!("cache_ttl_seconds must be 0 to {MAX_CACHE_TTL_SECONDS}")))
        }
        _ => Ok(()),
    }
}

fn view(c: &ProviderConfig) -> Value {
    json!({
        "id": c.id, "name": c.name, "type": c.kind, "config": c.config, "is_default": c.is_default,
        "cache_ttl_seconds": c.cache_ttl_seconds,
        "created_at": to_rfc3339(c.created_at), "updated_at": to_rfc3339(c.updated_at),
    })
}

/// `GET /v1/providers`: the provider types and whether this version reads them.
pub async fn types(_caller: Authed) -> Json<Value> {
    let about = |k: ProviderKind| match k {
        ProviderKind::Vault => ("OpenBao or HashiCorp Vault, KV version 2", true),
        ProviderKind::AwsSecretsManager => ("AWS Secrets Manager", true),
        ProviderKind::GcpSecretManager => ("GCP Secret Manager", true),
    };
    let mut out = vec![json!({
        "type": "local_encrypted", "description": "held by Airlock, encrypted (the default)",
        "reference_scheme": null, "supported": true,
    })];
    for k in ProviderKind::ALL {
        let (description, supported) = about(k);
        out.push(json!({
            "type": k.as_str(), "description": description,
            "reference_scheme": format!("{}://", k.scheme()), "supported": supported,
        }));
    }
    Json(json!({ "providers": out }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default = "empty_object")]
    config: Value,
    #[serde(default)]
    is_default: bool,
    cache_ttl_seconds: Option<i64>,
}

fn empty_object() -> Value {
    json!({})
}

fn kind_of(s: &str) -> ApiResult<ProviderKind> {
    ProviderKind::parse(s).ok_or_else(|| {
        ApiError::validation(format!(
            "type must be one of {}",
            ProviderKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_manage(&caller)?;
    no_credentials(&body)?;
    let b: CreateBody = typed(&body)?;
    let kind = kind_of(&b.kind)?;
    check_name(&b.name)?;
    check_config(kind, &b.config)?;
    check_address(kind, &b.config)?;
    check_ttl(b.cache_ttl_seconds)?;
    let now = now_ms();
    let c = ProviderConfig {
        id: new_id("pcf"),
        tenant_id: caller.tenant().to_owned(),
        name: b.name,
        kind: kind.as_str().to_owned(),
        config: b.config,
        is_default: b.is_default,
        cache_ttl_seconds: b.cache_ttl_seconds,
        created_at: now,
        updated_at: now,
    };
    let mut audit = caller.draft(kind::PROVIDER_CONFIG_CREATE, None);
    audit.detail =
        json!({ "id": c.id, "name": c.name, "type": c.kind, "config": c.config, "is_default": c.is_default });
    state.store.create_provider_config(&c, audit).await?;
    Ok((StatusCode::CREATED, Json(view(&c))))
}

pub async fn list(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    let configs = state.store.list_provider_configs(caller.tenant()).await?;
    Ok(Json(json!({ "provider_configs": configs.iter().map(view).collect::<Vec<_>>() })))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ProviderConfig> {
    state
        .store
        .provider_config(caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no provider config '{id}' in this tenant")))
}

pub async fn get(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    Ok(Json(view(&find(&state, &caller, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    name: Option<String>,
    config: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_ttl_seconds: Option<Option<i64>>,
}

/// A field that is present (`null` included) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    no_credentials(&body)?;
    let b: PatchBody = typed(&body)?;
    let current = find(&state, &caller, &id).await?;
    let kind = kind_of(&current.kind)?;
    if let Some(name) = &b.name {
        check_name(name)?;
    }
    if let Some(config) = &b.config {
        check_config(kind, config)?;
        check_address(kind, config)?;
    }
    check_ttl(b.cache_ttl_seconds.flatten())?;
    let change = ProviderConfigChange {
        name: b.name,
        config: b.config,
        cache_ttl_seconds: b.cache_ttl_seconds,
        updated_at: now_ms(),
    };
    let mut audit = caller.draft(kind::PROVIDER_CONFIG_UPDATE, None);
    audit.detail = json!({ "id": id, "changed": body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()) });
    let c =
        state.store.update_provider_config(caller.tenant(), &id, &change, audit).await.map_err(|e| missing(e, &id))?;
    Ok(Json(view(&c)))
}

fn missing(e: StoreError, id: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(format!("no provider config '{id}' in this tenant")),
        other => other.into(),
    }
}

pub async fn delete(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<StatusCode> {
    require_manage(&caller)?;
    let current = find(&state, &caller, &id).await?;
    let mut audit = caller.draft(kind::PROVIDER_CONFIG_DELETE, None);
    audit.detail = json!({ "id": id, "name": current.name, "type": current.kind });
    state.store.delete_provider_config(caller.tenant(), &id, audit).await.map_err(|e| missing(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn make_default(
    State(state): State<AppState>,
    caller: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    let current = find(&state, &caller, &id).await?;
    let mut audit = caller.draft(kind::PROVIDER_CONFIG_DEFAULT, None);
    audit.detail = json!({ "id": id, "name": current.name, "type": current.kind });
    let c = state.store.set_default_provider_config(caller.tenant(), &id, audit).await.map_err(|e| missing(e, &id))?;
    Ok(Json(view(&c)))
}

/// A config may name only an address the operator listed (`AIRLOCK_PROVIDER_ADDRESSES`): the
/// server's own credentials go there.
fn check_address(kind: ProviderKind, config: &Value) -> ApiResult<()> {
    match providers::address_of(kind, config) {
        Some(address) => providers::AddressRule::from_process().check(&address).map_err(ApiError::validation),
        None => Ok(()),
    }
}

/// Reaches the store `config` describes with the server's credentials.
async fn reach(kind: ProviderKind, config: &Value) -> providers::Health {
    let started = std::time::Instant::now();
    let names = providers::config_env_names(kind, config);
    let env = Environment::from_process(&names.iter().map(String::as_str).collect::<Vec<_>>());
    match providers::build(kind, config, &env) {
        Ok(p) => p.health().await,
        Err(e) => {
            providers::Health { ok: false, message: e.to_string(), latency_ms: started.elapsed().as_millis() as u64 }
        }
    }
}

/// A stored config's health; never fails as a request.
async fn check_health(c: &ProviderConfig) -> Value {
    let health = match ProviderKind::parse(&c.kind) {
        None => providers::Health { ok: false, message: format!("unknown provider type '{}'", c.kind), latency_ms: 0 },
        Some(kind) => reach(kind, &c.config).await,
    };
    json!({
        "id": c.id, "name": c.name, "type": c.kind, "ok": health.ok, "message": health.message,
        "latency_ms": health.latency_ms, "checked_at": to_rfc3339(now_ms()),
    })
}

pub async fn health(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    let c = find(&state, &caller, &id).await?;
    Ok(Json(check_health(&c).await))
}

/// `GET /v1/providers/health`: every config of the tenant, checked concurrently.
pub async fn health_all(State(state): State<AppState>, caller: Authed) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    let configs = state.store.list_provider_configs(caller.tenant()).await?;
    let results = futures_util::future::join_all(configs.iter().map(check_health)).await;
    let ok = results.iter().all(|r| r["ok"] == true);
    Ok(Json(json!({ "ok": ok, "providers": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "empty_object")]
    config: Value,
}

/// `POST /v1/provider-configs/discovery/preview {type, config?}`: the health check of a
/// config before it is saved. Nothing is written.
pub async fn preview(
    State(_state): State<AppState>,
    caller: Authed,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_manage(&caller)?;
    no_credentials(&body)?;
    let b: PreviewBody = typed(&body)?;
    let kind = kind_of(&b.kind)?;
    check_config(kind, &b.config)?;
    check_address(kind, &b.config)?;
    let health = reach(kind, &b.config).await;
    Ok(Json(json!({
        "type": kind.as_str(), "ok": health.ok, "message": health.message, "latency_ms": health.latency_ms,
    })))
}
