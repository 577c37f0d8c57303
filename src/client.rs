//! The typed HTTP client of the central API (DESIGN §2), used by the operator CLI: it owns
//! the connection settings (base URL, bearer credential, user agent, timeouts), the URL
//! encoding of secret paths and query values, and the translation of responses into the
//! types of `crate::api` or a [`ClientError`] that says whether the API refused the request,
//! the server could not be reached, or it answered something that is not the API (a body
//! with a field missing or mistyped is refused here, naming the endpoint and the field); a
//! base URL or credential that cannot be used is a [`ConfigError`], before anything is sent.
//! The credential never appears in an error or in `Debug` output.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode, Url, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::errors::ErrorBody;
use crate::api::{DecodeError, Paged, decode};

const USER_AGENT: &str = concat!("airlock-cli/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything outside `[A-Za-z0-9._-]` is escaped, so `/` in a secret path becomes `%2F`
/// and a query value cannot smuggle `&`, `=`, `+` or `#`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// How much of a non-API error body is quoted back to the user.
const SNIPPET_CHARS: usize = 200;
/// The largest `limit` the API accepts on a listing.
const MAX_PAGE: usize = 100;

/// A connection to one Airlock server with one credential.
pub struct Client {
    http: reqwest::Client,
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    base: String,
    token: Zeroizing<String>,
}

/// One page of a cursor-paginated listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with its error shape `{"error":{"code","message",…}}`.
    #[error("{code}: {message}")]
    Api { status: u16, code: String, message: String, body: Value },
    /// The cause ("Connection refused") is the `source`, shown by `{:#}` as the CLI prints
    /// errors; putting it in the message as well would print it twice.
    #[error("cannot reach the Airlock server at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from the server: {0}")]
    Protocol(String),
    /// A body that is JSON but not the shape `crate::api` defines for the endpoint.
    #[error("unexpected response from the server: {0}")]
    Contract(#[from] DecodeError),
}

/// A successful answer, not parsed yet: for an endpoint whose status says which type the
/// body is (a mint: 201 a token, 202 a pending approval).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `METHOD /path`, for errors.
    endpoint: String,
    body: Bytes,
}

impl Answer {
    /// The body as the API's type `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(decode(&self.endpoint, &self.body)?)
    }
}

