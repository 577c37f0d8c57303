//! Substitute + bind check: inject rules applied, every placeholder found, the granted
//! values resolved (from this thread's copies when it has them) and written in, or the
//! request refused with nothing sent when any binding fails.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::request::Parts;

use crate::domain::policy::{Placeholder, Policy};
use crate::proxy::Proxy;
use crate::proxy::central::{CentralError, HeldValue};
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::local::{InjectPlan, ThreadCache};
use crate::proxy::request::{CarriedValue, Target};
use crate::proxy::substitute::{self, BoundValue, Refusal, Written};

/// What substitution leaves: the head with values in place, the values it carries (shared
/// with this thread's plan for the upstream, when it came from one), and what it wrote byte
/// for byte beyond the values (a `Basic` token).
pub(super) struct Substituted {
    pub head: Parts,
    pub used: Arc<[CarriedValue]>,
    pub written: Vec<Written>,
}

/// Applies inject rules, finds every placeholder, resolves the granted values and returns
/// the head with values in place; refuses (sending nothing) when any binding fails.
/// A request without placeholders of its own gets what the rules put toward its upstream
/// from this thread's plan for it, made (and checked) by the first such request.
pub(super) async fn substitute(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    head: Parts,
    target: &Target,
    now: Instant,
) -> Result<Substituted, ProxyError> {
    if head_has_placeholder(&head) {
        let templates = inject_templates(cache.policy(), &head, target, true);
        return fill(proxy, cache, head, target, &templates, true).await;
    }
    let plan = |head| async move {
        let templates = inject_templates(cache.policy(), &head, target, false);
        let Substituted { head, used, written } = fill(proxy, cache, head, target, &templates, false).await?;
        // The rules write only headers of their own, never an agent's `Basic` token.
        debug_assert!(written.is_empty());
        let headers =
            templates.iter().filter_map(|t| Some((t.header.clone(), head.headers.get(t.header)?.clone()))).collect();
        Ok::<_, ProxyError>((head, InjectPlan::new(headers, used)))
    };
    let (head, used) = cache.plan(target, now, head, plan).await?;
    Ok(Substituted { head, used, written: Vec::new() })
}

/// Substitute + bind check proper: the inject rules' `templates` and the agent's
/// placeholders (`agent_placeholders`: whether it wrote any) filled with the granted values.
async fn fill(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    mut head: Parts,
    target: &Target,
    templates: &[substitute::Template<'_>],
    agent_placeholders: bool,
) -> Result<Substituted, ProxyError> {
    if !agent_placeholders && templates.is_empty() {
        return Ok(Substituted { head, used: Arc::new([]), written: Vec::new() });
    }
    // A rule's header replaces the agent's (which holds no placeholder, or the rule would
    // not apply): whatever the agent's was, it is neither checked nor sent.
    for template in templates {
        head.headers.remove(template.header);
    }
    let found = if agent_placeholders { substitute::scan(&head)? } else { Vec::new() };
    let all = || found.iter().map(|f| &f.placeholder).chain(templates.iter().flat_map(|t| t.placeholders));
    // Each granted secret once, with its grant (looked up once, not at every check).
    let mut fetched: Vec<Arc<HeldValue>> = Vec::new();
    let mut grants = Vec::new();
    for placeholder in all() {
        let path = placeholder.path();
        if fetched.iter().any(|v| &v.path == path) {
            continue;
        }
        let Some(grant) = cache.policy().grant_for(path) else { continue };
        fetched.push(cache.value(path, || proxy.central.value(path)).await.map_err(central_error)?);
        grants.push(grant);
    }
    let bindings = |p: &Placeholder| {
        let i = fetched.iter().position(|v| &v.path == p.path())?;
        Some(BoundValue { value: &fetched[i].value, grant: grants[i], secret_allowed_hosts: &fetched[i].allowed_hosts })
    };
    let (head, written) =
        substitute::inject(head, &found, templates, &target.host, target.tls, target.plain_http_allowed, &bindings)?;
    let used: Arc<[CarriedValue]> = used_values(all(), &fetched).into();
    Ok(Substituted { head, used, written })
}

fn head_has_placeholder(head: &Parts) -> bool {
    substitute::has_placeholder_text(head.uri.path().as_bytes())
        || head.uri.query().is_some_and(|q| substitute::has_placeholder_text(q.as_bytes()))
        || head.uri.authority().is_some_and(|a| substitute::has_placeholder_text(a.as_str().as_bytes()))
        || head.headers.values().any(|v| substitute::has_placeholder_text(v.as_bytes()) || is_basic(v))
}

fn is_basic(v: &HeaderValue) -> bool {
    v.as_bytes().len() > 6 && v.as_bytes()[..6].eq_ignore_ascii_case(b"basic ")
}

/// The `[[inject]]` rules for this host whose header the agent has not filled with a
/// placeholder of its own (the agent's own placeholder wins).
fn inject_templates<'p>(
    policy: &'p Policy,
    head: &Parts,
    target: &Target,
    agent_placeholders: bool,
) -> Vec<substitute::Template<'p>> {
    let mut templates = Vec::new();
    for rule in policy.injects().iter().filter(|i| i.host().matches(&target.host)) {
        let has_own = agent_placeholders
            && head.headers.get(rule.header()).is_some_and(|v| substitute::has_placeholder_text(v.as_bytes()));
        if !has_own {
            templates.push(substitute::Template {
                header: rule.header(),
                text: rule.value(),
                placeholders: rule.placeholders(),
            });
        }
    }
    templates
}

/// Each value written into the request once (by path and field), in the order met.
fn used_values<'a>(
    placeholders: impl Iterator<Item = &'a Placeholder>,
    fetched: &[Arc<HeldValue>],
) -> Vec<CarriedValue> {
    let mut used: Vec<CarriedValue> = Vec::new();
    for p in placeholders {
        let Some(v) = fetched.iter().find(|v| &v.path == p.path()) else { continue };
        if used.iter().any(|u| u.fetched.path == v.path && u.field.as_ref().map(|(name, _)| name.as_str()) == p.field())
        {
            continue;
        }
        // A field: the same text inject wrote, through the same zeroizing extraction.
        let field = match p.field() {
            None => None,
            Some(field) => match substitute::json_field(v.value.expose(), field) {
                Some(text) => Some((field.to_owned(), text)),
                None => continue,
            },
        };
        used.push(CarriedValue { fetched: v.clone(), field });
    }
    used
}

fn central_error(e: Arc<CentralError>) -> ProxyError {
    match e.as_ref() {
        CentralError::NotFound(path) => Refusal {
            code: ErrorCode::SecretNotGranted,
            message: format!("secret '{path}' is not available to this agent (missing, deleted or not granted)"),
            secret: Some(path.to_string()),
        }
        .into(),
        CentralError::NoToken(_) => ProxyError::central(e.to_string()).with_source(e),
        CentralError::AwaitingApproval(path) => ProxyError::new(
            ErrorCode::ApprovalPending,
            format!("the grant for '{path}' waits for an operator's approval"),
        )
        .with_secret(path.as_str()),
        // Final for the cool-down: the agent is told why, and when the proxy asks again.
        CentralError::ApprovalDenied { path, retry_in, .. } => {
            let retry_after = retry_in.as_secs().max(1);
            let path = path.clone();
            ProxyError::new(ErrorCode::ApprovalDenied, e.to_string()).with_retry_after(retry_after).with_secret(path)
        }
        _ => ProxyError::central(e.to_string()).with_source(e),
    }
}
