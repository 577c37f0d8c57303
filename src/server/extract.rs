//! Request extractors that turn malformed input into the API's own errors (axum's default
//! rejections are plain text): JSON bodies, query strings, and the secret path that
//! travels percent-encoded in one URL segment.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::SecretPath;

/// Largest request body accepted: room for a 64 KiB value and its metadata.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON body. Any content type is accepted (curl's `-d` says form-urlencoded).
/// Syntax errors are `invalid_request`; well-formed JSON of the wrong shape (missing or
/// unknown fields, wrong types) is `validation_error`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::invalid(format!("request body is unreadable or larger than {MAX_BODY_BYTES} bytes"))
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("request body is empty; send a JSON object"));
    }
    // serde would read a struct from an array of its fields in order (`[null, null]`): every
    // body of this API is an object, named by its fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) if e.is_syntax() || e.is_eof() => ApiError::invalid(format!("malformed JSON: {e}")),
            _ => ApiError::validation("the request body must be a JSON object"),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("malformed JSON: {inner}"))
        } else {
            ApiError::validation(describe_shape_error(&field, &inner.to_string()))
        }
    })
}

/// serde's messages quote the offending input ("invalid type: integer `123`"), which may
/// be a secret value; keep only what was expected and where.
fn describe_shape_error(field: &str, message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let at = if field.is_empty() || field == "." { String::new() } else { format!(" in field '{field}'") };
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        let expected = message.split(", expected ").nth(1).unwrap_or("a different value");
        return format!("invalid value{at}: expected {expected}");
    }
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        return message.replace('`', "'");
    }
    // Validation errors of our own types (paths, scopes) name the bad input but never a value.
    format!("invalid request body{at}: {message}")
}

/// A query string. Its type denies unknown fields: a parameter the endpoint does not take is
/// `invalid_request` naming it (a filter that is silently not applied would return more than
/// the caller asked for), as is a bad value.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query).map(QueryParams).map_err(|e| {
            let e = e.to_string();
            match e.strip_prefix("unknown field ") {
                Some(rest) => ApiError::invalid(format!("unknown query parameter {}", rest.replace('`', "'"))),
                None => ApiError::invalid(format!("bad query string: {e}")),
            }
        })
    }
}

/// Middleware for endpoints that take no query parameters: a query string is refused,
/// naming its first parameter, for the same reason as in [`QueryParams`].
pub async fn no_query(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match req.uri().query().filter(|q| !q.is_empty()) {
        None => next.run(req).await,
        Some(query) => {
            let first = query.split('&').next().unwrap_or(query);
            let name: String = first.split('=').next().unwrap_or(first).chars().take(64).collect();
            ApiError::invalid(format!("unknown query parameter '{name}': this endpoint takes none")).into_response()
        }
    }
}

/// The secret path of `/v1/secrets/{path}…`, decoded strictly from the third URL segment.
pub struct PathParam(pub SecretPath);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Inside the nested `/v1` router `parts.uri` has lost its prefix; the original has not.
        let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
        let raw = uri.path().split('/').nth(3).unwrap_or("");
        let decoded = percent_decode_strict(raw)?;
        SecretPath::parse(&decoded)
            .map(PathParam)
            .map_err(|e| ApiError::validation(format!("invalid secret path: {e}")))
    }
}

/// Decodes `%XX` escapes, refusing a `%` not followed by two hex digits and non-UTF-8 results.
pub fn percent_decode_strict(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let ok = bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(ApiError::invalid(format!(
                    "bad percent-encoding at byte {i} of the URL path; encode '/' as %2F and '%' as %25"
                )));
            }
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::invalid("the URL path decodes to invalid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_never_echo_input() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            value: String,
        }
        let e = parse_json::<Body>(br#"{"value": 987654321}"#).unwrap_err();
        assert!(!e.message.contains("987654321"), "{}", e.message);
        assert_eq!(e.code, super::super::error::ErrorCode::ValidationError);
    }

    #[test]
    fn strict_percent_decoding() {
        assert_eq!(percent_decode_strict("a%2Fb").unwrap(), "a/b");
        assert!(percent_decode_strict("a%2").is_err());
        assert!(percent_decode_strict("a%zz").is_err());
        assert!(percent_decode_strict("%FF").is_err());
    }
}
