//! The API's routes and its OpenAPI 3.1 document, from one table.
//!
//! Each endpoint is added once, as `method, path, summary, handler`. From the handler's own
//! signature the table learns what the document says: its JSON body (`JsonBody<T>`), its
//! query parameters (`QueryParams<Q>`), its answer (`Json<T>`, `(StatusCode, Json<T>)`,
//! `StatusCode`) and whether it can fail (`ApiResult`); the schemas are those of the wire
//! types in `crate::api` (and the query structs), derived by `schemars` from the same serde
//! attributes that shape the wire. The same table builds the router, so a route cannot be
//! served without being documented, and an endpoint that takes no query parameters refuses
//! any (`extract::no_query`), as the document says.
//!
//! What a signature cannot say (a `Response` built by hand, a body read as bytes, a second
//! success status) the entry says with `responds` / `body`.

use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::extract::{self, JsonBody, PathParam, QueryParams};
use crate::api::errors::ErrorBody;

/// Schemas for the document: responses as the server writes them, request bodies and query
/// parameters as it reads them (inlined, so the two never share a name).
pub struct Schemas {
    responses: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let mut out = SchemaSettings::draft2020_12();
        out.definitions_path = "/components/schemas".into();
        out.meta_schema = None;
        out.contract = Contract::Serialize;
        let mut inp = SchemaSettings::draft2020_12();
        inp.meta_schema = None;
        inp.inline_subschemas = true;
        inp.contract = Contract::Deserialize;
        Schemas { responses: out.into_generator(), requests: inp.into_generator() }
    }

    fn response<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }
}

/// What the document says of one operation, filled in from the handler's types.
pub struct OpDoc {
    body: Option<(Value, bool)>,
    query: Vec<Value>,
    takes_query: bool,
    /// Success answers: status, media type and schema.
    ok: Vec<(u16, &'static str, Option<Value>)>,
    fallible: bool,
}

/// A handler argument, as the document sees it.
pub trait Input {
    fn describe(_: &mut OpDoc, _: &mut Schemas) {}
}

impl Input for State<AppState> {}
impl Input for Authed {}
impl Input for PathParam {}
impl Input for Path<String> {}
impl Input for HeaderMap {}
/// A body read as bytes: the entry names its schema (`body`).
impl Input for Bytes {}

impl<T: JsonSchema> Input for JsonBody<T> {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.body = Some((s.request::<T>(), true));
    }
}

impl<Q: JsonSchema> Input for QueryParams<Q> {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.takes_query = true;
        let schema = s.request::<Q>();
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                d.query.push(json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": prop,
                }));
            }
        }
    }
}

macro_rules! inputs {
    ($($a:ident),*) => {
        impl<$($a: Input),*> Input for ($($a,)*) {
            #[allow(unused_variables)]
            fn describe(d: &mut OpDoc, s: &mut Schemas) {
                $($a::describe(d, s);)*
            }
        }
    };
}
inputs!();
inputs!(A1);
inputs!(A1, A2);
inputs!(A1, A2, A3);
inputs!(A1, A2, A3, A4);
inputs!(A1, A2, A3, A4, A5);
inputs!(A1, A2, A3, A4, A5, A6);

/// A handler's answer, as the document sees it.
pub trait Reply {
    fn describe(_: &mut OpDoc, _: &mut Schemas) {}
}

impl<T: JsonSchema> Reply for Json<T> {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.ok.push((200, "application/json", Some(s.response::<T>())));
    }
}

/// `(StatusCode, Json<T>)` is how the API answers a create: 201 unless the entry says.
impl<T: JsonSchema> Reply for (StatusCode, Json<T>) {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.ok.push((201, "application/json", Some(s.response::<T>())));
    }
}

/// `(StatusCode, headers, Json<T>)`: an answer with headers of its own (`ETag`); 200 unless
/// the entry adds another status.
impl<T: JsonSchema, H> Reply for (StatusCode, H, Json<T>) {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.ok.push((200, "application/json", Some(s.response::<T>())));
    }
}

