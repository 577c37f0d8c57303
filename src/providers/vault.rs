//! OpenBao and HashiCorp Vault, KV version 2, over their HTTP API.
//!
//! Authentication is a token (`VAULT_TOKEN`, else `BAO_TOKEN`, or the variable named by
//! `token_env`, or the file `token_file`, read at each login so a rotated file is picked up)
//! or AppRole (`role_id` and `secret_id` from files or variables; the client token it gets is
//! kept until 80 % of its lease). A 403 on a read drops the token and logs in once more.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::http::{self, AddressPath};
use super::{
    Candidate, Environment, ExternalRef, FileRule, Health, Listing, Provider, ProviderError, ProviderKind, Resolved,
    VersionRef,
};

const KIND: ProviderKind = ProviderKind::Vault;

/// A `vault` provider config. Only names and places: no credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `http(s)://host:port`, the server's API address.
    pub address: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `token` (default) or `approle`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Variable holding the token (default: `VAULT_TOKEN`, then `BAO_TOKEN`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the token (instead of a variable).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole mount (default `approle`).
    #[serde(default)]
    pub approle_mount: Option<String>,
    #[serde(default)]
    pub role_id_file: Option<PathBuf>,
    /// Variable holding the role id (default `VAULT_ROLE_ID`).
    #[serde(default)]
    pub role_id_env: Option<String>,
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// Variable holding the secret id (default `VAULT_SECRET_ID`).
    #[serde(default)]
    pub secret_id_env: Option<String>,
    /// KV mount listed when an import preview names none (default `secret`).
    #[serde(default)]
    pub default_mount: Option<String>,
    /// PEM file of the CA that signed the server's certificate, if not a public one.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    #[default]
    Token,
    Approle,
}

impl VaultConfig {
    pub fn from_json(v: &Value) -> Result<VaultConfig, ProviderError> {
        super::parse_config(KIND, v)
    }

    /// Everything that can be checked without the server or credentials.
    pub fn check(&self) -> Result<(), ProviderError> {
        // A path is kept (a server behind a prefix): requests go to ADDRESS/v1/….
        http::check_address(KIND, &self.address, "address", AddressPath::Allowed)?;
        if let Some(ns) = &self.namespace {
            check_path(ns, "namespace")?;
        }
        for (mount, what) in [(&self.approle_mount, "approle_mount"), (&self.default_mount, "default_mount")] {
            if let Some(m) = mount {
                check_path(m, what)?;
            }
        }
        for name in self.env_names() {
            let allowed =
                ["VAULT_", "BAO_", "AIRLOCK_PROVIDER_"].iter().any(|p| name.starts_with(p) && name.len() > p.len())
                    && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !allowed {
                return Err(config(
                    "token_env, role_id_env and secret_id_env name a variable starting VAULT_, BAO_ or AIRLOCK_PROVIDER_".into(),
                ));
            }
        }
        Ok(())
    }

    /// Variable names this config reads besides the standard ones.
    pub fn env_names(&self) -> Vec<&str> {
        [&self.token_env, &self.role_id_env, &self.secret_id_env].into_iter().flatten().map(String::as_str).collect()
    }
}

/// Where a credential comes from.
enum Source {
    Fixed(Zeroizing<String>),
    File(PathBuf, FileRule),
}

impl Source {
    fn pick(env: &Environment, file: &Option<PathBuf>, vars: &[&str], what: &str) -> Result<Source, ProviderError> {
        if let Some(path) = file {
            return Ok(Source::File(path.clone(), env.files().clone()));
        }
        for var in vars {
            if let Some(v) = env.get(var) {
                return Ok(Source::Fixed(Zeroizing::new(v.trim().to_owned())));
            }
        }
        Err(config(format!("no {what}: set {} or give a file in the config", vars.join(" or "))))
    }

