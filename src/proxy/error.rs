//! Every error the proxy answers an agent with, in one enum, [`ErrorCode`]: each code maps,
//! in one `match`, to its HTTP status, its wire code (the JSON body's `error.code` and
//! `X-Airlock-Error`) and whose fault it is. docs/api.md's "Proxy error codes" table lists
//! them; a test below checks that the table and the enum agree.
//!
//! A [`ProxyError`] has pingora's shape: a kind (the code), a message that goes on the wire,
//! and an optional source, the cause, which only the logs see (through `Display`).

use std::error::Error as StdError;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::body::{Body, BoxError, full};

/// Whose fault an error is, the way pingora's errors carry their source: the agent's
/// request, the policy, the upstream, the central API or the proxy itself.
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
    /// The external secret store (OpenBao, AWS Secrets Manager) an external secret is read
    /// from failed.
    Provider,
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
            Fault::Provider => "provider",
            Fault::Proxy => "proxy",
        }
    }
}

/// Defines [`ErrorCode`], its list [`ErrorCode::ALL`] and its one `match` from the same
/// rows, so no code can be left out of either.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => ($code:literal, $status:ident, $fault:ident),)*) => {
        /// Every refusal and failure the proxy answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of docs/api.md's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The one place a code becomes its wire code, its HTTP status and its fault.
            const fn parts(self) -> (&'static str, StatusCode, Fault) {
                match self {
                    $(ErrorCode::$variant => ($code, StatusCode::$status, Fault::$fault),)*
                }
            }
        }
    };
}

error_codes! {
    /// A malformed request: no or several `Host` headers, an invalid target, a bad `CONNECT`.
    InvalidRequest => ("invalid_request", BAD_REQUEST, Agent),
    /// A request body the proxy must read whole (it may hold body fields) is over its bound.
    BodyTooLarge => ("body_too_large", PAYLOAD_TOO_LARGE, Agent),
    /// The session key is missing or wrong.
    Unauthorized => ("unauthorized", PROXY_AUTHENTICATION_REQUIRED, Agent),
    /// A `CONNECT` sent inside a tunnel the proxy intercepts.
    ConnectNotAllowed => ("connect_not_allowed", METHOD_NOT_ALLOWED, Agent),
    /// A request to `/r/NAME/…` names no route of the agent's policy.
    UnknownRoute => ("unknown_route", NOT_FOUND, Agent),
    /// An unknown `/_airlock/` endpoint.
    NotFound => ("not_found", NOT_FOUND, Agent),
    /// A placeholder that is malformed, in text that is not UTF-8, or names a `#field` the
    /// value does not have.
    UnresolvedPlaceholder => ("unresolved_placeholder", FORBIDDEN, Agent),
    /// The host is not in `egress.allow`.
    EgressDenied => ("egress_denied", FORBIDDEN, Policy),
    /// The host resolves to a private address and the policy denies private networks.
    PrivateAddress => ("private_address", FORBIDDEN, Policy),
    /// The TLS SNI or `Host` does not match the target host.
    HostMismatch => ("host_mismatch", FORBIDDEN, Policy),
    /// An agent-wide or per-host rate limit is spent.
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, Policy),
    /// The secret is not granted to this agent (or missing, or deleted).
    SecretNotGranted => ("secret_not_granted", FORBIDDEN, Policy),
    /// The host is not in the grant's `hosts` or the secret's `allowed_hosts`.
    HostNotAllowed => ("host_not_allowed", FORBIDDEN, Policy),
    /// The value would go where the grant does not allow it (a path, a forbidden header), or
    /// an upgrade that carries values is not to WebSocket.
    PlacementNotAllowed => ("placement_not_allowed", FORBIDDEN, Policy),
    /// The value is not safe where it would go (CR, LF or NUL in a header).
    UnsafeValue => ("unsafe_value", FORBIDDEN, Policy),
    /// A value would go over plain http that was not named on purpose.
    InsecureTransport => ("insecure_transport", FORBIDDEN, Policy),
    /// The grant's approval request waits for an operator.
    ApprovalPending => ("approval_pending", SERVICE_UNAVAILABLE, Policy),
    /// An operator denied the grant's approval request.
    ApprovalDenied => ("approval_denied", FORBIDDEN, Policy),
    /// The upstream could not be reached or failed.
    UpstreamError => ("upstream_error", BAD_GATEWAY, Upstream),
    /// The upstream, sent values, answered with a body the proxy cannot scrub.
    UnscannableResponse => ("unscannable_response", BAD_GATEWAY, Upstream),
    /// An `[[oauth2]]` rule's token endpoint could not be reached, refused the client's
    /// credentials, or answered with no usable bearer token.
    TokenEndpointError => ("token_endpoint_error", BAD_GATEWAY, Upstream),
    /// The upstream sent no response within the first-byte timeout.
    UpstreamTimeout => ("upstream_timeout", GATEWAY_TIMEOUT, Upstream),
    /// The central API cannot be reached, or the proxy holds no token.
    CentralUnavailable => ("central_unavailable", SERVICE_UNAVAILABLE, Central),
    /// The external provider of a secret failed, and the proxy holds no recent copy.
    ProviderError => ("provider_error", BAD_GATEWAY, Provider),
    /// The access-event spool is full or cannot be written.
    SpoolFull => ("spool_full", SERVICE_UNAVAILABLE, Proxy),
}

