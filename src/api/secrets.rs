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
    /// `airlock_managed` or `external_reference`.
    pub managed_mode: ManagedMode,
    /// `active`, `disabled` or `archived`: only an active secret resolves.
    pub status: SecretStatus,
    /// The provider type an external secret is read from (`vault`, `aws_secrets_manager`);
    /// `null` for a managed secret.
    pub provider: Option<String>,
    pub provider_config_id: Option<String>,
    /// The current version's reference (external secrets): what it reads, never a value.
    pub external_ref: Option<String>,
    pub provider_version_ref: Option<String>,
    /// When the current version was written by an update or a rotation (`null` until one).
    pub last_rotated_at: Option<String>,
    /// When an external secret was last read through its provider (kept to the minute, as
    /// `accessed_at` is); `null` for a managed secret.
    pub last_resolved_at: Option<String>,
    /// The credential that created the secret; `null` for secrets made before it was kept.
    pub created_by: Option<CreatedBy>,
}

/// Who created a secret: the credential's id and description (a key's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedBy {
    pub id: String,
    pub description: Option<String>,
}

/// How a secret's value is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManagedMode {
    /// Airlock holds the value, encrypted.
    #[default]
    AirlockManaged,
    /// The value stays in an external provider and is read from it when needed.
    ExternalReference,
}

impl ManagedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedMode::AirlockManaged => "airlock_managed",
            ManagedMode::ExternalReference => "external_reference",
        }
    }
    pub fn parse(s: &str) -> Option<ManagedMode> {
        [ManagedMode::AirlockManaged, ManagedMode::ExternalReference].into_iter().find(|v| v.as_str() == s)
    }
}

/// Whether a secret resolves: `disabled` and `archived` secrets stay listed but are not read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretStatus {
    #[default]
    Active,
    Disabled,
    Archived,
}

impl SecretStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretStatus::Active => "active",
            SecretStatus::Disabled => "disabled",
            SecretStatus::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Option<SecretStatus> {
        [SecretStatus::Active, SecretStatus::Disabled, SecretStatus::Archived].into_iter().find(|v| v.as_str() == s)
    }
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
    /// `airlock_managed` or `external_reference`.
    pub managed_mode: ManagedMode,
    /// `active`, `disabled` or `archived`: only an active secret resolves.
    pub status: SecretStatus,
    /// The provider type an external secret is read from (`vault`, `aws_secrets_manager`);
    /// `null` for a managed secret.
    pub provider: Option<String>,
    pub provider_config_id: Option<String>,
    /// The current version's reference (external secrets): what it reads, never a value.
    pub external_ref: Option<String>,
    pub provider_version_ref: Option<String>,
    /// When the current version was written by an update or a rotation (`null` until one).
    pub last_rotated_at: Option<String>,
    /// When an external secret was last read through its provider (kept to the minute, as
    /// `accessed_at` is); `null` for a managed secret.
    pub last_resolved_at: Option<String>,
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
            managed_mode: m.managed_mode,
            status: m.status,
            provider: m.provider,
            provider_config_id: m.provider_config_id,
            external_ref: m.external_ref,
            provider_version_ref: m.provider_version_ref,
            last_rotated_at: m.last_rotated_at,
            last_resolved_at: m.last_resolved_at,
            created_by: m.created_by,
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

/// `POST /v1/secrets`. A managed secret (the default) carries `value`; an external one
/// (`managed_mode: external_reference`) carries `external_ref` instead, and optionally the
/// provider's version (`provider_version_ref`) and the config to read it through
/// (`provider_config_id`, else the tenant's default config of the reference's provider).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    pub path: SecretPath,
    #[serde(
        default,
        serialize_with = "serialize_exposed_opt",
        deserialize_with = "text_or_object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::schema::TextOrObject>")]
    pub value: Option<SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_mode: Option<ManagedMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_version_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config_id: Option<String>,
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
    /// An empty value is refused (422) unless this is `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
}

/// The 201 of a create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretCreated {
    pub path: String,
    pub version: i64,
    pub tier: String,
    pub created_at: String,
}

