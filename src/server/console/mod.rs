//! `/console`: the web console, server-rendered HTML over the same handlers and store calls
//! as the API. An operator signs in with an API key, which is exchanged for a session
//! cookie (`session`); what the key may do decides what the pages show and allow. Every
//! form carries the session's CSRF token, checked on every POST. No script, nothing fetched
//! from elsewhere: one stylesheet, embedded in the binary.

mod html;
mod pages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub use session::{DEFAULT_IDLE, Sessions};

use self::html::{PageError, esc, page};
use self::session::{COOKIE, Session, cookie, csrf_matches};
use super::AppState;
use super::auth::{hash_secret, identify_secret};
use crate::store::CredentialKind;

const CSS: &str = include_str!("console.css");
/// Largest form accepted (a comment or a reason, a filter).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What a signed-in request carries besides its `Caller`: the session's CSRF token.
#[derive(Clone)]
pub(super) struct Signed {
    pub csrf: String,
}

pub fn router(state: AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/", get(pages::home))
        .route("/approvals", get(pages::approvals))
        .route("/approvals/{id}", get(pages::approval))
        .route("/approvals/{id}/approve", post(pages::approve))
        .route("/approvals/{id}/deny", post(pages::deny))
        .route("/audit", get(pages::audit))
        .route("/secrets", get(pages::secrets))
        .route("/secret", get(pages::secret))
        .route("/agents", get(pages::agents))
        .route("/tokens", get(pages::tokens))
        .route("/tokens/{id}/revoke", post(pages::revoke_token))
        .route("/logout", post(sign_out))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    let console = Router::new()
        .merge(signed_in)
        .route("/login", get(login_page).post(sign_in))
        .route("/console.css", get(css))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(strict_headers));
    Router::new().nest("/console", console).route("/console/", get(|| async { Redirect::to("/console") }))
}

/// On every console answer: no framing, no scripts or styles from elsewhere, no sniffing,
/// no referrer, nothing cached.
async fn strict_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], CSS).into_response()
}

async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "not_found", "no such console page")
}

async fn wrong_method() -> PageError {
    PageError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "this console page does not accept that method")
}

/// The `Set-Cookie` of a session: HttpOnly, SameSite=Strict, limited to `/console`, and
/// Secure when the console is reached over HTTPS (`--tls-cert`, or an https `--public-url`).
fn session_cookie(state: &AppState, value: &str, max_age: Option<u64>) -> HeaderValue {
    let https = state.config.tls.is_some()
        || state.config.public_url.as_deref().is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let mut c = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if https {
        c.push_str("; Secure");
    }
    if let Some(secs) = max_age {
        c.push_str(&format!("; Max-Age={secs}"));
    }
    HeaderValue::from_str(&c).expect("a cookie of hex characters is a valid header")
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    session_cookie(state, "", Some(0))
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/console",
    }
}

/// To the sign-in form, coming back to `path` (a GET) afterwards.
fn to_sign_in(state: &AppState, path: Option<&str>, forget: bool) -> Response {
    let target = match path {
        Some(p) => format!("/console/login?{}", html::query(&[("next", p)])),
        None => "/console/login".to_owned(),
    };
    let mut resp = Redirect::to(&target).into_response();
    if forget {
        resp.headers_mut().insert(header::SET_COOKIE, clear_cookie(state));
    }
    resp
}

