//! The writing handlers: create, update (a new version), patch (metadata only) and rotate
//! (a new version with a grace period for the old one), and the checks on what they carry.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, HeaderName};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use super::upsert::{Precondition, check_not_reserved, stamp_creator};
use super::{authorize, fail, metadata};
use crate::api::secrets::{
    CreateSecret, PatchSecret, RotateSecret, SecretCreated, SecretMetadata, SecretRotated, SecretUpdated, UpdateSecret,
};
use crate::crypto::Binding;
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, parse_rfc3339, to_rfc3339};
use crate::domain::value::MAX_VALUE_BYTES;
use crate::domain::{SecretAction, SecretPath, SecretValue, Tier};
use crate::server::AppState;
use crate::server::auth::{Authed, Caller, new_id};
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{JsonBody, PathParam};
use crate::store::{MetaChange, NewVersion, SecretMeta, StoreError};

pub(super) fn check_value(value: &SecretValue, field: &str) -> ApiResult<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::validation(format!(
            "'{field}' is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

fn check_hosts(hosts: &[String]) -> ApiResult<()> {
    for h in hosts {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            return Err(ApiError::validation(format!(
                "allowed_hosts entry '{h}' is not a host name (examples: api.openai.com, *.github.com)"
            )));
        }
    }
    Ok(())
}

pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 512 || k.contains(['=', ':']) {
            return Err(ApiError::validation(format!(
                "tag '{k}' is invalid: keys are 1-128 characters without '=' or ':', values at most 512"
            )));
        }
    }
    Ok(())
}

fn parse_time(field: &str, value: &Option<String>) -> ApiResult<Option<i64>> {
    value.as_deref().map(|s| parse_rfc3339(s).map_err(|e| ApiError::validation(format!("{field}: {e}")))).transpose()
}

fn seal_for<'a>(
    state: &'a AppState,
    tenant: &'a str,
    path: &'a SecretPath,
    value: &'a SecretValue,
) -> impl Fn(i64) -> Result<crate::crypto::Sealed, crate::crypto::CryptoError> + Sync + 'a {
    move |version| state.keys.seal(&Binding { tenant, path: path.as_str(), version }, value.expose().as_bytes())
}

pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CreateSecret>,
) -> ApiResult<(StatusCode, Json<SecretCreated>)> {
    authorize(&state, &caller, SecretAction::Write, &b.path, kind::SECRET_CREATE).await?;
    let meta = create_secret(&state, &caller, b).await?;
    let body = SecretCreated { path: meta.path, version: 1, tier: meta.tier, created_at: to_rfc3339(meta.created_at) };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Creates the secret `b` describes, once the caller's scope is checked.
async fn create_secret(state: &AppState, caller: &Caller, b: CreateSecret) -> ApiResult<SecretMeta> {
    check_not_reserved(b.path.as_str())?;
    check_value(&b.value, "value")?;
    let tags = b.tags.unwrap_or_default();
    check_tags(&tags)?;
    let allowed_hosts = b.allowed_hosts.unwrap_or_default();
    check_hosts(&allowed_hosts)?;
    let now = now_ms();
    let mut meta = SecretMeta {
        id: new_id("sec"),
        path: b.path.to_string(),
        current_version: 1,
        tier: b.tier.unwrap_or(Tier::Standard).as_str().to_owned(),
        description: b.description,
        tags,
        allowed_hosts,
        owner: b.owner,
        created_at: now,
        updated_at: now,
        expires_at: parse_time("expires_at", &b.expires_at)?,
        not_before: parse_time("not_before", &b.not_before)?,
        ..SecretMeta::default()
    };
    stamp_creator(&mut meta, caller);
    let sealed = seal_for(state, caller.tenant(), &b.path, &b.value)(1).map_err(|e| ApiError::internal(&e))?;
    let mut audit = caller.draft(kind::SECRET_CREATE, Some(b.path.as_str()));
    audit.detail = json!({ "version": 1 });
    if let Err(e) = state.store.create_secret(caller.tenant(), &meta, &sealed, audit).await {
        return Err(fail(state, caller, kind::SECRET_CREATE, &b.path, e).await);
    }
    Ok(meta)
}

/// `PUT`: a new version, or, on a path with no secret (not even a deleted one), the create
/// a `POST` would make, unless the precondition (`cas`, `If-Match`, `If-None-Match`) says
/// otherwise. A create answers 201, a replace 200; both carry `ETag: "<version>"`.
pub async fn update(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    headers: HeaderMap,
    JsonBody(b): JsonBody<UpdateSecret>,
) -> ApiResult<(StatusCode, [(HeaderName, String); 1], Json<SecretUpdated>)> {
    authorize(&state, &caller, SecretAction::Write, &path, kind::SECRET_UPDATE).await?;
    check_value(&b.value, "value")?;
    if let Some(tags) = &b.tags {
        check_tags(tags)?;
    }
    let pre = Precondition::of(&headers, b.cas)?;
    let expires_at = b.expires_at.as_ref().map(|t| parse_time("expires_at", t)).transpose()?;
    let not_before = b.not_before.as_ref().map(|t| parse_time("not_before", t)).transpose()?;
    let answer = |status: StatusCode, m: SecretMeta| {
        let etag = format!("\"{}\"", m.current_version);
        let updated_at = to_rfc3339(m.updated_at);
        (status, [(ETAG, etag)], Json(SecretUpdated { path: m.path, version: m.current_version, updated_at }))
    };
    let as_create = |value: SecretValue, tier, description, tags| CreateSecret {
        path: path.clone(),
        value,
        tier,
        description,
        tags,
        allowed_hosts: None,
        owner: None,
        expires_at: expires_at.flatten().map(to_rfc3339),
        not_before: not_before.flatten().map(to_rfc3339),
    };
    if pre == Precondition::Absent {
        let meta = create_secret(&state, &caller, as_create(b.value, b.tier, b.description, b.tags)).await?;
        return Ok(answer(StatusCode::CREATED, meta));
    }
    let meta = MetaChange {
        tier: b.tier.map(|t| t.as_str().to_owned()),
        description: b.description.clone().map(Some),
        tags: b.tags.clone(),
        expires_at,
        not_before,
        ..MetaChange::default()
    };
    let written = {
        let seal = seal_for(&state, caller.tenant(), &path, &b.value);
        let change = NewVersion { cas: pre.cas(), seal: &seal, meta, previous_expires_at: None };
        let audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
        state.store.write_version(caller.tenant(), path.as_str(), change, audit).await
    };
    match written {
        Ok((m, _)) => {
            state
                .changes
                .publish(Change::new(caller.tenant(), "secret.updated").path(&m.path).version(m.current_version));
            Ok(answer(StatusCode::OK, m))
        }
        Err(StoreError::NotFound)
            if pre.may_create() && state.store.secret_meta(caller.tenant(), path.as_str()).await?.is_none() =>
        {
            let meta = create_secret(&state, &caller, as_create(b.value, b.tier, b.description, b.tags)).await?;
            Ok(answer(StatusCode::CREATED, meta))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UPDATE, &path, e).await),
    }
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<PatchSecret>,
) -> ApiResult<Json<SecretMetadata>> {
    let action = if b.owner.is_some() { SecretAction::OwnerUpdate } else { SecretAction::Write };
    authorize(&state, &caller, action, &path, kind::SECRET_UPDATE).await?;
    if let Some(tags) = &b.tags {
        check_tags(tags)?;
    }
    if let Some(hosts) = &b.allowed_hosts {
        check_hosts(hosts)?;
    }
    let change = MetaChange {
        tier: b.tier.map(|t| t.as_str().to_owned()),
        description: b.description,
        tags: b.tags,
        allowed_hosts: b.allowed_hosts,
        owner: b.owner,
        expires_at: b.expires_at.as_ref().map(|t| parse_time("expires_at", t)).transpose()?,
        not_before: b.not_before.as_ref().map(|t| parse_time("not_before", t)).transpose()?,
    };
    let mut audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
    audit.detail = json!({ "metadata_only": true });
    match state.store.patch_secret(caller.tenant(), path.as_str(), &change, audit).await {
        Ok(m) => {
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(&m.path));
            Ok(Json(metadata(&m)))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UPDATE, &path, e).await),
    }
}

pub async fn rotate(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<RotateSecret>,
) -> ApiResult<Json<SecretRotated>> {
    authorize(&state, &caller, SecretAction::Rotate, &path, kind::SECRET_ROTATE).await?;
    check_value(&b.new_value, "new_value")?;
    let old_expires_at = now_ms() + i64::from(b.grace_period_seconds) * 1000;
    let seal = seal_for(&state, caller.tenant(), &path, &b.new_value);
    let change =
        NewVersion { cas: None, seal: &seal, meta: MetaChange::default(), previous_expires_at: Some(old_expires_at) };
    let mut audit = caller.draft(kind::SECRET_ROTATE, Some(path.as_str()));
    audit.detail = json!({ "grace_period_seconds": b.grace_period_seconds });
    match state.store.write_version(caller.tenant(), path.as_str(), change, audit).await {
        Ok((m, old)) => {
            state
                .changes
                .publish(Change::new(caller.tenant(), "secret.rotated").path(&m.path).version(m.current_version));
            Ok(Json(SecretRotated {
                path: m.path,
                old_version: old,
                new_version: m.current_version,
                old_expires_at: to_rfc3339(old_expires_at),
            }))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_ROTATE, &path, e).await),
    }
}
