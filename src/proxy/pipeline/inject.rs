//! Substitute + bind check: inject rules applied, every placeholder found, the granted
//! values resolved (from this thread's copies when it has them) and written in, or the
//! request refused with nothing sent when any binding fails.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;

use crate::domain::policy::{Grant, Placeholder, Policy};
use crate::proxy::Proxy;
use crate::proxy::body::{Body, full};
use crate::proxy::bounded::read_bounded;
use crate::proxy::central::HeldValue;
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::local::{InjectPlan, ThreadCache};
use crate::proxy::request::{AccessKind, CarriedValue, Target};
use crate::proxy::substitute::{self, BodyKind, BoundValue, Written, central_error};

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
    let (fetched, grants) = fetch(proxy, cache, all()).await?;
    let bindings = |p: &Placeholder| {
        let i = fetched.iter().position(|v| &v.path == p.path())?;
        Some(BoundValue { value: &fetched[i].value, grant: grants[i], secret_allowed_hosts: &fetched[i].allowed_hosts })
    };
    let (head, written) =
        substitute::inject(head, &found, templates, &target.host, target.tls, target.plain_http_allowed, &bindings)?;
    let used: Arc<[CarriedValue]> = used_values(all(), &fetched).into();
    Ok(Substituted { head, used, written })
}

/// Each granted secret of `placeholders` once, with its grant (looked up once, not at every
/// check). A secret no grant covers is left out: its bind check refuses it.
async fn fetch<'c, 'p>(
    proxy: &Proxy,
    cache: &'c ThreadCache<'p>,
    placeholders: impl Iterator<Item = &Placeholder>,
) -> Result<(Vec<Arc<HeldValue>>, Vec<&'c Grant>), ProxyError> {
    let mut fetched: Vec<Arc<HeldValue>> = Vec::new();
    let mut grants = Vec::new();
    for placeholder in placeholders {
        let path = placeholder.path();
        if fetched.iter().any(|v| &v.path == path) {
            continue;
        }
        let Some(grant) = cache.policy().grant_for(path) else { continue };
        fetched.push(cache.value(path, || proxy.central.value(path)).await.map_err(central_error)?);
        grants.push(grant);
    }
    Ok((fetched, grants))
}

/// The most of a request body the proxy reads whole to substitute body fields (`body_fields`).
pub(super) const BODY_FIELDS_MAX: u64 = 64 * 1024;

/// Body fields: when a grant of the policy names `body_fields` and the request has a form or
/// JSON body, the body is read whole (at most `BODY_FIELDS_MAX`, chunked or not), every
/// placeholder in it is found (`substitute::scan_body`) and checked against its binding, and
/// the values are written in; `Content-Length` is set to the body as sent. The values join
/// `used` (recorded, scrubbed from the response). A body toward a host no body-field grant
/// reaches is read only when its declared length is within the bound (so a placeholder there
/// is refused, not sent as text); a longer one passes unread, as it would without the rule.
/// Over the bound toward a host a body-field grant reaches: `body_too_large` (413), nothing sent.
pub(super) async fn body_fields(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    head: &mut Parts,
    body: Body,
    target: &Target,
    used: &mut Arc<[CarriedValue]>,
) -> Result<Body, ProxyError> {
    let policy = cache.policy();
    let Some(kind) = BodyKind::of(&head.headers).filter(|_| policy.has_body_fields()) else { return Ok(body) };
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(body);
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let reached = policy.body_fields_reach(&target.host);
    if !reached && declared.is_none_or(|n| n > BODY_FIELDS_MAX) {
        return Ok(body);
    }
    if declared.is_some_and(|n| n > BODY_FIELDS_MAX) {
        return Err(too_large());
    }
    let bytes = read_bounded(body, BODY_FIELDS_MAX, too_large).await?;
    let found = substitute::scan_body(kind, &bytes)?;
    let sent = if found.is_empty() {
        bytes
    } else {
        let (fetched, grants) = fetch(proxy, cache, found.iter().map(|f| &f.found.placeholder)).await?;
        let bindings = |p: &Placeholder| {
            let i = fetched.iter().position(|v| &v.path == p.path())?;
            Some(BoundValue {
                value: &fetched[i].value,
                grant: grants[i],
                secret_allowed_hosts: &fetched[i].allowed_hosts,
            })
        };
        let transport = (target.host.as_str(), target.tls, target.plain_http_allowed);
        let written = substitute::inject_body(kind, &bytes, &found, transport, &bindings)?;
        let mut all: Vec<CarriedValue> = used.iter().cloned().collect();
        for mut carried in used_values(found.iter().map(|f| &f.found.placeholder), &fetched) {
            carried.kind = Some(AccessKind::BodyField);
            let same = |u: &CarriedValue| {
                u.fetched.path == carried.fetched.path
                    && u.field.as_ref().map(|f| &f.0) == carried.field.as_ref().map(|f| &f.0)
            };
            if !all.iter().any(same) {
                all.push(carried);
            }
        }
        *used = all.into();
        Bytes::copy_from_slice(&written)
    };
    head.headers.remove(header::TRANSFER_ENCODING);
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent.len()));
    Ok(full(sent))
}

fn too_large() -> ProxyError {
    ProxyError::new(
        ErrorCode::BodyTooLarge,
        format!(
            "the request's form or JSON body is over {BODY_FIELDS_MAX} bytes; the proxy reads such a body whole to \
             substitute body fields, and refuses longer ones toward a host a body-field grant names"
        ),
    )
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
        used.push(CarriedValue { fetched: v.clone(), field, kind: None });
    }
    used
}
