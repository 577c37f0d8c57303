//! One request through the proxy, top to bottom, in the order DESIGN §3 gives:
//! admit caller → egress check → host agreement → rate limit → substitute → bind check →
//! forward → redact → record. Nothing is sent upstream before the bind check has passed
//! for every value the request would carry.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use zeroize::Zeroizing;

use super::Proxy;
use super::body::{Body, BoxError};
use super::central::{CentralError, Fetched};
use super::error::ProxyError;
use super::local::{self, Epoch, Plan, View};
use super::meters::{Counted, finished};
use super::redact::{Patterns, Redactor};
use super::report::Use;
use super::request::{Target, Used, Via};
use super::substitute::{self, Binding, Refusal, RefusalCode, Written};
use crate::domain::policy::{Placeholder, Policy};

/// Entry point: every outcome becomes a response; errors in the API's JSON shape.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    via: Via,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let seen = Seen::new(req.method().clone(), req.uri().clone());
    let (resp, counted) = match serve(&proxy, req, &via, &seen, started).await {
        Ok(served) => served,
        Err(e) => (refused(&proxy, &seen, &via, e, started), Counted::Elsewhere),
    };
    finished(&proxy, started, counted);
    Ok(resp)
}

/// A refusal: logged, counted, recorded as an access event, and answered.
pub(super) fn refused(proxy: &Proxy, seen: &Seen, via: &Via, e: ProxyError, started: Instant) -> Response<Body> {
    tracing::info!(method = %seen.method, code = e.code, fault = e.fault.as_str(), message = %e.message, "request refused");
    metrics::counter!("airlock_proxy_refusals_total", "code" => e.code, "fault" => e.fault.as_str()).increment(1);
    seen.report(proxy, seen.host(via), None, Some(&e), e.status, started);
    e.into_response()
}

/// What the access record says of a request, taken before the request is consumed (and
/// before substitution: the URL path never carries a value).
/// Both fields are reference-counted clones: nothing is allocated unless an event is made.
pub(super) struct Seen {
    method: http::Method,
    uri: Uri,
}

impl Seen {
    pub(super) fn new(method: http::Method, uri: Uri) -> Seen {
        Seen { method, uri }
    }

    /// The host the agent named, before any target was worked out.
    fn host<'a>(&'a self, via: &'a Via) -> &'a str {
        match via {
            Via::Mitm { host, .. } => host,
            Via::Direct => self.uri.host().unwrap_or_default(),
        }
    }