    fn read(&self) -> Result<Zeroizing<String>, ProviderError> {
        match self {
            Source::Fixed(v) => Ok(v.clone()),
            Source::File(path, rule) => {
                let real = rule.check(path).map_err(config)?;
                let raw = Zeroizing::new(
                    std::fs::read_to_string(&real)
                        .map_err(|e| config(format!("cannot read {}: {e}", path.display())))?,
                );
                let v = Zeroizing::new(raw.trim().to_owned());
                if v.is_empty() || v.contains(|c: char| c.is_control()) {
                    return Err(config(format!("{} is empty or holds more than one line", path.display())));
                }
                Ok(v)
            }
        }
    }
}

enum Auth {
    Token(Source),
    AppRole { mount: String, role_id: Source, secret_id: Source },
}

struct Cached {
    token: Zeroizing<String>,
    /// When to log in again (never, for a plain token).
    renew_at: Option<Instant>,
}

pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    namespace: Option<String>,
    auth: Auth,
    default_mount: String,
    token: Mutex<Option<Cached>>,
}

fn config(reason: String) -> ProviderError {
    ProviderError::Config { provider: KIND, reason }
}

fn unavailable(reason: String) -> ProviderError {
    ProviderError::Unavailable { provider: KIND, reason }
}

/// A mount or folder name as the API paths take it: `[A-Za-z0-9._-]` segments, no `..`.
fn check_path(s: &str, what: &str) -> Result<(), ProviderError> {
    let ok = !s.is_empty()
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
    if ok { Ok(()) } else { Err(config(format!("{what} must be segments of [A-Za-z0-9._-] joined by '/'"))) }
}

