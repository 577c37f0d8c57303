//! `/v1/approvals`: token requests waiting for a human. The requester polls
//! `GET /v1/approvals/{id}`; once approved, that answer carries the token, once.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Paged;
use super::tokens::MintedToken;

/// One approval request. Listings and decisions answer it as it is; `GET /v1/approvals/{id}`
/// adds `approval_status` and `approval_request_id` (the same as `status` and `id`, in the
/// words of a mint's answer) and, for the requester of an approved request not collected
/// yet, the `token`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Approval {
    pub id: String,
    /// `pending`, `approved`, `denied` or `cancelled`.
    pub status: String,
    /// The id of the credential that asked.
    pub requester: String,
    /// The agent's name, when an agent asked.
    pub agent: Option<String>,
    /// The token request as filed (scopes, TTL, description, addresses, uses).
    pub request: Value,
    /// Why it needs approval.
    pub reason: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    /// The decider's comment or reason; for a cancelled request, why it lapsed.
    pub note: Option<String>,
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<MintedToken>,
}

/// `GET /v1/approvals[?status=…]`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
    pub total: i64,
    pub next_cursor: Option<String>,
}

impl Paged for ApprovalList {
    type Item = Approval;
    fn into_page(self) -> (Vec<Approval>, Option<String>) {
        (self.approvals, self.next_cursor)
    }
}

/// `POST /v1/approvals/{id}/approve`; the body may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /v1/approvals/{id}/deny`; the body may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