/// Connection settings that cannot be used: a bad server URL or credential (the operator's
/// to fix), or an HTTP client that cannot be built. No variant quotes the credential or what
/// stood before an `@` in the URL.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid server URL '{shown}': {reason}; expected e.g. http://127.0.0.1:7878")]
    UrlUnparsable { shown: String, reason: String },
    #[error(
        "invalid server URL '{shown}': it carries a user name or password; give the URL without them \
         (the credential goes in AIRLOCK_TOKEN, or the agent key file)"
    )]
    UrlUserinfo { shown: String },
    #[error("invalid server URL '{shown}': it must start with http:// or https:// and name a host")]
    UrlNotHttp { shown: String },
    #[error("invalid server URL '{shown}': remove the query string or fragment")]
    UrlQuery { shown: String },
    #[error("the API credential is empty; set AIRLOCK_TOKEN to an ak_… key or at_… token")]
    TokenEmpty,
    #[error("the API credential contains spaces, control or non-ASCII characters; check how it was copied")]
    TokenUnsendable,
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl ClientError {
    /// The API error code (`not_found`, `conflict`, …), if the API answered with one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"***").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://` or `https://`, optionally with a path
    /// prefix) authenticating with `token` (an `ak_…` key or `at_…` token).
    pub fn new(base_url: &str, token: &str) -> Result<Client, ConfigError> {
        crate::install_crypto_provider();
        let base = parse_base_url(base_url)?;
        let token = Zeroizing::new(token.trim().to_owned());
        check_token(&token)?;
        let http = crate::trust::central_client()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Client { http, base, token })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends `body` (if any) as JSON; a successful answer, or the API's error.
    async fn exchange(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, ClientError> {
        let endpoint = format!("{method} {}", path.split_once('?').map_or(path, |(p, _)| p));
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(parse_error(status, &body));
        }
        Ok(Answer { status, endpoint, body })
    }

    /// Sends `body` as JSON; the successful answer, to decode by its status.
    pub async fn send<B: Serialize>(&self, method: Method, path: &str, body: &B) -> Result<Answer, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|e| ClientError::Protocol(format!("cannot encode the body: {e}")))?;
        self.exchange(method, path, Some(body)).await
    }

    /// Sends `body` as JSON; the answer as the API's type `R`.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        self.send(method, path, body).await?.decode()
    }

    /// `GET`; the answer as the API's type `R`.
    pub async fn get<R: DeserializeOwned>(&self, path_and_query: &str) -> Result<R, ClientError> {
        self.exchange(Method::GET, path_and_query, None).await?.decode()
    }

    /// A call without a body whose answer is `204 No Content` (a deletion, say).
    pub async fn call_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let answer = self.exchange(method, path, None).await?;
        if answer.status != StatusCode::NO_CONTENT && !answer.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ClientError::Protocol(format!("{} answered a body where it answers none", answer.endpoint)));
        }
        Ok(())
    }

    /// A call without a body, answered with the API's type `R`.
    pub async fn call_bodiless<R: DeserializeOwned>(&self, method: Method, path: &str) -> Result<R, ClientError> {
        self.exchange(method, path, None).await?.decode()
    }

    /// `GET` of an endpoint whose answer is free-form (`/v1/audit/verify`'s report): JSON as
    /// it is.
    pub async fn get_json(&self, path_and_query: &str) -> Result<Value, ClientError> {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(self.token.as_str())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        parse_response(status, &bytes)?
            .ok_or_else(|| ClientError::Protocol(format!("GET {path_and_query} answered without a body")))
    }

    /// One page of a listing: `params` (filters, `limit`, `cursor`) go in the query.
    pub async fn page<L: Paged>(&self, path: &str, params: &[(&str, String)]) -> Result<Page<L::Item>, ClientError> {
        let (items, next_cursor) = self.get::<L>(&Client::with_query(path, params)).await?.into_page();
        Ok(Page { items, next_cursor: next_cursor.filter(|c| !c.is_empty()) })
    }

    /// Follows `next_cursor` from the first page until `limit` items or the last page.
    pub async fn list<L: Paged>(
        &self,
        path: &str,
        filters: &[(&str, String)],
        limit: usize,
    ) -> Result<Vec<L::Item>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        while items.len() < limit {
            let mut params = filters.to_vec();
            params.push(("limit", (limit - items.len()).min(MAX_PAGE).to_string()));
            params.extend(cursor.clone().map(|c| ("cursor", c)));
            let page = self.page::<L>(path, &params).await?;
            items.extend(page.items);
            match page.next_cursor {
                None => break,
                Some(next) if cursor.as_ref() == Some(&next) => {
                    return Err(ClientError::Protocol(format!("GET {path} returned the same next_cursor twice")));
                }
                next => cursor = next,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// `/v1/secrets/{path}` with the path in one URL segment.
    pub fn secret_url(path: &str) -> String {
        // A whole path of "." or ".." would be a dot-segment that URL normalisation removes,
        // sending the request to another endpoint; escaped, it reaches the server's path check.
        if !path.is_empty() && path.bytes().all(|b| b == b'.') {
            return format!("/v1/secrets/{}", "%2E".repeat(path.len()));
        }
        format!("/v1/secrets/{}", encode(path))
    }

    /// `path?k=v&…` with keys and values percent-encoded; `path` alone when `params` is empty.
    pub fn with_query<V: AsRef<str>>(path: &str, params: &[(&str, V)]) -> String {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v.as_ref()))).collect();
        if query.is_empty() { path.to_owned() } else { format!("{path}?{}", query.join("&")) }
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        // The URL is already in our message; reqwest would repeat it.
        ClientError::Unreachable { url: self.base.clone(), source: e.without_url() }
    }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A server URL as given (`--server`, `AIRLOCK_SERVER`), checked: `http://` or `https://`
