//! One request through the proxy, top to bottom, in the order DESIGN §3 gives:
//! admit caller → egress check → host agreement → rate limit → substitute → bind check →
//! OAuth2 token (`credentials::oauth2`, for a host of an `[[oauth2]]` rule) → forward (once
//! more with a new token after a 401, when the body can be sent again) → redact → record.
//! Nothing is sent upstream before the bind check has passed for every value the request
//! would carry.
//!
//! The stages are short functions named in `prepare` and `serve`; the bulky parts live in
//! their own modules: `admit` (the target, the caller, egress, host agreement and the header
//! rules), `inject` (substitute + bind check), `forward` (upstream via hyper, upgrades, the
//! coded-response check) and `respond` (what a response is scrubbed of, and its redaction).
//!
//! `prepare` enters this thread's cache (`local::ThreadCache`) once; a stage whose decision
//! can be reused (the egress check, each value, the inject rules' plan, the echo scrub)
//! makes it inside one call to the cache, which decides or reuses what was decided under
//! the same policy generation and value epoch.

mod admit;
mod forward;
mod inject;
mod respond;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::admit::{admit, agree, egress, one_host, remove_connection_named, target};
use self::forward::{Upgrading, forward, is_upgrade};
use self::inject::{Substituted, body_fields, substitute};
use self::respond::{redact, scrub_for};
use super::Proxy;
use super::body::{Body, BoxError};
use super::bounded::read_bounded;
use super::credentials::oauth2::Issued;
use super::error::{ErrorCode, ProxyError};
use super::local::ThreadCache;
use super::meters::{CountAs, finished};
use super::redact::Patterns;
use super::report::Use;
use super::request::{AccessKind, CarriedValue, Target, Via};
use super::substitute::Written;

pub use self::admit::proxy_authorized;
pub(super) use self::forward::{HOP_BY_HOP, has_body, has_token, hides_values, unscannable};
pub(super) use self::respond::scrubbed;

/// Entry point: every outcome becomes a response; errors in the API's JSON shape.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    via: Via,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let seen = RequestRecord::new(req.method().clone(), req.uri().clone());
    let (resp, counted) = match serve(&proxy, req, &via, &seen, started).await {
        Ok(served) => served,
        Err(e) => (refusal_response(&proxy, &seen, &via, e, started), CountAs::Elsewhere),
    };
    finished(&proxy, started, counted);
    Ok(resp)
}

/// A refusal: logged, counted, recorded as an access event, and answered.
pub(super) fn refusal_response(
    proxy: &Proxy,
    seen: &RequestRecord,
    via: &Via,
    e: ProxyError,
    started: Instant,
) -> Response<Body> {
    let (code, fault) = (e.code(), e.fault().as_str());
    tracing::info!(method = %seen.method, code, fault, message = %e.message, cause = e.cause(), "request refused");
    metrics::counter!("airlock_proxy_refusals_total", "code" => code, "fault" => fault).increment(1);
    seen.report(proxy, seen.host(via), None, Some(&e), e.status(), started);
    e.into_response()
}

/// What the access record says of a request, taken before the request is consumed (and
/// before substitution: the URL path never carries a value).
/// Both fields are reference-counted clones: nothing is allocated unless an event is made.
pub(super) struct RequestRecord {
    method: http::Method,
    uri: Uri,
}

impl RequestRecord {
    pub(super) fn new(method: http::Method, uri: Uri) -> RequestRecord {
        RequestRecord { method, uri }
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
        used: Option<&CarriedValue>,
        error: Option<&ProxyError>,
        status: StatusCode,
        started: Instant,
    ) {
        proxy.reporter.record(Use {
            agent: proxy.central.agent_name(),
            // A refusal that concerns a secret is recorded against its path.
            path: used.map(|u| u.fetched.path.as_str()).or_else(|| error.and_then(|e| e.secret.as_deref())),
            version: used.map(|u| u.fetched.version),
            host,
            method: self.method.as_str(),
            url_path: self.uri.path(),
            outcome: if error.is_some() { "denied" } else { "injected" },
            error_code: error.map(ProxyError::code),
            status: Some(status.as_u16()),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            kind: used.and_then(|u| u.kind).map(AccessKind::as_str),
        });
    }
}

