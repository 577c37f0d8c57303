//! External secret stores: OpenBao/Vault KV v2 (`vault`), AWS Secrets Manager (`aws`) and
//! GCP Secret Manager (`gcp`), read at the moment a value is needed. A reference names the secret (`reference`); a
//! provider config (non-sensitive settings: addresses, regions, file names) says how to reach
//! the store; credentials come from the server's environment or from files the config points
//! at, never from the API.
//!
//! Values come back as `SecretValue` (wiped on drop, never printed). No error, log line or
//! `Debug` output of this module carries a value: the response bodies they come from are
//! parsed here, wiped, and described only by their shape.

pub mod aws;
pub mod gcp;
mod http;
pub mod reference;
pub mod resolver;
mod sensitive;
pub mod vault;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::domain::value::SecretValue;
pub use reference::{ExternalRef, ProviderKind, RefError, VersionRef};
pub use sensitive::find_sensitive_key;

/// Why a provider could not answer. Messages name the provider and the reference, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The config is not usable (bad address, missing credentials, unreadable file).
    #[error("{provider} is not configured: {reason}")]
    Config { provider: ProviderKind, reason: String },
    /// The store could not be reached, timed out, or answered with a server error.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable { provider: ProviderKind, reason: String },
    /// The store refused Airlock's credentials.
    #[error("{provider} refused the credentials: {reason}")]
    Auth { provider: ProviderKind, reason: String },
    #[error("{provider} has no secret {what}")]
    NotFound { provider: ProviderKind, what: String },
    /// The secret is there but cannot serve as a value (no such field, not text, …).
    #[error("{provider}: {reason}")]
    Unusable { provider: ProviderKind, reason: String },
    /// The reference is not one this provider reads.
    #[error("{0}")]
    Reference(#[from] RefError),
}

impl ProviderError {
    /// True when the store, not the request, is at fault: a caller may serve a stale copy.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProviderError::Unavailable { .. })
    }
}

/// A value read from a provider, with the provider's name for its version.
pub struct Resolved {
    pub value: SecretValue,
    /// The version the provider served (a KV2 version, an AWS version id), when it says.
    pub version: Option<String>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved").field("value", &self.value).field("version", &self.version).finish()
    }
}

/// One secret a provider lists (for an import preview).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The reference that reads it (without a `#field`).
    pub external_ref: String,
    /// The provider's own name for it.
    pub name: String,
    pub description: Option<String>,
}

/// A page of candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub candidates: Vec<Candidate>,
    /// Folders under the listed one (Vault), to list next.
    pub folders: Vec<String>,
    pub next_token: Option<String>,
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub ok: bool,
    /// `ok`, or what failed.
    pub message: String,
    pub latency_ms: u64,
}

/// A configured external store.
#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// The value `r` names, at `version` (the latest when `None`).
    async fn resolve(&self, r: &ExternalRef, version: Option<&VersionRef>) -> Result<Resolved, ProviderError>;
    /// Secrets under `query` (a Vault folder `MOUNT/PATH`; an AWS name filter), one page.
    async fn list(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError>;
    /// Whether the store answers and accepts Airlock's credentials.
    async fn health(&self) -> Health;
}

/// The environment a provider takes its credentials from: a snapshot of the variables it
/// reads, so a test can hand in its own, and where credential files may be read from.
/// Values are wiped on drop and never printed.
#[derive(Clone, Default)]
pub struct Environment {
    vars: HashMap<String, Zeroizing<String>>,
    files: FileRule,
    addresses: AddressRule,
}

/// The server's variable listing the provider addresses a config may name, as a comma list of
/// `scheme://host[:port]` (`https://bao.internal:8200,http://127.0.0.1:5000`). The server
/// sends its own provider credentials to a config's address, and a config is written through
/// the API by a tenant admin: without this list an admin could have them sent anywhere.
pub const ADDRESSES_VAR: &str = "AIRLOCK_PROVIDER_ADDRESSES";

/// Which addresses (a Vault `address`, an AWS `endpoint`) a config may name. AWS's own
/// endpoint, used when a config names none, is always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddressRule {
    /// Any (a library caller that chose the config itself).
    #[default]
    Any,
    /// Only these origins (`scheme://host:port`); none when empty.
    Only(Vec<String>),
}

impl AddressRule {
    /// The server's rule: the origins in `AIRLOCK_PROVIDER_ADDRESSES` (none if it is unset).
    pub fn from_process() -> AddressRule {
        let listed = std::env::var(ADDRESSES_VAR).unwrap_or_default();
        AddressRule::Only(listed.split(',').filter_map(|a| origin(a.trim()).ok()).collect())
    }

    pub fn check(&self, address: &str) -> Result<(), String> {
        let AddressRule::Only(listed) = self else { return Ok(()) };
        let origin = origin(address)?;
        if listed.contains(&origin) {
            return Ok(());
        }
        Err(format!(
            "{origin} is not in the server's {ADDRESSES_VAR}, the addresses its provider credentials may be sent \
             to; an operator adds it there"
        ))
    }
}

