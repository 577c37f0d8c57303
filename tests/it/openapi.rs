//! `GET /v1/openapi.json`: the OpenAPI 3.1 document lists every route the server serves, each
//! documented route is served with the methods it lists and no others, and every schema it
//! refers to is in it.

use serde_json::Value;

use crate::both_backends;
use crate::support::{Backend, Server, secret_value};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn document(srv: &Server) -> Value {
    let resp = reqwest::blocking::get(srv.url("/v1/openapi.json")).unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the document needs no credential");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    resp.json().unwrap()
}

/// The path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{path}", "openapi%2Fabsent").replace("{id}", "no-such-id")
}

/// Whether the router itself refused the request (no route, or not this method), as opposed
/// to a handler answering it.
fn router_refused(status: u16, body: &Value) -> bool {
    let message = body["error"]["message"].as_str().unwrap_or_default();
    status == 405 || (status == 404 && message.starts_with("no such endpoint"))
}

fn every_route_is_documented_and_every_documented_route_is_served(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("openapi/probe", &secret_value("probe"));
    let doc = document(&srv);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for expected in ["/v1/secrets", "/v1/secrets/{path}", "/v1/tokens", "/v1/audit", "/v1/openapi.json", "/healthz"] {
        assert!(paths.contains_key(expected), "{expected} is not in the document");
    }
    let http = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(5)).build().unwrap();
    for (path, ops) in paths {
        let url = srv.url(&concrete(path));
        for method in METHODS {
            let documented = ops.get(method.to_ascii_lowercase()).is_some();
            let req = http
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .bearer_auth(&srv.admin_key)
                .header("content-type", "application/json");
            // Bodies that no handler accepts: nothing is changed by the probe.
            let req = if method == "GET" || method == "DELETE" { req } else { req.body("[]") };
            let resp = req.send().unwrap();
            let status = resp.status().as_u16();
            // The change stream answers its headers and stays open: only its status counts.
            let body: Value = if path == "/v1/events" { Value::Null } else { resp.json().unwrap_or(Value::Null) };
            if documented {
                assert!(
                    !router_refused(status, &body),
                    "{method} {path} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented: {status} {body}");
            }
        }
    }
    let (status, body) = srv.admin("GET", "/v1/no-such-thing", None);
    assert!(router_refused(status, &body), "an unknown path is refused by the router: {status} {body}");
    // Nothing above changed the secret.
    let (status, body) = srv.admin("GET", "/v1/secrets/openapi%2Fprobe", None);
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn the_document_is_complete_and_carries_no_value(backend: Backend) {
    let srv = Server::start(backend);
    let doc = document(&srv);
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in &found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r} points outside components"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r} is not defined");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("default"), "{method} {path} has no error answer");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has no success answer");
            assert!(op["operationId"].is_string() && op["summary"].is_string(), "{method} {path}");
            let open = op.get("security") == Some(&serde_json::json!([]));
            assert_eq!(open, !path.starts_with("/v1/") || path == "/v1/openapi.json", "{method} {path}: security");
            if path.starts_with("/v1/") && path != "/v1/openapi.json" {
                assert!(responses.contains_key("401"), "{method} {path} does not say it needs a credential");
            }
        }
    }
    // The read of a secret documents its value; the write bodies require theirs.
    let read = &doc["paths"]["/v1/secrets/{path}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let name = read["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    assert!(doc["components"]["schemas"][name]["properties"].get("value").is_some());
    let create = &doc["paths"]["/v1/secrets"]["post"]["requestBody"];
    assert_eq!(create["required"], true);
    let schema = &create["content"]["application/json"]["schema"];
    assert!(schema["required"].as_array().unwrap().contains(&"path".into()), "{schema}");
    assert!(schema["properties"].get("value").is_some() && schema["properties"].get("external_ref").is_some());
    let list = doc["paths"]["/v1/secrets"]["get"]["parameters"].as_array().unwrap();
    assert!(list.iter().any(|p| p["name"] == "cursor" && p["in"] == "query"));
    assert!(!doc.to_string().contains(crate::support::MARKER), "no example value");
}

/// An endpoint that takes no query parameters refuses any, as its document says.
fn a_query_parameter_the_document_does_not_list_is_refused(backend: Backend) {
    let srv = Server::start(backend);
    srv.create("openapi/q", &secret_value("q"));
    let body = serde_json::json!({ "value": secret_value("q2") }).to_string();
    let (status, resp) = srv.admin("PUT", "/v1/secrets/openapi%2Fq?colour=red", Some(&body));
    assert_eq!(status, 400, "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("colour"), "{resp}");
    let (_, read) = srv.admin("GET", "/v1/secrets/openapi%2Fq", None);
    assert_eq!(read["version"], 1, "nothing was written");
}

both_backends!(
    every_route_is_documented_and_every_documented_route_is_served,
    the_document_is_complete_and_carries_no_value,
    a_query_parameter_the_document_does_not_list_is_refused,
);
