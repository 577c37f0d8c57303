//! `/v1/tokens`: minting (`POST`, answered by a token or, when a grant needs approval, by a
//! pending approval request), introspection (`GET /v1/tokens/self`) and revocation
//! (`DELETE /v1/tokens/{id}`, no body).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::SecretValue;
use crate::domain::value::serialize_exposed;

/// A scope list as the wire has it: one scope as a string, several as an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// One scope as `One`, any other number as `Many`: how the server answers.
    pub fn of(scopes: &[String]) -> OneOrMany {
        match scopes {
            [one] => OneOrMany::One(one.clone()),
            many => OneOrMany::Many(many.to_vec()),
        }
    }

    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub scope: OneOrMany,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<i64>,
}

/// A token minted now (201), or collected after approval (`GET /v1/approvals/{id}`'s
/// `token`): its value is handed out this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MintedToken {
    pub id: String,
    #[serde(serialize_with = "serialize_exposed")]
    pub value: SecretValue,
    pub scope: OneOrMany,
    pub ttl_seconds: u64,
    pub expires_at: Option<String>,
    /// Always `approved`.
    pub approval_status: String,
    /// Always `null`.
    pub approval_request_id: Option<String>,
}

/// A mint that waits for a human (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingApproval {
    /// Always `pending`.
    pub approval_status: String,
    pub approval_request_id: String,
    pub message: String,
    pub approve_url: String,
}

/// `GET /v1/tokens/self`: what the calling credential is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    pub id: String,
    /// `user_key`, `agent_key` or `token`.
    pub kind: String,
    pub scope: OneOrMany,
    /// The agent the credential is, or was minted for.
    pub agent: Option<AgentIdentity>,
    pub description: Option<String>,
    pub allowed_ips: Vec<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentIdentity {
    pub id: String,
    pub name: String,
}
