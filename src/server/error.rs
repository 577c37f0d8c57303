//! The API's error shape: `{"error":{"code","message",…}}` with one status per code.
//! Client mistakes carry a message that says what to fix; server faults are logged with
//! their cause and shown to the client only as `internal_error`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::api::errors::{ErrorBody, ErrorDetail};
use crate::store::StoreError;

/// Every code the API answers with, in one place: its text (`as_str`) is what clients match
/// on, what the docs list, and what failed operations record as `error` in the audit log, so
/// code names it by variant and never by a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    /// 405: the path exists, the method does not (the answer's `Allow` lists those it takes).
    MethodNotAllowed,
    Unauthorized,
    PermissionDenied,
    NotFound,
    Conflict,
    ValidationError,
    RateLimited,
    /// 429: the agent has as many approval requests pending as the server allows.
    TooManyPendingApprovals,
    Internal,
    Unavailable,
    /// 502: the external provider an external secret is read from failed or is unreachable.
    ProviderError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyPendingApprovals => "too_many_pending_approvals",
            ErrorCode::Internal => "internal_error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ProviderError => "provider_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited | ErrorCode::TooManyPendingApprovals => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ProviderError => StatusCode::BAD_GATEWAY,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), extra: Map::new(), retry_after_secs: None }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ValidationError, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Conflict, message)
    }
    pub fn permission_denied(path: Option<&str>, required_scope: &str) -> ApiError {
        let target = path.map(|p| format!(" on '{p}'")).unwrap_or_default();
        let mut e = ApiError::new(
            ErrorCode::PermissionDenied,
            format!("this credential lacks scope '{required_scope}'{target}"),
        );
        if let Some(p) = path {
            e.extra.insert("path".into(), p.into());
        }
        e.extra.insert("required_scope".into(), required_scope.into());
        e
    }
    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            format!("rate limit exceeded for this credential; retry in {retry_after_secs} s"),
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }
    /// The external store failed (502 `provider_error`, `fault: provider`); the message names
    /// the provider and the reference, never a value.
    pub fn provider(provider: &str, config_id: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(ErrorCode::ProviderError, message);
        e.extra.insert("fault".into(), "provider".into());
        e.extra.insert("provider".into(), provider.into());
        e.extra.insert("provider_config_id".into(), config_id.into());
        e
    }
    /// A server-side fault: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error; the server log has the details")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::validation(m),
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.as_str().to_owned(), message: self.message, extra: self.extra },
        };
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}
