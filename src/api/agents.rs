//! `/v1/agents`: agents are named credentials whose power comes from their policy file.
//! `DELETE /v1/agents/{id}` answers 204 with no body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::SecretValue;
use crate::domain::value::serialize_exposed;

/// `POST /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The 201 of `POST /v1/agents`: the agent key is handed out this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentCreated {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "serialize_exposed")]
    pub key: SecretValue,
    /// Whether a policy names the agent yet (without one it cannot mint tokens).
    pub has_policy: bool,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<AgentSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentSummary {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    pub has_policy: bool,
}