/// Middleware of every page behind sign-in: the session (else to the sign-in form), its
/// key still usable (else the session ends), the per-credential rate limit, and on a POST
/// the CSRF token of the session in the form.
async fn require_session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let is_get = req.method() == http::Method::GET;
    // The URI as it came (the nested router sees it without `/console`).
    let uri = req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().clone(), |u| u.0.clone());
    let back = is_get.then(|| uri.path_and_query().map(|p| p.as_str().to_owned())).flatten();
    let Some(id) = cookie(req.headers()) else { return to_sign_in(&state, back.as_deref(), false) };
    let Some(session) = state.console.touch(&id) else { return to_sign_in(&state, back.as_deref(), true) };
    let ip = peer.ip().to_canonical();
    let user_agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let caller = match super::auth::caller_by_hash(&state, &session.credential_hash, ip, user_agent).await {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            state.console.end(&id);
            return to_sign_in(&state, back.as_deref(), true);
        }
        Err(e) => return PageError::from(e).into_response(),
    };
    if let Err(e) = super::auth::within_rate(&state, &caller.credential.id) {
        return PageError::from(e).into_response();
    }
    let mut req = if is_get {
        req
    } else {
        match checked_form(req, &session).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    };
    req.extensions_mut().insert(Arc::new(caller));
    req.extensions_mut().insert(Signed { csrf: session.csrf.clone() });
    next.run(req).await
}

/// A POST whose form carries the session's CSRF token, rebuilt for the handler; else the
/// 403 page (nothing is done).
async fn checked_form(req: Request, session: &Session) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the form is too large").into_response()
    })?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let sent = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    if !csrf_matches(session, sent) {
        return Err(PageError::forbidden(
            "this form did not carry the session's CSRF token; reload the page and submit it again",
        )
        .into_response());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

fn login_form(next: &str, problem: Option<&str>) -> String {
    let problem = problem.map(|p| format!(r#"<p class="error">{}</p>"#, esc(p))).unwrap_or_default();
    let body = format!(
        r#"{problem}<form class="login" method="post" action="/console/login">
<input type="hidden" name="next" value="{}">
<label>API key <input type="password" name="key" autocomplete="off" required autofocus></label>
<button type="submit">Sign in</button></form>
<p class="hint">The key is exchanged for a session cookie; it is not kept in the browser. A session is held
by this server process: sign in again after a restart, or on another replica.</p>"#,
        esc(next)
    );
    page("Sign in", "", None, &body)
}

async fn login_page(Query(q): Query<LoginQuery>) -> Html<String> {
    Html(login_form(safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
struct LoginForm {
    key: Option<String>,
    next: Option<String>,
}

/// The sign-in form: the key is checked as the API checks a bearer credential (throttled per
/// address, failures audited), then forgotten; only its hash stays with the session.
async fn sign_in(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let user_agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return PageError::bad_request("the form is unreadable or too large").into_response(),
    };
    let form: LoginForm = serde_urlencoded::from_bytes(&bytes).unwrap_or(LoginForm { key: None, next: None });
    drop(bytes);
    let next = safe_next(form.next.as_deref()).to_owned();
    let refuse = |status: StatusCode, problem: &str| (status, Html(login_form(&next, Some(problem)))).into_response();
    let key = zeroize::Zeroizing::new(form.key.unwrap_or_default());
    let key = key.trim();
    if key.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "enter an API key");
    }
    if key.starts_with("at_") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "sign in with an API key (ak_…); scoped tokens are not for the console",
        );
    }
    let caller = match identify_secret(&state, key, peer.ip().to_canonical(), user_agent).await {
        Ok(caller) => caller,
        Err(e) => return refuse(e.code.status(), &e.message),
    };
    if caller.credential.kind == CredentialKind::Token {
        return refuse(
            StatusCode::BAD_REQUEST,
            "sign in with an API key (ak_…); scoped tokens are not for the console",
        );
    }
    let Some(id) = state.console.open(hash_secret(key)) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many console sessions are open; try again later");
    };
    tracing::info!(credential = %caller.credential.id, "console session opened");
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(&state, &id, None));
    resp
}

async fn sign_out(State(state): State<AppState>, req: Request) -> Response {
    if let Some(id) = cookie(req.headers()) {
        state.console.end(&id);
    }
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear_cookie(&state));
    resp
}

/// The fields of a POSTed form (the middleware has checked its CSRF token).
fn form_field(bytes: &Bytes, name: &str) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).ok()?;
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| !v.trim().is_empty())
}
