//! Structured values: a secret whose value is a JSON object (sent as an object, stored as
//! its canonical JSON text), and `GET /v1/secrets/{path}?field=NAME`, which answers one
//! string field of it: the same text a proxy writes for `{{secret:PATH#NAME}}` (both read
//! it with `domain::structured::string_field`, which copies no other part of the value).

use crate::domain::SecretValue;
use crate::domain::structured::string_field;
use crate::server::error::{ApiError, ApiResult};

/// The string field `name` of `value`, a JSON object; 422 when the value is not an object,
/// 404 when it has no such string field (or has it twice). Never quotes the value.
pub(super) fn field_of(value: &SecretValue, path: &str, name: &str) -> ApiResult<SecretValue> {
    match string_field(value.expose(), name) {
        Ok(Some(mut text)) => Ok(SecretValue::new(std::mem::take(&mut *text))),
        Ok(None) => Err(ApiError::not_found(format!("secret '{path}' has no string field '{name}'"))),
        Err(_) => {
            Err(ApiError::validation(format!("secret '{path}' is not a JSON object, so it has no field '{name}'")))
        }
    }
}
