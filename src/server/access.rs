//! Access events from proxies: `POST /v1/access-events` (idempotent by the proxy's event id,
//! recorded in the audit chain as type `access`) and `GET /v1/secrets/{path}/access-events`.
//!
//! Refusals (events for a secret the agent is not granted, and `denied` ones) are what a
//! hostile agent can make at will, for any path: each request it sends with a placeholder
//! it may not use is one. They are capped so that they cannot bury a secret's trail: at most
//! `REFUSALS_PER_PATH_PER_REPORT` per path per report and the agent's `RefusalBudget` are
//! recorded one by one; the rest of the report's refusals are counted in one
//! `access.over_limit` record with no path (on no secret's trail) and a warning is logged.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::AppState;
use super::auth::{AgentRef, Authed};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParam, QueryParams};
use crate::api::access::{AccessEventPage, AccessReceipt, AccessReport, Outcome};
use crate::api::audit::AuditEvent;
use crate::domain::audit::{AuditDraft, kind};
use crate::domain::rate::Rate;
use crate::domain::time::parse_rfc3339;
use crate::domain::{SecretAction, SecretPath};
use crate::store::AuditFilter;

/// The `kind`s of access event a proxy may report (`AccessEvent::kind`).
const ACCESS_KINDS: [&str; 3] = ["body_field", "oauth2", "aws_sigv4"];

const MAX_BATCH: usize = 500;
const MAX_COUNT: u64 = 1_000_000_000;

/// Refusals of one path (or of none) recorded one by one from one report.
pub const REFUSALS_PER_PATH_PER_REPORT: usize = 10;

/// How many refusals each agent may have recorded one by one (`--access-refusal-limit`),
/// in this server process. Honest proxies report few: a refusal is a request the proxy
/// would not send.
pub struct RefusalBudget {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
}

impl RefusalBudget {
    pub fn new(rate: Rate) -> RefusalBudget {
        let quota = Quota::with_period(rate.interval()).expect("rate interval is never zero").allow_burst(rate.count());
        RefusalBudget { limiter: RateLimiter::keyed(quota) }
    }

    /// Takes one refusal from the budget of `agent` in `tenant`; false when it is spent.
    fn take(&self, tenant: &str, agent: &AgentRef) -> bool {
        self.limiter.check_key(&format!("{tenant}/{}", agent.id)).is_ok()
    }

    /// Forgets agents that have not reported a refusal for a while.
    pub fn shrink(&self) {
        self.limiter.retain_recent();
    }
}

/// The refusals of one report beyond the caps.
#[derive(Default)]
struct OverLimit {
    /// The record id and time of the report's first refusal: the summary's id is derived
    /// from it, so the same report sent again (its answer lost) makes a duplicate, not a
    /// second summary.
    first_refusal: Option<(String, i64)>,
    events: u64,
    uses: u64,
    paths: BTreeSet<String>,
}

/// Paths named in an `access.over_limit` record (the count of all is there too).
const OVER_LIMIT_SAMPLE_PATHS: usize = 10;

impl OverLimit {
    fn add(&mut self, draft: &AuditDraft) {
        self.events += 1;
        self.uses += draft.detail["count"].as_u64().unwrap_or(1);
        if let Some(path) = &draft.path {
            self.paths.insert(path.clone());
        }
    }

    fn record(&self, caller: &Authed, agent: &AgentRef) -> Option<AuditDraft> {
        if self.events == 0 {
            return None;
        }
        let (first, timestamp_ms) = self.first_refusal.as_ref()?;
        let mut draft = caller.draft(kind::ACCESS_OVER_LIMIT, None);
        // `.` is not allowed in event ids, so no reported event can take this id.
        draft.id = format!("{first}.over_limit");
        draft.timestamp_ms = *timestamp_ms;
        draft.success = false;
        draft.actor_description = Some(agent.name.clone());
        draft.detail = json!({
            "events": self.events,
            "uses": self.uses,
            "paths": self.paths.len(),
            "sample_paths": self.paths.iter().take(OVER_LIMIT_SAMPLE_PATHS).collect::<Vec<_>>(),
            "reason": format!(
                "agent '{}' reported more refusals than are recorded one by one (at most \
                 {REFUSALS_PER_PATH_PER_REPORT} per path per report, and its --access-refusal-limit)",
                agent.name
            ),
        });
        Some(draft)
    }
}

/// Splits `drafts` into those recorded one by one and the refusals beyond the caps.
fn cap_refusals(
    state: &AppState,
    tenant: &str,
    agent: &AgentRef,
    drafts: Vec<(AuditDraft, bool)>,
) -> (Vec<AuditDraft>, OverLimit) {
    let mut per_path: HashMap<Option<String>, usize> = HashMap::new();
    let mut over = OverLimit::default();
    let mut kept = Vec::with_capacity(drafts.len());
    for (draft, refusal) in drafts {
        if refusal {
            over.first_refusal.get_or_insert_with(|| (draft.id.clone(), draft.timestamp_ms));
            let seen = per_path.entry(draft.path.clone()).or_default();
            *seen += 1;
            if *seen > REFUSALS_PER_PATH_PER_REPORT || !state.refusal_budget.take(tenant, agent) {
                over.add(&draft);
                continue;
            }
        }
        kept.push(draft);
    }
    (kept, over)
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!("event id '{id}' must be 1-64 characters of [A-Za-z0-9_-]")))
    }
}

