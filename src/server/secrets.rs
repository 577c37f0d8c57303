//! `/v1/secrets…`: create, read, list, update, patch, rotate, versions, delete, undelete
//! and destroy. Each handler checks the caller's scope for the path first, records a
//! failed attempt in the audit trail, and lets the store write the change and its audit
//! record together.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authed, Caller, new_id};
use super::changes::Change;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{JsonBody, PathParam, QueryParams};
use crate::crypto::Binding;
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::path::validate_namespace;
use crate::domain::time::{now_ms, parse_rfc3339, serialize_ms, serialize_opt_ms};
use crate::domain::value::{MAX_VALUE_BYTES, serialize_exposed};
use crate::domain::{PathGlob, Scope, SecretAction, SecretPath, SecretValue, Tier};
use crate::store::{ListFilter, MetaChange, NewVersion, SecretMeta, StoreError, VersionRow};

/// Metadata as the API shows it (never with a value).
#[derive(Serialize)]
struct MetaView<'a> {
    path: &'a str,
    version: i64,
    tier: &'a str,
    description: &'a Option<String>,
    tags: &'a BTreeMap<String, String>,
    allowed_hosts: &'a [String],
    owner: &'a Option<String>,
    #[serde(serialize_with = "serialize_ms")]
    created_at: i64,
    #[serde(serialize_with = "serialize_ms")]
    updated_at: i64,
    #[serde(serialize_with = "serialize_opt_ms")]
    accessed_at: Option<i64>,
    #[serde(serialize_with = "serialize_opt_ms")]
    expires_at: Option<i64>,
    #[serde(serialize_with = "serialize_opt_ms")]
    not_before: Option<i64>,
}

impl<'a> From<&'a SecretMeta> for MetaView<'a> {
    fn from(m: &'a SecretMeta) -> Self {
        MetaView {
            path: &m.path,
            version: m.current_version,
            tier: &m.tier,
            description: &m.description,
            tags: &m.tags,
            allowed_hosts: &m.allowed_hosts,
            owner: &m.owner,
            created_at: m.created_at,
            updated_at: m.updated_at,
            accessed_at: m.accessed_at,
            expires_at: m.expires_at,
            not_before: m.not_before,
        }
    }
}

/// The one response that carries a value, on purpose.
#[derive(Serialize)]
struct ValueView<'a> {
    #[serde(flatten)]
    meta: MetaView<'a>,
    #[serde(serialize_with = "serialize_exposed")]
    value: &'a SecretValue,
}

fn scope_name(action: SecretAction, path: &SecretPath) -> String {
    format!("secrets:{}:{}", action.as_str(), path)
}

/// Checks the caller's scope; a refusal is audited before it is returned.
async fn authorize(
    state: &AppState,
    caller: &Caller,
    action: SecretAction,
    path: &SecretPath,
    kind: &'static str,
) -> ApiResult<()> {
    if caller.can(action, path) {
        return Ok(());
    }
    let required = scope_name(action, path);
    audit_failure(state, caller, caller.draft(kind, Some(path.as_str())), ErrorCode::PermissionDenied).await?;
    Err(ApiError::permission_denied(Some(path.as_str()), &required))
}