async fn serve(
    proxy: &Proxy,
    req: Request<Incoming>,
    via: &Via,
    seen: &RequestRecord,
    started: Instant,
) -> Result<(Response<Body>, CountAs), ProxyError> {
    if matches!(via, Via::Direct) && req.uri().scheme().is_none() && req.uri().path().starts_with("/_airlock/") {
        return Ok((super::ops::answer(proxy, req.uri().path()), CountAs::Elsewhere));
    }
    let (mut head, body) = req.into_parts();
    // Taken first: substitution leaves a head without extensions, and the watch must predate
    // the policy the request is checked under.
    let upgrading = (head.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .filter(|_| is_upgrade(&head.headers))
        .map(|agent| Upgrading { agent, watch: proxy.central.watch_policy() });
    let resettable = head.version == http::Version::HTTP_2;
    let body: Body = body.map_err(|e| Box::new(e) as BoxError).boxed();
    let (Outbound { head, target, used, scrub, written, oauth2 }, body) =
        prepare_with_body(proxy, head, body, via, started).await?;
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
    // A request sent with an OAuth2 token is sent again once, with a new token, if the upstream
    // refuses the token (401): only when its body is at hand to send again (`replayable`).
    let (body, again) = match &oauth2 {
        Some(_) if upgrading.is_none() => replayable(body, &head).await?,
        _ => (body, None),
    };
    let mut recorder = Recorder { proxy, seen, target: &target, used, started, done: false };
    let scanned = scrub.is_some();
    let mut resp = forward(proxy, head, body, upgrading, &target, scanned).await;
    let mut scrub = scrub;
    let refused = resp.as_ref().is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED);
    if let Some(issued) = oauth2.as_ref().filter(|_| refused) {
        proxy.tokens.refused(issued).await;
        if let Some((head, body)) = again {
            tracing::debug!(host = %target.host, "the upstream refused the OAuth2 token (401); sending again with a new one");
            // The refused answer is not read: its connection is let go before the next is used.
            drop(resp);
            let retried = Retry { target: &target, written: &written, issued };
            resp = match retried.prepare(proxy, head, &mut recorder).await {
                Ok((head, new_scrub)) => {
                    scrub = new_scrub;
                    forward(proxy, head, super::body::full(body), None, &target, scrub.is_some()).await
                }
                Err(e) => Err(e),
            };
        }
    }
    let resp = match resp {
        Ok(resp) => resp,
        Err(e) => {
            // The values may have gone out: the use is recorded, whatever became of the response.
            let e = scrubbed(e, scrub.as_deref());
            recorder.finish(e.status());
            return Err(e);
        }
    };
    let resp = redact(resp, scrub);
    let counted = recorder.finish(resp.status());
    Ok((resp, counted))
}

/// The most of a request body to an `[[oauth2]]` host that is held to be sent again after a
/// 401: a body of known length within it, or none. Longer or unknown-length bodies are
/// streamed, and their 401 goes back to the agent (the token is dropped all the same).
const REPLAY_MAX: u64 = 64 * 1024;

/// The body as it is to be sent, and, when it can be sent twice, a copy of the head and the
/// whole body for the retry.
async fn replayable(body: Body, head: &Parts) -> Result<(Body, Option<(Parts, Bytes)>), ProxyError> {
    let copy = || {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = head.method.clone();
        parts.uri = head.uri.clone();
        parts.version = head.version;
        parts.headers = head.headers.clone();
        parts
    };
    let bytes = if hyper::body::Body::is_end_stream(&body) {
        Bytes::new()
    } else if hyper::body::Body::size_hint(&body).upper().is_some_and(|n| n <= REPLAY_MAX) {
        // (Its length is known and within the bound: it is not refused here.)
        read_bounded(body, REPLAY_MAX, || {
            ProxyError::new(ErrorCode::BodyTooLarge, "the request body is longer than it said")
        })
        .await?
    } else {
        return Ok((body, None));
    };
    Ok((super::body::full(bytes.clone()), Some((copy(), bytes))))
}

/// The one retry of a request whose OAuth2 token the upstream refused.
struct Retry<'a> {
    target: &'a Target,
    written: &'a [Written],
    issued: &'a Issued,
}

