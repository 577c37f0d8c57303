//! `/v1/keys` (user API keys of a tenant) and `/v1/tenants`. A key is shown once, when it is
//! created; `DELETE /v1/keys/{id}` answers 204 with no body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::value::serialize_exposed;
use crate::domain::{Role, SecretValue};

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    pub role: Role,
}

/// The 201 of `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KeyCreated {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(serialize_with = "serialize_exposed")]
    pub key: SecretValue,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyList {
    pub keys: Vec<KeySummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeySummary {
    pub id: String,
    pub name: String,
    /// `admin`, `deployer` or `reader`.
    pub role: Option<String>,
    pub created_at: String,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
}

/// The 201 of `POST /v1/tenants`: the new tenant's admin key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TenantCreated {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "serialize_exposed")]
    pub admin_key: SecretValue,
}