    /// Reports this request as a use: of the value `used` (an injection) or a refusal.
    fn report(
        &self,
        proxy: &Proxy,
        host: &str,
        used: Option<&Used>,
        error: Option<&ProxyError>,
        status: StatusCode,
        started: Instant,
    ) {
        proxy.reporter.record(Use {
            agent: proxy.central.agent_name(),
            path: used.map(|u| u.fetched.path.as_str()),
            version: used.map(|u| u.fetched.version),
            host,
            method: self.method.as_str(),
            url_path: self.uri.path(),
            outcome: if error.is_some() { "denied" } else { "injected" },
            error_code: error.map(|e| e.code),
            status: Some(status.as_u16()),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

async fn serve(
    proxy: &Proxy,
    req: Request<Incoming>,
    via: &Via,
    seen: &Seen,
    started: Instant,
) -> Result<(Response<Body>, Counted), ProxyError> {
    if matches!(via, Via::Direct) && req.uri().scheme().is_none() && req.uri().path().starts_with("/_airlock/") {
        return Ok((super::ops::answer(proxy, req.uri().path()), Counted::Elsewhere));
    }
    let (mut head, body) = req.into_parts();
    // Taken first: substitution leaves a head without extensions, and the watch must predate
    // the policy the request is checked under.
    let upgrading = (head.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .filter(|_| is_upgrade(&head.headers))
        .map(|agent| Upgrading { agent, watch: proxy.central.watch_policy() });
    let resettable = head.version == http::Version::HTTP_2;
    let Prepared { head, target, used, scrub } = prepare(proxy, head, via, started).await?;
    if resettable {
        // An HTTP/2 agent can reset a stream at any time, and hyper looks for a reset only
        // while this future is pending: one that ran here without waiting (its checks cached)
        // would dial the upstream for a request already gone, one connection per stream of a
        // HEADERS + RST_STREAM burst. Pending once, it is dropped here instead, having opened
        // nothing and recorded no use. Dropped later, it takes its dial with it: the pooled
        // client dials inside the request's future (it hands a dial to a task of its own only
        // when another connection came free first, for a request still live).
        tokio::task::yield_now().await;
    }
    let mut recorder = Recorder { proxy, seen, target: &target, used: &used, started, done: false };
    let resp = match forward(proxy, head, body, upgrading, &target, scrub.is_some()).await {
        Ok(resp) => resp,
        Err(e) => {
            // The values may have gone out: the use is recorded, whatever became of the response.
            let e = scrubbed(e, scrub.as_deref());
            recorder.finish(e.status);
            return Err(e);
        }
    };
    let resp = redact(resp, scrub);
    let counted = recorder.finish(resp.status());
    Ok((resp, counted))
}

/// Records the uses of a request whose values are on their way, exactly once: with the
/// status it ended with, or, when the request is dropped before (an HTTP/2 stream reset, an
/// agent gone while the upstream was answering), as 499, the client closed the request.
struct Recorder<'a> {
    proxy: &'a Proxy,
    seen: &'a Seen,
    target: &'a Target,
    used: &'a [Used],
    started: Instant,
    done: bool,
}

impl Recorder<'_> {
    fn finish(&mut self, status: StatusCode) -> Counted {
        self.done = true;
        record(self.proxy, self.seen, self.target, self.used, status, self.started)
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(StatusCode::from_u16(499).expect("499 is a valid status code"));
        }
    }
}

/// A request that passed every check, with its values in place, ready to be sent.
pub(super) struct Prepared {
    pub head: Parts,
    pub target: Target,
    /// Shared with this thread's plan for the upstream, when it came from one.
    pub used: Arc<[Used]>,
    /// What the response is scrubbed of: every form of each value in `used` and what the
    /// request wrote byte for byte, or, for a request without values, the values its host
    /// was sent (`echoes`); `None` when neither applies.
    pub scrub: Option<Arc<Patterns>>,
}

/// Every step before the request leaves the proxy: target → admit → egress → host
/// agreement → rate limit → substitute + bind check. Shared by the hyper path and the
/// HTTP/1.1 fast path (`h1`), which differ only in how they forward.
/// `now` is when the request came in (plans and values are fresh as of then).
pub(super) async fn prepare(proxy: &Proxy, mut head: Parts, via: &Via, now: Instant) -> Result<Prepared, ProxyError> {
    // A CONNECT to the proxy opens a tunnel (`listen::connect`) and never comes here; one that
    // does was sent inside a tunnel (or named a route), and forwarding it would hand the
    // upstream a tunnel of its own, values injected on the way.
    if head.method == http::Method::CONNECT {
        return Err(ProxyError::connect_not_allowed());
    }
    let (view, epoch) = local::view(proxy);
    let target = target(&view.policy, &head, via)?;
    one_host(&head)?;
    admit(proxy, &mut head, via, &target)?;
    remove_connection_named(&mut head.headers);
    egress(proxy, &view, &target, now).await?;
    agree(&head, via, &target)?;
    view.limits.check(&target.host)?;
    let (mut head, used, written) = substitute(proxy, &view, epoch, head, &target, now).await?;
    let scrub = if used.is_empty() {
        // A host that was sent values may send them back to a request that carried none.
        local::echo_scrub(proxy, &target.host, &used)
    } else if proxy.reporter.spool_full() {
        // A use that could not be recorded is not made.
        return Err(ProxyError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_full",
            super::error::Fault::Proxy,
            "the proxy's access-event spool is full (the central API has not taken its events) or cannot be \
             written (disk full); requests that would inject are refused until uses can be recorded again",
        ));
    } else {
        // Scrubbed of every value the host was ever sent (this request's among them), not
        // only of this request's: the host may hold another, or one from before a rotation.
        match written.as_slice() {
            [] => local::echo_scrub(proxy, &target.host, &used),
            written => {
                proxy.echoes.sent(&target.host, &used);
                proxy.echoes.with_exact(&target.host, written)
            }
        }
    };
    if scrub.is_some() {
        // Redaction reads the response as sent; a compressed body would hide a value from it.
        head.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    Ok(Prepared { head, target, used, scrub })
}

/// An HTTP/1.1 request names its host in exactly one `Host` header (RFC 9112 §3.2); an
/// HTTP/1.0 one in at most one. HTTP/2 has `:authority` instead.
fn one_host(head: &Parts) -> Result<(), ProxyError> {
    if head.version == http::Version::HTTP_2 {
        return Ok(());
    }
    match head.headers.get_all(header::HOST).iter().count() {
        1 => Ok(()),
        0 if head.version < http::Version::HTTP_11 => Ok(()),
        0 => Err(ProxyError::bad_request("an HTTP/1.1 request needs a Host header")),
        _ => Err(ProxyError::bad_request("the request has more than one Host header")),
    }
}

/// Headers the `Connection` header names are for this hop only (RFC 9110 §7.6.1): removed
/// before anything reads them, but `Upgrade` on an upgrade.
pub(super) fn remove_connection_named(headers: &mut http::HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let upgrade = is_upgrade(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE) && name != header::CONNECTION)
        .collect();
    for name in named {
        headers.remove(name);
    }
}

// ---- target -------------------------------------------------------------------------

fn target(policy: &Policy, head: &Parts, via: &Via) -> Result<Target, ProxyError> {
    match via {
        Via::Mitm { host, port, tls, .. } => Ok(Target {
            tls: *tls,
            host: host.clone(),
            port: *port,
            base_path: None,
            plain_http_allowed: !tls && plain_http_named(policy, host),
            route: None,
        }),
        // Every HTTP/2 request names a scheme and authority (for an agent talking to the
        // proxy in cleartext HTTP/2, the proxy's own): HTTP/2 agents use routes, or CONNECT.
        Via::Direct if head.uri.scheme().is_some() && head.version != http::Version::HTTP_2 => {
            forward_target(policy, &head.uri)
        }
        Via::Direct if head.uri.path().starts_with("/r/") => route_target(policy, &head.uri),
        Via::Direct => Err(ProxyError::bad_request(
            "this is the Airlock proxy: send proxy requests (HTTP_PROXY / HTTPS_PROXY), or use a route: /r/<route>/<path>",
        )),
    }
}

/// A plain http:// upstream may carry values only when the policy names it so on purpose:
/// an inject rule for the host and a route to its http:// address.
fn plain_http_named(policy: &Policy, host: &str) -> bool {
    policy.injects.iter().any(|i| i.host.matches(host))
        && policy.routes.iter().any(|r| r.upstream.host == host && !r.upstream.is_tls())
}

fn forward_target(policy: &Policy, uri: &Uri) -> Result<Target, ProxyError> {
    if uri.scheme_str() != Some("http") {
        return Err(ProxyError::bad_request(
            "only http:// goes through the forward proxy; use CONNECT (HTTPS_PROXY) for https",
        ));
    }
    let host = uri.host().ok_or_else(|| ProxyError::bad_request("the request URI names no host"))?;
    let host = host.trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(80);
    let plain_http_allowed = plain_http_named(policy, &host);
    Ok(Target { tls: false, base_path: None, host, port, plain_http_allowed, route: None })
}

fn route_target(policy: &Policy, uri: &Uri) -> Result<Target, ProxyError> {
    let rest = &uri.path()["/r/".len()..];
    let name = rest.split_once('/').map_or(rest, |(name, _)| name);
    let route = policy.routes.iter().find(|r| r.name == name).ok_or_else(|| {
        let names: Vec<&str> = policy.routes.iter().map(|r| r.name.as_str()).collect();
        ProxyError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            super::error::Fault::Agent,
            format!("no route '{name}'; this agent's routes: {names:?}"),
        )
    })?;
    let up = &route.upstream;
    let tls = up.is_tls();
    Ok(Target {
        tls,
        host: up.host.clone(),
        port: up.port,
        base_path: Some(up.base_path.clone()),
        plain_http_allowed: !tls,
        route: Some(route.name.clone()),
    })
}