fn check_value(value: &SecretValue, field: &str) -> ApiResult<()> {
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

fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
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

/// Turns a store failure into the API error and audits it as a failed attempt.
async fn fail(state: &AppState, caller: &Caller, kind: &'static str, path: &SecretPath, e: StoreError) -> ApiError {
    let err = ApiError::from(e);
    let draft = caller.draft(kind, Some(path.as_str()));
    match audit_failure(state, caller, draft, err.code).await {
        Ok(()) => err,
        Err(audit_err) => audit_err,
    }
}

/// Records an unsuccessful operation; if even that cannot be written the request fails.
pub(super) async fn audit_failure(
    state: &AppState,
    caller: &Caller,
    mut draft: AuditDraft,
    code: ErrorCode,
) -> ApiResult<()> {
    draft.success = false;
    draft.detail = json!({ "error": code.as_str() });
    state.store.record(caller.tenant(), draft, None).await.map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    path: SecretPath,
    value: SecretValue,
    tier: Option<Tier>,
    description: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    allowed_hosts: Option<Vec<String>>,
    owner: Option<String>,
    expires_at: Option<String>,
    not_before: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    authorize(&state, &caller, SecretAction::Write, &b.path, kind::SECRET_CREATE).await?;
    check_value(&b.value, "value")?;
    let tags = b.tags.unwrap_or_default();
    check_tags(&tags)?;
    let allowed_hosts = b.allowed_hosts.unwrap_or_default();
    check_hosts(&allowed_hosts)?;
    let now = now_ms();
    let meta = SecretMeta {
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
    let sealed = seal_for(&state, caller.tenant(), &b.path, &b.value)(1).map_err(|e| ApiError::internal(&e))?;
    let mut audit = caller.draft(kind::SECRET_CREATE, Some(b.path.as_str()));
    audit.detail = json!({ "version": 1 });
    if let Err(e) = state.store.create_secret(caller.tenant(), &meta, &sealed, audit).await {
        return Err(fail(&state, &caller, kind::SECRET_CREATE, &b.path, e).await);
    }
    let body = json!({ "path": meta.path, "version": 1, "tier": meta.tier, "created_at": crate::domain::time::to_rfc3339(now) });
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
pub struct ReadQuery {
    version: Option<i64>,
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
    if row.sealed.is_none() {
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
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, SecretAction::Read, &path, kind::SECRET_READ).await?;
    let now = now_ms();
    let not_found = |why: &str| ApiError::not_found(format!("secret '{path}' is not readable: {why}"));
    let Some((mut meta, row)) = state.store.secret_for_read(caller.tenant(), path.as_str(), q.version).await? else {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_READ, Some(path.as_str())), ErrorCode::NotFound)
            .await?;
        return Err(not_found("no such secret"));
    };
    let version = q.version.unwrap_or(meta.current_version);
    if let Some(why) = unreadable(&meta, row.as_ref(), now) {
        audit_failure(&state, &caller, caller.draft(kind::SECRET_READ, Some(path.as_str())), ErrorCode::NotFound)
            .await?;
        return Err(not_found(why));
    }
    let sealed = row.and_then(|r| r.sealed).expect("checked readable");
    let binding = Binding { tenant: caller.tenant(), path: path.as_str(), version };
    let plaintext = state.keys.open(&binding, &sealed).map_err(|e| ApiError::internal(&e))?;
    let value = SecretValue::from_bytes(plaintext.to_vec()).map_err(|e| ApiError::internal(&e))?;
    let mut audit = caller.draft(kind::SECRET_READ, Some(path.as_str()));
    audit.detail = json!({ "version": version });
    // `accessed_at` is kept to the minute, so that a secret read over and over does not
    // rewrite its row with every read (the audit trail has each one).
    let stale = meta.accessed_at.is_none_or(|at| now - at >= ACCESSED_AT_PRECISION_MS);
    let read_at = audit.timestamp_ms; // what the store records as `accessed_at`
    state.store.record(caller.tenant(), audit, stale.then_some(meta.id.as_str())).await?;
    if stale {
        meta.accessed_at = Some(read_at);
    }
    let mut view = MetaView::from(&meta);
    view.version = version;
    Ok(Json(serde_json::to_value(ValueView { meta: view, value: &value }).map_err(|e| ApiError::internal(&e))?))
}

#[derive(Deserialize)]
pub struct ListQuery {
    namespace: Option<String>,
    tag: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    after: String,
}

fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Cursor { after: after.to_owned() }).unwrap_or_default())
}

fn decode_cursor(s: &str) -> ApiResult<String> {
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
    Ok(ListFilter { namespace: q.namespace.clone(), tag, after, limit })
}

pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
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
    let items: Vec<MetaView> = items.iter().map(MetaView::from).collect();
    Ok(Json(json!({ "items": items, "total": total, "next_cursor": next_cursor })))
}

