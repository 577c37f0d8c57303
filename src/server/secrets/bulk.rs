//! `POST /v1/secrets/bulk`: up to 100 operations (set, delete, undelete, destroy, rotate),
//! each checked against the caller's scope for its own path and action. `atomic: true` runs
//! them in one transaction: one failure and nothing changes, and no audit record is written
//! for the others. Otherwise each is applied on its own and the answer says which failed.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::lifecycle::check_versions;
use super::upsert::{check_not_reserved, stamp_creator};
use super::write::{check_tags, check_value};
use super::{audit_failure, scope_name};
use crate::api::secrets::{BulkOpError, BulkOpResult, BulkOperation, BulkRequest, BulkResult};
use crate::crypto::Binding;
use crate::domain::audit::kind;
use crate::domain::time::now_ms;
use crate::domain::{SecretAction, SecretPath, SecretValue, Tier};
use crate::server::AppState;
use crate::server::auth::{Authed, Caller, new_id};
use crate::server::changes::Change;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::JsonBody;
use crate::store::{MetaChange, OpRequest, OwnedSealFn, SecretMeta, SecretOp};

pub const MAX_OPERATIONS: usize = 100;

fn path_of(op: &BulkOperation) -> &SecretPath {
    match op {
        BulkOperation::Set { path, .. }
        | BulkOperation::Delete { path }
        | BulkOperation::Undelete { path, .. }
        | BulkOperation::Destroy { path, .. }
        | BulkOperation::Rotate { path, .. } => path,
    }
}

fn describe(op: &BulkOperation) -> (&'static str, SecretAction, &'static str) {
    match op {
        BulkOperation::Set { .. } => ("set", SecretAction::Write, kind::SECRET_UPDATE),
        BulkOperation::Delete { .. } => ("delete", SecretAction::Delete, kind::SECRET_DELETE),
        BulkOperation::Undelete { .. } => ("undelete", SecretAction::Undelete, kind::SECRET_UNDELETE),
        BulkOperation::Destroy { .. } => ("destroy", SecretAction::Destroy, kind::SECRET_DESTROY),
        BulkOperation::Rotate { .. } => ("rotate", SecretAction::Rotate, kind::SECRET_ROTATE),
    }
}

fn sealer<'a>(state: &'a AppState, tenant: &'a str, path: &'a SecretPath, value: &'a SecretValue) -> OwnedSealFn<'a> {
    Box::new(move |version| {
        state.keys.seal(&Binding { tenant, path: path.as_str(), version }, value.expose().as_bytes())
    })
}

/// The store's operation for `op`, once its scope and content are checked.
fn prepare<'a>(state: &'a AppState, caller: &'a Caller, op: &'a BulkOperation) -> ApiResult<OpRequest<'a>> {
    let (_, action, audit_kind) = describe(op);
    let path = path_of(op);
    if !caller.can(action, path) {
        return Err(ApiError::permission_denied(Some(path.as_str()), &scope_name(action, path)));
    }
    let tenant = caller.tenant();
    let mut audit = caller.draft(audit_kind, Some(path.as_str()));
    audit.detail = json!({ "bulk": true });
    let op = match op {
        BulkOperation::Set { path, value, cas, tier, description, tags } => {
            check_value(value, "value", false)?;
            if let Some(tags) = tags {
                check_tags(tags)?;
            }
            if let Some(c) = cas.filter(|c| *c < 0) {
                return Err(ApiError::validation(format!("cas must be 0 (must not exist) or a version, not {c}")));
            }
            let now = now_ms();
            let created = if cas.is_none_or(|c| c == 0) {
                check_not_reserved(path.as_str())?;
                let mut m = SecretMeta {
                    id: new_id("sec"),
                    path: path.to_string(),
                    current_version: 1,
                    tier: tier.unwrap_or(Tier::Standard).as_str().to_owned(),
                    description: description.clone(),
                    tags: tags.clone().unwrap_or_default(),
                    created_at: now,
                    updated_at: now,
                    ..SecretMeta::default()
                };
                stamp_creator(&mut m, caller);
                Some(Box::new(m))
            } else {
                None
            };
            let change = MetaChange {
                tier: tier.map(|t| t.as_str().to_owned()),
                description: description.clone().map(Some),
                tags: tags.clone(),
                ..MetaChange::default()
            };
            SecretOp::Set { cas: *cas, seal: sealer(state, tenant, path, value), meta: change, create: created }
        }
        BulkOperation::Delete { .. } => SecretOp::Delete { now: now_ms() },
        BulkOperation::Undelete { versions, .. } => {
            if let Some(v) = versions {
                check_versions(v)?;
            }
            SecretOp::Undelete { versions: versions.clone() }
        }
        BulkOperation::Destroy { versions, .. } => {
            check_versions(versions)?;
            audit.detail["versions"] = json!(versions);
            SecretOp::Destroy { versions: versions.clone() }
        }
        BulkOperation::Rotate { path, new_value, grace_period_seconds } => {
            check_value(new_value, "new_value", false)?;
            audit.detail["grace_period_seconds"] = json!(grace_period_seconds);
            SecretOp::Rotate {
                seal: sealer(state, tenant, path, new_value),
                previous_expires_at: now_ms() + i64::from(*grace_period_seconds) * 1000,
            }
        }
    };
    Ok(OpRequest { path: path.to_string(), op, audit })
}

