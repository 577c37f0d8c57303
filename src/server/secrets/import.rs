//! Remote import: listing what a provider config can read (`POST /v1/secrets/remote-import/
//! preview`), each candidate classified against the tenant's secrets, and creating external
//! secrets for chosen references (`POST /v1/secrets/remote-import`), each path's scope
//! checked on its own. Nothing here reads a value.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::authorize;
use crate::api::secrets::{
    ImportCandidate, ImportResult, RemoteImport, RemoteImportCandidates, RemoteImportPreview, RemoteImported,
};
use crate::domain::audit::kind;
use crate::domain::time::now_ms;
use crate::domain::{Scope, SecretAction, SecretPath, Tier};
use crate::providers::{self, Environment, ExternalRef, ProviderKind};
use crate::server::AppState;
use crate::server::auth::{Authed, Caller, new_id};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::JsonBody;
use crate::store::{ListFilter, ProviderConfig, SecretMeta, secret_mode};

/// The most candidates one preview page lists.
const MAX_PAGE: usize = 100;
/// The most secrets one import creates.
const MAX_IMPORT: usize = 500;

/// The path a provider's name imports at by default: each `/`-separated part of the name
/// with every character outside `[A-Za-z0-9._-]` replaced by `-`, empty, `.` and `..` parts
/// dropped. `None` when nothing is left.
pub fn default_path(name: &str) -> Option<String> {
    let parts: Vec<String> = name
        .split('/')
        .map(|seg| seg.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect())
        .filter(|seg: &String| !seg.is_empty() && seg != "." && seg != "..")
        .collect();
    let path = parts.join("/");
    SecretPath::parse(&path).is_ok().then_some(path)
}

async fn config_of(state: &AppState, caller: &Caller, id: &str) -> ApiResult<(ProviderConfig, ProviderKind)> {
    let config =
        state.store.provider_config(caller.tenant(), id).await?.ok_or_else(|| {
            ApiError::not_found(format!("provider_config_id: no provider config '{id}' in this tenant"))
        })?;
    let kind = ProviderKind::parse(&config.kind)
        .ok_or_else(|| ApiError::validation(format!("provider config '{id}' has unknown type '{}'", config.kind)))?;
    Ok((config, kind))
}

/// The secret of the tenant (not deleted) that references `external_ref`, if any.
async fn referencing(state: &AppState, tenant: &str, external_ref: &str) -> ApiResult<Option<SecretMeta>> {
    let filter = ListFilter { external_ref: Some(external_ref.to_owned()), limit: 1, ..ListFilter::default() };
    Ok(state.store.list_secrets(tenant, &filter).await?.into_iter().next())
}

/// `POST /v1/secrets/remote-import/preview`: one page of the config's listing. Listing a
/// provider with the server's credentials needs `keys:manage`, as checking its health does.
pub async fn remote_import_preview(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<RemoteImportPreview>,
) -> ApiResult<Json<RemoteImportCandidates>> {
    if !caller.has(&Scope::KeysManage) {
        return Err(ApiError::permission_denied(None, "keys:manage"));
    }
    let page_size = b.page_size.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&page_size) {
        return Err(ApiError::validation(format!("page_size must be 1 to {MAX_PAGE}")));
    }
    let (config, kind) = config_of(&state, &caller, &b.provider_config_id).await?;
    let names = providers::config_env_names(kind, &config.config);
    let env = Environment::from_process(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let provider = providers::build(kind, &config.config, &env)
        .map_err(|e| ApiError::provider(kind.as_str(), &config.id, e.to_string()))?;
    let listing = tokio::time::timeout(
        Duration::from_secs(30),
        provider.list(b.query.as_deref(), page_size, b.next_token.as_deref()),
    )
    .await
    .map_err(|_| ApiError::provider(kind.as_str(), &config.id, format!("{kind} did not list within 30 s")))?
    .map_err(|e| match e {
        providers::ProviderError::NotFound { .. } | providers::ProviderError::Reference(_) => {
            ApiError::validation(format!("query: {e}"))
        }
        other => ApiError::provider(kind.as_str(), &config.id, other.to_string()),
    })?;
    let mut candidates = Vec::with_capacity(listing.candidates.len());
    for c in listing.candidates {
        let path = default_path(&c.name).unwrap_or_default();
        let duplicate = referencing(&state, caller.tenant(), &c.external_ref).await?;
        let (status, existing_path) = match duplicate {
            Some(m) => ("duplicate", Some(m.path)),
            None => match state.store.secret_meta(caller.tenant(), &path).await? {
                Some(m) => ("conflict", Some(m.path)),
                None if path.is_empty() => ("conflict", None),
                None => ("ready", None),
            },
        };
        candidates.push(ImportCandidate {
            external_ref: c.external_ref,
            name: c.name,
            description: c.description,
            path,
            status: status.to_owned(),
            existing_path,
        });
    }
    Ok(Json(RemoteImportCandidates {
        provider_config_id: config.id,
        provider: kind.as_str().to_owned(),
        candidates,
        folders: listing.folders,
        next_token: listing.next_token,
    }))
}

