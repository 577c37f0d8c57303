//! The lifecycle handlers: delete (soft, or permanent with `?permanent=true`), undelete
//! and destroy (wiping chosen versions for good).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{authorize, fail, metadata};
use crate::api::secrets::{DestroyVersions, SecretMetadata};
use crate::domain::SecretAction;
use crate::domain::audit::kind;
use crate::domain::time::now_ms;
use crate::server::AppState;
use crate::server::auth::Authed;
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{JsonBody, PathParam, QueryParams};

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

pub async fn undelete(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
) -> ApiResult<Json<SecretMetadata>> {
    authorize(&state, &caller, SecretAction::Undelete, &path, kind::SECRET_UNDELETE).await?;
    let audit = caller.draft(kind::SECRET_UNDELETE, Some(path.as_str()));
    match state.store.undelete(caller.tenant(), path.as_str(), audit).await {
        Ok(m) => {
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
    if b.versions.is_empty() || b.versions.iter().any(|v| *v < 1) {
        return Err(ApiError::validation("versions must list one or more version numbers (1 or more)"));
    }
    let mut audit = caller.draft(kind::SECRET_DESTROY, Some(path.as_str()));
    audit.detail = json!({ "versions": b.versions });
    match state.store.destroy_versions(caller.tenant(), path.as_str(), &b.versions, audit).await {
        Ok(_) => {
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(path.as_str()));
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_DESTROY, &path, e).await),
    }
}
