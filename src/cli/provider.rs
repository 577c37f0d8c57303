//! `airlock provider`: the tenant's configurations of external secret stores (OpenBao/Vault,
//! AWS Secrets Manager). A config holds settings only; the server refuses one that names a
//! credential, and reads credentials from its own environment or files.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::secret::{field, print_json, print_table};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ProviderCommand {
    /// List the provider configurations (--types: the provider types this server knows)
    Ls {
        #[arg(long)]
        types: bool,
        #[arg(long)]
        json: bool,
    },
    /// Add a configuration: airlock provider add bao --type vault --set address=https://bao:8200
    Add {
        name: String,
        /// vault, aws_secrets_manager or gcp_secret_manager
        #[arg(long = "type")]
        kind: String,
        /// The settings as one JSON object
        #[arg(long)]
        config: Option<String>,
        /// One setting, repeatable: --set region=eu-west-1 (a string value)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Make it the default configuration of its type
        #[arg(long)]
        default: bool,
        /// How long values read through it may be cached
        #[arg(long)]
        cache_ttl_seconds: Option<i64>,
    },
    /// Delete a configuration
    Rm { id: String },
    /// Make a configuration its type's default
    Default { id: String },
    /// Check one configuration (by id), or every one; fails when any is unhealthy
    Health { id: Option<String> },
}

fn settings(config: Option<&str>, set: &[String]) -> anyhow::Result<Value> {
    let mut map = match config {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => anyhow::bail!("--config must be one JSON object"),
        },
    };
    for pair in set {
        let Some((key, value)) = pair.split_once('=') else {
            anyhow::bail!("--set takes KEY=VALUE, not '{pair}'");
        };
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(Value::Object(map))
}

pub async fn run(cmd: ProviderCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        ProviderCommand::Ls { types: true, json } => {
            let body = client.get_json("/v1/providers").await?;
            if json {
                return print_json(&body);
            }
            let rows: Vec<[String; 4]> = items(&body, "providers")
                .iter()
                .map(|p| {
                    [field(p, "type"), field(p, "supported"), field(p, "reference_scheme"), field(p, "description")]
                })
                .collect();
            print_table(["TYPE", "SUPPORTED", "REFERENCES", "DESCRIPTION"], &rows)?;
        }
        ProviderCommand::Ls { types: false, json } => {
            let body = client.get_json("/v1/provider-configs").await?;
            if json {
                return print_json(&body);
            }
            let rows: Vec<[String; 5]> = items(&body, "provider_configs")
                .iter()
                .map(|c| {
                    [field(c, "id"), field(c, "name"), field(c, "type"), field(c, "is_default"), field(c, "config")]
                })
                .collect();
            print_table(["ID", "NAME", "TYPE", "DEFAULT", "CONFIG"], &rows)?;
        }
        ProviderCommand::Add { name, kind, config, set, default, cache_ttl_seconds } => {
            let mut body = json!({ "type": kind, "name": name, "config": settings(config.as_deref(), &set)?,
                                   "is_default": default });
            if let Some(ttl) = cache_ttl_seconds {
                body["cache_ttl_seconds"] = json!(ttl);
            }
            let made: Value = client.call(Method::POST, "/v1/provider-configs", &body).await?;
            println!("added provider config {} ({})", field(&made, "id"), field(&made, "name"));
        }
        ProviderCommand::Rm { id } => {
            client.call_empty(Method::DELETE, &format!("/v1/provider-configs/{id}")).await?;
            println!("deleted provider config {id}");
        }
        ProviderCommand::Default { id } => {
            let made: Value =
                client.call(Method::POST, &format!("/v1/provider-configs/{id}/default"), &json!({})).await?;
            println!("{} is now the default {} config", field(&made, "name"), field(&made, "type"));
        }
        ProviderCommand::Health { id } => {
            let results = match id {
                Some(id) => {
                    let one: Value =
                        client.call(Method::POST, &format!("/v1/provider-configs/{id}/health"), &json!({})).await?;
                    vec![one]
                }
                None => items(&client.get_json("/v1/providers/health").await?, "providers").to_vec(),
            };
            let rows: Vec<[String; 5]> = results
                .iter()
                .map(|h| {
                    let ok = if h["ok"] == true { "ok" } else { "FAIL" }.to_owned();
                    [
                        field(h, "name"),
                        field(h, "type"),
                        ok,
                        format!("{} ms", field(h, "latency_ms")),
                        field(h, "message"),
                    ]
                })
                .collect();
            print_table(["NAME", "TYPE", "HEALTH", "LATENCY", "MESSAGE"], &rows)?;
            let failed = results.iter().filter(|h| h["ok"] != true).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} provider configs are unhealthy", results.len());
            }
        }
    }
    Ok(())
}

fn items<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}
