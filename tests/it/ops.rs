//! Operational endpoints.

use crate::support::{Backend, Server};

#[test]
fn health_readiness_and_metrics_answer_without_credentials() {
    let srv = Server::start(Backend::Sqlite);
    srv.admin("GET", "/v1/secrets", None);
    let http = reqwest::blocking::Client::new();
    assert_eq!(http.get(srv.url("/healthz")).send().unwrap().status(), 200);
    let ready: serde_json::Value = http.get(srv.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["status"], "ready");
    let metrics = http.get(srv.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains(r#"airlock_http_requests_total{method="GET",route="/v1/secrets",status="200"}"#),
        "{metrics}"
    );
}
