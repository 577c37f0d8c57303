//! AWS Secrets Manager over its JSON API (`GetSecretValue`, `ListSecrets`), each request
//! signed with SigV4 by the maintained `aws-sigv4` crate.
//!
//! Credentials are the standard environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`); the region is the config's, else
//! `AWS_REGION`, else `AWS_DEFAULT_REGION`. `endpoint` overrides the regional endpoint (a
//! VPC endpoint, or a local implementation such as moto or LocalStack).

use std::time::SystemTime;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::http::{self, AddressPath};
use super::{
    Candidate, Environment, ExternalRef, Health, Listing, Provider, ProviderError, ProviderKind, Resolved, VersionRef,
};
use crate::domain::value::SecretValue;

const KIND: ProviderKind = ProviderKind::AwsSecretsManager;

/// An `aws_secrets_manager` provider config. No credential: those come from the environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    #[serde(default)]
    pub region: Option<String>,
    /// `http(s)://host[:port]` instead of `https://secretsmanager.REGION.amazonaws.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

impl AwsConfig {
    pub fn from_json(v: &Value) -> Result<AwsConfig, ProviderError> {
        super::parse_config(KIND, v)
    }

    /// Everything that can be checked without AWS or credentials.
    pub fn check(&self) -> Result<(), ProviderError> {
        if let Some(region) = &self.region {
            check_region(region)?;
        }
        if let Some(endpoint) = &self.endpoint {
            http::check_address(KIND, endpoint, "endpoint", AddressPath::Refused)?;
        }
        Ok(())
    }
}

fn check_region(region: &str) -> Result<(), ProviderError> {
    let ok = (1..=32).contains(&region.len())
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(()) } else { Err(config("region must be like eu-west-1".into())) }
}

struct Keys {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

pub struct AwsSmClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    keys: Option<Keys>,
}

fn config(reason: String) -> ProviderError {
    ProviderError::Config { provider: KIND, reason }
}

fn unavailable(reason: String) -> ProviderError {
    ProviderError::Unavailable { provider: KIND, reason }
}

impl AwsSmClient {
    pub fn new(cfg: AwsConfig, env: &Environment) -> Result<AwsSmClient, ProviderError> {
        let region = cfg
            .region
            .clone()
            .or_else(|| env.get("AWS_REGION").map(str::to_owned))
            .or_else(|| env.get("AWS_DEFAULT_REGION").map(str::to_owned))
            .ok_or_else(|| config("no region: set region in the config, or AWS_REGION".into()))?;
        check_region(&region)?;
        let endpoint = match &cfg.endpoint {
            Some(e) => {
                http::check_address(KIND, e, "endpoint", AddressPath::Refused)?;
                e.trim_end_matches('/').to_owned()
            }
            None => format!("https://secretsmanager.{region}.amazonaws.com"),
        };
        let keys = match (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some(Keys {
                access_key_id: id.to_owned(),
                secret_access_key: Zeroizing::new(secret.to_owned()),
                session_token: env.get("AWS_SESSION_TOKEN").map(|t| Zeroizing::new(t.to_owned())),
            }),
            _ => None,
        };
        let http = http::client(KIND, cfg.timeout_seconds, None)?;
        Ok(AwsSmClient { http, endpoint, region, keys })
    }