fn failed(index: usize, op: &BulkOperation, e: &ApiError) -> BulkOpResult {
    BulkOpResult {
        index,
        op: describe(op).0.to_owned(),
        path: path_of(op).to_string(),
        status: e.code.status().as_u16(),
        version: None,
        error: Some(BulkOpError { code: e.code.as_str().to_owned(), message: e.message.clone() }),
    }
}

fn not_applied(index: usize, op: &BulkOperation) -> BulkOpResult {
    BulkOpResult {
        index,
        op: describe(op).0.to_owned(),
        path: path_of(op).to_string(),
        status: 424,
        version: None,
        error: Some(BulkOpError {
            code: "not_applied".to_owned(),
            message: "another operation of this atomic request failed; nothing was changed".to_owned(),
        }),
    }
}

pub async fn bulk(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<BulkRequest>,
) -> ApiResult<Json<BulkResult>> {
    let n = b.operations.len();
    if n == 0 || n > MAX_OPERATIONS {
        return Err(ApiError::validation(format!("operations must list 1 to {MAX_OPERATIONS} operations, not {n}")));
    }
    let caller: &Caller = &caller;
    let mut results: Vec<Option<BulkOpResult>> = vec![None; n];
    let mut requests = Vec::with_capacity(n);
    let mut indexes = Vec::with_capacity(n);
    for (i, op) in b.operations.iter().enumerate() {
        match prepare(&state, caller, op) {
            Ok(req) => {
                requests.push(req);
                indexes.push(i);
            }
            Err(e) => {
                audit_failure(&state, caller, caller.draft(describe(op).2, Some(path_of(op).as_str())), e.code).await?;
                results[i] = Some(failed(i, op, &e));
                if b.atomic {
                    let results = (0..n).map(|j| results[j].take().unwrap_or_else(|| not_applied(j, &b.operations[j])));
                    return Ok(Json(BulkResult { atomic: true, applied: false, results: results.collect() }));
                }
            }
        }
    }
    let (outcomes, applied) = state.store.apply_ops(caller.tenant(), requests, b.atomic).await?;
    for (outcome, i) in outcomes.into_iter().zip(indexes) {
        let op = &b.operations[i];
        results[i] = Some(match outcome {
            Some(Ok(_)) if b.atomic && !applied => not_applied(i, op),
            Some(Ok(done)) => {
                let event =
                    if matches!(op, BulkOperation::Delete { .. }) { "secret.deleted" } else { "secret.updated" };
                state.changes.publish(Change::new(caller.tenant(), event).path(&done.meta.path));
                BulkOpResult {
                    index: i,
                    op: describe(op).0.to_owned(),
                    path: path_of(op).to_string(),
                    status: if done.created { 201 } else { 200 },
                    version: Some(done.meta.current_version),
                    error: None,
                }
            }
            Some(Err(e)) => {
                let e = ApiError::from(e);
                audit_failure(&state, caller, caller.draft(describe(op).2, Some(path_of(op).as_str())), e.code).await?;
                failed(i, op, &e)
            }
            None => not_applied(i, op),
        });
    }
    let results = results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| not_applied(i, &b.operations[i])));
    Ok(Json(BulkResult { atomic: b.atomic, applied, results: results.collect() }))
}
