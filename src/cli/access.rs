//! `airlock agent`, `airlock token` and `airlock approval`: who may do what, from the
//! command line. Keys and token values are printed once, to stdout, and nowhere else.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::secret::{field, print_json, print_table};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Register an agent; prints its key once
    Add {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List agents and whether a policy names them
    Ls,
    /// Delete an agent: revokes its key and every token it holds
    Rm { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a scoped token (prints the value), or file an approval request when the policy asks
    Create(CreateToken),
    /// Revoke a token by id
    Revoke { id: String },
    /// Show what the current credential is
    Whoami,
}

#[derive(Args, Debug)]
pub struct CreateToken {
    /// Scope, repeatable: secrets:read:production/openai/*
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// Lifetime like 15m, 1h, 90s (default: the server's: 15m, or the agent's token_ttl)
    #[arg(long)]
    ttl: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// CIDR the token may be used from, repeatable
    #[arg(long = "allowed-ip")]
    allowed_ips: Vec<String>,
    #[arg(long)]
    max_uses: Option<i64>,
    /// When approval is required, wait for the decision and print the token
    #[arg(long)]
    wait: bool,
    /// Print the whole response as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ApprovalCommand {
    /// List approval requests, every one of them, newest first (default: pending)
    Ls {
        /// pending, approved, denied or cancelled
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Show one request; the requester receives the approved token here, once
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    match crate::domain::time::parse_duration(s) {
        Some(ttl) if !s.ends_with("ms") => Ok(ttl.as_secs()),
        _ => anyhow::bail!("--ttl '{s}': use a number followed by s, m or h (like 15m)"),
    }
}

pub async fn agent(cmd: AgentCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Add { name, description } => {
            let body = client
                .request_json(Method::POST, "/v1/agents", Some(&json!({ "name": name, "description": description })))
                .await?;
            println!("agent {} ({})", field(&body, "name"), field(&body, "id"));
            println!("agent key, shown only this once:\n\n    {}\n", field(&body, "key"));
            if body["has_policy"] != true {
                eprintln!("warning: no policy names '{name}' yet; it cannot mint tokens until one does");
            }
        }
        AgentCommand::Ls => {
            let body = client.get_json("/v1/agents").await?;
            let rows: Vec<[String; 4]> = items(&body, "agents")
                .iter()
                .map(|a| [field(a, "id"), field(a, "name"), field(a, "has_policy"), field(a, "created_at")])
                .collect();
            print_table(["ID", "NAME", "POLICY", "CREATED"], &rows)?;
        }
        AgentCommand::Rm { id } => {
            client.send_json(Method::DELETE, &format!("/v1/agents/{id}"), None).await?;
            println!("deleted agent {id}; its key and tokens are revoked");
        }
    }
    Ok(())
}

fn items<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

pub async fn token(cmd: TokenCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create_token(client, args).await,
        TokenCommand::Revoke { id } => {
            client.send_json(Method::DELETE, &format!("/v1/tokens/{id}"), None).await?;
            println!("revoked {id}");
            Ok(())
        }
        TokenCommand::Whoami => print_json(&client.get_json("/v1/tokens/self").await?),
    }
}

async fn create_token(client: &Client, args: CreateToken) -> anyhow::Result<()> {
    let ttl = args.ttl.as_deref().map(parse_ttl).transpose()?;
    let mut body = json!({ "scope": args.scopes, "description": args.description, "max_uses": args.max_uses });
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = ttl.into();
    }
    if !args.allowed_ips.is_empty() {
        body["allowed_ips"] = json!(args.allowed_ips);
    }
    let resp = client.request_json(Method::POST, "/v1/tokens", Some(&body)).await?;
    if resp["approval_status"] == "pending" {
        let id = field(&resp, "approval_request_id");
        eprintln!("approval required: request {id} ({})", field(&resp, "message"));
        if !args.wait {
            println!("{id}");
            return Ok(());
        }
        return wait_for_token(client, &id, args.json).await;
    }
    print_token(&resp, args.json)
}

fn print_token(token: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(token);
    }
    eprintln!("token {} expires at {}", field(token, "id"), field(token, "expires_at"));
    println!("{}", field(token, "value"));
    Ok(())
}

async fn wait_for_token(client: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    loop {
        let body = client.get_json(&format!("/v1/approvals/{id}")).await?;
        match body["status"].as_str() {
            Some("approved") if body["token"].is_object() => return print_token(&body["token"], as_json),
            Some("approved") => anyhow::bail!("request {id} was approved, but its token was already collected"),
            Some("denied") => anyhow::bail!("request {id} was denied: {}", field(&body, "note")),
            // The server answers the requester of a cancelled request with an error; a
            // decider waiting on it sees the status.
            Some("cancelled") => anyhow::bail!("request {id} was cancelled: {}", field(&body, "note")),
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

pub async fn approval(cmd: ApprovalCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        ApprovalCommand::Ls { status } => {
            // Page by page to the end: a flood of newer requests hides none filed before it.
            let all = client.list("/v1/approvals", &[("status", status)], "approvals", usize::MAX).await?;
            let rows: Vec<[String; 5]> = all
                .iter()
                .map(|a| {
                    [field(a, "id"), field(a, "status"), field(a, "agent"), field(a, "reason"), field(a, "created_at")]
                })
                .collect();
            print_table(["ID", "STATUS", "AGENT", "REASON", "CREATED"], &rows)
        }
        ApprovalCommand::Get { id, json } => {
            let body = client.get_json(&format!("/v1/approvals/{id}")).await?;
            if json {
                return print_json(&body);
            }
            println!(
                "{} {} (agent {}): {}",
                field(&body, "id"),
                field(&body, "status"),
                field(&body, "agent"),
                field(&body, "reason")
            );
            if body["token"].is_object() {
                print_token(&body["token"], false)?;
            }
            Ok(())
        }
        ApprovalCommand::Approve { id, comment } => {
            let body = json!({ "comment": comment });
            let resp = client.request_json(Method::POST, &format!("/v1/approvals/{id}/approve"), Some(&body)).await?;
            println!("{} {}", field(&resp, "id"), field(&resp, "status"));
            Ok(())
        }
        ApprovalCommand::Deny { id, reason } => {
            let body = json!({ "reason": reason });
            let resp = client.request_json(Method::POST, &format!("/v1/approvals/{id}/deny"), Some(&body)).await?;
            println!("{} {}", field(&resp, "id"), field(&resp, "status"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("2h").unwrap(), 7200);
        assert!(parse_ttl("2d").is_err());
        assert!(parse_ttl("m").is_err());
    }
}