/// `POST /v1/secrets/remote-import`: an external secret for each reference, at its `path`
/// or the default path of its name; each answered on its own (`imported`, `skipped` when a
/// secret already references it or holds the path, `error` with why).
pub async fn remote_import(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<RemoteImport>,
) -> ApiResult<Json<RemoteImported>> {
    if b.secrets.is_empty() || b.secrets.len() > MAX_IMPORT {
        return Err(ApiError::validation(format!("secrets must list 1 to {MAX_IMPORT} references")));
    }
    let (config, kind) = config_of(&state, &caller, &b.provider_config_id).await?;
    let mut out = RemoteImported { imported: 0, skipped: 0, errored: 0, results: Vec::with_capacity(b.secrets.len()) };
    for item in b.secrets {
        let result = import_one(&state, &caller, &config, kind, &item).await;
        let (outcome, path, message) = match result {
            Ok(Imported::Created(path)) => {
                out.imported += 1;
                ("imported", Some(path), None)
            }
            Ok(Imported::Skipped(path, why)) => {
                out.skipped += 1;
                ("skipped", path, Some(why))
            }
            Err((path, e)) => {
                out.errored += 1;
                ("error", path, Some(format!("{}: {}", e.code.as_str(), e.message)))
            }
        };
        out.results.push(ImportResult {
            external_ref: item.external_ref.clone(),
            path,
            outcome: outcome.to_owned(),
            message,
        });
    }
    Ok(Json(out))
}

enum Imported {
    Created(String),
    Skipped(Option<String>, String),
}

async fn import_one(
    state: &AppState,
    caller: &Caller,
    config: &ProviderConfig,
    kind: ProviderKind,
    item: &crate::api::secrets::ImportItem,
) -> Result<Imported, (Option<String>, ApiError)> {
    let r = ExternalRef::parse(&item.external_ref)
        .map_err(|e| (item.path.clone(), ApiError::validation(format!("external_ref: {e}"))))?;
    if r.kind() != kind {
        let e = ApiError::validation(format!("external_ref is for {}, the config reads {kind}", r.kind()));
        return Err((item.path.clone(), e));
    }
    let canonical = r.to_string();
    let name = match &r {
        ExternalRef::VaultKv2 { path, .. } => path.clone(),
        ExternalRef::AwsSm { name, .. } => name.clone(),
        ExternalRef::GcpSm { secret, .. } => secret.clone(),
    };
    let path_text = match &item.path {
        Some(p) => p.clone(),
        None => default_path(&name).ok_or_else(|| {
            (None, ApiError::validation(format!("no path can be made of the name '{name}'; give one")))
        })?,
    };
    let path = SecretPath::parse(&path_text)
        .map_err(|e| (Some(path_text.clone()), ApiError::validation(format!("path: {e}"))))?;
    let tags = item.tags.clone().unwrap_or_default();
    authorize(state, caller, SecretAction::Write, &path, kind::SECRET_CREATE)
        .await
        .map_err(|e| (Some(path_text.clone()), e))?;
    if let Some(m) = referencing(state, caller.tenant(), &canonical).await.map_err(|e| (Some(path_text.clone()), e))? {
        return Ok(Imported::Skipped(Some(m.path.clone()), format!("secret '{}' already references it", m.path)));
    }
    if state
        .store
        .secret_meta(caller.tenant(), path.as_str())
        .await
        .map_err(|e| (Some(path_text.clone()), e.into()))?
        .is_some()
    {
        return Ok(Imported::Skipped(Some(path_text.clone()), "a secret already exists at this path".to_owned()));
    }
    if tags.keys().any(|k| k.is_empty() || k.len() > 128 || k.contains(['=', ':']))
        || tags.values().any(|v| v.len() > 512)
    {
        let e = ApiError::validation("tags: keys are 1-128 characters without '=' or ':', values at most 512");
        return Err((Some(path_text), e));
    }
    let now = now_ms();
    let meta = SecretMeta {
        id: new_id("sec"),
        path: path.to_string(),
        current_version: 1,
        tier: Tier::Standard.as_str().to_owned(),
        description: item.description.clone(),
        tags,
        created_at: now,
        updated_at: now,
        managed_mode: secret_mode::EXTERNAL.to_owned(),
        status: secret_mode::ACTIVE.to_owned(),
        provider_config_id: Some(config.id.clone()),
        external_ref: Some(canonical.clone()),
        ..SecretMeta::default()
    };
    let mut audit = caller.draft(kind::SECRET_CREATE, Some(path.as_str()));
    audit.detail = json!({
        "version": 1, "managed_mode": secret_mode::EXTERNAL, "provider": kind.as_str(),
        "provider_config_id": config.id, "external_ref": canonical, "remote_import": true,
    });
    match state.store.create_secret(caller.tenant(), &meta, None, audit).await {
        Ok(()) => Ok(Imported::Created(path_text)),
        Err(crate::store::StoreError::Conflict(m)) => Ok(Imported::Skipped(Some(path_text), m)),
        Err(e) => Err((Some(path_text), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::default_path;

    #[test]
    fn default_paths_keep_the_name_and_replace_what_a_path_cannot_hold() {
        assert_eq!(default_path("app/api").as_deref(), Some("app/api"));
        assert_eq!(default_path("prod/db password!").as_deref(), Some("prod/db-password-"));
        assert_eq!(default_path("/a//b/../c/").as_deref(), Some("a/b/c"));
        assert_eq!(default_path("//"), None);
    }
}
