//! Copy and move: `POST /v1/secrets/copy` takes the current value of one secret to another
//! path (re-encrypted under the destination's binding: never the same ciphertext), and
//! `POST /v1/secrets/move` takes a secret with its whole history to another path, leaving
//! nothing at the old one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::lifecycle::one_op;
use super::upsert::{check_not_reserved, stamp_creator};
use super::{audit_failure, authorize, fail, metadata};
use crate::api::secrets::{CopySecret, SecretCopied, SecretMetadata};
use crate::crypto::Binding;
use crate::domain::SecretAction;
use crate::domain::audit::kind;
use crate::domain::time::now_ms;
use crate::server::AppState;
use crate::server::auth::{Authed, new_id};
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::JsonBody;
use crate::store::{MetaChange, OpRequest, SecretMeta, SecretOp};

fn distinct(b: &CopySecret) -> ApiResult<()> {
    check_not_reserved(b.to.as_str())?;
    if b.from == b.to {
        return Err(ApiError::validation("from and to are the same path"));
    }
    Ok(())
}

pub async fn copy(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CopySecret>,
) -> ApiResult<(StatusCode, Json<SecretCopied>)> {
    distinct(&b)?;
    authorize(&state, &caller, SecretAction::Read, &b.from, kind::SECRET_COPY).await?;
    authorize(&state, &caller, SecretAction::Write, &b.to, kind::SECRET_COPY).await?;
    let tenant = caller.tenant();
    let now = now_ms();
    let source = state.store.secret_for_read(tenant, b.from.as_str(), None).await?;
    if source.as_ref().is_some_and(|(m, _)| m.is_external()) {
        return Err(ApiError::validation(format!(
            "'{}' is an external_reference secret: copy its external_ref into a new secret instead",
            b.from
        )));
    }
    let readable = source.filter(|(m, row)| {
        m.deleted_at.is_none()
            && m.expires_at.is_none_or(|t| t > now)
            && m.not_before.is_none_or(|t| t <= now)
            && row.as_ref().is_some_and(|r| r.sealed.is_some())
    });
    let Some((src, row)) = readable else {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_COPY, Some(b.from.as_str())), ErrorCode::NotFound)
            .await?;
        return Err(ApiError::not_found(format!(
            "secret '{}' is not readable (absent, deleted or not valid now)",
            b.from
        )));
    };
    let sealed = row.and_then(|r| r.sealed).expect("checked readable");
    let from_version = src.current_version;
    let binding = Binding { tenant, path: b.from.as_str(), version: from_version };
    let plaintext = state.keys.open(&binding, &sealed).map_err(|e| ApiError::internal(&e))?;
    let mut created = SecretMeta {
        id: new_id("sec"),
        path: b.to.to_string(),
        current_version: 1,
        tier: src.tier.clone(),
        description: src.description.clone(),
        tags: src.tags.clone(),
        allowed_hosts: src.allowed_hosts.clone(),
        created_at: now,
        updated_at: now,
        expires_at: src.expires_at,
        not_before: src.not_before,
        ..SecretMeta::default()
    };
    stamp_creator(&mut created, &caller);
    let change = MetaChange {
        tier: Some(src.tier.clone()),
        description: Some(src.description.clone()),
        tags: Some(src.tags.clone()),
        allowed_hosts: Some(src.allowed_hosts.clone()),
        ..MetaChange::default()
    };
    let (keys, to) = (&state.keys, b.to.as_str());
    let seal = Box::new(move |version| keys.seal(&Binding { tenant, path: to, version }, &plaintext));
    let mut audit = caller.draft(kind::SECRET_COPY, Some(to));
    audit.detail = json!({ "from": b.from.as_str(), "from_version": from_version });
    let cas = if b.overwrite { None } else { Some(0) };
    let op = SecretOp::Set { cas, seal, meta: change, create: Some(Box::new(created)) };
    match one_op(&state, tenant, OpRequest { path: to.to_owned(), op, audit }).await {
        Ok(done) => {
            let version = done.meta.current_version;
            state.changes.publish(Change::new(tenant, "secret.updated").path(to).version(version));
            let status = if done.created { StatusCode::CREATED } else { StatusCode::OK };
            let body = SecretCopied { from: b.from.to_string(), from_version, to: to.to_owned(), version };
            Ok((status, Json(body)))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_COPY, &b.to, e).await),
    }
}

/// Read and delete on the source, write on the destination (and destroy there too with
/// `overwrite`, which purges what was there).
pub async fn r#move(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CopySecret>,
) -> ApiResult<Json<SecretMetadata>> {
    distinct(&b)?;
    authorize(&state, &caller, SecretAction::Read, &b.from, kind::SECRET_MOVE).await?;
    authorize(&state, &caller, SecretAction::Delete, &b.from, kind::SECRET_MOVE).await?;
    authorize(&state, &caller, SecretAction::Write, &b.to, kind::SECRET_MOVE).await?;
    if b.overwrite {
        authorize(&state, &caller, SecretAction::Destroy, &b.to, kind::SECRET_MOVE).await?;
    }
    let tenant = caller.tenant();
    let (keys, from, to) = (&state.keys, b.from.as_str(), b.to.as_str());
    let reseal = move |version, sealed: &crate::crypto::Sealed| {
        let plaintext = keys.open(&Binding { tenant, path: from, version }, sealed)?;
        keys.seal(&Binding { tenant, path: to, version }, &plaintext)
    };
    let mut out = caller.draft(kind::SECRET_MOVE, Some(from));
    out.detail = json!({ "to": to, "overwrite": b.overwrite });
    let mut into = caller.draft(kind::SECRET_MOVE, Some(to));
    into.detail = json!({ "from": from, "overwrite": b.overwrite });
    match state.store.move_secret(tenant, from, to, b.overwrite, &reseal, vec![out, into]).await {
        Ok(m) => {
            state.changes.publish(Change::new(tenant, "secret.deleted").path(from));
            state.changes.publish(Change::new(tenant, "secret.updated").path(to).version(m.current_version));
            Ok(Json(metadata(&m)))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_MOVE, &b.from, e).await),
    }
}
