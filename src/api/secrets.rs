//! `/v1/secrets…`: the metadata view every secret endpoint answers with, the one response
//! that carries a value (`GET /v1/secrets/{path}`), listings, versions, and the bodies of
//! the writes (create, update, patch, rotate, destroy). Delete (`DELETE`, `?permanent=true`)
//! and destroy answer 204 with no body; undelete and patch answer the metadata.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::Paged;
use crate::domain::value::serialize_exposed;
use crate::domain::{SecretPath, SecretValue, Tier};

/// A secret's metadata, never with a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretMetadata {
    pub path: String,
    pub version: i64,
    pub tier: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allowed_hosts: Vec<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub accessed_at: Option<String>,
    pub expires_at: Option<String>,
    pub not_before: Option<String>,
}

/// `GET /v1/secrets/{path}[?version=N]`: the metadata and the value, on purpose. The
/// metadata's fields are spelled out rather than flattened: serde reads a flattened struct
/// from a buffered copy of its fields and then loses their names in its errors.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SecretRead {
    pub path: String,
    /// The version read (the current one unless `?version=` named another).
    pub version: i64,
    pub tier: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allowed_hosts: Vec<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub accessed_at: Option<String>,
    pub expires_at: Option<String>,
    pub not_before: Option<String>,
    #[serde(serialize_with = "serialize_exposed")]
    pub value: SecretValue,
}

impl SecretRead {
    pub fn new(m: SecretMetadata, value: SecretValue) -> SecretRead {
        SecretRead {
            path: m.path,
            version: m.version,
            tier: m.tier,
            description: m.description,
            tags: m.tags,
            allowed_hosts: m.allowed_hosts,
            owner: m.owner,
            created_at: m.created_at,
            updated_at: m.updated_at,
            accessed_at: m.accessed_at,
            expires_at: m.expires_at,
            not_before: m.not_before,
            value,
        }
    }
}

/// `GET /v1/secrets`: one page of what the caller may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretList {
    pub items: Vec<SecretMetadata>,
    pub total: i64,
    pub next_cursor: Option<String>,
}

impl Paged for SecretList {
    type Item = SecretMetadata;
    fn into_page(self) -> (Vec<SecretMetadata>, Option<String>) {
        (self.items, self.next_cursor)
    }
}

/// `GET /v1/secrets/{path}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretVersions {
    pub path: String,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    pub version: i64,
    /// `current`, `grace`, `expired`, `previous`, `deleted` or `destroyed`.
    pub state: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// `POST /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    pub path: SecretPath,
    #[serde(serialize_with = "serialize_exposed")]
    pub value: SecretValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub not_before: Option<String>,
}

/// The 201 of a create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretCreated {
    pub path: String,
    pub version: i64,
    pub tier: String,
    pub created_at: String,
}

/// `PUT /v1/secrets/{path}`: a new version (`cas`: only if the current one is that).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    #[serde(serialize_with = "serialize_exposed")]
    pub value: SecretValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretUpdated {
    pub path: String,
    pub version: i64,
    pub updated_at: String,
}

/// `PATCH /v1/secrets/{path}`: metadata only. For `description` and `owner`, an absent
/// field leaves it and `null` clears it (`Some(None)`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub owner: Option<Option<String>>,
}

/// Tells an explicit `null` (clear the field) from an absent field (leave it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/secrets/{path}/rotate`: a new value; the old one stays readable for the grace
/// period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    #[serde(serialize_with = "serialize_exposed")]
    pub new_value: SecretValue,
    #[serde(default)]
    pub grace_period_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRotated {
    pub path: String,
    pub old_version: i64,
    pub new_version: i64,
    pub old_expires_at: String,
}

/// `POST /v1/secrets/{path}/destroy`: wipes these versions' ciphertext for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyVersions {
    #[schemars(length(min = 1), inner(range(min = 1)))]
    pub versions: Vec<i64>,
}