// ---- admit --------------------------------------------------------------------------

/// With a session key, only callers that present it get through. Route mode takes it as
/// the bearer or API key the SDK sends, and drops it so an inject rule can put the real one.
fn admit(proxy: &Proxy, head: &mut Parts, via: &Via, target: &Target) -> Result<(), ProxyError> {
    let Some(key) = &proxy.session_key else { return Ok(()) };
    if matches!(via, Via::Mitm { .. }) {
        return Ok(()); // checked on the CONNECT that opened this connection
    }
    if target.route.is_some() {
        for name in [header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
            let presented =
                head.headers.get(&name).and_then(|v| v.to_str().ok()).map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
            if presented.is_some_and(|p| constant_eq(p, key)) {
                head.headers.remove(&name);
                return Ok(());
            }
        }
        return Err(ProxyError::unauthorized("this route needs the session key as its bearer token or API key"));
    }
    proxy_authorized(&head.headers, key)
}

pub fn proxy_authorized(headers: &http::HeaderMap, key: &str) -> Result<(), ProxyError> {
    use base64::Engine as _;
    let presented = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .map(Zeroizing::new);
    let ok = presented
        .as_ref()
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(|creds| creds.split_once(':'))
        .is_some_and(|(_, password)| constant_eq(password, key));
    if ok { Ok(()) } else { Err(ProxyError::unauthorized("the proxy needs the session key (Proxy-Authorization)")) }
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ---- egress -------------------------------------------------------------------------

/// The policy's allowlist, then name resolution with private addresses refused; an upstream
/// that passed both under this thread's policy is not checked again until its resolution
/// expires.
async fn egress(proxy: &Proxy, view: &Arc<View>, target: &Target, now: Instant) -> Result<(), ProxyError> {
    if local::passed(proxy, target, now) {
        return Ok(());
    }
    let policy = &view.policy;
    if !policy.host_allowed(&target.host) {
        return Err(ProxyError::policy(
            "egress_denied",
            format!("'{}' is not in this agent's egress.allow", target.host),
        ));
    }
    let until = proxy.resolver.check(&target.host, target.port, policy.egress.deny_private_networks).await?;
    local::keep_passed(proxy, view, target, until);
    Ok(())
}

/// Under CONNECT, the CONNECT authority, the TLS SNI and the request's Host must name the
/// same host; for a forward request the URI and Host must agree.
fn agree(head: &Parts, via: &Via, target: &Target) -> Result<(), ProxyError> {
    let mismatch = |what: &str, other: &str| {
        ProxyError::policy(
            "host_mismatch",
            format!("{what} '{other}' does not match the target host '{}'", target.host),
        )
    };
    if let Via::Mitm { sni: Some(sni), .. } = via
        && !sni.eq_ignore_ascii_case(&target.host)
    {
        return Err(mismatch("the TLS server name", sni));
    }
    if target.route.is_some() {
        return Ok(());
    }
    let named = head
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| head.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| strip_port(h).to_owned()));
    if let Some(named) = named {
        let named = named.trim_matches(['[', ']']).trim_end_matches('.');
        if !named.eq_ignore_ascii_case(&target.host) {
            return Err(mismatch("the request's host", named));
        }
    }
    if let Some(h) = head.headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let h = strip_port(h).trim_matches(['[', ']']).trim_end_matches('.');
        if !h.eq_ignore_ascii_case(&target.host) {
            return Err(mismatch("the Host header", h));
        }
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host })
}

