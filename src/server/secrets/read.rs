//! The reading handlers: read (the one response with a value), list (paged, limited to
//! what the caller may see) and versions (each version and its state).

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{audit_failure, authorize, external, metadata};
use crate::api::secrets::{SecretList, SecretRead, SecretVersions, VersionInfo};
use crate::crypto::Binding;
use crate::domain::audit::kind;
use crate::domain::path::validate_namespace;
use crate::domain::time::{now_ms, to_rfc3339};
use crate::domain::{PathGlob, Scope, SecretAction, SecretPath, SecretValue};
use crate::server::AppState;
use crate::server::auth::{Authed, Caller};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{PathParam, QueryParams};
use crate::store::{ListFilter, SecretMeta, VersionRow, secret_mode};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[schemars(range(min = 1))]
    version: Option<i64>,
    /// One string field of a structured (JSON object) value.
    field: Option<String>,
}

/// Why a secret or version cannot be read now, if it cannot.
fn unreadable(meta: &SecretMeta, row: Option<&VersionRow>, now: i64) -> Option<&'static str> {
    if meta.deleted_at.is_some() {
        return Some("secret is deleted");
    }
    if meta.expires_at.is_some_and(|t| t <= now) {
        return Some("secret has expired");
    }
    if meta.not_before.is_some_and(|t| t > now) {
        return Some("secret is not valid yet");
    }
    let Some(row) = row else { return Some("no such version") };
    if row.sealed.is_none() && row.external_ref.is_none() {
        return Some("this version was destroyed");
    }
    if row.version != meta.current_version && row.expires_at.is_some_and(|t| t <= now) {
        return Some("this version was rotated out and its grace period is over");
    }
    None
}

/// How far the stored `accessed_at` of a secret may lag behind its latest read.
const ACCESSED_AT_PRECISION_MS: i64 = 60_000;

pub async fn read(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    QueryParams(q): QueryParams<ReadQuery>,
) -> ApiResult<Json<SecretRead>> {
    authorize(&state, &caller, SecretAction::Read, &path, kind::SECRET_READ).await?;
    let now = now_ms();
    let not_found = |why: &str| ApiError::not_found(format!("secret '{path}' is not readable: {why}"));
    let Some((mut meta, row)) = state.store.secret_for_read(caller.tenant(), path.as_str(), q.version).await? else {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_READ, Some(path.as_str())), ErrorCode::NotFound)
            .await?;
        return Err(not_found("no such secret"));
    };
    let version = q.version.unwrap_or(meta.current_version);
    if meta.status != secret_mode::ACTIVE && meta.deleted_at.is_none() {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_READ, Some(path.as_str())), ErrorCode::NotFound)
            .await?;
        let mut e = not_found(&format!("secret is {}", meta.status));
        e.extra.insert("reason".into(), meta.status.clone().into());
        return Err(e);
    }
    if let Some(why) = unreadable(&meta, row.as_ref(), now) {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_READ, Some(path.as_str())), ErrorCode::NotFound)
            .await?;
        return Err(not_found(why));
    }
    let row = row.expect("checked readable");
    let mut audit = caller.draft(kind::SECRET_READ, Some(path.as_str()));
    let mut value = match (&row.sealed, &row.external_ref) {
        (Some(sealed), _) => {
            let binding = Binding { tenant: caller.tenant(), path: path.as_str(), version };
            let plaintext = state.keys.open(&binding, sealed).map_err(|e| ApiError::internal(&e))?;
            audit.detail = json!({ "version": version });
            SecretValue::from_bytes(plaintext.to_vec()).map_err(|e| ApiError::internal(&e))?
        }
        (None, Some(external_ref)) => {
            let resolved = external::resolve(
                &state,
                caller.tenant(),
                meta.provider_config_id.as_deref(),
                external_ref,
                row.provider_version_ref.as_deref(),
            )
            .await;
            match resolved {
                Ok(res) => {
                    audit.detail = external::audit_detail(version, &res);
                    res.value
                }
                Err(e) => {
                    let mut failed = caller.draft(kind::SECRET_READ, Some(path.as_str()));
                    failed.success = false;
                    failed.detail = json!({
                        "error": e.code.as_str(), "version": version,
                        "provider": external::provider_of(Some(external_ref)),
                        "provider_config_id": meta.provider_config_id,
                    });
                    state.store.record(caller.tenant(), failed, None).await?;
                    return Err(e);
                }
            }
        }
        (None, None) => return Err(not_found("this version was destroyed")),
    };
    if let Some(name) = &q.field {
        value = super::structured::field_of(&value, path.as_str(), name)?;
        audit.detail["field"] = json!(name);
    }
    // `accessed_at` is kept to the minute, so that a secret read over and over does not
    // rewrite its row with every read (the audit trail has each one).
    let stale = meta.accessed_at.is_none_or(|at| now - at >= ACCESSED_AT_PRECISION_MS);
    let read_at = audit.timestamp_ms; // what the store records as `accessed_at`
    state.store.record(caller.tenant(), audit, stale.then_some(meta.id.as_str())).await?;
    if stale {
        meta.accessed_at = Some(read_at);
    }
    let mut view = metadata(&meta);
    view.version = version;
    Ok(Json(SecretRead::new(view, value)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    namespace: Option<String>,
    tag: Option<String>,
    status: Option<String>,
    #[schemars(range(min = 1, max = 100))]
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    after: String,
}

pub(super) fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Cursor { after: after.to_owned() }).unwrap_or_default())
}