impl Reply for StatusCode {
    fn describe(d: &mut OpDoc, _: &mut Schemas) {
        d.ok.push((204, "", None));
    }
}

/// Built by hand: the entry says what it answers (`responds`).
impl Reply for Response {}

impl<S> Reply for Sse<S> {
    fn describe(d: &mut OpDoc, _: &mut Schemas) {
        d.ok.push((200, "text/event-stream", Some(json!({ "type": "string" }))));
    }
}

impl<R: Reply> Reply for Result<R, ApiError> {
    fn describe(d: &mut OpDoc, s: &mut Schemas) {
        d.fallible = true;
        R::describe(d, s);
    }
}

/// Ties a handler to its argument tuple and answer type, as `Handler` does for axum.
pub trait Signature<Args, R> {}

macro_rules! signature {
    ($($a:ident),*) => {
        impl<F, Fut, R, $($a),*> Signature<($($a,)*), R> for F
        where
            F: Fn($($a),*) -> Fut,
            Fut: Future<Output = R>,
        {
        }
    };
}
signature!();
signature!(A1);
signature!(A1, A2);
signature!(A1, A2, A3);
signature!(A1, A2, A3, A4);
signature!(A1, A2, A3, A4, A5);
signature!(A1, A2, A3, A4, A5, A6);

struct Op {
    method: Method,
    path: &'static str,
    summary: &'static str,
    doc: OpDoc,
    /// `true` for the `/v1` routes, which need a credential.
    authenticated: bool,
    route: MethodRouter<AppState>,
}

/// The routes of the API and what the document says of each.
pub struct Routes {
    ops: Vec<Op>,
    schemas: Schemas,
    authenticated: bool,
}

impl Routes {
    /// The routes under `/v1`, which need a credential.
    pub fn v1() -> Routes {
        Routes { ops: Vec::new(), schemas: Schemas::new(), authenticated: true }
    }

    /// Routes outside `/v1`, which need none.
    pub fn open() -> Routes {
        Routes { ops: Vec::new(), schemas: Schemas::new(), authenticated: false }
    }

