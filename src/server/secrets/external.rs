//! Secrets by reference: checking a reference and its version pointer, choosing the provider
//! config an external secret is read through, and reading its value through the server's
//! resolver at read time. The value is never stored; errors name the provider, the config
//! and the reference, never a value.

use std::time::Duration;

use serde_json::json;

use crate::domain::SecretValue;
use crate::providers::resolver::ConfigHandle;
use crate::providers::{ExternalRef, ProviderError, ProviderKind, VersionRef};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::store::ProviderConfig;

/// `s` as a reference; a 422 naming `field` when it is not one.
pub(super) fn parse_ref(field: &str, s: &str) -> ApiResult<ExternalRef> {
    ExternalRef::parse(s).map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

/// `s` as a version pointer of `kind`; a 422 naming `field` when it is not one.
pub(super) fn parse_version(field: &str, kind: ProviderKind, s: &str) -> ApiResult<VersionRef> {
    VersionRef::parse(kind, s).map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

/// The provider type of a stored reference, if it parses.
pub(super) fn provider_of(external_ref: Option<&str>) -> Option<String> {
    external_ref.and_then(|r| ExternalRef::parse(r).ok()).map(|r| r.kind().as_str().to_owned())
}

/// The config `id` names (404 when the tenant has none, 422 when it is of another provider
/// type than `kind`), or the tenant's default config of `kind` (422 when there is none).
pub(super) async fn choose_config(
    state: &AppState,
    tenant: &str,
    kind: ProviderKind,
    id: Option<&str>,
) -> ApiResult<ProviderConfig> {
    let config = match id {
        Some(id) => state.store.provider_config(tenant, id).await?.ok_or_else(|| {
            ApiError::not_found(format!("provider_config_id: no provider config '{id}' in this tenant"))
        })?,
        None => state
            .store
            .list_provider_configs(tenant)
            .await?
            .into_iter()
            .find(|c| c.is_default && c.kind == kind.as_str())
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "provider_config_id: the tenant has no default {kind} provider config; pass provider_config_id \
                     or make a {kind} config the default (POST /v1/provider-configs/{{id}}/default)"
                ))
            })?,
    };
    if config.kind != kind.as_str() {
        return Err(ApiError::validation(format!(
            "provider_config_id: config '{}' is of type {}, but the reference is for {kind}",
            config.id, config.kind
        )));
    }
    Ok(config)
}

/// An external secret's value as its provider serves it now (or from the resolver's cache
/// within the config's TTL).
pub(super) struct Resolution {
    pub value: SecretValue,
    pub provider: ProviderKind,
    pub config_id: String,
    /// The provider's version of what it served, when it says.
    pub provider_version: Option<String>,
}

/// Reads `external_ref` at `version_ref` through the config `config_id`. A provider that
/// fails or cannot be reached is a 502 `provider_error`; a reference it does not hold (or
/// whose `#field` it lacks) a 404 with `reason`.
pub(super) async fn resolve(
    state: &AppState,
    tenant: &str,
    config_id: Option<&str>,
    external_ref: &str,
    version_ref: Option<&str>,
) -> ApiResult<Resolution> {
    let r = ExternalRef::parse(external_ref).map_err(|e| ApiError::internal(&format!("stored reference: {e}")))?;
    let kind = r.kind();
    let config_id = config_id.unwrap_or_default();
    let config = state.store.provider_config(tenant, config_id).await?.ok_or_else(|| {
        ApiError::provider(
            kind.as_str(),
            config_id,
            format!("the provider config '{config_id}' this secret is read through no longer exists"),
        )
    })?;
    let version = version_ref
        .map(|v| VersionRef::parse(kind, v))
        .transpose()
        .map_err(|e| ApiError::internal(&format!("stored provider_version_ref: {e}")))?;
    let handle = ConfigHandle {
        id: config.id.clone(),
        kind,
        config: config.config.clone(),
        updated_at: config.updated_at,
        cache_ttl: config.cache_ttl_seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
    };
    match state.resolver.resolve(&handle, &r, version.as_ref()).await {
        Ok(served) => Ok(Resolution {
            value: served.value,
            provider: kind,
            config_id: config.id,
            provider_version: served.version,
        }),
        Err(e) => Err(provider_failure(kind, &config.id, &e)),
    }
}

fn provider_failure(kind: ProviderKind, config_id: &str, e: &ProviderError) -> ApiError {
    let not_found = |reason: &str| {
        let mut err = ApiError::not_found(format!("the provider cannot serve this secret: {e}"));
        err.extra.insert("reason".into(), reason.into());
        err.extra.insert("provider".into(), kind.as_str().into());
        err
    };
    match e {
        ProviderError::NotFound { .. } => not_found("provider_not_found"),
        ProviderError::Unusable { .. } => not_found("provider_unusable"),
        _ => {
            tracing::warn!(provider = %kind, config = %config_id, error = %e, "external secret read failed");
            ApiError::provider(kind.as_str(), config_id, e.to_string())
        }
    }
}

/// What a read's audit record says of the provider (never the value).
pub(super) fn audit_detail(version: i64, res: &Resolution) -> serde_json::Value {
    json!({
        "version": version, "provider": res.provider.as_str(), "provider_config_id": res.config_id,
        "provider_version": res.provider_version,
    })
}
