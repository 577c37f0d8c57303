//! `GET /v1/secrets/search?q=&prefix=&limit=&cursor=`: metadata of the secrets whose path,
//! description, tags (keys and values) or owner hold `q` (any letter case), under `prefix`,
//! limited to what the caller may see (`read_metadata`); never a value.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::metadata;
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

#[derive(Serialize, Deserialize)]
struct Cursor {
    after: String,
}

const MAX_TERM: usize = 256;
/// Rows read from the store at a time while scanning.
const SCAN: i64 = 500;

fn decode_cursor(s: &str) -> ApiResult<String> {
    let bad = || ApiError::invalid("bad cursor; pass back the next_cursor of a previous page unchanged");
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    SecretPath::parse(&c.after).map_err(|_| bad())?;
    Ok(c.after)
}

fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Cursor { after: after.to_owned() }).unwrap_or_default())
}

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
    let mut scan = ListFilter { limit: SCAN, ..ListFilter::default() };
    // Paths come in order: the scan starts at the prefix and ends past it.
    if !prefix.is_empty() {
        scan.after = Some(prefix.clone()).filter(|p| !p.is_empty()).map(|p| {
            let mut before = p;
            before.pop();
            before
        });
    }
    let (mut items, mut total, mut more) = (Vec::new(), 0i64, false);
    'scan: loop {
        let chunk = state.store.list_secrets(caller.tenant(), &scan).await?;
        for m in &chunk {
            if !m.path.starts_with(&prefix) {
                if m.path.as_str() > prefix.as_str() {
                    break 'scan;
                }
                continue;
            }
            if !visible(m) || !matches(m, &term) {
                continue;
            }
            total += 1;
            let past_cursor = after.as_ref().is_none_or(|a| m.path.as_str() > a.as_str());
            if past_cursor && (items.len() as i64) < limit {
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
    let next_cursor = more.then(|| items.last().map(|m| encode_cursor(&m.path))).flatten();
    let mut audit = caller.draft(kind::SECRET_SEARCH, None);
    audit.detail = json!({ "count": items.len() });
    state.store.record(caller.tenant(), audit, None).await?;
    Ok(Json(SecretList { items: items.iter().map(metadata).collect(), total, next_cursor }))
}
