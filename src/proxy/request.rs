//! The vocabulary every stage of a request shares: how a request reached the proxy (`Via`),
//! where it goes (`Target`), and a value it carries (`CarriedValue`). The pipeline, the HTTP/1.1
//! fast path, the listener, the per-thread copies (`local`) and the echo sets all speak of
//! these; they live here, apart from any one stage, so that no stage imports another for
//! its words.

use std::sync::Arc;

use http::Uri;
use zeroize::Zeroizing;

use super::central::HeldValue;
use super::error::ProxyError;

/// How a request reached the proxy.
#[derive(Debug, Clone)]
pub enum Via {
    /// Straight on the listener: forward proxy, route, or `/_airlock/`.
    Direct,
    /// Inside a `CONNECT host:port` tunnel: TLS the proxy terminated, or plain HTTP (some
    /// clients, undici's ProxyAgent among them, tunnel even http:// requests).
    Mitm { host: String, port: u16, sni: Option<String>, tls: bool },
}

/// Where the request goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Route mode: the upstream's base path that replaces `/r/<route>`.
    pub base_path: Option<String>,
    /// Plain http:// toward this host was named on purpose by a route or an inject rule.
    pub plain_http_allowed: bool,
    pub route: Option<String>,
}

impl Target {
    /// The absolute upstream URI for a request (taken after substitution, so injected query
    /// values are part of it).
    pub fn uri_for(&self, request: &Uri) -> Result<Uri, ProxyError> {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path(request))
            .parse()
            .map_err(|_| ProxyError::bad_request("the request target is not a valid URI"))
    }

    /// `host[:port]` as the upstream is addressed (the port only when not the default);
    /// written where it goes, without a string of its own per request.
    pub fn authority(&self) -> impl std::fmt::Display + '_ {
        struct Authority<'t>(&'t Target);
        impl std::fmt::Display for Authority<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let t = self.0;
                if t.host.contains(':') {
                    write!(f, "[{}]", t.host)?
                } else {
                    f.write_str(&t.host)?
                }
                if t.port != if t.tls { 443 } else { 80 } {
                    write!(f, ":{}", t.port)?
                }
                Ok(())
            }
        }
        Authority(self)
    }

    /// The upstream path and query: in route mode the route's base path replaces `/r/<route>`.
    /// Written where it goes, like `authority`.
    pub fn path<'a>(&'a self, request: &'a Uri) -> impl std::fmt::Display + 'a {
        struct Path<'a>([&'a str; 3]);
        impl std::fmt::Display for Path<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.iter().try_for_each(|piece| f.write_str(piece))
            }
        }
        Path(self.path_pieces(request))
    }

    /// `path` as the pieces it is joined from: the route's base path, a `/` if the two need
    /// one, and the rest of the request's path and query.
    pub fn path_pieces<'a>(&'a self, request: &'a Uri) -> [&'a str; 3] {
        let path_and_query = request.path_and_query().map_or("/", |p| p.as_str());
        let (Some(base), Some(route)) = (&self.base_path, &self.route) else {
            return ["", "", path_and_query];
        };
        let tail = path_and_query
            .strip_prefix("/r/")
            .and_then(|rest| rest.strip_prefix(route.as_str()))
            .unwrap_or(path_and_query);
        let slash = if tail.starts_with('/') || tail.starts_with('?') || tail.is_empty() { "" } else { "/" };
        [base, slash, tail]
    }
}

/// A value this request carries, kept for redaction and the access record.
#[derive(Clone)]
pub struct CarriedValue {
    pub fetched: Arc<HeldValue>,
    /// When the placeholder named a `#field`: the field's name and the text written for it.
    pub field: Option<(String, Zeroizing<String>)>,
    /// How the value went out, when not as a placeholder's text in a header or query (the
    /// access event's `kind`).
    pub kind: Option<AccessKind>,
}

/// How a value went out other than in a header or query: the access event's `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Written into a request body field (`body_fields`).
    BodyField,
    /// An `[[oauth2]]` rule's client credentials sent to its token endpoint, or the access
    /// token the proxy obtained with them (`credentials::oauth2`).
    OAuth2,
    /// A credential a `[[sign]]` rule signed the request with (`credentials::sigv4`).
    AwsSigV4,
}

impl AccessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::BodyField => "body_field",
            AccessKind::OAuth2 => "oauth2",
            AccessKind::AwsSigV4 => "aws_sigv4",
        }
    }
}

impl CarriedValue {
    /// The text written into the request: what redaction looks for.
    pub fn injected(&self) -> &[u8] {
        match &self.field {
            Some((_, text)) => text.as_bytes(),
            None => self.fetched.value.expose().as_bytes(),
        }
    }

    /// The placeholder the value is shown as when redacted; an OAuth2 access token, which no
    /// placeholder names, as `[oauth2 access token]`.
    pub(super) fn placeholder(&self) -> String {
        if self.kind == Some(AccessKind::OAuth2) {
            return "[oauth2 access token]".to_owned();
        }
        crate::domain::policy::placeholder_text(&self.fetched.path, self.field.as_ref().map(|(name, _)| name.as_str()))
    }
}