/// with a host, optionally a path prefix, and nothing else. A URL with a user name or password
/// is refused (credentials go in `AIRLOCK_TOKEN` or the agent key file, never in a URL that
/// ends up in logs and errors), and no error quotes what stood before an `@`.
pub fn parse_base_url(base_url: &str) -> Result<String, ConfigError> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let shown = || without_userinfo(trimmed).into_owned();
    let url = Url::parse(trimmed).map_err(|e| ConfigError::UrlUnparsable { shown: shown(), reason: e.to_string() })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::UrlUserinfo { shown: shown() });
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::UrlNotHttp { shown: shown() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::UrlQuery { shown: shown() });
    }
    Ok(trimmed.to_owned())
}

/// Whether a base URL (as [`parse_base_url`] returns it) sends credentials in clear over
/// a network: plain `http://` to a host other than a loopback address or `localhost`.
pub fn in_clear_over_network(base: &str) -> bool {
    let Ok(url) = Url::parse(base) else { return false };
    let host = url.host_str().unwrap_or_default();
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.is_empty() || host.eq_ignore_ascii_case("localhost"),
    };
    url.scheme() == "http" && !loopback
}

/// `url` with whatever stands between `scheme://` and an `@` in its authority shown as `…`.
fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.into() };
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}…{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

fn check_token(token: &str) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(ConfigError::TokenEmpty);
    }
    // Anything else cannot travel in an HTTP header; say so without echoing the credential.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::TokenUnsendable);
    }
    Ok(())
}

/// A response as the API defines it: JSON on success, nothing on 204, the error shape otherwise.
fn parse_response(status: StatusCode, body: &[u8]) -> Result<Option<Value>, ClientError> {
    if status.is_success() {
        if status == StatusCode::NO_CONTENT || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("HTTP {status} with a body that is not JSON ({e})")));
    }
    Err(parse_error(status, body))
}

fn parse_error(status: StatusCode, body: &[u8]) -> ClientError {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return ClientError::Protocol(format!("HTTP {status} with a body that is not JSON: {}", snippet(body)));
    };
    match crate::api::decode_value::<ErrorBody>(&format!("HTTP {status}"), json.clone()) {
        Ok(ErrorBody { error }) => {
            ClientError::Api { status: status.as_u16(), code: error.code, message: error.message, body: json }
        }
        Err(e) => ClientError::Protocol(format!(
            "HTTP {status} without an Airlock error object ({}): {}",
            e.detail,
            snippet(body)
        )),
    }
}