// ---- substitute + bind check ----------------------------------------------------------

/// Applies inject rules, finds every placeholder, resolves the granted values and returns
/// the head with values in place; refuses (sending nothing) when any binding fails.
/// A request without placeholders of its own gets what the rules put toward its upstream
/// from this thread's plan for it, made (and checked) by the first such request.
async fn substitute(
    proxy: &Proxy,
    view: &Arc<View>,
    epoch: Epoch,
    mut head: Parts,
    target: &Target,
    now: Instant,
) -> Result<(Parts, Arc<[Used]>, Vec<Written>), ProxyError> {
    let policy = &view.policy;
    let agent_placeholders = head_has_placeholder(&head);
    if !agent_placeholders && let Some((injected, used)) = local::apply_plan(proxy, target, &mut head.headers, now) {
        if injected {
            head.extensions = http::Extensions::new(); // as `substitute::inject` leaves it
        }
        return Ok((head, used, Vec::new()));
    }
    let templates = inject_templates(policy, &head, target, agent_placeholders);
    if !agent_placeholders && templates.is_empty() {
        let none: Arc<[Used]> = Arc::new([]);
        local::keep_plan(proxy, view, epoch, target, Plan::new(Vec::new(), none.clone()));
        return Ok((head, none, Vec::new()));
    }
    // A rule's header replaces the agent's (which holds no placeholder, or the rule would
    // not apply): whatever the agent's was, it is neither checked nor sent.
    for template in &templates {
        head.headers.remove(template.header);
    }
    let found = if agent_placeholders { substitute::scan(&head)? } else { Vec::new() };
    let all = || found.iter().map(|f| &f.placeholder).chain(templates.iter().flat_map(|t| t.placeholders));
    // Each granted secret once, with its grant (looked up once, not at every check).
    let mut fetched: Vec<Arc<Fetched>> = Vec::new();
    let mut grants = Vec::new();
    for placeholder in all() {
        let path = placeholder.path();
        if fetched.iter().any(|v| &v.path == path) {
            continue;
        }
        let Some(grant) = policy.grant_for(path) else { continue };
        let value = match local::cached(proxy, epoch, path) {
            Some(value) => value,
            None => local::adopt(proxy, epoch, &proxy.central.value(path).await.map_err(central_error)?),
        };
        fetched.push(value);
        grants.push(grant);
    }
    let bindings = |p: &Placeholder| {
        let i = fetched.iter().position(|v| &v.path == p.path())?;
        Some(Binding { value: &fetched[i].value, grant: grants[i], secret_allowed_hosts: &fetched[i].allowed_hosts })
    };
    let (new_head, written) =
        substitute::inject(head, &found, &templates, &target.host, target.tls, target.plain_http_allowed, &bindings)?;
    let used: Arc<[Used]> = used_values(all(), &fetched).into();
    if !agent_placeholders {
        let headers = templates
            .iter()
            .filter_map(|t| Some((t.header.clone(), new_head.headers.get(t.header)?.clone())))
            .collect();
        local::keep_plan(proxy, view, epoch, target, Plan::new(headers, used.clone()));
    }
    Ok((new_head, used, written))
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
    for rule in policy.injects.iter().filter(|i| i.host.matches(&target.host)) {
        let has_own = agent_placeholders
            && head.headers.get(&rule.header).is_some_and(|v| substitute::has_placeholder_text(v.as_bytes()));
        if !has_own {
            templates.push(substitute::Template {
                header: &rule.header,
                text: &rule.value,
                placeholders: &rule.placeholders,
            });
        }
    }
    templates
}

