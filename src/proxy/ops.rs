//! `/_airlock/…` on the proxy listener: liveness, readiness (the proxy holds its token),
//! metrics and the local CA certificate. These are answered here and never forwarded.

use http::{Response, StatusCode};

use super::Proxy;
use super::body::{Body, text};
use super::error::ErrorCode;

pub fn answer(proxy: &Proxy, path: &str) -> Response<Body> {
    match path {
        "/_airlock/healthz" => text(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        "/_airlock/readyz" if proxy.reporter.spool_full() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"not_ready","reason":"the access-event spool is full (--spool-max-bytes) or cannot be written (disk full): requests that would inject are refused until events can be recorded again"}"#,
        ),
        "/_airlock/readyz" if proxy.central.is_ready() => {
            text(StatusCode::OK, "application/json", r#"{"status":"ready"}"#)
        }
        "/_airlock/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"not_ready","reason":"the proxy holds no token (central API unreachable or approval pending), or the central API refused this agent its policy"}"#,
        ),
        "/_airlock/ca.pem" => text(StatusCode::OK, "application/x-pem-file", proxy.ca.ca_pem().to_owned()),
        "/_airlock/metrics" => {
            proxy.meters.gather();
            let body = proxy.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        _ => {
            let code = ErrorCode::NotFound;
            let body =
                serde_json::json!({ "error": { "code": code.as_str(), "message": "no such /_airlock/ endpoint" } });
            text(code.status(), "application/json", body.to_string())
        }
    }
}