    /// Adds `method path`, served by `handler`, documented from its signature.
    pub fn op<H, T, A, R>(mut self, method: Method, path: &'static str, summary: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState> + Signature<A, R>,
        T: 'static,
        A: Input,
        R: Reply,
    {
        let mut doc = OpDoc { body: None, query: Vec::new(), takes_query: false, ok: Vec::new(), fallible: false };
        A::describe(&mut doc, &mut self.schemas);
        R::describe(&mut doc, &mut self.schemas);
        let filter = MethodFilter::try_from(method.clone()).expect("a method the router can serve");
        let mut route = on(filter, handler);
        if !doc.takes_query {
            route = route.route_layer(middleware::from_fn(extract::no_query));
        }
        let authenticated = self.authenticated;
        self.ops.push(Op { method, path, summary, doc, authenticated, route });
        self
    }

    fn last(&mut self) -> &mut OpDoc {
        &mut self.ops.last_mut().expect("an entry to amend").doc
    }

    /// The last entry's success answers, for a handler that builds its `Response` by hand or
    /// answers with a status of its own: replaces what its type said.
    pub fn responds<T: JsonSchema>(mut self, statuses: &[u16]) -> Routes {
        let schema = self.schemas.response::<T>();
        let doc = self.last();
        doc.ok = statuses.iter().map(|s| (*s, "application/json", Some(schema.clone()))).collect();
        self
    }

    /// Adds a success answer to the last entry's.
    pub fn also<T: JsonSchema>(mut self, status: u16) -> Routes {
        let schema = self.schemas.response::<T>();
        self.last().ok.push((status, "application/json", Some(schema)));
        self
    }

    /// The last entry's answer is plain text (`/metrics`).
    pub fn text(mut self) -> Routes {
        self.last().ok = vec![(200, "text/plain", Some(json!({ "type": "string" })))];
        self
    }

    /// The JSON body of the last entry, which reads it as bytes; `required: false` when it
    /// may be empty.
    pub fn body<T: JsonSchema>(mut self, required: bool) -> Routes {
        let schema = self.schemas.request::<T>();
        self.last().body = Some((schema, required));
        self
    }

    /// The router: one `MethodRouter` per path, merged from its entries.
    pub fn router(&self) -> axum::Router<AppState> {
        let mut paths: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
        for op in &self.ops {
            match paths.iter_mut().find(|(p, _)| *p == op.path) {
                Some((_, r)) => *r = std::mem::take(r).merge(op.route.clone()),
                None => paths.push((op.path, op.route.clone())),
            }
        }
        paths.into_iter().fold(axum::Router::new(), |router, (path, route)| router.route(path, route))
    }

    /// Adds these routes' operations to `doc` under `prefix`, and their schemas.
    pub fn document_into(&mut self, prefix: &str, doc: &mut Value) {
        for op in &self.ops {
            let path = format!("{prefix}{}", op.path);
            let operation = operation(op);
            doc["paths"][&path][op.method.as_str().to_ascii_lowercase()] = operation;
        }
        let defs = self.schemas.responses.take_definitions(true);
        let schemas = doc["components"]["schemas"].as_object_mut().expect("components.schemas is an object");
        schemas.extend(defs);
    }
}

/// The error statuses an operation can answer: a query it does not take (400), and for the
/// `/v1` routes the credential checks; then, for a handler that can fail, what its inputs
/// can be wrong about.
fn error_statuses(op: &Op) -> Vec<(u16, ErrorCode)> {
    let mut out = vec![(400, ErrorCode::InvalidRequest)];
    if op.authenticated {
        out.extend([(401, ErrorCode::Unauthorized), (403, ErrorCode::PermissionDenied), (429, ErrorCode::RateLimited)]);
    }
    if op.doc.fallible {
        if op.path.contains('{') {
            out.push((404, ErrorCode::NotFound));
        }
        if op.doc.body.is_some() {
            out.extend([
                (409, ErrorCode::Conflict),
                (413, ErrorCode::InvalidRequest),
                (422, ErrorCode::ValidationError),
            ]);
        }
        out.push((503, ErrorCode::Unavailable));
    }
    out
}

fn operation(op: &Op) -> Value {
    let mut parameters: Vec<Value> = path_params(op.path);
    parameters.extend(op.doc.query.iter().cloned());
    let mut responses = Map::new();
    for (status, media, schema) in &op.doc.ok {
        let mut answer = json!({ "description": success_text(*status) });
        if let Some(schema) = schema {
            answer["content"] = json!({ *media: { "schema": schema } });
        }
        responses.insert(status.to_string(), answer);
    }
    for (status, code) in error_statuses(op) {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(&format!("`{}` and others", code.as_str())));
    }
    responses.insert("default".into(), error_response("Any other error, in the API's error shape"));
    let mut out = json!({
        "operationId": operation_id(&op.method, op.path),
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some((schema, required)) = &op.doc.body {
        out["requestBody"] = json!({ "required": required, "content": { "application/json": { "schema": schema } } });
    }
    if !op.authenticated {
        out["security"] = json!([]);
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

fn success_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted: waiting for approval",
        204 => "Done; no body",
        _ => "Answer",
    }
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let description = if name == "path" {
                "The secret path in one URL segment, `/` encoded as `%2F`"
            } else {
                "The resource's id"
            };
            json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string", "minLength": 1 } })
        })
        .collect()
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(seg.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    }
    id
}

/// The document for `v1` (served under `/v1`) and `open` (at the root).
pub fn document(mut v1: Routes, mut open: Routes) -> Value {
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Airlock central API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Secrets, scoped tokens, approvals, policies and the audit trail. Every `/v1` endpoint needs `Authorization: Bearer <API key, agent key or token>`; errors are `{\"error\":{\"code\",\"message\",…}}`.",
        },
        "paths": {},
        "components": {
            "schemas": {},
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
    });
    // Every error answer refers to it.
    v1.schemas.response::<ErrorBody>();
    v1.document_into("/v1", &mut doc);
    open.document_into("", &mut doc);
    doc
}

/// `GET /v1/openapi.json`: the document, built once.
pub async fn serve() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| super::api_document().to_string());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}
