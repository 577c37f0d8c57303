//! The console's pages. Each asks the same handlers or store calls as the API, as the
//! signed-in key, so scopes, audit records and refusals are the API's own; what reaches the
//! page is escaped. No page shows a secret value: the secrets pages read metadata and
//! versions only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use serde::Deserialize;
use serde_json::json;

use super::Signed;
use super::form_field;
use super::html::{PageError, PageResult, csrf_field, esc, opt, page, query};
use crate::api::policy::PolicyText;
use crate::domain::audit::kind;
use crate::domain::time::{parse_rfc3339, to_rfc3339};
use crate::domain::{Scope, SecretPath};
use crate::server::AppState;
use crate::server::approvals::{self, grants_and_hosts, require_decider};
use crate::server::auth::Authed;
use crate::server::extract::{PathParam, QueryParams};
use crate::server::{agents, secrets, tokens, trail};
use crate::store::{Approval, AuditFilter, CredentialKind};

fn render(title: &str, current: &str, caller: &Authed, signed: &Signed, body: &str) -> PageResult {
    Ok(Html(page(title, current, Some((caller, &signed.csrf)), body)).into_response())
}

/// A query string for an API handler's own query type, so it checks it as the API does.
fn api_query<T: serde::de::DeserializeOwned>(pairs: &[(&str, &str)]) -> Result<QueryParams<T>, PageError> {
    serde_urlencoded::from_str(&query(pairs)).map(QueryParams).map_err(|e| PageError::bad_request(e.to_string()))
}

pub async fn home(caller: Authed) -> Redirect {
    if caller.has(&Scope::ApprovalsDecide) {
        Redirect::to("/console/approvals")
    } else {
        Redirect::to("/console/secrets")
    }
}

// ---------------------------------------------------------------- approvals