pub(super) fn decode_cursor(s: &str) -> ApiResult<String> {
    let bad = || ApiError::invalid("bad cursor; pass back the next_cursor of a previous page unchanged");
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    SecretPath::parse(&c.after).map_err(|_| bad())?;
    Ok(c.after)
}

fn list_filter(q: &ListQuery) -> ApiResult<ListFilter> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 100, not {limit}")));
    }
    if let Some(ns) = &q.namespace {
        validate_namespace(ns.trim_end_matches('/')).map_err(|e| ApiError::validation(format!("namespace: {e}")))?;
    }
    let tag = q.tag.as_deref().map(|t| match t.split_once(['=', ':']) {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (t.to_owned(), None),
    });
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if let Some(status) = &q.status
        && !secret_mode::STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::validation(format!("status must be one of {}", secret_mode::STATUSES.join(", "))));
    }
    Ok(ListFilter { namespace: q.namespace.clone(), tag, status: q.status.clone(), external_ref: None, after, limit })
}

pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<SecretList>> {
    let mut filter = list_filter(&q)?;
    let sees_all =
        caller.scopes.covers(&Scope::Secrets { action: SecretAction::ReadMetadata, glob: PathGlob::any_path() });
    let (items, total, more) = if sees_all {
        let total = state.store.count_secrets(caller.tenant(), &filter).await?;
        let mut page = state
            .store
            .list_secrets(caller.tenant(), &ListFilter { limit: filter.limit + 1, ..filter.clone() })
            .await?;
        let more = page.len() as i64 > filter.limit;
        page.truncate(filter.limit as usize);
        (page, total, more)
    } else {
        list_visible(&state, &caller, &mut filter).await?
    };
    let next_cursor = more.then(|| items.last().map(|m| encode_cursor(&m.path))).flatten();
    let mut audit = caller.draft(kind::SECRET_LIST, q.namespace.as_deref());
    audit.detail = json!({ "count": items.len() });
    state.store.record(caller.tenant(), audit, None).await?;
    Ok(Json(SecretList { items: items.iter().map(metadata).collect(), total, next_cursor }))
}

/// A caller limited to some paths sees only those, in pages of the requested size.
async fn list_visible(
    state: &AppState,
    caller: &Caller,
    filter: &mut ListFilter,
) -> ApiResult<(Vec<SecretMeta>, i64, bool)> {
    let visible = |m: &SecretMeta| SecretPath::parse(&m.path).is_ok_and(|p| caller.can(SecretAction::ReadMetadata, &p));
    let scan = ListFilter { after: None, limit: SCAN_ROWS, ..filter.clone() };
    let keep = |m: &SecretMeta| if visible(m) { Scanned::Keep } else { Scanned::Skip };
    scan_page(state, caller.tenant(), scan, filter.after.as_deref(), filter.limit as usize, keep).await
}

/// Rows read from the store at a time while scanning for what a caller may see.
pub(super) const SCAN_ROWS: i64 = 500;

/// What a scan does with a secret it reads.
pub(super) enum Scanned {
    Keep,
    Skip,
    /// Past the range asked for: the scan ends.
    Stop,
}

/// Reads the store from `scan` on, in `scan.limit` rows at a time, and keeps what `keep`
/// says: one page of at most `limit` kept secrets past the cursor `after`, how many were
/// kept in all, and whether more follow the page.
pub(super) async fn scan_page(
    state: &AppState,
    tenant: &str,
    mut scan: ListFilter,
    after: Option<&str>,
    limit: usize,
    keep: impl Fn(&SecretMeta) -> Scanned,
) -> ApiResult<(Vec<SecretMeta>, i64, bool)> {
    let (mut items, mut total, mut more) = (Vec::new(), 0i64, false);
    'scan: loop {
        let chunk = state.store.list_secrets(tenant, &scan).await?;
        for m in &chunk {
            match keep(m) {
                Scanned::Keep => {}
                Scanned::Skip => continue,
                Scanned::Stop => break 'scan,
            }
            total += 1;
            let past_cursor = after.is_none_or(|a| m.path.as_str() > a);
            if past_cursor && items.len() < limit {
                items.push(m.clone());
            } else if past_cursor {
                more = true;
            }
        }
        match chunk.last() {
            Some(last) if chunk.len() as i64 == scan.limit => scan.after = Some(last.path.clone()),
            _ => break,
        }
    }
    Ok((items, total, more))
}

fn version_state(meta: &SecretMeta, v: &VersionRow, now: i64) -> &'static str {
    if v.sealed.is_none() && v.external_ref.is_none() {
        "destroyed"
    } else if meta.deleted_at.is_some() {
        "deleted"
    } else if v.version == meta.current_version {
        "current"
    } else if v.expires_at.is_some_and(|t| t > now) {
        "grace"
    } else if v.expires_at.is_some() {
        "expired"
    } else {
        "previous"
    }
}

pub async fn versions(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
) -> ApiResult<Json<SecretVersions>> {
    authorize(&state, &caller, SecretAction::ReadMetadata, &path, kind::SECRET_READ).await?;
    let meta = state
        .store
        .secret_meta(caller.tenant(), path.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no secret at '{path}'")))?;
    let now = now_ms();
    let rows = state.store.list_versions(&meta.id).await?;
    let versions = rows
        .iter()
        .map(|v| VersionInfo {
            version: v.version,
            state: version_state(&meta, v, now).to_owned(),
            created_at: to_rfc3339(v.created_at),
            expires_at: v.expires_at.map(to_rfc3339),
        })
        .collect();
    Ok(Json(SecretVersions { path: meta.path, versions }))
}
