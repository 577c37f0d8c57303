//! The writing handlers: create, update (a new version), patch (metadata only) and rotate
//! (a new version with a grace period for the old one), and the checks on what they carry.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, HeaderName};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use super::upsert::{Precondition, check_not_reserved, stamp_creator};
use super::{authorize, external, fail, metadata};
use crate::api::secrets::{
    CreateSecret, ManagedMode, PatchSecret, RotateSecret, SecretCreated, SecretMetadata, SecretRotated, SecretUpdated,
    UpdateSecret,
};
use crate::crypto::Binding;
use crate::domain::audit::kind;
use crate::domain::time::{now_ms, parse_rfc3339, to_rfc3339};
use crate::domain::value::MAX_VALUE_BYTES;
use crate::domain::{SecretAction, SecretPath, SecretValue, Tier};
use crate::providers::ExternalRef;
use crate::server::AppState;
use crate::server::auth::{Authed, Caller, new_id};
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{JsonBody, PathParam};
use crate::store::{MetaChange, NewVersion, SealFn, SecretMeta, StoreError, VersionContent, secret_mode};

/// A value within the size limit, and not empty unless the caller said so (`allow_empty`):
/// an empty value is almost always a mistake, like an unset variable piped in.
pub(super) fn check_value(value: &SecretValue, field: &str, allow_empty: bool) -> ApiResult<()> {
    if value.is_empty() && !allow_empty {
        return Err(ApiError::validation(format!(
            "'{field}' is empty; send \"allow_empty\": true to store an empty value on purpose"
        )));
    }
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

/// The store's view of `content`; `seal` seals its value (never called for a reference).
fn version_content<'a>(content: &Content, seal: SealFn<'a>) -> VersionContent<'a> {
    match content {
        Content::Value(_) => VersionContent::Sealed(seal),
        Content::External { external_ref, provider_version_ref } => VersionContent::External {
            external_ref: external_ref.clone(),
            provider_version_ref: provider_version_ref.clone(),
        },
    }
}

/// The value `content` carries; an external reference carries none (an empty stand-in that
/// `version_content` never seals).
fn value_of(content: &Content) -> std::borrow::Cow<'_, SecretValue> {
    match content {
        Content::Value(v) => std::borrow::Cow::Borrowed(v),
        Content::External { .. } => std::borrow::Cow::Owned(SecretValue::new(String::new())),
    }
}

fn seal_for<'a>(
    state: &'a AppState,
    tenant: &'a str,
    path: &'a SecretPath,
    value: &'a SecretValue,
) -> impl Fn(i64) -> Result<crate::crypto::Sealed, crate::crypto::CryptoError> + Sync + 'a {
    move |version| state.keys.seal(&Binding { tenant, path: path.as_str(), version }, value.expose().as_bytes())
}

/// What a create or a new version holds, once checked.
enum Content {
    Value(SecretValue),
    External { external_ref: String, provider_version_ref: Option<String> },
}

impl Content {
    fn audit(&self) -> serde_json::Value {
        match self {
            Content::Value(_) => json!({}),
            Content::External { external_ref, provider_version_ref } => json!({
                "external_ref": external_ref, "provider_version_ref": provider_version_ref,
                "provider": external::provider_of(Some(external_ref)),
            }),
        }
    }
}

/// A managed secret's new value: required, and nothing external with it.
fn managed_value(
    value: Option<SecretValue>,
    field: &str,
    external: &[(&str, bool)],
    allow_empty: bool,
) -> ApiResult<SecretValue> {
    if let Some((name, _)) = external.iter().find(|(_, given)| *given) {
        return Err(ApiError::validation(format!(
            "'{name}' is for secrets with managed_mode external_reference; this one is airlock_managed"
        )));
    }
    let value =
        value.ok_or_else(|| ApiError::validation(format!("'{field}' is required for an airlock_managed secret")))?;
    check_value(&value, field, allow_empty)?;
    Ok(value)
}

