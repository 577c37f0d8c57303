//! `GET /v1/agents/self/policy` and `POST /v1/policies/reload`.
//!
//! The policy endpoint answers the validated policy as [`Policy`] serializes it (its agent
//! rules, egress, grants, injections and routes, and the file it came from with its text).
//! A proxy reads [`PolicyText`] from it and parses the text itself, under the same rules as
//! the server, rather than trusting a second rendering of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::domain::policy::Policy;

/// What a proxy takes from the policy endpoint: the file name and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyText {
    pub source: String,
    pub text: String,
}

/// `POST /v1/policies/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyReload {
    /// Always `true` (a failed reload is an error).
    pub reloaded: bool,
    pub policies: usize,
    /// Pending approval requests the new policies no longer grant.
    pub cancelled_approvals: usize,
}
