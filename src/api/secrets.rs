//! `/v1/secrets…`: the metadata view every secret endpoint answers with, the one response
//! that carries a value (`GET /v1/secrets/{path}`), listings, versions, and the bodies of
//! the writes (create, update, patch, rotate, destroy). Delete (`DELETE`, `?permanent=true`)
//! and destroy answer 204 with no body; undelete and patch answer the metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::Paged;
use crate::domain::value::serialize_exposed;
use crate::domain::{SecretPath, SecretValue, Tier};

/// A secret's metadata, never with a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The credential that created the secret; `null` for secrets made before it was kept.
    pub created_by: Option<CreatedBy>,
}

/// Who created a secret: the credential's id and description (a key's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedBy {
    pub id: String,
    pub description: Option<String>,
}

/// `GET /v1/secrets/{path}[?version=N]`: the metadata and the value, on purpose. The
/// metadata's fields are spelled out rather than flattened: serde reads a flattened struct
/// from a buffered copy of its fields and then loses their names in its errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub created_by: Option<CreatedBy>,
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
            created_by: m.created_by,
            value,
        }
    }
}

/// `GET /v1/secrets`: one page of what the caller may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretVersions {
    pub path: String,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: i64,
    /// `current`, `grace`, `expired`, `previous`, `deleted` or `destroyed`.
    pub state: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// `POST /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    pub path: SecretPath,
    #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
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
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// The 201 of a create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretCreated {
    pub path: String,
    pub version: i64,
    pub tier: String,
    pub created_at: String,
}

/// `PUT /v1/secrets/{path}`: a new version, or the secret's first when the path has none
/// (create or replace). `cas: N` (or `If-Match: "N"`): only if the current version is N;
/// `cas: 0` (or `If-None-Match: *`): only if there is no secret at the path. For
/// `expires_at` and `not_before`, an absent field leaves it and `null` clears it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
    pub value: SecretValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretUpdated {
    pub path: String,
    pub version: i64,
    pub updated_at: String,
}

/// `PATCH /v1/secrets/{path}`: metadata only. For `description`, `owner`, `expires_at` and
/// `not_before`, an absent field leaves it and `null` clears it (`Some(None)`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Option<String>>,
}

/// A value to write: a string, or a JSON object of fields (a structured value), kept as its
/// canonical JSON text (keys sorted, no spaces), which `?field=` and the proxy's
/// `{{secret:PATH#field}}` read a field of.
fn text_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    struct TextOrObject;
    impl<'de> serde::de::Visitor<'de> for TextOrObject {
        type Value = SecretValue;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string, or a JSON object of fields")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
            Ok(SecretValue::new(v.to_owned()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretValue, E> {
            Ok(SecretValue::new(v))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SecretValue, A::Error> {
            let object = serde_json::Map::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            let text = serde_json::to_string(&object).map_err(serde::de::Error::custom)?;
            Ok(SecretValue::new(text))
        }
    }
    d.deserialize_any(TextOrObject)
}

/// Tells an explicit `null` (clear the field) from an absent field (leave it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/secrets/{path}/rotate`: a new value; the old one stays readable for the grace
/// period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
    pub new_value: SecretValue,
    #[serde(default)]
    pub grace_period_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRotated {
    pub path: String,
    pub old_version: i64,
    pub new_version: i64,
    pub old_expires_at: String,
}

/// `POST /v1/secrets/{path}/destroy`: wipes these versions' ciphertext for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyVersions {
    pub versions: Vec<i64>,
}

/// `POST /v1/secrets/{path}/undelete`: the optional body; `versions` also makes those
/// versions readable again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndeleteSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<i64>>,
}

/// `POST /v1/secrets/copy` and `POST /v1/secrets/move`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySecret {
    pub from: SecretPath,
    pub to: SecretPath,
    /// Replace a secret at `to` (copy: a new version of it; move: it is purged first).
    #[serde(default)]
    pub overwrite: bool,
}

/// The answer of a copy: 201 when `to` was made, 200 when a new version was written there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretCopied {
    pub from: String,
    pub from_version: i64,
    pub to: String,
    pub version: i64,
}

/// `POST /v1/secrets/bulk`: at most 100 operations, applied in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// One transaction, all or nothing; otherwise each operation on its own.
    #[serde(default)]
    pub atomic: bool,
    pub operations: Vec<BulkOperation>,
}

/// One operation of a bulk request, by `op`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BulkOperation {
    /// Create or replace (as `PUT`; `cas: 0` = create only).
    Set {
        path: SecretPath,
        #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
        value: SecretValue,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cas: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<Tier>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tags: Option<BTreeMap<String, String>>,
    },
    Delete {
        path: SecretPath,
    },
    Undelete {
        path: SecretPath,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        versions: Option<Vec<i64>>,
    },
    Destroy {
        path: SecretPath,
        versions: Vec<i64>,
    },
    Rotate {
        path: SecretPath,
        #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
        new_value: SecretValue,
        #[serde(default)]
        grace_period_seconds: u32,
    },
}

/// The answer of a bulk request (200 whenever the request was well-formed): whether its
/// changes were kept (`applied`: atomic, all of them; otherwise, any) and each operation's
/// outcome, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    pub atomic: bool,
    pub applied: bool,
    pub results: Vec<BulkOpResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkOpResult {
    pub index: usize,
    pub op: String,
    pub path: String,
    /// The status the operation would have had on its own endpoint; 424 for an operation of
    /// an atomic request that failed elsewhere (nothing of it was kept).
    pub status: u16,
    /// The secret's version after the operation, when it was applied.
    pub version: Option<i64>,
    pub error: Option<BulkOpError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkOpError {
    pub code: String,
    pub message: String,
}
