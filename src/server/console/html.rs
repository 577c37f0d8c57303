//! HTML building blocks: escaping (everything shown passes through `esc`: paths,
//! descriptions and agent names are chosen by others), the page layout, and the error page.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::domain::Scope;
use crate::server::auth::Caller;
use crate::server::error::ApiError;

/// `s` safe to place in element content and in double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An optional text, escaped, or a dash.
pub fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "—".to_owned(), esc)
}

/// A query string of `pairs` (empty values left out), for links.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// The hidden field every form of a session carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// The pages in the navigation, and the scope each needs (`None`: every key may open it).
const PAGES: [(&str, &str, Option<Scope>); 5] = [
    ("approvals", "Approvals", Some(Scope::ApprovalsDecide)),
    ("audit", "Audit", Some(Scope::AuditRead)),
    ("secrets", "Secrets", None),
    ("agents", "Agents", Some(Scope::AgentsManage)),
    ("tokens", "Tokens", None),
];

/// A whole page: head, navigation (only what `caller` may open), sign-out form, `body`.
pub fn page(title: &str, current: &str, who: Option<(&Caller, &str)>, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Airlock console</title><link rel="stylesheet" href="/console/console.css"></head>
<body><header><a class="brand" href="/console">Airlock</a>"#,
        esc(title)
    );
    if let Some((caller, csrf)) = who {
        out.push_str("<nav>");
        for (slug, label, scope) in &PAGES {
            if scope.as_ref().is_none_or(|s| caller.has(s)) {
                let class = if *slug == current { r#" class="current""# } else { "" };
                let _ = write!(out, r#"<a href="/console/{slug}"{class}>{label}</a>"#);
            }
        }
        let _ = write!(
            out,
            r#"</nav><form class="signout" method="post" action="/console/logout">{}<span class="who">{}</span> <button type="submit">Sign out</button></form>"#,
            csrf_field(csrf),
            esc(&caller.credential.name)
        );
    }
    let _ = write!(out, "</header><main><h1>{}</h1>{body}</main></body></html>", esc(title));
    out
}

/// An error shown as a page: the status, and a message that says what to do.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> PageError {
        PageError { status, code: code.to_owned(), message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        // The API's messages never quote a value; they are escaped when shown.
        PageError { status: e.code.status(), code: e.code.as_str().to_owned(), message: e.message }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = format!(
            r#"<p class="error" data-code="{}">{}</p><p><a href="/console">Back to the console</a></p>"#,
            esc(&self.code),
            esc(&self.message)
        );
        (self.status, Html(page(title, "", None, &body))).into_response()
    }
}

pub type PageResult = Result<Response, PageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(opt(None), "—");
        assert_eq!(query(&[("type", "access"), ("actor", ""), ("path", "a/b c")]), "type=access&path=a%2Fb+c");
    }
}
