//! Access events: `POST /v1/access-events` (a proxy reports the uses of values, with the
//! agent key) and `GET /v1/secrets/{path}/access-events` (the recorded ones, newest first).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Paged;
use super::audit::AuditEvent;

/// `POST /v1/access-events`: at most 500 events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessReport {
    pub events: Vec<AccessEvent>,
}

/// One use (or several identical ones, `count`) of a value by the proxy, or a refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// The proxy's id for the event: the server records each id once.
    pub id: String,
    /// The agent's name; if given it must be the calling agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    pub host: String,
    pub method: String,
    pub url_path: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// How the value went on the wire when not in a header or query the agent wrote:
    /// `body_field` (a form or JSON body field), `oauth2` (an `[[oauth2]]` rule's client
    /// credentials sent to its token endpoint, or its access token sent with a request) or
    /// `aws_sigv4` (a credential a `[[sign]]` rule signed the request with). Absent for the
    /// usual placements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
    /// Identical uses this event stands for; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Injected,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// The 202 of a report: events taken now, ids taken before, uses of secrets the agent's
/// policy does not grant (recorded as `access.refused`), and refusals beyond the caps,
/// summarised in one `access.over_limit` record instead of one record each (absent when 0).
/// `accepted + duplicates` is the number of events sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccessReceipt {
    pub accepted: u64,
    pub duplicates: u64,
    pub refused: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub over_limit: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /v1/secrets/{path}/access-events`: audit records of type `access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccessEventPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

impl Paged for AccessEventPage {
    type Item = AuditEvent;
    fn into_page(self) -> (Vec<AuditEvent>, Option<String>) {
        (self.events, self.next_cursor)
    }
}
