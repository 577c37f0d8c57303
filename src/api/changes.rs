//! `GET /v1/events`, the change stream (server-sent events). Each event's name is its type;
//! its `data` is a [`ChangeEvent`], except `resync` (the subscriber fell behind and missed
//! events: drop every cache), whose data is a [`Resync`]. Paths and ids, never values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The event types, as `event:` names them.
pub const SECRET_UPDATED: &str = "secret.updated";
pub const SECRET_ROTATED: &str = "secret.rotated";
pub const SECRET_DELETED: &str = "secret.deleted";
pub const TOKEN_REVOKED: &str = "token.revoked";
pub const POLICY_UPDATED: &str = "policy.updated";
pub const RESYNC: &str = "resync";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
}

/// The data of a `resync` event: how many events the subscriber missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resync {
    pub missed: u64,
}