/// `scheme://host:port` of an http(s) URL, lower-cased, with the scheme's port when none.
fn origin(address: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(address).map_err(|e| format!("address '{address}': {e}"))?;
    let host = url.host_str().filter(|_| matches!(url.scheme(), "http" | "https"));
    let (Some(host), Some(port)) = (host, url.port_or_known_default()) else {
        return Err(format!("address '{address}' is not an http(s) URL with a host"));
    };
    Ok(format!("{}://{}:{port}", url.scheme(), host.to_ascii_lowercase()))
}

/// Which credential files (`token_file`, `role_id_file`, `secret_id_file`) may be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileRule {
    /// Any file (a library caller that chose the config itself).
    #[default]
    Any,
    /// Only files inside this directory (symbolic links resolved).
    Under(PathBuf),
    /// None: the server was not given a directory for them.
    Denied,
}

/// The server's variable naming the directory provider credential files must be in. A
/// config is written through the API, so without this a tenant admin could have the server
/// read any file it can and send it to an address of their choosing.
pub const CREDENTIALS_DIR_VAR: &str = "AIRLOCK_PROVIDER_CREDENTIALS_DIR";

impl FileRule {
    /// `path`, resolved, if this rule lets it be read.
    pub fn check(&self, path: &Path) -> Result<PathBuf, String> {
        match self {
            FileRule::Any => Ok(path.to_owned()),
            FileRule::Denied => Err(format!(
                "credential files are read only from the directory in {CREDENTIALS_DIR_VAR}, which the server does not set"
            )),
            FileRule::Under(dir) => {
                let outside = || format!("{} is not inside {CREDENTIALS_DIR_VAR} ({})", path.display(), dir.display());
                let dir = dir.canonicalize().map_err(|e| format!("{CREDENTIALS_DIR_VAR} ({}): {e}", dir.display()))?;
                let real = path.canonicalize().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if real.starts_with(&dir) { Ok(real) } else { Err(outside()) }
            }
        }
    }
}

/// The variables providers read.
pub const ENV_VARS: &[&str] = &[
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    gcp::TOKEN_VAR,
];

impl Environment {
    /// The process environment's provider variables (`ENV_VARS`) and any `extra` names a
    /// config points at.
    pub fn from_process(extra: &[&str]) -> Environment {
        let vars = ENV_VARS
            .iter()
            .chain(extra)
            .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), Zeroizing::new(v))))
            .collect();
        let files = match std::env::var_os(CREDENTIALS_DIR_VAR) {
            Some(dir) if !dir.is_empty() => FileRule::Under(dir.into()),
            _ => FileRule::Denied,
        };
        Environment { vars, files, addresses: AddressRule::from_process() }
    }

    /// These variables, and credential files from anywhere.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        let vars = pairs.into_iter().map(|(k, v)| (k.to_owned(), Zeroizing::new(v.to_owned()))).collect();
        Environment { vars, files: FileRule::Any, addresses: AddressRule::Any }
    }

    pub fn with_files(mut self, files: FileRule) -> Environment {
        self.files = files;
        self
    }

    pub fn with_addresses(mut self, addresses: AddressRule) -> Environment {
        self.addresses = addresses;
        self
    }

    pub fn files(&self) -> &FileRule {
        &self.files
    }

    /// The variable's value, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Environment").field("set", &names).field("files", &self.files).finish()
    }
}

/// A provider of `kind` from its config object.
pub fn build(
    kind: ProviderKind,
    config: &serde_json::Value,
    env: &Environment,
) -> Result<Arc<dyn Provider>, ProviderError> {
    if let Some(address) = address_of(kind, config) {
        env.addresses.check(&address).map_err(|reason| ProviderError::Config { provider: kind, reason })?;
    }
    match kind {
        ProviderKind::Vault => Ok(Arc::new(vault::VaultClient::new(vault::VaultConfig::from_json(config)?, env)?)),
        ProviderKind::AwsSecretsManager => {
            Ok(Arc::new(aws::AwsSmClient::new(aws::AwsConfig::from_json(config)?, env)?))
        }
        ProviderKind::GcpSecretManager => Ok(Arc::new(gcp::GcpSmClient::new(gcp::GcpConfig::from_json(config)?, env)?)),
    }
}

/// The address a config sends the server's credentials to, when it names one.
pub fn address_of(kind: ProviderKind, config: &serde_json::Value) -> Option<String> {
    match kind {
        ProviderKind::Vault => vault::VaultConfig::from_json(config).ok().map(|c| c.address),
        ProviderKind::AwsSecretsManager => aws::AwsConfig::from_json(config).ok().and_then(|c| c.endpoint),
        ProviderKind::GcpSecretManager => gcp::GcpConfig::from_json(config).ok().and_then(|c| c.endpoint),
    }
}

