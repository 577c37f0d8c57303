//! `GET /v1/secrets/{path}/usage`: who may use a secret and how, from the policies the
//! server holds, and when each of those agents last used it, from the access events on
//! record. What an operator checks before rotating or deleting the secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The agents whose policies grant the path, ordered by agent name; empty when none does.
/// The path need not exist as a secret: a policy may name one not yet created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretUsage {
    pub path: String,
    pub agents: Vec<AgentUsage>,
}

/// One agent whose policy grants the path: the grant that governs it, and what of the
/// policy sends the value where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentUsage {
    /// The agent's name, as its policy file names it.
    pub agent: String,
    /// The agent's id in this tenant; `null` when the policy names an agent not created yet.
    pub agent_id: Option<String>,
    /// The policy file.
    pub policy: String,
    /// The glob of the grant that governs the path (the most specific one that matches).
    pub grant: String,
    /// The only hosts the value may be sent to.
    pub hosts: Vec<String>,
    /// Where in a request the value may be placed.
    pub placement: Placement,
    /// Minting a token for the secret waits for a human.
    pub approval_required: bool,
    /// `[[inject]]` rules whose value names the path.
    pub injects: Vec<InjectUse>,
    /// Routes (`/r/<name>/…`) whose upstream host the grant sends the value to.
    pub routes: Vec<RouteUse>,
    /// `[[sign]]` rules that sign requests with the value.
    #[serde(default)]
    pub signs: Vec<SignUse>,
    /// RFC 3339 time of the agent's last recorded use of the value (an access event with
    /// outcome `injected`); `null` when none is on record.
    pub last_used: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    /// Lower-case header names.
    pub headers: Vec<String>,
    /// The query string too.
    pub query: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InjectUse {
    pub host: String,
    pub header: String,
}

/// A `[[sign]]` rule that signs requests to `host` with the value, as its `role`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignUse {
    pub host: String,
    /// `aws-sigv4`.
    pub kind: String,
    /// `access_key`, `secret_key` or `session_token`.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteUse {
    pub name: String,
    pub upstream: String,
}