/// A caller limited to some paths sees only those, in pages of the requested size.
async fn list_visible(
    state: &AppState,
    caller: &Caller,
    filter: &mut ListFilter,
) -> ApiResult<(Vec<SecretMeta>, i64, bool)> {
    let visible = |m: &SecretMeta| SecretPath::parse(&m.path).is_ok_and(|p| caller.can(SecretAction::ReadMetadata, &p));
    let want = filter.limit as usize;
    let mut scan = ListFilter { after: None, limit: 500, ..filter.clone() };
    let (mut items, mut total, mut more) = (Vec::new(), 0i64, false);
    loop {
        let chunk = state.store.list_secrets(caller.tenant(), &scan).await?;
        for m in chunk.iter().filter(|m| visible(m)) {
            total += 1;
            let past_cursor = filter.after.as_ref().is_none_or(|a| m.path.as_str() > a.as_str());
            if past_cursor && items.len() < want {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    value: SecretValue,
    cas: Option<i64>,
    tier: Option<Tier>,
    description: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<UpdateBody>,
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, SecretAction::Write, &path, kind::SECRET_UPDATE).await?;
    check_value(&b.value, "value")?;
    if let Some(tags) = &b.tags {
        check_tags(tags)?;
    }
    let meta = MetaChange {
        tier: b.tier.map(|t| t.as_str().to_owned()),
        description: b.description.map(Some),
        tags: b.tags,
        ..MetaChange::default()
    };
    let seal = seal_for(&state, caller.tenant(), &path, &b.value);
    let change = NewVersion { cas: b.cas, seal: &seal, meta, previous_expires_at: None };
    let audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
    match state.store.write_version(caller.tenant(), path.as_str(), change, audit).await {
        Ok((m, _)) => {
            state
                .changes
                .publish(Change::new(caller.tenant(), "secret.updated").path(&m.path).version(m.current_version));
            let updated_at = crate::domain::time::to_rfc3339(m.updated_at);
            Ok(Json(json!({ "path": m.path, "version": m.current_version, "updated_at": updated_at })))
        }
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UPDATE, &path, e).await),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    tier: Option<Tier>,
    #[serde(default, deserialize_with = "some")]
    description: Option<Option<String>>,
    tags: Option<BTreeMap<String, String>>,
    allowed_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    owner: Option<Option<String>>,
}

/// Tells an explicit `null` (clear the field) from an absent field (leave it).
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<PatchBody>,
) -> ApiResult<Json<Value>> {
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
    };
    let mut audit = caller.draft(kind::SECRET_UPDATE, Some(path.as_str()));
    audit.detail = json!({ "metadata_only": true });
    match state.store.patch_secret(caller.tenant(), path.as_str(), &change, audit).await {
        Ok(m) => Ok(Json({
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(&m.path));
            serde_json::to_value(MetaView::from(&m)).map_err(|e| ApiError::internal(&e))?
        })),
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UPDATE, &path, e).await),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    new_value: SecretValue,
    #[serde(default)]
    grace_period_seconds: u32,
}

pub async fn rotate(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<RotateBody>,
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, SecretAction::Rotate, &path, kind::SECRET_ROTATE).await?;
    check_value(&b.new_value, "new_value")?;
    let old_expires_at = now_ms() + i64::from(b.grace_period_seconds) * 1000;
    let seal = seal_for(&state, caller.tenant(), &path, &b.new_value);
    let change =
        NewVersion { cas: None, seal: &seal, meta: MetaChange::default(), previous_expires_at: Some(old_expires_at) };
    let mut audit = caller.draft(kind::SECRET_ROTATE, Some(path.as_str()));
    audit.detail = json!({ "grace_period_seconds": b.grace_period_seconds });
    match state.store.write_version(caller.tenant(), path.as_str(), change, audit).await {
        Ok((m, old)) => Ok(Json({
            state
                .changes
                .publish(Change::new(caller.tenant(), "secret.rotated").path(&m.path).version(m.current_version));
            json!({
            "path": m.path,
            "old_version": old,
            "new_version": m.current_version,
            "old_expires_at": crate::domain::time::to_rfc3339(old_expires_at),
            })
        })),
        Err(e) => Err(fail(&state, &caller, kind::SECRET_ROTATE, &path, e).await),
    }
}

fn version_state(meta: &SecretMeta, v: &VersionRow, now: i64) -> &'static str {
    if v.sealed.is_none() {
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
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, SecretAction::ReadMetadata, &path, kind::SECRET_READ).await?;
    let meta = state
        .store
        .secret_meta(caller.tenant(), path.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no secret at '{path}'")))?;
    let now = now_ms();
    let rows = state.store.list_versions(&meta.id).await?;
    let versions: Vec<Value> = rows
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "state": version_state(&meta, v, now),
                "created_at": crate::domain::time::to_rfc3339(v.created_at),
                "expires_at": v.expires_at.map(crate::domain::time::to_rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "path": meta.path, "versions": versions })))
}

#[derive(Deserialize)]
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
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, SecretAction::Undelete, &path, kind::SECRET_UNDELETE).await?;
    let audit = caller.draft(kind::SECRET_UNDELETE, Some(path.as_str()));
    match state.store.undelete(caller.tenant(), path.as_str(), audit).await {
        Ok(m) => Ok(Json({
            state.changes.publish(Change::new(caller.tenant(), "secret.updated").path(&m.path));
            serde_json::to_value(MetaView::from(&m)).map_err(|e| ApiError::internal(&e))?
        })),
        Err(e) => Err(fail(&state, &caller, kind::SECRET_UNDELETE, &path, e).await),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyBody {
    versions: Vec<i64>,
}

pub async fn destroy(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    JsonBody(b): JsonBody<DestroyBody>,
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