/// An external secret's next version: a new reference and/or version pointer (what is not
/// given is kept, except that a new reference without a pointer reads its latest version),
/// of the provider type its config reads.
fn next_external(
    current: &SecretMeta,
    value_field: &str,
    value_given: bool,
    external_ref: Option<String>,
    provider_version_ref: Option<String>,
) -> ApiResult<Content> {
    if value_given {
        return Err(ApiError::validation(format!(
            "'{value_field}' cannot be set on an external_reference secret: its value stays in the provider; \
             send a new external_ref and/or provider_version_ref"
        )));
    }
    if external_ref.is_none() && provider_version_ref.is_none() {
        return Err(ApiError::validation(
            "an external_reference secret's new version needs external_ref and/or provider_version_ref",
        ));
    }
    let current_kind = current.external_ref.as_deref().and_then(|r| ExternalRef::parse(r).ok()).map(|r| r.kind());
    let text = external_ref.as_deref().or(current.external_ref.as_deref()).unwrap_or_default();
    let r = external::parse_ref("external_ref", text)?;
    let version = provider_version_ref;
    if current_kind.is_some_and(|k| k != r.kind()) {
        return Err(ApiError::validation(format!(
            "external_ref: this secret is read through a {} config; a {} reference needs a new secret",
            current_kind.map(|k| k.as_str()).unwrap_or_default(),
            r.kind()
        )));
    }
    if let Some(v) = &version {
        external::parse_version("provider_version_ref", r.kind(), v)?;
    }
    Ok(Content::External { external_ref: r.to_string(), provider_version_ref: version })
}

/// The secret's current metadata, for a write that depends on its mode (404 when missing).
async fn current_meta(
    state: &AppState,
    caller: &Caller,
    kind: &'static str,
    path: &SecretPath,
) -> ApiResult<SecretMeta> {
    match state.store.secret_meta(caller.tenant(), path.as_str()).await? {
        Some(m) if m.deleted_at.is_none() => Ok(m),
        _ => Err(fail(state, caller, kind, path, StoreError::NotFound).await),
    }
}

/// The checked content of a new version of `current`.
fn next_content(
    current: &SecretMeta,
    value: Option<SecretValue>,
    value_field: &str,
    external_ref: Option<String>,
    provider_version_ref: Option<String>,
    allow_empty: bool,
) -> ApiResult<Content> {
    if current.is_external() {
        next_external(current, value_field, value.is_some(), external_ref, provider_version_ref)
    } else {
        let external =
            [("external_ref", external_ref.is_some()), ("provider_version_ref", provider_version_ref.is_some())];
        managed_value(value, value_field, &external, allow_empty).map(Content::Value)
    }
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

/// Creates the secret `b` describes, once the caller's scope is checked: a managed one
/// sealed here, or an external reference (its value stays in the provider).
async fn create_secret(state: &AppState, caller: &Caller, b: CreateSecret) -> ApiResult<SecretMeta> {
    check_not_reserved(b.path.as_str())?;
    let mode = b.managed_mode.unwrap_or_default();
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
        managed_mode: mode.as_str().to_owned(),
        status: secret_mode::ACTIVE.to_owned(),
        ..SecretMeta::default()
    };
    stamp_creator(&mut meta, caller);
    let mut audit = caller.draft(kind::SECRET_CREATE, Some(b.path.as_str()));
    let sealed = match mode {
        ManagedMode::AirlockManaged => {
            let external = [
                ("external_ref", b.external_ref.is_some()),
                ("provider_version_ref", b.provider_version_ref.is_some()),
                ("provider_config_id", b.provider_config_id.is_some()),
            ];
            let value = managed_value(b.value, "value", &external, b.allow_empty)?;
            audit.detail = json!({ "version": 1 });
            Some(seal_for(state, caller.tenant(), &b.path, &value)(1).map_err(|e| ApiError::internal(&e))?)
        }
        ManagedMode::ExternalReference => {
            if b.value.is_some() {
                return Err(ApiError::validation(
                    "'value' cannot be set on an external_reference secret: its value stays in the provider",
                ));
            }
            let text = b
                .external_ref
                .ok_or_else(|| ApiError::validation("'external_ref' is required for an external_reference secret"))?;
            let r = external::parse_ref("external_ref", &text)?;
            if let Some(v) = &b.provider_version_ref {
                external::parse_version("provider_version_ref", r.kind(), v)?;
            }
            let config =
                external::choose_config(state, caller.tenant(), r.kind(), b.provider_config_id.as_deref()).await?;
            meta.external_ref = Some(r.to_string());
            meta.provider_version_ref = b.provider_version_ref;
            meta.provider_config_id = Some(config.id.clone());
            audit.detail = json!({
                "version": 1, "managed_mode": mode.as_str(), "provider": r.kind().as_str(),
                "provider_config_id": config.id, "external_ref": meta.external_ref,
                "provider_version_ref": meta.provider_version_ref,
            });
            None
        }
    };
    if let Err(e) = state.store.create_secret(caller.tenant(), &meta, sealed.as_ref(), audit).await {
        return Err(fail(state, caller, kind::SECRET_CREATE, &b.path, e).await);
    }
    Ok(meta)
}