pub async fn report(
    State(state): State<AppState>,
    caller: Authed,
    JsonBody(b): JsonBody<AccessReport>,
) -> ApiResult<(StatusCode, Json<AccessReceipt>)> {
    let agent = caller.agent().ok_or_else(|| ApiError::permission_denied(None, "an agent credential"))?;
    if b.events.len() > MAX_BATCH {
        return Err(ApiError::validation(format!("at most {MAX_BATCH} events per report")));
    }
    // The events are the calling agent's: it is named by the credential, never by the body,
    // and a use it reports must be of a secret its policy grants.
    // No policy: nothing is granted. A store that cannot say is an error to retry, never a
    // batch of uses recorded as refused (event ids make every record final).
    let policy = state.with_policy(caller.tenant(), &agent.name, |p| p.cloned()).await?;
    // Each event's record and whether it is a refusal; nothing is counted against a budget
    // until every event has passed its checks.
    let mut drafts = Vec::with_capacity(b.events.len());
    let mut refused = 0;
    for (i, e) in b.events.into_iter().enumerate() {
        check_id(&e.id)?;
        if let Some(named) = e.agent.as_deref().filter(|named| *named != agent.name) {
            return Err(ApiError::invalid(format!(
                "events[{i}].agent: '{named}' is not the agent this credential belongs to ('{}'); omit the field \
                 or send that name",
                agent.name
            )));
        }
        let path = e
            .path
            .as_deref()
            .map(SecretPath::parse)
            .transpose()
            .map_err(|err| ApiError::validation(format!("event {}: path: {err}", e.id)))?;
        let timestamp_ms =
            parse_rfc3339(&e.timestamp).map_err(|err| ApiError::validation(format!("event {}: {err}", e.id)))?;
        if let Some(kind) = e.kind.as_deref().filter(|k| !ACCESS_KINDS.contains(k)) {
            return Err(ApiError::validation(format!(
                "event {}: kind '{}' is not one of {}",
                e.id,
                kind.chars().take(32).collect::<String>(),
                ACCESS_KINDS.join(", ")
            )));
        }
        let count = e.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(ApiError::validation(format!("event {}: count must be 1 to {MAX_COUNT}", e.id)));
        }
        let granted = path.as_ref().is_none_or(|p| policy.as_ref().is_some_and(|policy| policy.grant_for(p).is_some()));
        let mut draft = caller.draft(if granted { kind::ACCESS } else { kind::ACCESS_REFUSED }, e.path.as_deref());
        draft.id = format!("acc_{}", e.id);
        draft.timestamp_ms = timestamp_ms;
        draft.success = granted && e.outcome == Outcome::Injected;
        draft.actor_description = Some(agent.name.clone());
        draft.detail = json!({
            "version": e.version, "host": e.host, "method": e.method, "url_path": e.url_path,
            "outcome": e.outcome.as_str(), "error_code": e.error_code, "status": e.status, "latency_ms": e.latency_ms,
            "count": count,
        });
        if let Some(kind) = &e.kind {
            draft.detail["kind"] = json!(kind);
        }
        if !granted {
            refused += 1;
            draft.detail["reason"] = json!(format!("the policy of agent '{}' grants no such secret", agent.name));
        }
        drafts.push((draft, !granted || e.outcome == Outcome::Denied));
    }
    let tenant = caller.tenant();
    let (mut drafts, over) = cap_refusals(&state, tenant, &agent, drafts);
    let one_by_one = drafts.len() as u64;
    let summary = over.record(&caller, &agent);
    let summary_id = summary.as_ref().map(|s| s.id.clone());
    if let Some(summary) = summary {
        tracing::warn!(
            agent = %agent.name,
            over_limit = over.events,
            paths = over.paths.len(),
            "an access report carried more refusals than are recorded one by one; they are counted in one \
             access.over_limit record"
        );
        drafts.push(summary);
    }
    let skipped = state.store.record_access(tenant, drafts).await?;
    // The over-limit events were taken (or not) with their summary.
    let summary_skipped = summary_id.is_some_and(|id| skipped.contains(&id));
    let mut duplicates = skipped.len() as u64 - u64::from(summary_skipped);
    let mut accepted = one_by_one - duplicates;
    if summary_skipped {
        duplicates += over.events;
    } else {
        accepted += over.events;
    }
    Ok((StatusCode::ACCEPTED, Json(AccessReceipt { accepted, duplicates, refused, over_limit: over.events })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    PathParam(path): PathParam,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<AccessEventPage>> {
    if !caller.can(SecretAction::ReadMetadata, &path) {
        return Err(ApiError::permission_denied(Some(path.as_str()), &format!("secrets:read_metadata:{path}")));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and 1000, not {limit}")));
    }
    let before_seq =
        q.cursor.as_deref().map(|c| c.parse::<i64>().map_err(|_| ApiError::invalid("bad cursor"))).transpose()?;
    let filter = AuditFilter {
        path: Some(path.to_string()),
        kinds: vec![kind::ACCESS.into(), kind::ACCESS_REFUSED.into()],
        before_seq,
        limit,
        ..AuditFilter::default()
    };
    let events = state.store.list_audit(caller.tenant(), &filter).await?;
    let next_cursor = (events.len() as i64 == limit).then(|| events.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(AccessEventPage { events: events.iter().map(AuditEvent::from).collect(), next_cursor }))
}