/// The start of a foreign body (a reverse proxy's HTML page, say), safe to print.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(SNIPPET_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().nth(SNIPPET_CHARS).is_some() {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_put_the_whole_path_in_one_segment() {
        let cases = [
            ("production/openai/api-key", "/v1/secrets/production%2Fopenai%2Fapi-key"),
            ("a.b_c-D9", "/v1/secrets/a.b_c-D9"),
            ("a b+c?d#e&f", "/v1/secrets/a%20b%2Bc%3Fd%23e%26f"),
            ("x/../y", "/v1/secrets/x%2F..%2Fy"),
            ("..", "/v1/secrets/%2E%2E"),
            (".", "/v1/secrets/%2E"),
            ("100%", "/v1/secrets/100%25"),
            ("é", "/v1/secrets/%C3%A9"),
        ];
        for (path, url) in cases {
            assert_eq!(Client::secret_url(path), url, "{path}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let q = Client::with_query(
            "/v1/audit",
            &[("since", "2025-01-02T03:04:05+01:00"), ("tag", "team=a&b"), ("actor", "ak 1")],
        );
        assert_eq!(q, "/v1/audit?since=2025-01-02T03%3A04%3A05%2B01%3A00&tag=team%3Da%26b&actor=ak%201");
        assert_eq!(Client::with_query::<&str>("/v1/audit", &[]), "/v1/audit");
    }

    #[test]
    fn plain_http_is_in_clear_only_beyond_loopback() {
        for remote in ["http://airlock-server:7878", "http://10.0.0.5:7878", "http://[2001:db8::1]:7878"] {
            assert!(in_clear_over_network(remote), "{remote}");
        }
        for local in ["http://127.0.0.1:7878", "http://[::1]:7878", "http://LOCALHOST:7878", "https://airlock:7878"] {
            assert!(!in_clear_over_network(local), "{local}");
        }
    }

    #[test]
    fn base_url_must_be_http_or_https() {
        assert_eq!(Client::new("http://127.0.0.1:7878/", "ak_x").unwrap().base_url(), "http://127.0.0.1:7878");
        assert_eq!(
            Client::new("https://vault.example/airlock//", "ak_x").unwrap().base_url(),
            "https://vault.example/airlock"
        );
        for bad in ["127.0.0.1:7878", "ftp://host", "http://", "", "http://h/?x=1", "localhost"] {
            assert!(Client::new(bad, "ak_x").is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_credentials_are_refused_without_being_echoed() {
        assert!(Client::new("http://h", "  ").is_err());
        let e = Client::new("http://h", "ak_se cret").unwrap_err().to_string();
        assert!(!e.contains("se cret"), "{e}");
        assert!(Client::new("http://h", "ak_ok\n").is_ok(), "a trailing newline from a file is trimmed");
    }

    #[test]
    fn debug_output_hides_the_credential() {
        let client = Client::new("http://h", "ak_supersecret").unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("***") && !shown.contains("supersecret"), "{shown}");
    }

    #[test]
    fn api_errors_are_parsed_from_the_error_object() {
        let body = br#"{"error":{"code":"permission_denied","message":"lacks scope","path":"a/b","required_scope":"secrets:read:a/b"}}"#;
        let e = parse_response(StatusCode::FORBIDDEN, body).unwrap_err();
        assert_eq!(e.to_string(), "permission_denied: lacks scope");
        assert_eq!(e.api_code(), Some("permission_denied"));
        let ClientError::Api { status, body, .. } = e else { panic!("not an API error") };
        assert_eq!(status, 403);
        assert_eq!(body["error"]["required_scope"], "secrets:read:a/b");
    }

    #[test]
    fn foreign_error_bodies_are_protocol_errors() {
        let html = b"<html>\n<h1>502 Bad Gateway</h1></html>";
        let e = parse_response(StatusCode::BAD_GATEWAY, html).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)));
        assert!(e.to_string().contains("502 Bad Gateway") && !e.to_string().contains('\n'), "{e}");
        let e = parse_response(StatusCode::NOT_FOUND, br#"{"message":"nope"}"#).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
        let long = "x".repeat(1000);
        let e = parse_response(StatusCode::BAD_GATEWAY, long.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }

    #[test]
    fn success_bodies() {
        assert_eq!(parse_response(StatusCode::NO_CONTENT, b"").unwrap(), None);
        assert_eq!(parse_response(StatusCode::OK, br#"{"ok":true}"#).unwrap(), Some(serde_json::json!({"ok": true})));
        assert!(matches!(parse_response(StatusCode::OK, b"not json"), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn an_answer_of_another_shape_names_the_endpoint_and_the_field() {
        let answer = Answer {
            status: StatusCode::OK,
            endpoint: "GET /v1/secrets/a%2Fb".into(),
            body: Bytes::from_static(br#"{"path":"a/b","value":"hunter2"}"#),
        };
        let e = answer.decode::<crate::api::secrets::SecretRead>().unwrap_err();
        assert!(matches!(e, ClientError::Contract(_)), "{e}");
        let shown = e.to_string();
        assert!(shown.contains("GET /v1/secrets/a%2Fb") && shown.contains("missing field `version`"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = parse_response(StatusCode::FORBIDDEN, br#"{"error":{"code":"permission_denied"}}"#).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)) && e.to_string().contains("missing field `message`"), "{e}");
    }

    #[test]
    fn a_server_url_with_credentials_is_refused_without_quoting_them() {
        for url in ["https://admin:hunter2@api.example.com", "http://hunter2@127.0.0.1:7878/", "https://u:hunter2@h/x"]
        {
            let e = parse_base_url(url).unwrap_err().to_string();
            assert!(e.contains("user name or password") && !e.contains("hunter2"), "{e}");
        }
        let e = parse_base_url("ftp://user:hunter2@host").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(parse_base_url("https://api.example.com/prefix/").unwrap(), "https://api.example.com/prefix");
    }
}