/// `PUT`: a new version, or, on a path with no secret (not even a deleted one), the create
/// a `POST` would make, unless the precondition (`cas`, `If-Match`, `If-None-Match`) says
/// otherwise. A create answers 201, a replace 200; both carry `ETag: "<version>"`. A
/// managed secret takes a `value`, an external one a new `external_ref` and/or
/// `provider_version_ref`; a create with `external_ref` makes an external reference read
/// through the tenant's default config of its provider.
pub async fn update(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    headers: HeaderMap,
    JsonBody(b): JsonBody<UpdateSecret>,
) -> ApiResult<(StatusCode, [(HeaderName, String); 1], Json<SecretUpdated>)> {
    authorize(&state, &caller, SecretAction::Write, &path, kind::SECRET_UPDATE).await?;
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
    let as_create = |b: UpdateSecret| CreateSecret {
        path: path.clone(),
        managed_mode: b.external_ref.is_some().then_some(ManagedMode::ExternalReference),
        value: b.value,
        external_ref: b.external_ref,
        provider_version_ref: b.provider_version_ref,
        provider_config_id: None,
        tier: b.tier,
        description: b.description,
        tags: b.tags,
        allowed_hosts: None,
        owner: None,
        expires_at: expires_at.flatten().map(to_rfc3339),
        not_before: not_before.flatten().map(to_rfc3339),
        allow_empty: b.allow_empty,
    };
    let absent = match pre {
        Precondition::Absent => true,
        _ => pre.may_create() && state.store.secret_meta(caller.tenant(), path.as_str()).await?.is_none(),
    };
    if absent {
        let meta = create_secret(&state, &caller, as_create(b)).await?;
        return Ok(answer(StatusCode::CREATED, meta));
    }
    let current = current_meta(&state, &caller, kind::SECRET_UPDATE, &path).await?;
    let content = next_content(&current, b.value, "value", b.external_ref, b.provider_version_ref, b.allow_empty)?;
    let meta = MetaChange {
        tier: b.tier.map(|t| t.as_str().to_owned()),
        description: b.description.map(Some),
        tags: b.tags,
        expires_at,
        not_before,
        ..MetaChange::default()
    };
    let mut audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
    audit.detail = content.audit();
    let value = value_of(&content);
    let seal = seal_for(&state, caller.tenant(), &path, &value);
    let change =
        NewVersion { cas: pre.cas(), content: version_content(&content, &seal), meta, previous_expires_at: None };
    match state.store.write_version(caller.tenant(), path.as_str(), change, audit).await {
        Ok((m, _)) => {
            state
                .changes
                .publish(Change::new(caller.tenant(), "secret.updated").path(&m.path).version(m.current_version));
            Ok(answer(StatusCode::OK, m))
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
    let status = b.status.map(|s| s.as_str().to_owned());
    let change = MetaChange {
        tier: b.tier.map(|t| t.as_str().to_owned()),
        description: b.description,
        tags: b.tags,
        allowed_hosts: b.allowed_hosts,
        owner: b.owner,
        status: status.clone(),
        expires_at: b.expires_at.as_ref().map(|t| parse_time("expires_at", t)).transpose()?,
        not_before: b.not_before.as_ref().map(|t| parse_time("not_before", t)).transpose()?,
    };
    let mut audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
    audit.detail = match &status {
        Some(status) => json!({ "metadata_only": true, "status": status }),
        None => json!({ "metadata_only": true }),
    };
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
    let current = current_meta(&state, &caller, kind::SECRET_ROTATE, &path).await?;
    let content =
        next_content(&current, b.new_value, "new_value", b.external_ref, b.provider_version_ref, b.allow_empty)?;
    let old_expires_at = now_ms() + i64::from(b.grace_period_seconds) * 1000;
    let value = value_of(&content);
    let seal = seal_for(&state, caller.tenant(), &path, &value);
    let change = NewVersion {
        cas: None,
        content: version_content(&content, &seal),
        meta: MetaChange::default(),
        previous_expires_at: Some(old_expires_at),
    };
    let mut audit = caller.draft(kind::SECRET_ROTATE, Some(path.as_str()));
    audit.detail = content.audit();
    if let serde_json::Value::Object(map) = &mut audit.detail {
        map.insert("grace_period_seconds".into(), b.grace_period_seconds.into());
    }
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
