//! Proxy errors know whose fault they are, the way pingora's errors carry their source:
//! the agent's request, the policy, the upstream, or the central API. One `impl` turns an
//! error into the status, the JSON body in the central API's format and `X-Airlock-Error`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::body::{Body, full};
use super::substitute::{Refusal, RefusalCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The agent sent something the proxy will not forward (bad request, missing session key).
    Agent,
    /// The request is well-formed but the agent's policy does not allow it.
    Policy,
    /// The upstream could not be reached or failed.
    Upstream,
    /// The central API could not be reached or refused the proxy.
    Central,
    /// A bug or resource problem in the proxy itself.
    Proxy,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Agent => "agent",
            Fault::Policy => "policy",
            Fault::Upstream => "upstream",
            Fault::Central => "central_api",
            Fault::Proxy => "proxy",
        }
    }
}

/// What a 405 names as allowed: every method but `CONNECT` is forwarded; these are the
/// standard ones.
const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    pub code: &'static str,
    pub fault: Fault,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ProxyError {
    pub fn new(status: StatusCode, code: &'static str, fault: Fault, message: impl Into<String>) -> ProxyError {
        ProxyError { status, code, fault, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::BAD_REQUEST, "invalid_request", Fault::Agent, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "unauthorized", Fault::Agent, message)
    }
    pub fn policy(code: &'static str, message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::FORBIDDEN, code, Fault::Policy, message)
    }
    /// A `CONNECT` that reached the request pipeline: one sent inside a tunnel the proxy
    /// intercepts (or naming a route). A tunnel is opened to the proxy, never forwarded.
    pub fn connect_not_allowed() -> ProxyError {
        ProxyError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect_not_allowed",
            Fault::Agent,
            "CONNECT is not forwarded: a tunnel is opened with a CONNECT to the proxy itself, not inside another \
             tunnel; send each tunnel's CONNECT to the proxy's address",
        )
    }
    pub fn rate_limited(scope: &str, retry_after: u64) -> ProxyError {
        let mut e = ProxyError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            Fault::Policy,
            format!("{scope} egress rate limit exceeded; retry in {retry_after} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }
    pub fn upstream(message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::BAD_GATEWAY, "upstream_error", Fault::Upstream, message)
    }
    /// The upstream did not answer within the first-byte timeout.
    pub fn upstream_timeout(host: &str, limit: std::time::Duration) -> ProxyError {
        let message =
            format!("{host} sent no response within {} s (--upstream-first-byte-timeout)", limit.as_secs_f64());
        ProxyError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", Fault::Upstream, message)
    }
    pub fn central(message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::SERVICE_UNAVAILABLE, "central_unavailable", Fault::Central, message)
    }
    pub fn internal(message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", Fault::Proxy, message)
    }

    pub fn into_response(self) -> http::Response<Body> {
        let body = json!({ "error": { "code": self.code, "message": self.message, "fault": self.fault.as_str() } });
        let mut resp = http::Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-airlock-error", HeaderValue::from_static(self.code));
        if let Some(secs) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6: a 405 lists the methods that are allowed.
            h.insert(http::header::ALLOW, HeaderValue::from_static(FORWARDED_METHODS));
        }
        if self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            h.insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"airlock\""));
        }
        resp
    }
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> ProxyError {
        let code = r.code.as_str();
        let fault = match r.code {
            RefusalCode::UnresolvedPlaceholder => Fault::Agent,
            _ => Fault::Policy,
        };
        ProxyError::new(StatusCode::FORBIDDEN, code, fault, r.message)
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} fault): {}", self.code, self.fault.as_str(), self.message)
    }
}
