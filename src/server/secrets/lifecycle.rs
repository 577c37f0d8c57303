//! The lifecycle handlers: delete (soft, or permanent with `?permanent=true`), undelete
//! and destroy (wiping chosen versions for good).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{authorize, fail, metadata};
use crate::api::secrets::{DestroyVersions, SecretMetadata, UndeleteSecret};
use crate::domain::SecretAction;
use crate::domain::audit::kind;
use crate::domain::time::now_ms;
use crate::server::AppState;
use crate::server::auth::Authed;
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{JsonBody, PathParam, QueryParams, parse_json};
use crate::store::{OpDone, OpRequest, SecretOp, StoreError};

/// The version lists of undelete and destroy: one or more, each 1 or more, each once.
pub(super) fn check_versions(versions: &[i64]) -> ApiResult<()> {
    if versions.is_empty() || versions.iter().any(|v| *v < 1) {
        return Err(ApiError::validation("versions must list one or more version numbers (1 or more)"));
    }
    if versions.len() > 1000 {
        return Err(ApiError::validation("versions may list at most 1000 versions"));
    }
    Ok(())
}

/// One operation in a transaction of its own.
pub(super) async fn one_op(state: &AppState, tenant: &str, op: OpRequest<'_>) -> Result<OpDone, StoreError> {
    let (mut results, _) = state.store.apply_ops(tenant, vec![op], true).await?;
    results.pop().flatten().unwrap_or(Err(StoreError::NotFound))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    permanent: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let (action, kind) = if q.permanent {
        (SecretAction::Destroy, kind::SECRET_DESTROY)
    } else {
        (SecretAction::Delete, kind::SECRET_DELETE)
    };
    authorize(&state, &caller, action, &path, kind).await?;
    let mut audit = caller.draft(kind, Some(path.as_str()));
    audit.detail = json!({ "permanent": q.permanent });
    let result = if q.permanent {
        state.store.purge_secret(caller.tenant(), path.as_str(), audit).await
    } else {
        state.store.soft_delete(caller.tenant(), path.as_str(), now_ms(), audit).await
    };
    match result {
        Ok(()) => {
            state.changes.publish(Change::new(caller.tenant(), "secret.deleted").path(path.as_str()));
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(fail(&state, &caller, kind, &path, e).await),
    }
}

/// Undoes a soft delete; with `{versions:[N…]}` (each must exist and hold its value) also
/// makes those versions readable again. No body, or `{}`: the secret only.
pub async fn undelete(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    body: Bytes,
) -> ApiResult<Json<SecretMetadata>> {
    authorize(&state, &caller, SecretAction::Undelete, &path, kind::SECRET_UNDELETE).await?;
    let versions =
        if body.iter().all(u8::is_ascii_whitespace) { None } else { parse_json::<UndeleteSecret>(&body)?.versions };
    if let Some(versions) = &versions {
        check_versions(versions)?;
    }
    let mut audit = caller.draft(kind::SECRET_UNDELETE, Some(path.as_str()));
    if let Some(versions) = &versions {
        audit.detail = json!({ "versions": versions });
    }
    let op = OpRequest { path: path.to_string(), op: SecretOp::Undelete { versions }, audit };
    match one_op(&state, caller.tenant(), op).await {
        Ok(done) => {
            let m = done.meta;
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(&m.path));
            Ok(Json(metadata(&m)))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UNDELETE, &path, e).await),
    }
}

pub async fn destroy(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<DestroyVersions>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, SecretAction::Destroy, &path, kind::SECRET_DESTROY).await?;
    check_versions(&b.versions)?;
    let mut audit = caller.draft(kind::SECRET_DESTROY, Some(path.as_str()));
    audit.detail = json!({ "versions": b.versions });
    let op = OpRequest { path: path.to_string(), op: SecretOp::Destroy { versions: b.versions }, audit };
    match one_op(&state, caller.tenant(), op).await {
        Ok(_) => {
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(path.as_str()));
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_DESTROY, &path, e).await),
    }
}