/// Each value written into the request once (by path and field), in the order met.
fn used_values<'a>(placeholders: impl Iterator<Item = &'a Placeholder>, fetched: &[Arc<Fetched>]) -> Vec<Used> {
    let mut used: Vec<Used> = Vec::new();
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
        used.push(Used { fetched: v.clone(), field });
    }
    used
}

fn central_error(e: Arc<CentralError>) -> ProxyError {
    match e.as_ref() {
        CentralError::NotFound(path) => Refusal {
            code: RefusalCode::SecretNotGranted,
            message: format!("secret '{path}' is not available to this agent (missing, deleted or not granted)"),
        }
        .into(),
        CentralError::NoToken(_) => ProxyError::central(e.to_string()),
        CentralError::AwaitingApproval(path) => ProxyError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "approval_pending",
            super::error::Fault::Policy,
            format!("the grant for '{path}' waits for an operator's approval"),
        ),
        // Final for the cool-down: the agent is told why, and when the proxy asks again.
        CentralError::ApprovalDenied { retry_in, .. } => {
            let mut refused = ProxyError::policy("approval_denied", e.to_string());
            refused.retry_after = Some(retry_in.as_secs().max(1));
            refused
        }
        other => ProxyError::central(other.to_string()),
    }
}

// ---- forward ------------------------------------------------------------------------

