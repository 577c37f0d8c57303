//! Structured values: a secret whose value is a JSON object (sent as an object, stored as
//! its canonical JSON text), and `GET /v1/secrets/{path}?field=NAME`, which answers one
//! string field of it: the same text a proxy writes for `{{secret:PATH#NAME}}`.

use crate::domain::SecretValue;
use crate::server::error::{ApiError, ApiResult};

/// The string field `name` of `value`, a JSON object; 422 when the value is not an object,
/// 404 when it has no such string field. Never quotes the value.
pub(super) fn field_of(value: &SecretValue, path: &str, name: &str) -> ApiResult<SecretValue> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value.expose()).map_err(|_| {
        ApiError::validation(format!("secret '{path}' is not a JSON object, so it has no field '{name}'"))
    })?;
    match object.get(name) {
        Some(serde_json::Value::String(text)) => Ok(SecretValue::new(text.clone())),
        _ => Err(ApiError::not_found(format!("secret '{path}' has no string field '{name}'"))),
    }
}
