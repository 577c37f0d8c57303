//! GCP Secret Manager over its REST API (v1): `…/versions/V:access` for a value, `…/secrets`
//! for discovery, each with an OAuth 2.0 bearer token.
//!
//! The token comes from a service account's JSON key file (`service_account_file`, inside
//! `AIRLOCK_PROVIDER_CREDENTIALS_DIR`; a relative name is taken inside it): a JWT signed with
//! the key (RS256, by ring) is exchanged at the key's `token_uri` (the JWT bearer grant,
//! RFC 7523) for an access token, kept until a minute before it expires. Without a file, the
//! variable `GOOGLE_OAUTH_ACCESS_TOKEN` is used as the token as it is (for tests and for
//! tokens minted outside Airlock). `endpoint` overrides `https://secretmanager.googleapis.com`
//! (a private endpoint, or an emulator); it and a `token_uri` other than Google's must be in
//! `AIRLOCK_PROVIDER_ADDRESSES`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use zeroize::{Zeroize, Zeroizing};

use super::http::{self, AddressPath};
use super::{
    AddressRule, Candidate, Environment, ExternalRef, FileRule, Health, Listing, Provider, ProviderError, ProviderKind,
    Resolved, VersionRef,
};
use crate::domain::value::SecretValue;

const KIND: ProviderKind = ProviderKind::GcpSecretManager;
pub const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The variable holding a ready access token, used when the config names no key file.
pub const TOKEN_VAR: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_S: u64 = 3600;
/// A token is renewed this long before it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(60);

/// A `gcp_secret_manager` provider config. No credential: the key file is named, not held.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// The service account's JSON key file.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// `http(s)://host[:port]` instead of `https://secretmanager.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The project whose secrets discovery lists and a health check reads.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

impl GcpConfig {
    pub fn from_json(v: &Value) -> Result<GcpConfig, ProviderError> {
        super::parse_config(KIND, v)
    }

    /// Everything that can be checked without GCP or credentials.
    pub fn check(&self) -> Result<(), ProviderError> {
        if let Some(endpoint) = &self.endpoint {
            http::check_address(KIND, endpoint, "endpoint", AddressPath::Refused)?;
        }
        if let Some(project) = &self.project {
            check_project(project)?;
        }
        Ok(())
    }
}

fn check_project(project: &str) -> Result<(), ProviderError> {
    // The reference parser knows what a project is: a reference in that project must parse.
    match ExternalRef::parse(&format!("gcp-sm://projects/{project}/secrets/x")) {
        Ok(_) => Ok(()),
        Err(_) => Err(config("project must be a project id ([a-z][a-z0-9-]{4,28}[a-z0-9]) or number".into())),
    }
}

fn config(reason: String) -> ProviderError {
    ProviderError::Config { provider: KIND, reason }
}

fn unavailable(reason: String) -> ProviderError {
    ProviderError::Unavailable { provider: KIND, reason }
}

