//! Placeholder substitution: this module owns the step of the proxy pipeline that finds
//! `{{secret:PATH}}` / `{{secret:PATH#field}}` placeholders in a request head (`scan`), checks
//! every one against the binding the agent's policy gives its secret — host, placement,
//! field, value safety, transport — and only when all pass builds the outbound head with the
//! values written in (`inject`). Header values get the raw value, `Authorization: Basic`
//! credentials are decoded, substituted and re-encoded, the query string gets the value
//! percent-encoded; a placeholder in the URL path is always refused. A `Refusal` names the
//! secret path and the host or header, never a value. Pure: no I/O, no logging.
//!
//! A request walks through three steps, one file each:
//! 1. `scan` (scan.rs) reads the head and lists every placeholder with its `Place`: each
//!    header value, the decoded `user:pass` of `Authorization: Basic`, the percent-decoded
//!    query, and the path and authority (raw and percent-decoded), where one is always refused.
//!    `has_placeholder_text` is its allocation-free quick skip.
//! 2. The bind check (bind.rs): `inject` first checks every found placeholder, then every
//!    `[[inject]]` template's, against its `BoundValue` — the secret is granted, the upstream
//!    host is one of its grant's hosts and in the secret's `allowed_hosts`, the place is one
//!    the grant allows (never a forbidden header), a `#field` resolves (domain::structured), the value
//!    is safe there, and the transport is TLS or plain http on purpose.
//! 3. Writing (write.rs): only when all pass, values go into the head in place — raw into
//!    header values, re-encoded into Basic credentials, percent-encoded into the query — and
//!    every placeholder met on the way is checked again, so a missed find fails closed. What
//!    was written in a form redaction cannot derive from the value alone comes back as `Written`.

use std::fmt;

use http::header::HeaderName;
use http::request::Parts;

use crate::domain::SecretValue;
use crate::domain::policy::{Grant, Placeholder, PlaceholderError};
use std::sync::Arc;

use crate::proxy::central::CentralError;
use crate::proxy::error::{ErrorCode, ProxyError};

mod bind;
mod body;
#[cfg(test)]
mod fixture;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod scan;
mod write;

pub use crate::domain::structured::json_field;
use bind::Rules;
pub use bind::secret_allows_host;
pub use body::{BodyFound, BodyKind, inject_body, scan_body};
pub use scan::{has_placeholder_text, scan};
pub use write::Written;

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

/// Why a request may not go upstream: one of the proxy's error codes (`host_not_allowed`,
/// `placement_not_allowed`, `unresolved_placeholder`, `secret_not_granted`, `unsafe_value`,
/// `insecure_transport`). `message` names the secret path and the host or header involved,
/// never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The secret path the refusal concerns, when it concerns one placeholder's secret.
    pub secret: Option<String>,
}

impl Refusal {
    /// Names the secret the refusal concerns.
    pub(crate) fn about(mut self, path: &str) -> Refusal {
        self.secret = Some(path.to_owned());
        self
    }
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> ProxyError {
        let e = ProxyError::new(r.code, r.message);
        match r.secret {
            Some(path) => e.with_secret(path),
            None => e,
        }
    }
}

/// The central API's 404 `reason`, as words.
fn reason_words(reason: &str) -> &str {
    match reason {
        "provider_not_found" => "not found in its external provider",
        "provider_unusable" => "unusable as read from its external provider",
        other => other,
    }
}

/// A value the central API would not or could not give, as the agent is told it.
pub(in crate::proxy) fn central_error(e: Arc<CentralError>) -> ProxyError {
    match e.as_ref() {
        CentralError::NotFound(path) => Refusal {
            code: ErrorCode::SecretNotGranted,
            message: format!("secret '{path}' is not available to this agent (missing, deleted or not granted)"),
            secret: Some(path.to_string()),
        }
        .into(),
        // Disabled, archived, or not in its provider: the agent is told which.
        CentralError::Unavailable { path, reason, .. } => Refusal {
            code: ErrorCode::SecretNotGranted,
            message: format!("secret '{path}' is not available to this agent: it is {}", reason_words(reason)),
            secret: Some(path.to_string()),
        }
        .into(),
        CentralError::Provider { path, .. } => ProxyError::new(
            ErrorCode::ProviderError,
            format!("the external provider of secret '{path}' failed and the proxy holds no recent copy"),
        )
        .with_source(e),
        CentralError::NoToken(_) => ProxyError::central(e.to_string()).with_source(e),
        CentralError::AwaitingApproval(path) => ProxyError::new(
            ErrorCode::ApprovalPending,
            format!("the grant for '{path}' waits for an operator's approval"),
        )
        .with_secret(path.as_str()),
        // Final for the cool-down: the agent is told why, and when the proxy asks again.
        CentralError::ApprovalDenied { path, retry_in, .. } => {
            let retry_after = retry_in.as_secs().max(1);
            let path = path.clone();
            ProxyError::new(ErrorCode::ApprovalDenied, e.to_string()).with_retry_after(retry_after).with_secret(path)
        }
        _ => ProxyError::central(e.to_string()).with_source(e),
    }
}