impl VaultClient {
    pub fn new(cfg: VaultConfig, env: &Environment) -> Result<VaultClient, ProviderError> {
        cfg.check()?;
        let base = cfg.address.trim_end_matches('/').to_owned();
        let auth = match cfg.auth_method {
            AuthMethod::Token => {
                let vars: Vec<&str> = match &cfg.token_env {
                    Some(v) => vec![v.as_str()],
                    None => vec!["VAULT_TOKEN", "BAO_TOKEN"],
                };
                Auth::Token(Source::pick(env, &cfg.token_file, &vars, "token")?)
            }
            AuthMethod::Approle => {
                let mount = cfg.approle_mount.clone().unwrap_or_else(|| "approle".into());
                let role_var = cfg.role_id_env.as_deref().unwrap_or("VAULT_ROLE_ID");
                let secret_var = cfg.secret_id_env.as_deref().unwrap_or("VAULT_SECRET_ID");
                Auth::AppRole {
                    mount,
                    role_id: Source::pick(env, &cfg.role_id_file, &[role_var], "AppRole role_id")?,
                    secret_id: Source::pick(env, &cfg.secret_id_file, &[secret_var], "AppRole secret_id")?,
                }
            }
        };
        let default_mount = cfg.default_mount.clone().unwrap_or_else(|| "secret".into());
        let http = http::client(KIND, cfg.timeout_seconds, cfg.ca_file.as_deref())?;
        Ok(VaultClient { http, base, namespace: cfg.namespace, auth, default_mount, token: Mutex::new(None) })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.base)).header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        req
    }

    async fn token(&self) -> Result<Zeroizing<String>, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref()
            && c.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.token.clone());
        }
        let fresh = match &self.auth {
            Auth::Token(source) => Cached { token: source.read()?, renew_at: None },
            Auth::AppRole { mount, role_id, secret_id } => self.login(mount, role_id, secret_id).await?,
        };
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn login(&self, mount: &str, role_id: &Source, secret_id: &Source) -> Result<Cached, ProviderError> {
        let (role_id, secret_id) = (role_id.read()?, secret_id.read()?);
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({"role_id": role_id.as_str(), "secret_id": secret_id.as_str()}))
                .unwrap_or_default(),
        );
        let started = Instant::now();
        let resp = self
            .request(reqwest::Method::POST, &format!("auth/{mount}/login"))
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| http::unreachable(KIND, e))?;
        let status = resp.status();
        let bytes = http::body(KIND, resp).await?;
        if !status.is_success() {
            return Err(self.failure(status, &bytes, "AppRole login"));
        }
        let mut v = http::json(KIND, &bytes)?;
        let token = match v.pointer_mut("/auth/client_token") {
            Some(Value::String(t)) => Zeroizing::new(std::mem::take(t)),
            _ => {
                http::wipe(v);
                return Err(unavailable("the AppRole login answer has no auth.client_token".into()));
            }
        };
        let lease = v.pointer("/auth/lease_duration").and_then(Value::as_u64).unwrap_or(0);
        http::wipe(v);
        let renew_at = (lease > 0).then(|| started + Duration::from_millis(lease * 800));
        Ok(Cached { token, renew_at })
    }

    /// An error for a non-success answer; Vault's own error text is names and reasons only.
    fn failure(&self, status: StatusCode, body: &[u8], what: &str) -> ProviderError {
        let said = http::ErrorBody::parse(body)
            .text("/errors/0")
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        let reason = format!("{what} answered {status}{said}");
        match status.as_u16() {
            401 | 403 => ProviderError::Auth { provider: KIND, reason },
            400 | 404 | 405 => ProviderError::Unusable { provider: KIND, reason },
            _ => unavailable(reason),
        }
    }

    /// GET `path` with the token; once more with a fresh token after a 403.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ProviderError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let resp = self
                .request(reqwest::Method::GET, path)
                .query(query)
                .header("X-Vault-Token", token.as_str())
                .send()
                .await
                .map_err(|e| http::unreachable(KIND, e))?;
            let status = resp.status();
            let body = http::body(KIND, resp).await?;
            if status == StatusCode::FORBIDDEN && !retried {
                retried = true;
                self.forget_token().await;
                continue;
            }
            return Ok((status, body));
        }
    }

    /// Reads a KV2 secret's data at `version` (latest when `None`).
    pub async fn read_kv2(
        &self,
        mount: &str,
        path: &str,
        field: Option<&str>,
        version: Option<u64>,
    ) -> Result<Resolved, ProviderError> {
        let query: Vec<(&str, String)> = version.map(|v| ("version", v.to_string())).into_iter().collect();
        let (status, body) = self.get(&format!("{mount}/data/{path}"), &query).await?;
        let what = match version {
            Some(v) => format!("{mount}/{path} version {v}"),
            None => format!("{mount}/{path}"),
        };
        if status == StatusCode::NOT_FOUND {
            // A deleted or destroyed version answers 404 with its metadata.
            let gone = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                let m = v.pointer("/data/metadata")?.clone();
                http::wipe(v);
                Some(m)
            });
            let state = match gone {
                Some(m) if m.get("destroyed").and_then(Value::as_bool) == Some(true) => " (destroyed)",
                Some(m) if m.get("deletion_time").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) => {
                    " (deleted)"
                }
                _ => "",
            };
            return Err(ProviderError::NotFound { provider: KIND, what: format!("at {what}{state}") });
        }
        if !status.is_success() {
            return Err(self.failure(status, &body, &format!("reading {what}")));
        }
        let mut v = http::json(KIND, &body)?;
        let served = v.pointer("/data/metadata/version").and_then(Value::as_u64).map(|n| n.to_string());
        let result = match v.pointer_mut("/data/data") {
            Some(Value::Object(data)) => http::pick_field(KIND, data, field, &what),
            Some(Value::Null) => Err(ProviderError::NotFound { provider: KIND, what: format!("at {what} (deleted)") }),
            _ => Err(unavailable(format!("the answer for {what} has no data.data object"))),
        };
        http::wipe(v);
        Ok(Resolved { value: result?, version: served })
    }

    /// The keys under a KV2 folder: secrets, and folders (ending in `/`).
    pub async fn list_kv2(&self, mount: &str, folder: &str) -> Result<Vec<String>, ProviderError> {
        let path = if folder.is_empty() { format!("{mount}/metadata/") } else { format!("{mount}/metadata/{folder}/") };
        let (status, body) = self.get(&path, &[("list", "true".into())]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(self.failure(status, &body, &format!("listing {mount}/{folder}")));
        }
        let v = http::json(KIND, &body)?;
        let keys = v
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(keys)
    }
}

