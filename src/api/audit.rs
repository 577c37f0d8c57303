//! `/v1/audit`: the tenant's hash-chained audit trail, newest first. (`/v1/audit/verify`
//! answers the verifier's report, whose checkpoint part is free-form; clients read it as
//! JSON.)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Paged;
use crate::domain::audit::AuditRecord;
use crate::domain::time::to_rfc3339;

/// One record of the chain as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEvent {
    pub id: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<String>,
    pub actor: String,
    pub actor_description: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub timestamp: String,
    pub success: bool,
    /// What the operation recorded: free-form by event type, never a value.
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditRecord> for AuditEvent {
    fn from(r: &AuditRecord) -> AuditEvent {
        AuditEvent {
            id: r.id.clone(),
            seq: r.seq,
            kind: r.kind.clone(),
            path: r.path.clone(),
            actor: r.actor.clone(),
            actor_description: r.actor_description.clone(),
            ip: r.ip.clone(),
            user_agent: r.user_agent.clone(),
            timestamp: to_rfc3339(r.timestamp_ms),
            success: r.success,
            detail: r.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// `GET /v1/audit`: the cursor is the `seq` of the page's last record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

impl Paged for AuditPage {
    type Item = AuditEvent;
    fn into_page(self) -> (Vec<AuditEvent>, Option<String>) {
        (self.events, self.next_cursor)
    }
}