/// `PUT /v1/secrets/{path}`: a new version, or the secret's first when the path has none
/// (create or replace). A managed secret takes a `value`; an external one a new `external_ref`
/// and/or `provider_version_ref` (what is not given is kept). `cas: N` (or `If-Match: "N"`): only if the current version is N;
/// `cas: 0` (or `If-None-Match: *`): only if there is no secret at the path. For
/// `expires_at` and `not_before`, an absent field leaves it and `null` clears it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    #[serde(
        default,
        serialize_with = "serialize_exposed_opt",
        deserialize_with = "text_or_object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::schema::TextOrObject>")]
    pub value: Option<SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_version_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// An empty value is refused (422) unless this is `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretUpdated {
    pub path: String,
    pub version: i64,
    pub updated_at: String,
}

/// `PATCH /v1/secrets/{path}`: metadata only. For `description`, `owner`, `expires_at` and
/// `not_before`, an absent field leaves it and `null` clears it (`Some(None)`).
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
    /// `active`, `disabled` or `archived`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SecretStatus>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Option<String>>,
}

/// A value to write: a string, or a JSON object of fields (a structured value), kept as its
/// canonical JSON text (keys sorted, no spaces), which `?field=` and the proxy's
/// `{{secret:PATH#field}}` read a field of. The text is built in buffers that wipe
/// themselves (`domain::structured::canonical_object`), never through a `serde_json::Map`.
fn text_or_object_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretValue>, D::Error> {
    text_or_object(d).map(Some)
}

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
            let mut text = crate::domain::structured::canonical_object(map)?;
            Ok(SecretValue::new(std::mem::take(&mut *text)))
        }
    }
    d.deserialize_any(TextOrObject)
}

/// Tells an explicit `null` (clear the field) from an absent field (leave it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/secrets/{path}/rotate`: a new value (managed) or a new `external_ref` and/or
/// `provider_version_ref` (external); the old version stays readable for the grace period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    #[serde(
        default,
        serialize_with = "serialize_exposed_opt",
        deserialize_with = "text_or_object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::schema::TextOrObject>")]
    pub new_value: Option<SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_version_ref: Option<String>,
    #[serde(default)]
    pub grace_period_seconds: u32,
    /// An empty value is refused (422) unless this is `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRotated {
    pub path: String,
    pub old_version: i64,
    pub new_version: i64,
    pub old_expires_at: String,
}

fn serialize_exposed_opt<S: serde::Serializer>(v: &Option<SecretValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serialize_exposed(v, s),
        None => s.serialize_none(),
    }
}

/// `POST /v1/secrets/remote-import/preview`: one page of what a provider config lists.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteImportPreview {
    pub provider_config_id: String,
    /// A Vault folder (`MOUNT/PATH`) or an AWS name filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportCandidate {
    pub external_ref: String,
    /// The provider's name for it.
    pub name: String,
    pub description: Option<String>,
    /// The path it would be imported at unless another is given.
    pub path: String,
    /// `ready`, `duplicate` (a secret already references it: `existing_path`) or `conflict`
    /// (the path holds another secret).
    pub status: String,
    pub existing_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteImportCandidates {
    pub provider_config_id: String,
    pub provider: String,
    pub candidates: Vec<ImportCandidate>,
    /// Folders under the listed one (Vault), to preview next.
    pub folders: Vec<String>,
    pub next_token: Option<String>,
}

/// `POST /v1/secrets/remote-import`: creates external secrets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteImport {
    pub provider_config_id: String,
    pub secrets: Vec<ImportItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportItem {
    pub external_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportResult {
    pub external_ref: String,
    pub path: Option<String>,
    /// `imported`, `skipped` (a secret already references it, or the path is taken) or `error`.
    pub outcome: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteImported {
    pub imported: u64,
    pub skipped: u64,
    pub errored: u64,
    pub results: Vec<ImportResult>,
}

/// `POST /v1/secrets/{path}/destroy`: wipes these versions' ciphertext for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyVersions {
    #[schemars(length(min = 1), inner(range(min = 1)))]
    pub versions: Vec<i64>,
}

/// `POST /v1/secrets/{path}/undelete`: the optional body; `versions` also makes those
/// versions readable again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UndeleteSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<i64>>,
}

/// `POST /v1/secrets/copy` and `POST /v1/secrets/move`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopySecret {
    pub from: SecretPath,
    pub to: SecretPath,
    /// Replace a secret at `to` (copy: a new version of it; move: it is purged first).
    #[serde(default)]
    pub overwrite: bool,
}

/// The answer of a copy: 201 when `to` was made, 200 when a new version was written there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretCopied {
    pub from: String,
    pub from_version: i64,
    pub to: String,
    pub version: i64,
}