#[async_trait]
impl Provider for VaultClient {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn resolve(&self, r: &ExternalRef, version: Option<&VersionRef>) -> Result<Resolved, ProviderError> {
        let ExternalRef::VaultKv2 { mount, path, field } = r else {
            return Err(config(format!("a vault provider cannot read {r}")));
        };
        let version = match version {
            None => None,
            Some(VersionRef::Number(n)) => Some(*n),
            Some(other) => return Err(config(format!("'{other}' is not a KV2 version"))),
        };
        self.read_kv2(mount, path, field.as_deref(), version).await
    }

    /// `query` is `MOUNT[/FOLDER]` (default: the config's `default_mount`); `next_token` is
    /// an offset into the folder, which Vault lists whole.
    async fn list(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        let query = query.map(|q| q.trim_matches('/')).filter(|q| !q.is_empty()).unwrap_or(&self.default_mount);
        check_path(query, "the folder to list")?;
        let (mount, folder) = query.split_once('/').unwrap_or((query, ""));
        let skip = match next_token {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| config("next_token is not one this provider gave".into()))?,
        };
        let keys = self.list_kv2(mount, folder).await?;
        let prefix = if folder.is_empty() { mount.to_owned() } else { format!("{mount}/{folder}") };
        let mut listing = Listing::default();
        let page: Vec<&String> = keys.iter().skip(skip).take(page_size.max(1)).collect();
        for key in &page {
            if let Some(sub) = key.strip_suffix('/') {
                listing.folders.push(format!("{prefix}/{sub}"));
            } else {
                listing.candidates.push(Candidate {
                    external_ref: format!("vault+kv2://{prefix}/{key}"),
                    name: if folder.is_empty() { (*key).clone() } else { format!("{folder}/{key}") },
                    description: None,
                });
            }
        }
        if skip + page.len() < keys.len() {
            listing.next_token = Some((skip + page.len()).to_string());
        }
        Ok(listing)
    }

    async fn health(&self) -> Health {
        http::timed_health(async {
            let resp = self
                .request(reqwest::Method::GET, "sys/health")
                .query(&[("standbyok", "true"), ("perfstandbyok", "true")])
                .send()
                .await
                .map_err(|e| http::unreachable(KIND, e))?;
            let status = resp.status();
            let body = http::body(KIND, resp).await?;
            if !status.is_success() {
                let why = match status.as_u16() {
                    501 => "not initialized",
                    503 => "sealed",
                    _ => "unhealthy",
                };
                return Err(unavailable(format!("sys/health answered {status} ({why})")));
            }
            let v = http::json(KIND, &body)?;
            let version = v.get("version").and_then(Value::as_str).map(http::excerpt).unwrap_or_default();
            let (status, body) = self.get("auth/token/lookup-self", &[]).await?;
            if !status.is_success() {
                return Err(self.failure(status, &body, "token lookup"));
            }
            Ok(format!("ok (server {version})"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> VaultConfig {
        VaultConfig::from_json(&v).unwrap()
    }

    #[test]
    fn needs_a_credential_and_a_sane_address() {
        let none = Environment::default();
        let e = VaultClient::new(cfg(json!({"address": "http://127.0.0.1:8200"})), &none).err().unwrap();
        assert!(e.to_string().contains("VAULT_TOKEN or BAO_TOKEN"), "{e}");
        let env = Environment::from_pairs([("BAO_TOKEN", "t")]);
        assert!(VaultClient::new(cfg(json!({"address": "http://127.0.0.1:8200"})), &env).is_ok());
        for bad in ["ftp://x", "not a url", "http://u:p@h", "http://h/?q=1"] {
            assert!(VaultClient::new(cfg(json!({"address": bad})), &env).is_err(), "{bad}");
        }
        let e = VaultClient::new(cfg(json!({"address": "http://h", "namespace": "../x"})), &env).err().unwrap();
        assert!(e.to_string().contains("namespace"), "{e}");
        let e = VaultClient::new(cfg(json!({"address": "http://h", "auth_method": "approle"})), &env).err().unwrap();
        assert!(e.to_string().contains("VAULT_ROLE_ID"), "{e}");
        assert!(VaultConfig::from_json(&json!({"address": "http://h", "auth_method": "ldap"})).is_err());
    }
}