fn scopes_of(a: &Approval) -> Vec<String> {
    a.request["scopes"]
        .as_array()
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn ttl_of(a: &Approval) -> String {
    a.request["ttl_seconds"].as_u64().map_or_else(|| "—".to_owned(), |s| format!("{s} s"))
}

fn list_of(items: &[String]) -> String {
    if items.is_empty() { "—".to_owned() } else { items.iter().map(|i| esc(i)).collect::<Vec<_>>().join("<br>") }
}

async fn approval_rows(state: &AppState, tenant: &str, items: &[Approval]) -> String {
    let mut rows = String::new();
    for a in items {
        let scopes = scopes_of(a);
        let (grants, hosts) = grants_and_hosts(state, tenant, a.agent_name.as_deref(), &scopes).await;
        let _ = write!(
            rows,
            r#"<tr class="status-{status}"><td><a href="/console/approvals/{id}">{id}</a></td><td>{agent}</td><td>{grants}</td><td>{hosts}</td><td>{scopes}</td><td>{ttl}</td><td>{created}</td><td><span class="badge {status}">{status}</span></td></tr>"#,
            status = esc(&a.status),
            id = esc(&a.id),
            agent = opt(a.agent_name.as_deref()),
            grants = list_of(&grants),
            hosts = list_of(&hosts),
            scopes = list_of(&scopes),
            ttl = ttl_of(a),
            created = esc(&to_rfc3339(a.created_at)),
        );
    }
    rows
}

const APPROVAL_HEAD: &str = "<tr><th>Request</th><th>Agent</th><th>Grant</th><th>Hosts</th><th>Scopes</th><th>TTL</th><th>Created</th><th>Status</th></tr>";

/// Pending requests first (oldest first: they have waited longest), then the latest decided.
pub async fn approvals(
    State(state): State<AppState>,
    caller: Authed,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    require_decider(&caller)?;
    let tenant = caller.tenant().to_owned();
    let mut pending = state
        .store
        .list_approvals_before(&tenant, Some("pending"), None, 500)
        .await
        .map_err(crate::server::ApiError::from)?;
    pending.reverse();
    let recent =
        state.store.list_approvals_before(&tenant, None, None, 100).await.map_err(crate::server::ApiError::from)?;
    let decided: Vec<Approval> = recent.into_iter().filter(|a| a.status != "pending").take(50).collect();
    let mut body = format!(r#"<h2>Pending <span class="count">{}</span></h2>"#, pending.len());
    if pending.is_empty() {
        body.push_str(r#"<p class="empty">No request waits for approval.</p>"#);
    } else {
        let _ = write!(
            body,
            r#"<table class="approvals pending">{APPROVAL_HEAD}{}</table>"#,
            approval_rows(&state, &tenant, &pending).await
        );
    }
    body.push_str("<h2>Recently decided</h2>");
    if decided.is_empty() {
        body.push_str(r#"<p class="empty">None yet.</p>"#);
    } else {
        let _ = write!(
            body,
            r#"<table class="approvals decided">{APPROVAL_HEAD}{}</table>"#,
            approval_rows(&state, &tenant, &decided).await
        );
    }
    render("Approvals", "approvals", &caller, &signed, &body)
}

pub async fn approval(
    State(state): State<AppState>,
    caller: Authed,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> PageResult {
    require_decider(&caller)?;
    let a = state
        .store
        .approval(caller.tenant(), &id)
        .await
        .map_err(crate::server::ApiError::from)?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "not_found", format!("no approval request '{id}'")))?;
    let scopes = scopes_of(&a);
    let (grants, hosts) = grants_and_hosts(&state, caller.tenant(), a.agent_name.as_deref(), &scopes).await;
    let description = a.request["description"].as_str();
    let mut body = format!(
        r#"<table class="fields">
<tr><th>Request</th><td class="mono">{id}</td></tr>
<tr><th>Status</th><td><span class="badge {status}" id="status">{status}</span></td></tr>
<tr><th>Agent</th><td>{agent}</td></tr>
<tr><th>Requester</th><td class="mono">{requester}</td></tr>
<tr><th>Why approval</th><td>{reason}</td></tr>
<tr><th>Grant</th><td>{grants}</td></tr>
<tr><th>Hosts</th><td>{hosts}</td></tr>
<tr><th>Scopes</th><td class="mono">{scopes}</td></tr>
<tr><th>TTL</th><td>{ttl}</td></tr>
<tr><th>Description</th><td>{description}</td></tr>
<tr><th>Created</th><td>{created}</td></tr>
<tr><th>Decided</th><td>{decided} {by}</td></tr>
<tr><th>Note</th><td>{note}</td></tr>
</table>"#,
        id = esc(&a.id),
        status = esc(&a.status),
        agent = opt(a.agent_name.as_deref()),
        requester = esc(&a.requester_id),
        reason = esc(&a.reason),
        grants = list_of(&grants),
        hosts = list_of(&hosts),
        scopes = list_of(&scopes),
        ttl = ttl_of(&a),
        description = opt(description),
        created = esc(&to_rfc3339(a.created_at)),
        decided = opt(a.decided_at.map(to_rfc3339).as_deref()),
        by = a.decided_by.as_deref().map(|b| format!("by <span class=\"mono\">{}</span>", esc(b))).unwrap_or_default(),
        note = opt(a.note.as_deref()),
    );
    if a.status == "pending" {
        let csrf = csrf_field(&signed.csrf);
        let _ = write!(
            body,
            r#"<div class="decide">
<form method="post" action="/console/approvals/{id}/approve" class="approve">{csrf}<label>Comment <input type="text" name="comment" maxlength="500"></label><button type="submit" name="decision" value="approve">Approve</button></form>
<form method="post" action="/console/approvals/{id}/deny" class="deny">{csrf}<label>Reason <input type="text" name="reason" maxlength="500"></label><button type="submit" name="decision" value="deny">Deny</button></form>
</div>"#,
            id = esc(&a.id),
        );
    }
    body.push_str(r#"<p><a href="/console/approvals">All approval requests</a></p>"#);
    render(&format!("Approval request {}", a.id), "approvals", &caller, &signed, &body)
}

/// Approves or denies as `POST /v1/approvals/{id}/approve|deny` does (the same handler:
/// the same checks and audit record), then back to the request's page.
async fn decide(state: AppState, caller: Authed, id: String, approve: bool, form: Bytes) -> PageResult {
    let note_field = if approve { "comment" } else { "reason" };
    let body = match form_field(&form, note_field) {
        Some(note) => Bytes::from(json!({ note_field: note }).to_string()),
        None => Bytes::new(),
    };
    let back = approvals::console_link(&id);
    if approve {
        let _ = approvals::approve(State(state), caller, Path(id), body).await?;
    } else {
        let _ = approvals::deny(State(state), caller, Path(id), body).await?;
    }
    Ok(Redirect::to(&back).into_response())
}

pub async fn approve(State(state): State<AppState>, caller: Authed, Path(id): Path<String>, form: Bytes) -> PageResult {
    decide(state, caller, id, true, form).await
}

pub async fn deny(State(state): State<AppState>, caller: Authed, Path(id): Path<String>, form: Bytes) -> PageResult {
    decide(state, caller, id, false, form).await
}

// ---------------------------------------------------------------- audit

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditForm {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
}

/// Records an operator looks for first: failures and refusals.
fn is_refusal(kind: &str, success: bool) -> bool {
    !success || kind.ends_with("denied") || kind.ends_with("refused") || kind.ends_with("failure")
}

const PAGE_SIZE: i64 = 100;

pub async fn audit(
    State(state): State<AppState>,
    caller: Authed,
    Extension(signed): Extension<Signed>,
    q: Result<Query<AuditForm>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    if !caller.has(&Scope::AuditRead) {
        return Err(PageError::forbidden("this key lacks scope 'audit:read'"));
    }
    let Query(q) = q.map_err(|e| PageError::bad_request(e.body_text()))?;
    let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let bound = |name: &str, v: &str| {
        some(v).map(|s| parse_rfc3339(&s).map_err(|e| PageError::bad_request(format!("{name}: {e}")))).transpose()
    };
    if let Some(p) = some(&q.path) {
        SecretPath::parse(&p).map_err(|e| PageError::bad_request(format!("path: {e}")))?;
    }
    let success = match q.outcome.as_str() {
        "" => None,
        "success" => Some(true),
        "failure" => Some(false),
        other => return Err(PageError::bad_request(format!("outcome '{other}' is not one of success, failure"))),
    };
    let before_seq = match some(&q.cursor) {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| PageError::bad_request("bad cursor"))?),
    };
    let filter = AuditFilter {
        namespace: some(&q.namespace),
        path: some(&q.path),
        actor: some(&q.actor),
        kind: some(&q.kind),
        since_ms: bound("since", &q.since)?,
        until_ms: bound("until", &q.until)?,
        before_seq,
        limit: PAGE_SIZE,
    };
    let events = state.store.list_audit(caller.tenant(), &filter).await.map_err(crate::server::ApiError::from)?;
    let next_cursor = (events.len() as i64 == PAGE_SIZE).then(|| events.last().map(|e| e.seq.to_string())).flatten();
    let verdict = trail::verify(State(state.clone()), Authed(caller.0.clone())).await?.0;

    let mut body = String::new();
    let ok = verdict["ok"].as_bool() == Some(true);
    let checked = verdict["checked"].as_u64().unwrap_or(0);
    let checkpoint = verdict["checkpoint"]["status"].as_str().unwrap_or("unknown");
    if ok {
        let _ = write!(
            body,
            r#"<p class="verify ok" id="chain">Audit chain verified: {checked} records, checkpoint {}.</p>"#,
            esc(checkpoint)
        );
    } else {
        let _ = write!(
            body,
            r#"<p class="verify broken" id="chain">Audit chain does NOT verify: first broken link {}; checkpoint {} ({}).</p>"#,
            esc(&verdict["first_broken"].to_string()),
            esc(checkpoint),
            esc(verdict["checkpoint"]["message"].as_str().unwrap_or(""))
        );
    }
    let selected = |v: &str| if q.outcome == v { " selected" } else { "" };
    let _ = write!(
        body,
        r#"<form class="filters" method="get" action="/console/audit">
<label>Type <input name="type" value="{}" placeholder="access.refused"></label>
<label>Path <input name="path" value="{}" placeholder="production/openai/api-key"></label>
<label>Namespace <input name="namespace" value="{}" placeholder="production"></label>
<label>Actor <input name="actor" value="{}" placeholder="key_… or agt_…"></label>
<label>Outcome <select name="outcome"><option value="">any</option><option value="success"{}>success</option><option value="failure"{}>failure</option></select></label>
<label>Since <input name="since" value="{}" placeholder="2026-01-01T00:00:00Z"></label>
<label>Until <input name="until" value="{}" placeholder="RFC 3339"></label>
<button type="submit">Filter</button> <a href="/console/audit">Clear</a></form>"#,
        esc(&q.kind),
        esc(&q.path),
        esc(&q.namespace),
        esc(&q.actor),
        selected("success"),
        selected("failure"),
        esc(&q.since),
        esc(&q.until),
    );
    let shown: Vec<_> = events.iter().filter(|e| success.is_none_or(|s| e.success == s)).collect();
    if shown.is_empty() {
        body.push_str(r#"<p class="empty">No record matches.</p>"#);
    } else {
        body.push_str(r#"<table class="audit"><tr><th>Seq</th><th>Time</th><th>Type</th><th>Path</th><th>Actor</th><th>IP</th><th>Outcome</th><th>Detail</th></tr>"#);
        for e in shown {
            let refused = is_refusal(&e.kind, e.success);
            let _ = write!(
                body,
                r#"<tr class="{class}"><td>{seq}</td><td>{time}</td><td class="mono">{kind}</td><td class="mono">{path}</td><td>{desc}<br><span class="mono small">{actor}</span></td><td>{ip}</td><td>{outcome}</td><td class="mono small">{detail}</td></tr>"#,
                class = if refused { "refused" } else { "ok" },
                seq = e.seq,
                time = esc(&to_rfc3339(e.timestamp_ms)),
                kind = esc(&e.kind),
                path = opt(e.path.as_deref()),
                desc = opt(e.actor_description.as_deref()),
                actor = esc(&e.actor),
                ip = opt(e.ip.as_deref()),
                outcome = if e.success { "success" } else { "failure" },
                detail = esc(&e.detail.to_string()),
            );
        }
        body.push_str("</table>");
    }
    if let Some(cursor) = next_cursor {
        let link = query(&[
            ("type", &q.kind),
            ("path", &q.path),
            ("namespace", &q.namespace),
            ("actor", &q.actor),
            ("outcome", &q.outcome),
            ("since", &q.since),
            ("until", &q.until),
            ("cursor", &cursor),
        ]);
        let _ = write!(body, r#"<p><a class="next" href="/console/audit?{}">Older records</a></p>"#, esc(&link));
    }
    render("Audit", "audit", &caller, &signed, &body)
}

// ---------------------------------------------------------------- secrets

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretsForm {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    cursor: String,
}

pub async fn secrets(
    State(state): State<AppState>,
    caller: Authed,
    Extension(signed): Extension<Signed>,
    q: Result<Query<SecretsForm>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::bad_request(e.body_text()))?;
    let ns = q.namespace.trim();
    let params = api_query(&[("namespace", ns), ("cursor", q.cursor.trim()), ("limit", "100")])?;
    let list = secrets::list(State(state), Authed(caller.0.clone()), params).await?.0;
    let mut body = format!(
        r#"<form class="filters" method="get" action="/console/secrets"><label>Namespace <input name="namespace" value="{}" placeholder="production"></label><button type="submit">Show</button></form>
<p class="hint">Metadata and versions only: the console never shows a secret's value. {} secret(s) visible to this key.</p>"#,
        esc(ns),
        list.total
    );
    if list.items.is_empty() {
        body.push_str(r#"<p class="empty">No secret here.</p>"#);
    } else {
        body.push_str("<table class=\"secrets\"><tr><th>Path</th><th>Version</th><th>Tier</th><th>Description</th><th>Tags</th><th>Owner</th><th>Updated</th><th>Last read</th><th>Expires</th></tr>");
        for m in &list.items {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(
                body,
                r#"<tr><td class="mono"><a href="/console/secret?{link}">{path}</a></td><td>{version}</td><td>{tier}</td><td class="description">{desc}</td><td>{tags}</td><td>{owner}</td><td>{updated}</td><td>{accessed}</td><td>{expires}</td></tr>"#,
                link = esc(&query(&[("path", &m.path)])),
                path = esc(&m.path),
                version = m.version,
                tier = esc(&m.tier),
                desc = opt(m.description.as_deref()),
                tags = list_of(&tags),
                owner = opt(m.owner.as_deref()),
                updated = esc(&m.updated_at),
                accessed = opt(m.accessed_at.as_deref()),
                expires = opt(m.expires_at.as_deref()),
            );
        }
        body.push_str("</table>");
    }
    if let Some(cursor) = &list.next_cursor {
        let link = query(&[("namespace", ns), ("cursor", cursor)]);
        let _ = write!(body, r#"<p><a class="next" href="/console/secrets?{}">More</a></p>"#, esc(&link));
    }
    render("Secrets", "secrets", &caller, &signed, &body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretForm {
    path: String,
}

pub async fn secret(
    State(state): State<AppState>,
    caller: Authed,
    Extension(signed): Extension<Signed>,
    q: Result<Query<SecretForm>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::bad_request(e.body_text()))?;
    let path = SecretPath::parse(q.path.trim()).map_err(|e| PageError::bad_request(format!("path: {e}")))?;
    // The versions handler checks `secrets:read_metadata` on the path (and audits a refusal).
    let versions = secrets::versions(State(state.clone()), Authed(caller.0.clone()), PathParam(path.clone())).await?.0;
    let meta = state
        .store
        .secret_meta(caller.tenant(), path.as_str())
        .await
        .map_err(crate::server::ApiError::from)?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "not_found", format!("no secret at '{path}'")))?;
    let m = secrets::metadata(&meta);
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut body = format!(
        r#"<table class="fields">
<tr><th>Path</th><td class="mono">{path}</td></tr>
<tr><th>Current version</th><td>{version}</td></tr>
<tr><th>Tier</th><td>{tier}</td></tr>
<tr><th>Description</th><td class="description">{desc}</td></tr>
<tr><th>Tags</th><td>{tags}</td></tr>
<tr><th>Allowed hosts</th><td>{hosts}</td></tr>
<tr><th>Owner</th><td>{owner}</td></tr>
<tr><th>Created</th><td>{created}</td></tr>
<tr><th>Updated</th><td>{updated}</td></tr>
<tr><th>Last read</th><td>{accessed}</td></tr>
<tr><th>Expires</th><td>{expires}</td></tr>
<tr><th>Not before</th><td>{not_before}</td></tr>
</table><h2>Versions</h2><table class="versions"><tr><th>Version</th><th>State</th><th>Created</th><th>Expires</th></tr>"#,
        path = esc(&m.path),
        version = m.version,
        tier = esc(&m.tier),
        desc = opt(m.description.as_deref()),
        tags = list_of(&tags),
        hosts = list_of(&m.allowed_hosts),
        owner = opt(m.owner.as_deref()),
        created = esc(&m.created_at),
        updated = esc(&m.updated_at),
        accessed = opt(m.accessed_at.as_deref()),
        expires = opt(m.expires_at.as_deref()),
        not_before = opt(m.not_before.as_deref()),
    );
    for v in &versions.versions {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v.version,
            esc(&v.state),
            esc(&v.created_at),
            opt(v.expires_at.as_deref())
        );
    }
    body.push_str(r#"</table><p><a href="/console/secrets">All secrets</a></p>"#);
    render(&format!("Secret {path}"), "secrets", &caller, &signed, &body)
}

// ---------------------------------------------------------------- agents

/// Access events read to find each agent's latest use of each secret.
const ACCESS_SCAN: i64 = 1000;

pub async fn agents(State(state): State<AppState>, caller: Authed, Extension(signed): Extension<Signed>) -> PageResult {
    let list = agents::list(State(state.clone()), Authed(caller.0.clone())).await?.0;
    let tenant = caller.tenant().to_owned();
    let followers = state.changes.followers(&tenant);
    // Newest first: the first record of an (agent, path) is its latest use.
    let mut last_use: BTreeMap<(String, String), (i64, String, String)> = BTreeMap::new();
    if caller.has(&Scope::AuditRead) {
        let filter = AuditFilter { kind: Some(kind::ACCESS.into()), limit: ACCESS_SCAN, ..AuditFilter::default() };
        for e in state.store.list_audit(&tenant, &filter).await.map_err(crate::server::ApiError::from)? {
            let (Some(agent), Some(path)) = (e.actor_description.clone(), e.path.clone()) else { continue };
            let host = e.detail["host"].as_str().unwrap_or("").to_owned();
            let outcome = e.detail["outcome"].as_str().unwrap_or("").to_owned();
            last_use.entry((agent, path)).or_insert((e.timestamp_ms, host, outcome));
        }
    }
    let mut body = String::new();
    if list.agents.is_empty() {
        body.push_str(r#"<p class="empty">No agent yet (airlock agent add NAME).</p>"#);
    }
    for a in &list.agents {
        // The policy file as the operator wrote it (as a proxy reads it), and where it is.
        let policy = match state.policy_for(&tenant, &a.name).await {
            Ok(p) => match serde_json::to_value(&p).and_then(serde_json::from_value::<PolicyText>) {
                Ok(t) => format!("# {}\n{}", t.source, t.text),
                Err(_) => serde_json::to_string_pretty(&p).unwrap_or_default(),
            },
            Err(e) => e.message,
        };
        let _ = write!(
            body,
            r#"<section class="agent"><h2>{name} <span class="mono small">{id}</span></h2><p>{desc} · created {created}</p><h3>Policy</h3><pre class="policy">{policy}</pre>"#,
            name = esc(&a.name),
            id = esc(&a.id),
            desc = opt(a.description.as_deref()),
            created = esc(&a.created_at),
            policy = esc(&policy),
        );
        let mine: Vec<_> = followers.iter().filter(|f| f.agent.as_deref() == Some(a.name.as_str())).collect();
        body.push_str("<h3>Following the change stream now</h3>");
        if mine.is_empty() {
            body.push_str(
                r#"<p class="empty">No proxy of this agent follows this server now (another replica may have it).</p>"#,
            );
        } else {
            body.push_str("<table><tr><th>Credential</th><th>Address</th><th>Client</th><th>Since</th></tr>");
            for f in mine {
                let _ = write!(
                    body,
                    r#"<tr><td class="mono">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    esc(&f.credential_id),
                    esc(&f.ip.to_string()),
                    opt(f.user_agent.as_deref()),
                    esc(&to_rfc3339(f.since_ms))
                );
            }
            body.push_str("</table>");
        }
        body.push_str("<h3>Last use of each secret</h3>");
        let uses: Vec<_> = last_use.iter().filter(|((agent, _), _)| *agent == a.name).collect();
        if !caller.has(&Scope::AuditRead) {
            body.push_str(r#"<p class="empty">Needs scope audit:read.</p>"#);
        } else if uses.is_empty() {
            body.push_str(r#"<p class="empty">No recorded use.</p>"#);
        } else {
            body.push_str("<table><tr><th>Secret</th><th>Last used</th><th>Host</th><th>Outcome</th></tr>");
            for ((_, path), (at, host, outcome)) in uses {
                let _ = write!(
                    body,
                    r#"<tr><td class="mono">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    esc(path),
                    esc(&to_rfc3339(*at)),
                    esc(host),
                    esc(outcome)
                );
            }
            body.push_str("</table>");
        }
        body.push_str("</section>");
    }
    render("Agents", "agents", &caller, &signed, &body)
}

// ---------------------------------------------------------------- tokens

/// Active tokens: all of the tenant's for a key manager, else those this key minted.
pub async fn tokens(State(state): State<AppState>, caller: Authed, Extension(signed): Extension<Signed>) -> PageResult {
    let all = state
        .store
        .list_credentials(caller.tenant(), CredentialKind::Token)
        .await
        .map_err(crate::server::ApiError::from)?;
    let now = crate::domain::time::now_ms();
    let manager = caller.has(&Scope::KeysManage);
    let me = caller.credential.id.as_str();
    let shown: Vec<_> = all
        .iter()
        .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        .filter(|t| manager || t.minted_by.as_deref() == Some(me))
        .collect();
    let mut body = format!(
        r#"<p class="hint">{}</p>"#,
        if manager { "Every active token of this tenant." } else { "The active tokens this key minted." }
    );
    if shown.is_empty() {
        body.push_str(r#"<p class="empty">No active token.</p>"#);
    } else {
        body.push_str("<table class=\"tokens\"><tr><th>Token</th><th>Name</th><th>Scopes</th><th>Description</th><th>Created</th><th>Expires</th><th>Uses</th><th></th></tr>");
        for t in shown {
            let uses = t.max_uses.map_or_else(|| t.uses.to_string(), |m| format!("{} of {m}", t.uses));
            let _ = write!(
                body,
                r#"<tr><td class="mono">{id}</td><td>{name}</td><td class="mono">{scopes}</td><td>{desc}</td><td>{created}</td><td>{expires}</td><td>{uses}</td><td><form method="post" action="/console/tokens/{id}/revoke">{csrf}<button type="submit" class="danger">Revoke</button></form></td></tr>"#,
                id = esc(&t.id),
                name = esc(&t.name),
                scopes = list_of(&t.scopes),
                desc = opt(t.description.as_deref()),
                created = esc(&to_rfc3339(t.created_at)),
                expires = opt(t.expires_at.map(to_rfc3339).as_deref()),
                csrf = csrf_field(&signed.csrf),
            );
        }
        body.push_str("</table>");
    }
    render("Tokens", "tokens", &caller, &signed, &body)
}

/// Revokes as `DELETE /v1/tokens/{id}` does (the same handler), then back to the list.
pub async fn revoke_token(State(state): State<AppState>, caller: Authed, Path(id): Path<String>) -> PageResult {
    tokens::revoke(State(state), caller, Path(id)).await?;
    Ok(Redirect::to("/console/tokens").into_response())
}
