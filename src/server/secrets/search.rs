//! `GET /v1/secrets/search?q=&prefix=&limit=&cursor=`: metadata of the secrets whose path,
//! description, tags (keys and values) or owner hold `q` (any letter case), under `prefix`,
//! limited to what the caller may see (`read_metadata`); never a value.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;

use super::metadata;
use super::read::{SCAN_ROWS, Scanned, decode_cursor, encode_cursor, scan_page};
use crate::api::secrets::SecretList;
use crate::domain::audit::kind;
use crate::domain::{SecretAction, SecretPath};
use crate::server::AppState;
use crate::server::auth::Authed;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::QueryParams;
use crate::store::{ListFilter, SecretMeta};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    prefix: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const MAX_TERM: usize = 256;

/// Whether `m` holds `term` (already lower case) in its path, description, tags or owner.
fn matches(m: &SecretMeta, term: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(term);
    term.is_empty()
        || has(&m.path)
        || m.description.as_deref().is_some_and(has)
        || m.owner.as_deref().is_some_and(has)
        || m.tags.iter().any(|(k, v)| has(k) || has(v))
}

pub async fn search(
    State(state): State<AppState>,
    caller: Authed,
    QueryParams(q): QueryParams<SearchQuery>,
) -> ApiResult<Json<SecretList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 100, not {limit}")));
    }
    let term = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    if term.len() > MAX_TERM {
        return Err(ApiError::invalid(format!("q is at most {MAX_TERM} bytes")));
    }
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > 512 {
        return Err(ApiError::invalid("prefix is at most 512 bytes"));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let visible = |m: &SecretMeta| SecretPath::parse(&m.path).is_ok_and(|p| caller.can(SecretAction::ReadMetadata, &p));
    let mut scan = ListFilter { limit: SCAN_ROWS, ..ListFilter::default() };
    // Paths come in order: the scan starts at the prefix and ends past it.
    if !prefix.is_empty() {
        scan.after = Some(prefix.clone()).filter(|p| !p.is_empty()).map(|p| {
            let mut before = p;
            before.pop();
            before
        });
    }
    let keep = |m: &SecretMeta| {
        if !m.path.starts_with(&prefix) {
            return if m.path.as_str() > prefix.as_str() { Scanned::Stop } else { Scanned::Skip };
        }
        if visible(m) && matches(m, &term) { Scanned::Keep } else { Scanned::Skip }
    };
    let (items, total, more) = scan_page(&state, caller.tenant(), scan, after.as_deref(), limit as usize, keep).await?;
    let next_cursor = more.then(|| items.last().map(|m| encode_cursor(&m.path))).flatten();
    let mut audit = caller.draft(kind::SECRET_SEARCH, None);
    audit.detail = json!({ "count": items.len() });
    state.store.record(caller.tenant(), audit, None).await?;
    Ok(Json(SecretList { items: items.iter().map(metadata).collect(), total, next_cursor }))
}