/// Where the access token comes from.
enum Auth {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`, used as it is.
    Fixed(Zeroizing<String>),
    /// A service account key file, read at each exchange so a replaced key is picked up.
    ServiceAccount { path: PathBuf, files: FileRule, addresses: AddressRule },
    /// Neither: every call says how to configure one.
    Missing,
}

struct Cached {
    token: Zeroizing<String>,
    renew_at: Instant,
}

pub struct GcpSmClient {
    http: reqwest::Client,
    endpoint: String,
    project: Option<String>,
    auth: Auth,
    token: Mutex<Option<Cached>>,
}

/// The fields of a service account key file this client uses.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

impl Drop for ServiceAccountKey {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl GcpSmClient {
    pub fn new(cfg: GcpConfig, env: &Environment) -> Result<GcpSmClient, ProviderError> {
        cfg.check()?;
        let endpoint = cfg.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/').to_owned();
        let auth = match (&cfg.service_account_file, env.get(TOKEN_VAR)) {
            (Some(path), _) => Auth::ServiceAccount {
                path: path.clone(),
                files: env.files().clone(),
                addresses: env.addresses.clone(),
            },
            (None, Some(token)) => Auth::Fixed(Zeroizing::new(token.trim().to_owned())),
            (None, None) => Auth::Missing,
        };
        let http = http::client(KIND, cfg.timeout_seconds, None)?;
        Ok(GcpSmClient { http, endpoint, project: cfg.project, auth, token: Mutex::new(None) })
    }

    async fn token(&self) -> Result<Zeroizing<String>, ProviderError> {
        let (path, files, addresses) = match &self.auth {
            Auth::Fixed(token) => return Ok(token.clone()),
            Auth::Missing => {
                return Err(config(format!(
                    "no credentials: name a service account key file in service_account_file, or set {TOKEN_VAR}"
                )));
            }
            Auth::ServiceAccount { path, files, addresses } => (path, files, addresses),
        };
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.exchange(path, files, addresses).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// The JWT bearer grant: a signed assertion for the key's account, exchanged at its
    /// `token_uri` for an access token.
    async fn exchange(&self, path: &Path, files: &FileRule, addresses: &AddressRule) -> Result<Cached, ProviderError> {
        let key = read_key(path, files)?;
        let token_uri = key.token_uri.clone().unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        if token_uri != DEFAULT_TOKEN_URI {
            addresses.check(&token_uri).map_err(|why| config(format!("token_uri of {}: {why}", path.display())))?;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let assertion = sign_assertion(&key, &token_uri, now)?;
        drop(key);
        let form = Zeroizing::new(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            assertion.as_str()
        ));
        let started = Instant::now();
        let resp = self
            .http
            .post(&token_uri)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| http::unreachable(KIND, e))?;
        let status = resp.status();
        let bytes = http::body(KIND, resp).await?;
        if !status.is_success() {
            return Err(token_failure(status, &bytes));
        }
        let mut v = http::json(KIND, &bytes)?;
        let token = match v.get_mut("access_token") {
            Some(Value::String(t)) if !t.is_empty() => Zeroizing::new(std::mem::take(t)),
            _ => {
                http::wipe(v);
                return Err(unavailable("the token endpoint's answer has no access_token".into()));
            }
        };
        let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(0);
        http::wipe(v);
        let lifetime = Duration::from_secs(expires_in).saturating_sub(RENEW_MARGIN);
        Ok(Cached { token, renew_at: started + lifetime })
    }

    /// GET `url` with the token; once more with a fresh token after a 401.
    async fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ProviderError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let resp = self
                .http
                .get(url)
                .query(query)
                .header("Authorization", format!("Bearer {}", token.as_str()))
                .send()
                .await
                .map_err(|e| http::unreachable(KIND, e))?;
            let status = resp.status();
            let body = http::body(KIND, resp).await?;
            if status == StatusCode::UNAUTHORIZED && !retried && matches!(self.auth, Auth::ServiceAccount { .. }) {
                retried = true;
                self.forget_token().await;
                continue;
            }
            return Ok((status, body));
        }
    }

    /// `…/versions/V:access` for the secret, at a version number or `latest`.
    pub async fn access(
        &self,
        project: &str,
        secret: &str,
        field: Option<&str>,
        version: Option<&VersionRef>,
    ) -> Result<Resolved, ProviderError> {
        let version = match version {
            None | Some(VersionRef::Latest) => "latest".to_owned(),
            Some(VersionRef::Number(n)) => n.to_string(),
            Some(other) => return Err(config(format!("'{other}' is not a GCP version number or latest"))),
        };
        let name = format!("projects/{project}/secrets/{secret}");
        let what = format!("{name} at version {version}");
        let url = format!("{}/v1/{name}/versions/{version}:access", self.endpoint);
        let (status, bytes) = self.get(&url, &[]).await?;
        if !status.is_success() {
            return Err(match failure(status, &bytes, "access") {
                ProviderError::NotFound { provider, .. } => ProviderError::NotFound { provider, what },
                other => other,
            });
        }
        let mut v = http::json(KIND, &bytes)?;
        drop(bytes);
        let served = v.get("name").and_then(Value::as_str).and_then(|n| n.rsplit('/').next()).map(http::excerpt);
        let data = match v.pointer_mut("/payload/data") {
            Some(Value::String(d)) => Some(Zeroizing::new(std::mem::take(d))),
            _ => None,
        };
        http::wipe(v);
        let data = data.ok_or_else(|| unavailable(format!("the answer for {what} has no payload.data")))?;
        let raw = STANDARD
            .decode(data.as_bytes())
            .map_err(|_| unavailable(format!("payload.data of {what} is not base64")))?;
        drop(data);
        let raw = SecretValue::from_bytes(raw)
            .map_err(|_| ProviderError::Unusable { provider: KIND, reason: format!("{what} is binary, not text") })?;
        let value = http::field_of_text(KIND, raw, field, &what)?;
        Ok(Resolved { value, version: served })
    }

    /// One page of the config's project's secrets, those whose name holds `query` when given.
    pub async fn list_secrets(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        let project = self.project.as_deref().ok_or_else(|| {
            config("listing needs a project: set project in the config to the one whose secrets to list".into())
        })?;
        let mut params = vec![("pageSize", page_size.clamp(1, 250).to_string())];
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            params.push(("filter", format!("name:{q}")));
        }
        if let Some(t) = next_token {
            params.push(("pageToken", t.to_owned()));
        }
        let url = format!("{}/v1/projects/{project}/secrets", self.endpoint);
        let (status, bytes) = self.get(&url, &params).await?;
        if !status.is_success() {
            return Err(failure(status, &bytes, "list secrets"));
        }
        let v = http::json(KIND, &bytes)?;
        let candidates = v
            .get("secrets")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|s| {
                        let full = s.get("name")?.as_str()?;
                        let r = ExternalRef::parse(&format!("gcp-sm://{full}")).ok()?;
                        let name = full.rsplit('/').next().unwrap_or(full).to_owned();
                        Some(Candidate { external_ref: r.to_string(), name, description: None })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let next_token = v.get("nextPageToken").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Listing { candidates, folders: Vec::new(), next_token })
    }
}

/// The key file, read through the file rule; errors name the file and the field, never the key.
fn read_key(path: &Path, files: &FileRule) -> Result<ServiceAccountKey, ProviderError> {
    let path = match (files, path.is_relative()) {
        (FileRule::Under(dir), true) => dir.join(path),
        _ => path.to_owned(),
    };
    let real = files.check(&path).map_err(config)?;
    let text = Zeroizing::new(
        std::fs::read_to_string(&real).map_err(|e| config(format!("cannot read {}: {e}", path.display())))?,
    );
    let key: ServiceAccountKey = serde_json::from_str(&text).map_err(|e| {
        let why = if e.is_data() { "a field is missing or of the wrong type" } else { "it is not JSON" };
        config(format!(
            "{} is not a service account key file ({why}; it needs type, client_email and private_key)",
            path.display()
        ))
    })?;
    if key.kind != "service_account" {
        return Err(config(format!(
            "{} is not a service account key (its type is not service_account)",
            path.display()
        )));
    }
    Ok(key)
}

/// `header.claims.signature` of the JWT bearer grant, RS256 with the key's private key.
fn sign_assertion(key: &ServiceAccountKey, token_uri: &str, now: u64) -> Result<Zeroizing<String>, ProviderError> {
    let mut header = json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &key.private_key_id {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": key.client_email, "scope": SCOPE, "aud": token_uri,
        "iat": now, "exp": now + ASSERTION_LIFETIME_S,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let der = pem_pkcs8(&key.private_key)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|_| config("the service account's private_key is not an RSA key in PKCS #8".into()))?;
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| config("cannot sign with the service account's private_key".into()))?;
    Ok(Zeroizing::new(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))))
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_pkcs8(pem: &str) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
    let bad = || config("the service account's private_key is not a PEM 'PRIVATE KEY' block".into());
    let body = pem
        .split_once("-----BEGIN PRIVATE KEY-----")
        .and_then(|(_, rest)| rest.split_once("-----END PRIVATE KEY-----"))
        .map(|(body, _)| body)
        .ok_or_else(bad)?;
    let b64: Zeroizing<String> = Zeroizing::new(body.chars().filter(|c| !c.is_whitespace()).collect());
    STANDARD.decode(b64.as_bytes()).map(Zeroizing::new).map_err(|_| bad())
}

/// Google's error shape: `{"error": {"code", "message", "status"}}`; `status` decides.
fn failure(status: StatusCode, body: &[u8], what: &str) -> ProviderError {
    let said = http::ErrorBody::parse(body);
    let code = said.text("/error/status").unwrap_or_default();
    let reason = format!("{what} answered {status} {code}: {}", said.text("/error/message").unwrap_or_default());
    match (status.as_u16(), code.as_str()) {
        (404, _) | (_, "NOT_FOUND") => ProviderError::NotFound { provider: KIND, what: String::new() },
        (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => ProviderError::Auth { provider: KIND, reason },
        _ => http::by_status(KIND, status, reason),
    }
}

/// The token endpoint's OAuth error (`{"error", "error_description"}`).
fn token_failure(status: StatusCode, body: &[u8]) -> ProviderError {
    let said = http::ErrorBody::parse(body);
    let reason = format!(
        "the token endpoint answered {status} {}: {}",
        said.text("/error").unwrap_or_default(),
        said.text("/error_description").unwrap_or_default()
    );
    if status.is_server_error() || status.as_u16() == 429 {
        unavailable(reason)
    } else {
        ProviderError::Auth { provider: KIND, reason }
    }
}

#[async_trait]
impl Provider for GcpSmClient {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn resolve(&self, r: &ExternalRef, version: Option<&VersionRef>) -> Result<Resolved, ProviderError> {
        let ExternalRef::GcpSm { project, secret, field } = r else {
            return Err(config(format!("a gcp_secret_manager provider cannot read {r}")));
        };
        self.access(project, secret, field.as_deref(), version).await
    }

    async fn list(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        self.list_secrets(query, page_size, next_token).await
    }

    /// With a project: one secret of its listing. Without: only that a token is had.
    async fn health(&self) -> Health {
        http::timed_health(async {
            match &self.project {
                Some(_) => self.list_secrets(None, 1, None).await.map(|_| ())?,
                None => self.token().await.map(|_| ())?,
            }
            Ok("ok".to_owned())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_without_credentials() {
        assert!(GcpConfig::from_json(&json!({})).unwrap().check().is_ok());
        let ok =
            json!({"service_account_file": "sa.json", "endpoint": "http://127.0.0.1:9090", "project": "my-proj-1"});
        assert!(GcpConfig::from_json(&ok).unwrap().check().is_ok());
        for bad in [json!({"endpoint": "ftp://h"}), json!({"endpoint": "http://h/v1"}), json!({"project": "P!"})] {
            assert!(GcpConfig::from_json(&bad).unwrap().check().is_err(), "{bad}");
        }
        assert!(GcpConfig::from_json(&json!({"private_key": "x"})).is_err());
        let c = GcpSmClient::new(GcpConfig::default(), &Environment::default()).unwrap();
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let e = runtime.block_on(c.token()).unwrap_err().to_string();
        assert!(e.contains(TOKEN_VAR) && e.contains("service_account_file"), "{e}");
    }

    #[test]
    fn errors_are_classified_by_status() {
        let nf = br#"{"error":{"code":404,"message":"Secret [projects/1/secrets/s] not found or has no versions.","status":"NOT_FOUND"}}"#;
        assert!(matches!(failure(StatusCode::NOT_FOUND, nf, "x"), ProviderError::NotFound { .. }));
        let denied = br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#;
        assert!(matches!(failure(StatusCode::FORBIDDEN, denied, "x"), ProviderError::Auth { .. }));
        assert!(failure(StatusCode::SERVICE_UNAVAILABLE, b"<html>", "x").is_unavailable());
        let disabled = br#"{"error":{"code":400,"message":"is in DISABLED state.","status":"FAILED_PRECONDITION"}}"#;
        assert!(matches!(failure(StatusCode::BAD_REQUEST, disabled, "x"), ProviderError::Unusable { .. }));
        assert!(matches!(
            token_failure(StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#),
            ProviderError::Auth { .. }
        ));
    }

    #[test]
    fn pem_blocks_and_keys_that_are_not_rsa_pkcs8_are_refused_without_quoting_them() {
        assert!(pem_pkcs8("SeCrEt").unwrap_err().to_string().contains("PEM"));
        let key = ServiceAccountKey {
            kind: "service_account".into(),
            client_email: "a@p.iam.gserviceaccount.com".into(),
            private_key: "-----BEGIN PRIVATE KEY-----\nU2VDckV0\n-----END PRIVATE KEY-----\n".into(),
            private_key_id: None,
            token_uri: None,
        };
        let e = sign_assertion(&key, DEFAULT_TOKEN_URI, 0).unwrap_err().to_string();
        assert!(e.contains("not an RSA key") && !e.contains("SeCrEt") && !e.contains("U2VDckV0"), "{e}");
    }
}
