//! Calls to the central API: the errors it answers with (and whose fault they are), trying
//! each of its addresses in turn until one answers, the agent's policy and id read with the
//! agent key, and access events posted with it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::Central;
use crate::api::access::AccessReceipt;
use crate::api::errors::ErrorBody;
use crate::api::policy::PolicyText;
use crate::api::tokens::TokenInfo;
use crate::domain::policy::Policy;

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("cannot reach the central API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the central API refused the proxy: {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("secret '{0}' is not available (deleted, expired or not readable)")]
    NotFound(String),
    /// The central API answered 404 with a reason: the secret is disabled or archived, or
    /// its provider does not hold what it references.
    #[error("secret '{path}' is not available ({reason}): {message}")]
    Unavailable { path: String, reason: String, message: String },
    /// The external provider the secret is read from failed (the central API's 502
    /// `provider_error`).
    #[error("the provider of secret '{path}' failed: {message}")]
    Provider { path: String, message: String },
    #[error("no token covers secret '{0}' yet: its grant waits for approval")]
    AwaitingApproval(String),
    /// An operator denied the approval request a token was minted with.
    #[error("approval request {approval_id} was denied ({})", reason_text(.reason))]
    Denied { approval_id: String, reason: Option<String> },
    /// The grant that covers `path` was denied approval, and the cool-down has `retry_in` left.
    #[error(
        "the grant for secret '{path}' was denied approval (request {approval_id}: {}); asked again in {} s or when the policy changes",
        reason_text(.reason),
        .retry_in.as_secs()
    )]
    ApprovalDenied { path: String, approval_id: String, reason: Option<String>, retry_in: Duration },
    #[error(
        "the proxy holds no valid token for secret '{0}': none could be minted in time (the proxy's log says why), or the agent was deleted"
    )]
    NoToken(String),
    #[error("unexpected answer from the central API: {0}")]
    Protocol(String),
}

impl CentralError {
    /// The API refused this agent (bad key, no policy): trying again will not help.
    pub fn refuses_the_agent(&self) -> bool {
        matches!(self, CentralError::Refused { status, .. } if refuses_the_agent(*status))
    }
}

/// An operator's reason for a denial, as the agent and the log are told it.
pub fn reason_text(reason: &Option<String>) -> String {
    match reason.as_deref().map(str::trim) {
        Some(reason) if !reason.is_empty() => format!("reason: {reason}"),
        _ => "no reason given".to_owned(),
    }
}

impl Central {
    /// Posts access events with the agent key.
    /// Posts a batch of access events, given as the JSON body `{"events":[…]}` already
    /// assembled from the spool's lines.
    pub async fn report(&self, body: Vec<u8>) -> Result<(), CentralError> {
        let body = bytes::Bytes::from(body);
        self.on_any(|base| {
            let body = body.clone();
            async move {
                let req = self
                    .http
                    .post(format!("{base}/v1/access-events"))
                    .bearer_auth(self.agent_key.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                let (status, bytes) = exchange(req, &base).await?;
                if status != 202 {
                    return Err(central_refusal(status, &bytes));
                }
                decode::<AccessReceipt>("POST /v1/access-events", &bytes).map(|_| ())
            }
        })
        .await
    }

    /// The address in use.
    pub(super) fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Runs `attempt` against the address in use and, while the answer is that it cannot
    /// be reached, against each other address in turn; the first that answers is used from
    /// then on (a replica on the same database).
    pub(super) async fn on_any<T, F, Fut>(&self, attempt: F) -> Result<T, CentralError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, CentralError>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut unreachable = None;
        for step in 0..self.bases.len() {
            let at = (start + step) % self.bases.len();
            match attempt(self.bases[at].clone()).await {
                Err(e @ CentralError::Unreachable { .. }) => unreachable = Some(e),
                answered => {
                    if step > 0
                        && self.current.compare_exchange(start, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                    {
                        let (from, to) = (&self.bases[start % self.bases.len()], &self.bases[at]);
                        tracing::warn!(%from, %to, "the central API address in use did not answer; using another");
                        metrics::counter!("airlock_proxy_central_failovers_total").increment(1);
                    }
                    return answered;
                }
            }
        }
        Err(unreachable.expect("at least one address"))
    }

    /// Moves off the address in use (its change stream ended or went silent), to the next.
    /// Moves off address `from` to the next, unless a request has already moved off it (to
    /// one that answered: moving again would go back towards the one that failed).
    pub(super) fn move_on(&self, from: usize) {
        let next = (from + 1) % self.bases.len();
        if next != from && self.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(to = %self.bases[next], "trying the next central API address");
        }
    }