pub(super) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
];

/// An upgrade request's side of the connection, and a watch on the policy it was let
/// through under (`websocket::splice` ends it when an update would not).
struct Upgrading {
    agent: hyper::upgrade::OnUpgrade,
    watch: super::central::PolicyWatch,
}

/// `Upgrade`, and `upgrade` as a token of `Connection` (not as part of another token).
fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| has_token(v.as_bytes(), "upgrade"))
}

/// Whether a comma-separated header value lists `token` (any case).
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

async fn forward(
    proxy: &Proxy,
    mut head: Parts,
    body: Incoming,
    upgrading: Option<Upgrading>,
    target: &Target,
    scanned: bool,
) -> Result<Response<Body>, ProxyError> {
    let upgrade = is_upgrade(&head.headers);
    let is_head = head.method == http::Method::HEAD;
    // What an upgraded stream is masked of: every value its host was sent (the request's own
    // among them, noted in `prepare`).
    let masks = if upgrade { proxy.echoes.masks(&target.host) } else { None };
    if upgrade && masks.is_some() {
        // The upgraded stream is scrubbed frame by frame (`websocket`): only WebSocket, and
        // without compression, which would hide a value from the scrubbing.
        let websocket =
            head.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if !websocket {
            return Err(ProxyError::policy(
                "placement_not_allowed",
                "an upgrade that carries values, or goes to a host that was sent values, can only be to WebSocket: \
                 the proxy cannot scrub other upgraded protocols",
            ));
        }
        head.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    for name in HOP_BY_HOP {
        if !(upgrade && name == "connection") {
            head.headers.remove(name);
        }
    }
    if !upgrade {
        head.headers.remove(header::UPGRADE);
    }
    head.headers.remove(header::HOST);
    head.uri = target.uri_for(&head.uri)?;
    head.version = http::Version::HTTP_11;
    let body: Body = body.map_err(|e| Box::new(e) as BoxError).boxed();
    let limit = proxy.timeouts.upstream_first_byte;
    let sent = proxy.upstreams.request(Request::from_parts(head, body));
    let mut resp = tokio::time::timeout(limit, sent)
        .await
        .map_err(|_| ProxyError::upstream_timeout(&target.host, limit))?
        .map_err(|e| ProxyError::upstream(format!("{}: {}", target.host, describe(&e))))?;
    if scanned && has_body(resp.status(), is_head) && resp.headers().iter().any(|(n, v)| hides_values(n, v)) {
        return Err(unscannable());
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(Upgrading { agent, watch }) = upgrading
    {
        let host = target.host.clone();
        let until_revoked = watch.until_disallowed(move |p| p.host_allowed(&host));
        let upstream = hyper::upgrade::on(&mut resp);
        super::websocket::splice(agent, upstream, masks, until_revoked);
    }
    let (mut parts, body) = resp.into_parts();
    remove_connection_named(&mut parts.headers);
    for name in HOP_BY_HOP {
        if !(upgrade && name == "connection") {
            parts.headers.remove(name);
        }
    }
    Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
}

/// Whether a response can carry a body.
pub(super) fn has_body(status: StatusCode, is_head: bool) -> bool {
    !(is_head || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
}

/// Whether a response header declares a coding the scrubber cannot see through: a content
/// coding but `identity` (the upstream ignored `Accept-Encoding: identity`), a transfer
/// coding but `chunked`.
pub(super) fn hides_values(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    let allowed: &[u8] = if name.eq_ignore_ascii_case(b"content-encoding") {
        b"identity"
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        b"chunked"
    } else {
        return false;
    };
    value
        .as_ref()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(allowed))
}

/// The refusal of a response `hides_values` is true of. The coding's name is not repeated:
/// it is the upstream's text, which may hold anything.
pub(super) fn unscannable() -> ProxyError {
    ProxyError::new(
        StatusCode::BAD_GATEWAY,
        "unscannable_response",
        super::error::Fault::Upstream,
        "the upstream, which has been sent secret values, answered with a compressed or otherwise coded body \
         (Content-Encoding other than identity, or Transfer-Encoding other than chunked), which the proxy cannot \
         scrub for them; it had asked for Accept-Encoding: identity",
    )
}

/// An error met after the request left with values: its message may quote the upstream
/// (a certificate's names, say), so it is scrubbed like the response would have been.
pub(super) fn scrubbed(mut e: ProxyError, scrub: Option<&Patterns>) -> ProxyError {
    if let Some(clean) = scrub.and_then(|p| p.redact_whole(e.message.as_bytes())) {
        e.message = String::from_utf8_lossy(&clean).into_owned();
    }
    e
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

// ---- redact -------------------------------------------------------------------------

/// Replaces every injected value in the response by its placeholder: in the reason phrase
/// (hyper keeps the upstream's and writes it back to an HTTP/1.1 agent), header values,
/// the body and its trailers; a header whose name holds a value is dropped.
fn redact(resp: Response<Body>, scrub: Option<Arc<Patterns>>) -> Response<Body> {
    let Some(redactor) = scrub.map(Redactor::with) else { return resp };
    let (mut parts, body) = resp.into_parts();
    if let Some(reason) = parts.extensions.remove::<hyper::ext::ReasonPhrase>() {
        match redactor.redact_whole(reason.as_bytes()) {
            None => drop(parts.extensions.insert(reason)),
            Some(clean) => {
                if let Ok(clean) = hyper::ext::ReasonPhrase::try_from(clean) {
                    parts.extensions.insert(clean);
                }
            }
        }
    }
    if redactor.scrub_headers(&mut parts.headers) > 0 {
        tracing::debug!("response headers whose name held an injected value were dropped");
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // No body: what follows is the upgraded stream, scrubbed by `websocket`.
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, super::body::Redacted::new(body, redactor).boxed())
}

// ---- record -------------------------------------------------------------------------

/// One access event per injected value; returns how the request is counted (`finished`).
pub(super) fn record(
    proxy: &Proxy,
    seen: &Seen,
    target: &Target,
    used: &[Used],
    status: StatusCode,
    started: Instant,
) -> Counted {
    if used.is_empty() {
        return Counted::Passed;
    }
    for u in used {
        tracing::debug!(path = %u.fetched.path, version = u.fetched.version, host = %target.host, status = status.as_u16(), "value injected");
        seen.report(proxy, &target.host, Some(u), None, status, started);
    }
    Counted::Injected
}