impl Retry<'_> {
    /// The head with a new token, and the scrub for its response: every value the host was
    /// sent (the new token among them) and what the request wrote byte for byte. The recorder
    /// records the new token in place of the refused one.
    async fn prepare(
        &self,
        proxy: &Proxy,
        mut head: Parts,
        recorder: &mut Recorder<'_>,
    ) -> Result<(Parts, Option<Arc<Patterns>>), ProxyError> {
        let cache = ThreadCache::enter(proxy);
        let policy = cache.policy();
        // The policy may have changed while the first answer came: the rule must still apply.
        let Some((index, rule)) =
            policy.oauth2().iter().enumerate().find(|(_, rule)| rule.host().matches(&self.target.host))
        else {
            return Err(ProxyError::new(
                ErrorCode::TokenEndpointError,
                "the upstream refused the OAuth2 token (401) and the policy no longer has an oauth2 rule for this host",
            ));
        };
        let fresh = proxy.tokens.token(proxy, &cache, index, rule).await?;
        head.headers.insert(header::AUTHORIZATION, fresh.header());
        let refused = self.issued.carried();
        let used: Arc<[CarriedValue]> = recorder
            .used
            .iter()
            .filter(|u| !Arc::ptr_eq(&u.fetched, &refused.fetched))
            .cloned()
            .chain([fresh.carried()])
            .collect();
        proxy.echoes.sent(&self.target.host, &used);
        let scrub = match self.written {
            [] => proxy.echoes.of(&self.target.host),
            written => proxy.echoes.with_exact(&self.target.host, written),
        };
        recorder.used = used;
        Ok((head, scrub))
    }
}

/// Records the uses of a request whose values are on their way, exactly once: with the
/// status it ended with, or, when the request is dropped before (an HTTP/2 stream reset, an
/// agent gone while the upstream was answering), as 499, the client closed the request.
struct Recorder<'a> {
    proxy: &'a Proxy,
    seen: &'a RequestRecord,
    target: &'a Target,
    used: Arc<[CarriedValue]>,
    started: Instant,
    done: bool,
}

impl Recorder<'_> {
    fn finish(&mut self, status: StatusCode) -> CountAs {
        self.done = true;
        record(self.proxy, self.seen, self.target, &self.used, status, self.started)
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(StatusCode::from_u16(499).expect("499 is a valid status code"));
        }
    }
}

/// Whether the HTTP/1.1 fast path hands a request it parsed to hyper for a reason of the
/// policy's: it goes to a host of an `[[oauth2]]` rule, whose 401 the hyper path answers by
/// sending the request again with a new token, or of a `[[sign]]` rule, whose body the hyper
/// path hashes for the signature. Asked only while the policy has such rules
/// (`Policy::makes_credentials`).
pub(super) fn wants_hyper(proxy: &Proxy, head: &Parts, via: &Via) -> bool {
    let cache = ThreadCache::enter(proxy);
    let policy = cache.policy();
    target(policy, head, via).is_ok_and(|t| policy.oauth2_for(&t.host).is_some() || policy.sign_for(&t.host).is_some())
}

/// A request that passed every check, with its values in place, ready to be sent.
pub(super) struct Outbound {
    pub head: Parts,
    pub target: Target,
    /// Shared with this thread's plan for the upstream, when it came from one.
    pub used: Arc<[CarriedValue]>,
    /// What the response is scrubbed of: every form of each value in `used` and what the
    /// request wrote byte for byte, or, for a request without values, the values its host
    /// was sent (`echoes`); `None` when neither applies.
    pub scrub: Option<Arc<Patterns>>,
    /// What the request wrote byte for byte beyond the values (a `Basic` token): for the
    /// scrub of a retry (`Retry`).
    pub written: Vec<Written>,
    /// The access token of the host's `[[oauth2]]` rule, when one applies.
    pub oauth2: Option<Issued>,
}

/// Every step before the request leaves the proxy: target → admit → egress → host
/// agreement → rate limit → substitute + bind check. Shared by the hyper path and the
/// HTTP/1.1 fast path (`h1`), which differ only in how they forward.
/// `now` is when the request came in (plans and values are fresh as of then).
/// The fast path's `prepare`: it hands over to hyper every request whose body could hold
/// body fields and every request toward a host a sign rule matches (`codec::parse_request`),
/// so it never has a body to give.
pub(super) async fn prepare(proxy: &Proxy, head: Parts, via: &Via, now: Instant) -> Result<Outbound, ProxyError> {
    prepare_inner(proxy, head, None, via, now).await.map(|(outbound, _)| outbound)
}