    /// Sends `body` (JSON, if any) with `bearer`; the status and the body of the answer.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), CentralError> {
        self.on_any(|base| {
            let (method, body) = (method.clone(), body.clone());
            async move {
                let mut req = self.http.request(method, format!("{base}{path}")).bearer_auth(bearer);
                if let Some(b) = body {
                    req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b);
                }
                exchange(req, &base).await
            }
        })
        .await
    }
}

/// Sends `req` to the central API at `base`: the status and the body of its answer. An
/// address that does not answer, or answers for a central API it cannot reach (503 or 504,
/// or a 502 that is not the API's own `provider_error`: a load balancer or gateway in front
/// of a replica that is down), counts as unreachable, so the next address is tried
/// (`on_any`) and a value's last good copy may stand in.
async fn exchange(req: reqwest::RequestBuilder, base: &str) -> Result<(u16, Bytes), CentralError> {
    let unreachable = |reason: String| CentralError::Unreachable { url: base.to_owned(), reason };
    let resp = req.send().await.map_err(|e| unreachable(e.without_url().to_string()))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| unreachable(e.without_url().to_string()))?;
    if !(502..=504).contains(&status) {
        return Ok((status, bytes));
    }
    match crate::api::decode::<ErrorBody>(&format!("HTTP {status}"), &bytes) {
        Ok(b) if status == 502 && b.error.code == "provider_error" => Ok((status, bytes)),
        Ok(b) => Err(unreachable(format!("HTTP {status} {}: {}", b.error.code, b.error.message))),
        Err(_) => Err(unreachable(format!("HTTP {status} without an Airlock error body (from a gateway?)"))),
    }
}

/// `body` as the JSON of a request.
pub(super) fn encode(body: &impl serde::Serialize) -> Result<Bytes, CentralError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| CentralError::Protocol(format!("cannot encode a request: {e}")))
}

/// The answer of `endpoint` as the API's type `T`; a body of another shape is a protocol
/// error that names the endpoint and the field.
pub(super) fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, CentralError> {
    crate::api::decode(endpoint, body).map_err(|e| CentralError::Protocol(e.to_string()))
}

pub(super) async fn fetch_policy(http: &reqwest::Client, base: &str, agent_key: &str) -> Result<Policy, CentralError> {
    let url = format!("{base}/v1/agents/self/policy");
    let (status, bytes) = exchange(http.get(&url).bearer_auth(agent_key), base).await?;
    if status != 200 {
        return Err(central_refusal(status, &bytes));
    }
    let policy: PolicyText = decode("GET /v1/agents/self/policy", &bytes)?;
    Policy::parse(&policy.source, &policy.text).map_err(|e| CentralError::Protocol(format!("policy: {e}")))
}

/// A client error other than "too many requests": the central API will not serve this agent
/// (deleted, key revoked, no policy), as opposed to being unable to for now.
pub(super) fn refuses_the_agent(status: u16) -> bool {
    status != 429 && (400..500).contains(&status)
}

pub(super) async fn fetch_agent_id(
    http: &reqwest::Client,
    base: &str,
    agent_key: &str,
) -> Result<String, CentralError> {
    let (status, bytes) = exchange(http.get(format!("{base}/v1/tokens/self")).bearer_auth(agent_key), base).await?;
    if status != 200 {
        return Err(central_refusal(status, &bytes));
    }
    let info: TokenInfo = decode("GET /v1/tokens/self", &bytes)?;
    match info.agent {
        Some(agent) => Ok(agent.id),
        None => Err(CentralError::Protocol(format!("credential {} is not an agent's key", info.id))),
    }
}

/// A refusal (`status`, not a success) as the API's error object says it. A body that is not
/// one is still a refusal by its status, with code `not_airlock`: some other service (a load
/// balancer's page, say) answers at that address.
pub(super) fn central_refusal(status: u16, body: &[u8]) -> CentralError {
    match crate::api::decode::<ErrorBody>(&format!("HTTP {status}"), body) {
        Ok(ErrorBody { error }) => CentralError::Refused { status, code: error.code, message: error.message },
        Err(e) => CentralError::Refused {
            status,
            code: "not_airlock".to_owned(),
            message: format!(
                "HTTP {status} without an Airlock error body ({}); is --server (AIRLOCK_ADDR) the address of \
                 `airlock server` and not of another service (check the host and port)?",
                e.detail
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn another_service_at_the_server_address_is_named_as_such() {
        let e = super::central_refusal(404, br#"{"detail":"Not Found"}"#);
        let said = e.to_string();
        assert!(said.contains("not_airlock") && said.contains("--server") && said.contains("HTTP 404"), "{said}");
        let e = super::central_refusal(401, br#"{"error":{"code":"unauthenticated","message":"m"}}"#);
        assert_eq!(e.to_string(), "the central API refused the proxy: unauthenticated: m");
    }
}