/// `POST /v1/secrets/bulk`: at most 100 operations, applied in order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// One transaction, all or nothing; otherwise each operation on its own.
    #[serde(default)]
    pub atomic: bool,
    pub operations: Vec<BulkOperation>,
}

/// One operation of a bulk request, by `op`. Read through `RawBulkOperation`, a plain struct:
/// serde's derive for an internally tagged enum buffers the whole object first, leaving a
/// value with JSON escapes in an owned `String` that is never wiped.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BulkOperation {
    /// Create or replace (as `PUT`; `cas: 0` = create only).
    Set {
        path: SecretPath,
        #[serde(serialize_with = "serialize_exposed", deserialize_with = "text_or_object")]
        #[schemars(with = "super::schema::TextOrObject")]
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
        #[schemars(with = "super::schema::TextOrObject")]
        new_value: SecretValue,
        #[serde(default)]
        grace_period_seconds: u32,
    },
}

/// The operations `op` names.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum BulkOp {
    Set,
    Delete,
    Undelete,
    Destroy,
    Rotate,
}

impl<'de> Deserialize<'de> for BulkOperation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BulkOperation, D::Error> {
        BulkOperation::try_from(RawBulkOperation::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A bulk operation as written, every field of every `op` optional; `BulkOperation`'s
/// `TryFrom` checks that the fields fit the `op`. Values go straight into wiping buffers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBulkOperation {
    op: BulkOp,
    path: SecretPath,
    #[serde(default, deserialize_with = "text_or_object_opt")]
    value: Option<SecretValue>,
    #[serde(default)]
    cas: Option<i64>,
    #[serde(default)]
    tier: Option<Tier>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "not_null")]
    versions: Option<Vec<i64>>,
    #[serde(default, deserialize_with = "text_or_object_opt")]
    new_value: Option<SecretValue>,
    #[serde(default, deserialize_with = "not_null")]
    grace_period_seconds: Option<u32>,
}

/// A field that may be left out but is not `null` when given (as in `BulkOperation`, where
/// it is not an `Option`).
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl TryFrom<RawBulkOperation> for BulkOperation {
    type Error = String;

    fn try_from(raw: RawBulkOperation) -> Result<BulkOperation, String> {
        let RawBulkOperation {
            op,
            path,
            value,
            cas,
            tier,
            description,
            tags,
            versions,
            new_value,
            grace_period_seconds,
        } = raw;
        // The fields each op takes; any other one given is an error, as `deny_unknown_fields`
        // would say of it.
        let (name, allowed): (&str, &[&str]) = match op {
            BulkOp::Set => ("set", &["value", "cas", "tier", "description", "tags"]),
            BulkOp::Delete => ("delete", &[]),
            BulkOp::Undelete => ("undelete", &["versions"]),
            BulkOp::Destroy => ("destroy", &["versions"]),
            BulkOp::Rotate => ("rotate", &["new_value", "grace_period_seconds"]),
        };
        let given = [
            ("value", value.is_some()),
            ("cas", cas.is_some()),
            ("tier", tier.is_some()),
            ("description", description.is_some()),
            ("tags", tags.is_some()),
            ("versions", versions.is_some()),
            ("new_value", new_value.is_some()),
            ("grace_period_seconds", grace_period_seconds.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(field, set)| *set && !allowed.contains(field)) {
            return Err(format!("unknown field `{field}` for op `{name}`, expected one of {allowed:?}"));
        }
        let missing = |field: &str| format!("missing field `{field}` for op `{name}`");
        Ok(match op {
            BulkOp::Set => {
                let value = value.ok_or_else(|| missing("value"))?;
                BulkOperation::Set { path, value, cas, tier, description, tags }
            }
            BulkOp::Delete => BulkOperation::Delete { path },
            BulkOp::Undelete => BulkOperation::Undelete { path, versions },
            BulkOp::Destroy => BulkOperation::Destroy { path, versions: versions.ok_or_else(|| missing("versions"))? },
            BulkOp::Rotate => BulkOperation::Rotate {
                path,
                new_value: new_value.ok_or_else(|| missing("new_value"))?,
                grace_period_seconds: grace_period_seconds.unwrap_or_default(),
            },
        })
    }
}

/// The answer of a bulk request (200 whenever the request was well-formed): whether its
/// changes were kept (`applied`: atomic, all of them; otherwise, any) and each operation's
/// outcome, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BulkResult {
    pub atomic: bool,
    pub applied: bool,
    pub results: Vec<BulkOpResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BulkOpError {
    pub code: String,
    pub message: String,
}
