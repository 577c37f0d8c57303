//! Create or replace: what `PUT /v1/secrets/{path}` checks before it writes (its
//! preconditions, from `cas` or the `If-Match`/`If-None-Match` headers) and the create it
//! makes when the path has no secret; and the stamp every new secret gets (who created it,
//! and its owner unless one was named).

use axum::http::HeaderMap;
use axum::http::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};

use super::Caller;
use crate::server::error::{ApiError, ApiResult};
use crate::store::SecretMeta;

/// What a `PUT` requires of the path before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Replace the secret, or create it if there is none.
    Any,
    /// `cas: 0` or `If-None-Match: *`: only create.
    Absent,
    /// `If-Match: *`: only replace, whatever the version.
    Exists,
    /// `cas: N` or `If-Match: "N"`: only replace version N.
    Version(i64),
}

impl Precondition {
    /// From the body's `cas` and the request's headers; contradicting ones are 400.
    pub(super) fn of(headers: &HeaderMap, cas: Option<i64>) -> ApiResult<Precondition> {
        let header = |name: HeaderName| -> ApiResult<Option<&str>> {
            let mut values = headers.get_all(&name).iter();
            let Some(first) = values.next() else { return Ok(None) };
            if values.next().is_some() {
                return Err(ApiError::invalid(format!("{name} may be sent once")));
            }
            first.to_str().map(|s| Some(s.trim())).map_err(|_| ApiError::invalid(format!("{name} is not ASCII")))
        };
        let from_cas = match cas {
            None => None,
            Some(0) => Some(Precondition::Absent),
            Some(n) if n > 0 => Some(Precondition::Version(n)),
            Some(n) => {
                return Err(ApiError::validation(format!("cas must be 0 (must not exist) or a version, not {n}")));
            }
        };
        let from_none_match = match header(IF_NONE_MATCH)? {
            None => None,
            Some("*") => Some(Precondition::Absent),
            Some(_) => return Err(ApiError::invalid("If-None-Match takes only '*' (create only)")),
        };
        let from_match = match header(IF_MATCH)? {
            None => None,
            Some("*") => Some(Precondition::Exists),
            Some(tag) => {
                let bare = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
                match bare.parse::<i64>() {
                    Ok(n) if n > 0 => Some(Precondition::Version(n)),
                    _ => {
                        return Err(ApiError::invalid(
                            "If-Match takes '*' or a version number (\"3\"), the ETag of a secret's answers",
                        ));
                    }
                }
            }
        };
        let mut found = [from_cas, from_none_match, from_match].into_iter().flatten();
        let first = found.next().unwrap_or(Precondition::Any);
        if found.any(|other| other != first) {
            return Err(ApiError::invalid("cas, If-Match and If-None-Match disagree; send one of them"));
        }
        Ok(first)
    }

    /// The version a replace must find, if any.
    pub(super) fn cas(self) -> Option<i64> {
        match self {
            Precondition::Version(n) => Some(n),
            _ => None,
        }
    }

    /// Whether a path with no secret may be created.
    pub(super) fn may_create(self) -> bool {
        matches!(self, Precondition::Any | Precondition::Absent)
    }
}

/// One-segment paths the API's own endpoints take (`/v1/secrets/copy`, …): a secret there
/// could not be reached by its URL, so none is made.
const RESERVED: [&str; 4] = ["bulk", "copy", "move", "search"];

pub(super) fn check_not_reserved(path: &str) -> ApiResult<()> {
    if RESERVED.contains(&path) {
        return Err(ApiError::validation(format!(
            "'{path}' is the name of an endpoint (/v1/secrets/{path}); put the secret under a namespace (app/{path})"
        )));
    }
    Ok(())
}

/// Stamps a new secret with its creator (the writing credential's id and description), and
/// makes the writer its owner unless the request named one.
pub(super) fn stamp_creator(meta: &mut SecretMeta, caller: &Caller) {
    meta.created_by_id = Some(caller.credential.id.clone());
    meta.created_by_description = Some(caller.credential.name.clone());
    if meta.owner.is_none() {
        meta.owner = Some(caller.credential.name.clone());
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn pre(headers: &[(&'static str, &'static str)], cas: Option<i64>) -> ApiResult<Precondition> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_static(v));
        }
        Precondition::of(&map, cas)
    }

    #[test]
    fn preconditions_come_from_cas_or_the_headers() {
        assert_eq!(pre(&[], None).unwrap(), Precondition::Any);
        assert_eq!(pre(&[], Some(0)).unwrap(), Precondition::Absent);
        assert_eq!(pre(&[], Some(3)).unwrap(), Precondition::Version(3));
        assert_eq!(pre(&[("if-none-match", "*")], None).unwrap(), Precondition::Absent);
        assert_eq!(pre(&[("if-match", "\"4\"")], None).unwrap(), Precondition::Version(4));
        assert_eq!(pre(&[("if-match", "W/\"4\"")], Some(4)).unwrap(), Precondition::Version(4));
        assert_eq!(pre(&[("if-match", "*")], None).unwrap(), Precondition::Exists);
        assert!(pre(&[("if-match", "\"4\"")], Some(3)).is_err());
        assert!(pre(&[("if-none-match", "*")], Some(2)).is_err());
        assert!(pre(&[("if-none-match", "\"2\"")], None).is_err());
        assert!(pre(&[("if-match", "abc")], None).is_err());
        assert!(pre(&[], Some(-1)).is_err());
    }
}