fn refuse(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message, secret: None }
}

fn malformed(place: &Place, error: PlaceholderError) -> Refusal {
    refuse(ErrorCode::UnresolvedPlaceholder, format!("{place}: {error}"))
}

// ---------------------------------------------------------------------------------------
// What scan finds and what inject is given
// ---------------------------------------------------------------------------------------

/// Where in the request a placeholder sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Header(HeaderName),
    /// Inside the decoded `user:pass` of `Authorization: Basic …`.
    BasicAuth,
    /// In the query string; spans count bytes of the percent-decoded query.
    Query,
    /// In the URL outside the query (the path, or a percent-encoded authority); never allowed.
    Path,
    /// The whole value of this top-level field of a form or JSON request body.
    BodyField(String),
    /// Anywhere else in a form or JSON request body; never allowed.
    Body,
    /// A credential a `[[sign]]` rule signs the request with (the access key id and session
    /// token go on the wire in headers; the secret key only into the signature).
    Signature,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Header(name) => write!(f, "header '{name}'"),
            Place::BasicAuth => f.write_str("the Basic credentials of header 'authorization'"),
            Place::Query => f.write_str("the query string"),
            Place::Path => f.write_str("the URL path"),
            Place::BodyField(name) => write!(f, "body field '{name}'"),
            Place::Body => f.write_str("the request body"),
            Place::Signature => f.write_str("the request's signature"),
        }
    }
}

/// One placeholder of a request head and where it sits.
#[derive(Debug, Clone)]
pub struct Found {
    pub placeholder: Placeholder,
    pub place: Place,
}

/// One resolved value and what it is bound to.
#[derive(Debug, Clone, Copy)]
pub struct BoundValue<'a> {
    pub value: &'a SecretValue,
    pub grant: &'a Grant,
    /// The secret's own `allowed_hosts` (exact hosts or `*.suffix`); empty means no restriction.
    pub secret_allowed_hosts: &'a [String],
}

/// A header an `[[inject]]` rule writes: its template and the template's placeholders, parsed
/// once when the policy was read. It replaces the agent's header of that name.
#[derive(Debug, Clone)]
pub struct Template<'t> {
    pub header: &'t HeaderName,
    pub text: &'t str,
    pub placeholders: &'t [Placeholder],
}

// ---------------------------------------------------------------------------------------
// Checking bindings and injecting
// ---------------------------------------------------------------------------------------

/// Checks every found placeholder, then every template's, against its binding for `host`
/// (the upstream host the request will go to), then writes every value into the head in
/// place, puts each template's header in, and returns the head; extensions are dropped. All
/// is checked before anything is written, and the first failure (`found` order, then
/// `templates`) wins; the head is walked again while substituting and every placeholder met
/// there is checked too, so a `found` that misses one fails closed. Template headers go in
/// last, so a value is never scanned for placeholders itself. On a refusal the head is
/// consumed: the caller sends nothing. Returns the head and what it wrote in a form
/// redaction cannot derive from the values alone (`Written`).
/// `plain_http_allowed`: the upstream is http:// AND a route or inject names it http:// on purpose.
/// `bindings` borrows from the caller (`'b`), not from the placeholder it is asked about.
pub fn inject<'b>(
    head: Parts,
    found: &[Found],
    templates: &[Template<'_>],
    host: &str,
    is_tls: bool,
    plain_http_allowed: bool,
    bindings: &dyn Fn(&Placeholder) -> Option<BoundValue<'b>>,
) -> Result<(Parts, Vec<Written>), Refusal> {
    let rules = Rules { host, is_tls, plain_http_allowed, bindings };
    rules.check_all(found, templates)?;
    rules.write(head, templates)
}

/// The binding check of one credential a `[[sign]]` rule signs with (`Place::Signature`):
/// granted, its grant and the secret's `allowed_hosts` let it go to `host`, a `#field`
/// resolves, no CR, LF or NUL (the access key id and token go in headers), and TLS or plain
/// http named on purpose. The text to sign with, in a zeroizing buffer.
pub fn bind_for_signing<'b>(
    placeholder: &Placeholder,
    host: &str,
    is_tls: bool,
    plain_http_allowed: bool,
    bindings: &dyn Fn(&Placeholder) -> Option<BoundValue<'b>>,
) -> Result<zeroize::Zeroizing<String>, Refusal> {
    let rules = Rules { host, is_tls, plain_http_allowed, bindings };
    rules.check(placeholder, &Place::Signature).map(|resolved| zeroize::Zeroizing::new(resolved.as_str().to_owned()))
}
