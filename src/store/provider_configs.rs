//! Provider configurations as the store keeps them: per tenant, named, of one provider
//! type, with non-sensitive settings (checked by the server before they get here), and at
//! most one default per type.

/// A stored provider configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `vault`, `aws_secrets_manager`, …
    pub kind: String,
    /// The settings object.
    pub config: serde_json::Value,
    pub is_default: bool,
    /// How long a value read through this config may be cached; the server's default when `None`.
    pub cache_ttl_seconds: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes to a provider configuration; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfigChange {
    pub name: Option<String>,
    pub config: Option<serde_json::Value>,
    pub cache_ttl_seconds: Option<Option<i64>>,
    pub updated_at: i64,
}