/// `prepare`, then the body fields step (`inject::body_fields`) and the SigV4 signing step
/// (`credentials::sigv4::sign`): the body as it is to be sent.
async fn prepare_with_body(
    proxy: &Proxy,
    head: Parts,
    body: Body,
    via: &Via,
    now: Instant,
) -> Result<(Outbound, Body), ProxyError> {
    let (outbound, body) = prepare_inner(proxy, head, Some(body), via, now).await?;
    Ok((outbound, body.unwrap_or_else(|| super::body::full(Bytes::new()))))
}

async fn prepare_inner(
    proxy: &Proxy,
    mut head: Parts,
    body: Option<Body>,
    via: &Via,
    now: Instant,
) -> Result<(Outbound, Option<Body>), ProxyError> {
    // A CONNECT to the proxy opens a tunnel (`listen::connect`) and never comes here; one that
    // does was sent inside a tunnel (or named a route), and forwarding it would hand the
    // upstream a tunnel of its own, values injected on the way.
    if head.method == http::Method::CONNECT {
        return Err(ProxyError::connect_not_allowed());
    }
    let cache = ThreadCache::enter(proxy);
    let target = target(cache.policy(), &head, via)?;
    one_host(&head)?;
    admit(proxy, &mut head, via, &target)?;
    remove_connection_named(&mut head.headers);
    egress(proxy, &cache, &target, now).await?;
    agree(&head, via, &target)?;
    cache.limits().check(&target.host)?;
    let oauth2 = cache.policy().oauth2().iter().enumerate().find(|(_, rule)| rule.host().matches(&target.host));
    if oauth2.is_some() {
        // The rule's token replaces whatever the agent sent: it is neither checked nor sent.
        head.headers.remove(header::AUTHORIZATION);
    }
    let Substituted { mut head, mut used, written } = substitute(proxy, &cache, head, &target, now).await?;
    let body = match body {
        Some(body) => Some(body_fields(proxy, &cache, &mut head, body, &target, &mut used).await?),
        None => None,
    };
    let oauth2 = match oauth2 {
        Some(_) if !target.tls && !target.plain_http_allowed => {
            return Err(ProxyError::new(
                ErrorCode::InsecureTransport,
                format!(
                    "the OAuth2 access token for '{}' would go over plain http://; use https://, or name the http:// \
                     upstream in a route on purpose",
                    target.host
                ),
            ));
        }
        Some((index, rule)) => {
            let issued = proxy.tokens.token(proxy, &cache, index, rule).await?;
            head.headers.insert(header::AUTHORIZATION, issued.header());
            used = used.iter().cloned().chain([issued.carried()]).collect();
            Some(issued)
        }
        None => None,
    };
    // Last of the changes to the request's signed parts: the signature covers them as sent.
    let body = super::credentials::sigv4::sign(proxy, &cache, &mut head, body, &target, &mut used).await?;
    if !used.is_empty() && proxy.reporter.spool_full() {
        // A use that could not be recorded is not made.
        return Err(unrecordable());
    }
    let scrub = scrub_for(proxy, &cache, &target.host, &used, &written);
    if scrub.is_some() {
        // Redaction reads the response as sent; a compressed body would hide a value from it.
        head.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    Ok((Outbound { head, target, used, scrub, written, oauth2 }, body))
}

// ---- record -------------------------------------------------------------------------

/// One access event per injected value; returns how the request is counted (`finished`).
pub(super) fn record(
    proxy: &Proxy,
    seen: &RequestRecord,
    target: &Target,
    used: &[CarriedValue],
    status: StatusCode,
    started: Instant,
) -> CountAs {
    if used.is_empty() {
        return CountAs::Passed;
    }
    for u in used {
        tracing::debug!(path = %u.fetched.path, version = u.fetched.version, host = %target.host, status = status.as_u16(), "value injected");
        seen.report(proxy, &target.host, Some(u), None, status, started);
    }
    CountAs::Injected
}

/// The refusal of a request that would inject while its uses cannot be recorded.
fn unrecordable() -> ProxyError {
    ProxyError::new(
        ErrorCode::SpoolFull,
        "the proxy's access-event spool is full (the central API has not taken its events) or cannot be \
         written (disk full); requests that would inject are refused until uses can be recorded again",
    )
}