    /// Calls `action` with `body`; the answer's JSON, or the error it names.
    async fn call(&self, action: &str, body: &Value) -> Result<Value, ProviderError> {
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| config("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()))?;
        let payload = serde_json::to_vec(body).unwrap_or_default();
        let target = format!("secretsmanager.{action}");
        let url = format!("{}/", self.endpoint);
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
        let identity = Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.to_string(),
            keys.session_token.as_ref().map(|t| t.to_string()),
            None,
            "environment",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("secretsmanager")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| config("cannot set up request signing".into()))?
            .into();
        let signable = SignableRequest::new("POST", &url, headers.iter().copied(), SignableBody::Bytes(&payload))
            .map_err(|_| config("cannot sign a request to the endpoint".into()))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|_| config("cannot sign the request".into()))?.into_parts();
        let mut req = self.http.post(&url).body(payload.clone());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| http::unreachable(KIND, e))?;
        let status = resp.status();
        let bytes = http::body(KIND, resp).await?;
        if status.is_success() {
            return http::json(KIND, &bytes);
        }
        Err(failure(status, &bytes, action))
    }

    /// `GetSecretValue` for `name`, at a version id or stage (AWSCURRENT when `None`).
    pub async fn get_secret_value(
        &self,
        name: &str,
        field: Option<&str>,
        version: Option<&VersionRef>,
    ) -> Result<Resolved, ProviderError> {
        let mut body = json!({ "SecretId": name });
        match version {
            None => {}
            Some(VersionRef::AwsVersionId(id)) => body["VersionId"] = json!(id),
            Some(VersionRef::AwsStage(stage)) => body["VersionStage"] = json!(stage),
            Some(other) => return Err(config(format!("'{other}' is not an AWS version id or stage"))),
        }
        let what = match version {
            Some(v) => format!("{name} at {v}"),
            None => name.to_owned(),
        };
        let mut v = self.call("GetSecretValue", &body).await.map_err(|e| match e {
            ProviderError::NotFound { provider, .. } => ProviderError::NotFound { provider, what: what.clone() },
            other => other,
        })?;
        let served = v.get("VersionId").and_then(Value::as_str).map(http::excerpt);
        let string = match v.get_mut("SecretString") {
            Some(Value::String(s)) => Some(SecretValue::new(std::mem::take(s))),
            _ => None,
        };
        let raw = match (string, v.get("SecretBinary")) {
            (Some(s), _) => Ok(s),
            (None, Some(Value::String(b))) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(bytes) => SecretValue::from_bytes(bytes).map_err(|_| ProviderError::Unusable {
                    provider: KIND,
                    reason: format!("{what} is binary, not text"),
                }),
                Err(_) => Err(unavailable(format!("SecretBinary of {what} is not base64"))),
            },
            _ => Err(unavailable(format!("the answer for {what} has neither SecretString nor SecretBinary"))),
        };
        http::wipe(v);
        let value = http::field_of_text(KIND, raw?, field, &what)?;
        Ok(Resolved { value, version: served })
    }

    /// One page of `ListSecrets`, filtered by name when `query` is given.
    pub async fn list_secrets(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        let mut body = json!({ "MaxResults": page_size.clamp(1, 100) });
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            body["Filters"] = json!([{ "Key": "name", "Values": [q] }]);
        }
        if let Some(t) = next_token {
            body["NextToken"] = json!(t);
        }
        let v = self.call("ListSecrets", &body).await?;
        let candidates = v
            .get("SecretList")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|s| {
                        let name = s.get("Name")?.as_str()?;
                        Some(Candidate {
                            external_ref: format!("aws-sm://{name}"),
                            name: name.to_owned(),
                            description: s.get("Description").and_then(Value::as_str).map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let next_token = v.get("NextToken").and_then(Value::as_str).map(str::to_owned);
        Ok(Listing { candidates, folders: Vec::new(), next_token })
    }
}

/// An error for a failed call, from the exception type AWS names (never its whole body).
fn failure(status: reqwest::StatusCode, body: &[u8], action: &str) -> ProviderError {
    let said = http::ErrorBody::parse(body);
    let kind = said.text("/__type").map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned()).unwrap_or_default();
    let message = said.text("/message").or_else(|| said.text("/Message")).unwrap_or_default();
    let reason = format!("{action} answered {status} {kind}: {message}");
    match kind.as_str() {
        "ResourceNotFoundException" => ProviderError::NotFound { provider: KIND, what: String::new() },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "AccessDeniedException"
        | "ExpiredTokenException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => ProviderError::Auth { provider: KIND, reason },
        _ if kind.contains("Throttling") => unavailable(reason),
        _ => http::by_status(KIND, status, reason),
    }
}

#[async_trait]
impl Provider for AwsSmClient {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn resolve(&self, r: &ExternalRef, version: Option<&VersionRef>) -> Result<Resolved, ProviderError> {
        let ExternalRef::AwsSm { name, field } = r else {
            return Err(config(format!("an aws_secrets_manager provider cannot read {r}")));
        };
        self.get_secret_value(name, field.as_deref(), version).await
    }

    async fn list(
        &self,
        query: Option<&str>,
        page_size: usize,
        next_token: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        self.list_secrets(query, page_size, next_token).await
    }

    async fn health(&self) -> Health {
        http::timed_health(async {
            self.call("ListSecrets", &json!({ "MaxResults": 1 })).await?;
            Ok("ok".to_owned())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_endpoint_and_credentials() {
        let none = Environment::default();
        let e = AwsSmClient::new(AwsConfig::default(), &none).err().unwrap();
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
        let env = Environment::from_pairs([("AWS_REGION", "eu-west-1")]);
        let c = AwsSmClient::new(AwsConfig::default(), &env).unwrap();
        assert_eq!(c.endpoint, "https://secretsmanager.eu-west-1.amazonaws.com");
        assert!(c.keys.is_none());
        for bad in ["ftp://h", "http://h/path", "http://u:p@h", "x"] {
            let cfg = AwsConfig { endpoint: Some(bad.into()), ..AwsConfig::default() };
            assert!(AwsSmClient::new(cfg, &env).is_err(), "{bad}");
        }
        let cfg = AwsConfig { region: Some("EU WEST".into()), ..AwsConfig::default() };
        assert!(AwsSmClient::new(cfg, &env).is_err());
    }

    #[test]
    fn errors_are_classified_by_exception_type() {
        let nf =
            br#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#;
        assert!(matches!(failure(reqwest::StatusCode::BAD_REQUEST, nf, "x"), ProviderError::NotFound { .. }));
        let auth = br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"bad"}"#;
        assert!(matches!(failure(reqwest::StatusCode::BAD_REQUEST, auth, "x"), ProviderError::Auth { .. }));
        assert!(failure(reqwest::StatusCode::BAD_GATEWAY, b"<html>", "x").is_unavailable());
        let other = br#"{"__type":"InvalidRequestException","message":"marked for deletion"}"#;
        assert!(matches!(failure(reqwest::StatusCode::BAD_REQUEST, other, "x"), ProviderError::Unusable { .. }));
    }
}