impl ErrorCode {
    /// The code of the JSON body's `error.code` and of `X-Airlock-Error`.
    pub const fn as_str(self) -> &'static str {
        self.parts().0
    }
    pub const fn status(self) -> StatusCode {
        self.parts().1
    }
    pub const fn fault(self) -> Fault {
        self.parts().2
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a 405 names as allowed: every method but `CONNECT` is forwarded; these are the
/// standard ones.
const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorCode,
    /// What the agent is told; names hosts, paths and headers, never a value.
    pub message: String,
    pub retry_after: Option<u64>,
    /// What caused it (an I/O or TLS error, say), shown in the logs and never on the wire.
    pub source: Option<BoxError>,
    /// The secret path the refusal concerns (a placeholder not granted, for the wrong host or
    /// place, or with an unsafe value), so the access event is recorded against it.
    pub secret: Option<String>,
}

impl ProxyError {
    pub fn new(kind: ErrorCode, message: impl Into<String>) -> ProxyError {
        ProxyError { kind, message: message.into(), retry_after: None, source: None, secret: None }
    }
    /// Keeps `source` as the cause, for the logs.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> ProxyError {
        self.source = Some(source.into());
        self
    }
    /// Names the secret path the refusal concerns (never its value).
    pub fn with_secret(mut self, path: impl Into<String>) -> ProxyError {
        self.secret = Some(path.into());
        self
    }
    /// Answers with `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> ProxyError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorCode::InvalidRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorCode::Unauthorized, message)
    }
    /// A `CONNECT` that reached the request pipeline: one sent inside a tunnel the proxy
    /// intercepts (or naming a route). A tunnel is opened to the proxy, never forwarded.
    pub fn connect_not_allowed() -> ProxyError {
        ProxyError::new(
            ErrorCode::ConnectNotAllowed,
            "CONNECT is not forwarded: a tunnel is opened with a CONNECT to the proxy itself, not inside another \
             tunnel; send each tunnel's CONNECT to the proxy's address",
        )
    }
    pub fn rate_limited(scope: &str, retry_after: u64) -> ProxyError {
        let message = format!("{scope} egress rate limit exceeded; retry in {retry_after} s");
        ProxyError::new(ErrorCode::RateLimited, message).with_retry_after(retry_after)
    }
    /// The host is not in the agent's `egress.allow`.
    pub fn egress_denied(host: &str) -> ProxyError {
        ProxyError::new(ErrorCode::EgressDenied, format!("'{host}' is not in this agent's egress.allow"))
    }
    pub fn upstream(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorCode::UpstreamError, message)
    }
    /// The upstream did not answer within the first-byte timeout.
    pub fn upstream_timeout(host: &str, limit: std::time::Duration) -> ProxyError {
        let message =
            format!("{host} sent no response within {} s (--upstream-first-byte-timeout)", limit.as_secs_f64());
        ProxyError::new(ErrorCode::UpstreamTimeout, message)
    }
    pub fn central(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorCode::CentralUnavailable, message)
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
    pub fn code(&self) -> &'static str {
        self.kind.as_str()
    }
    pub fn fault(&self) -> Fault {
        self.kind.fault()
    }

    /// The cause chain, each cause's text that the message does not already hold, joined by
    /// ": "; `None` when there is none.
    pub fn cause(&self) -> Option<String> {
        let mut chain = String::new();
        let mut next = self.source.as_deref().map(|s| s as &(dyn StdError + 'static));
        while let Some(cause) = next {
            let text = cause.to_string();
            if !self.message.contains(&text) && !chain.contains(&text) {
                if !chain.is_empty() {
                    chain.push_str(": ");
                }
                chain.push_str(&text);
            }
            next = cause.source();
        }
        (!chain.is_empty()).then_some(chain)
    }

    pub fn into_response(self) -> http::Response<Body> {
        let (code, status, fault) = self.kind.parts();
        let body = json!({ "error": { "code": code, "message": self.message, "fault": fault.as_str() } });
        let mut resp = http::Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-airlock-error", HeaderValue::from_static(code));
        if let Some(secs) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6: a 405 lists the methods that are allowed.
            h.insert(http::header::ALLOW, HeaderValue::from_static(FORWARDED_METHODS));
        }
        if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            h.insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"airlock\""));
        }
        resp
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} fault): {}", self.code(), self.fault().as_str(), self.message)?;
        match self.cause() {
            Some(cause) => write!(f, " (cause: {cause})"),
            None => Ok(()),
        }
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const API_MD: &str = include_str!("../../docs/api.md");

    /// The rows (code, status, fault) of docs/api.md's "Proxy error codes" table.
    fn documented() -> Vec<(String, u16, String)> {
        let section =
            API_MD.split("\n## Proxy error codes\n").nth(1).expect("docs/api.md has a Proxy error codes section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 4 || cells[0] == "code" || cells[0].starts_with("---") {
                continue;
            }
            let code = cells[0].trim_matches('`').to_owned();
            let status = cells[1].parse().unwrap_or_else(|_| panic!("status of {code} is not a number: {}", cells[1]));
            rows.push((code, status, cells[2].trim_matches('`').to_owned()));
        }
        rows
    }

    #[test]
    fn the_docs_table_and_the_enum_agree() {
        let documented = documented();
        let in_docs: BTreeSet<_> = documented.iter().cloned().collect();
        assert_eq!(in_docs.len(), documented.len(), "docs/api.md lists a proxy error code twice");
        let in_enum: BTreeSet<_> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_owned(), c.status().as_u16(), c.fault().as_str().to_owned()))
            .collect();
        let undocumented: Vec<_> = in_enum.difference(&in_docs).collect();
        let unknown: Vec<_> = in_docs.difference(&in_enum).collect();
        assert!(undocumented.is_empty(), "in ErrorCode, not (or not so) in docs/api.md: {undocumented:?}");
        assert!(unknown.is_empty(), "in docs/api.md, not (or not so) in ErrorCode: {unknown:?}");
    }

    #[test]
    fn wire_codes_are_distinct() {
        let codes: BTreeSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }

    #[tokio::test]
    async fn the_cause_reaches_the_logs_and_not_the_wire() {
        use http_body_util::BodyExt;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let e = ProxyError::upstream("api.example.com: the connection broke").with_source(io);
        assert_eq!(
            e.to_string(),
            "upstream_error (upstream fault): api.example.com: the connection broke (cause: connection reset by peer)"
        );
        assert!(StdError::source(&e).is_some());
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()["x-airlock-error"], "upstream_error");
        let body = resp.into_body().collect().await.expect("a full body").to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"]["message"], "api.example.com: the connection broke");
        assert!(!body.to_string().contains("reset by peer"), "{body}");
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        let io = std::io::Error::other("no route to host");
        let e = ProxyError::upstream("api.example.com: no route to host").with_source(io);
        assert_eq!(e.cause(), None);
        assert_eq!(e.to_string(), "upstream_error (upstream fault): api.example.com: no route to host");
    }
}
