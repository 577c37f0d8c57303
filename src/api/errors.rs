//! The error shape every endpoint answers with: `{"error":{"code","message",…}}`, where `…`
//! are fields some codes add (`path` and `required_scope` on `permission_denied`, `pending`
//! and `max_pending` on `too_many_pending_approvals`, …).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// What clients match on (`not_found`, `conflict`, …): `server::ErrorCode`'s text.
    pub code: String,
    /// What to fix, for a person.
    pub message: String,
    /// The fields the code adds, as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