/// Checks a config object for `kind` without reaching the store or needing credentials:
/// its shape, addresses, names. Credentials are checked by a health check.
pub fn check_config(kind: ProviderKind, config: &serde_json::Value) -> Result<(), ProviderError> {
    if let Some(key) = find_sensitive_key(config, "config") {
        return Err(ProviderError::Config {
            provider: kind,
            reason: format!(
                "{key} names a credential; configs hold none (the server reads them from its environment or from files)"
            ),
        });
    }
    match kind {
        ProviderKind::Vault => vault::VaultConfig::from_json(config)?.check(),
        ProviderKind::AwsSecretsManager => aws::AwsConfig::from_json(config)?.check(),
        ProviderKind::GcpSecretManager => gcp::GcpConfig::from_json(config)?.check(),
    }
}

/// Variable names a config reads besides `ENV_VARS`.
pub fn config_env_names(kind: ProviderKind, config: &serde_json::Value) -> Vec<String> {
    match kind {
        ProviderKind::Vault => vault::VaultConfig::from_json(config)
            .map(|c| c.env_names().into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Parses a provider's config object, with a message that names the field at fault and
/// never quotes the input.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    provider: ProviderKind,
    config: &serde_json::Value,
) -> Result<T, ProviderError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's messages quote values ("invalid type: string \"…\""); keep only its kind.
        let why = if inner.starts_with("unknown field") {
            inner.split(", expected").next().unwrap_or("unknown field").to_owned()
        } else if inner.starts_with("missing field") {
            inner
        } else {
            "wrong type or value".to_owned()
        };
        ProviderError::Config { provider, reason: format!("config.{at}: {why}") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_never_prints_values() {
        let env = Environment::from_pairs([("VAULT_TOKEN", "s.SeCrEt"), ("AWS_REGION", "")]);
        assert_eq!(env.get("VAULT_TOKEN"), Some("s.SeCrEt"));
        assert_eq!(env.get("AWS_REGION"), None);
        let shown = format!("{env:?}");
        assert!(shown.contains("VAULT_TOKEN") && !shown.contains("SeCrEt"), "{shown}");
    }

    #[test]
    fn credential_files_only_from_the_allowed_directory() {
        let allowed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = allowed.path().join("token");
        let outside = elsewhere.path().join("token");
        std::fs::write(&inside, "t").unwrap();
        std::fs::write(&outside, "t").unwrap();
        let link = allowed.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let rule = FileRule::Under(allowed.path().to_owned());
        assert!(rule.check(&inside).is_ok());
        assert!(rule.check(&outside).unwrap_err().contains("not inside"));
        assert!(rule.check(&link).unwrap_err().contains("not inside"), "a link out of the directory");
        assert!(rule.check(&allowed.path().join("../x")).is_err());
        assert!(FileRule::Denied.check(&inside).unwrap_err().contains(CREDENTIALS_DIR_VAR));
        assert!(FileRule::Any.check(&outside).is_ok());
    }

    #[test]
    fn check_config_refuses_credentials_and_bad_settings() {
        let vault = |v: serde_json::Value| check_config(ProviderKind::Vault, &v);
        assert!(vault(serde_json::json!({"address": "https://bao:8200", "token_file": "/run/t"})).is_ok());
        let e = vault(serde_json::json!({"address": "https://bao:8200", "nested": {"Token": "SeCrEt"}})).unwrap_err();
        assert!(e.to_string().contains("config.nested.Token") && !e.to_string().contains("SeCrEt"), "{e}");
        assert!(vault(serde_json::json!({"address": "https://bao:8200", "token_env": "AIRLOCK_MASTER_KEY"})).is_err());
        assert!(vault(serde_json::json!({"address": "https://bao:8200", "token_env": "VAULT_TEAM_A"})).is_ok());
        assert!(vault(serde_json::json!({"address": "https://bao:8200", "default_mount": "a/../b"})).is_err());
        let aws = |v: serde_json::Value| check_config(ProviderKind::AwsSecretsManager, &v);
        assert!(aws(serde_json::json!({})).is_ok());
        assert!(aws(serde_json::json!({"region": "eu-west-1", "endpoint": "http://127.0.0.1:5000"})).is_ok());
        assert!(aws(serde_json::json!({"secret_access_key": "x"})).is_err());
        let gcp = |v: serde_json::Value| check_config(ProviderKind::GcpSecretManager, &v);
        assert!(gcp(serde_json::json!({})).is_ok());
        assert!(gcp(serde_json::json!({"service_account_file": "sa.json", "project": "my-proj-1"})).is_ok());
        assert!(gcp(serde_json::json!({"endpoint": "http://h/path"})).is_err());
        assert!(gcp(serde_json::json!({"private_key": "x"})).is_err());
    }

    #[test]
    fn config_errors_name_the_field_not_the_value() {
        let e = build(ProviderKind::Vault, &serde_json::json!({"address": 7}), &Environment::default()).err().unwrap();
        assert!(e.to_string().contains("config.address"), "{e}");
        let e = build(
            ProviderKind::Vault,
            &serde_json::json!({"address": "http://x", "tokn_file": "SeCrEt"}),
            &Environment::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("tokn_file") && !e.to_string().contains("SeCrEt"), "{e}");
        let e =
            build(ProviderKind::AwsSecretsManager, &serde_json::json!({"region": ["SeCrEt"]}), &Environment::default())
                .err()
                .unwrap();
        assert!(!e.to_string().contains("SeCrEt"), "{e}");
    }
}
