//! `airlock agent`, `airlock token` and `airlock approval`: who may do what, from the
//! command line. Keys and token values are printed once, to stdout, and nowhere else.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::output::{as_json, field, print_json, print_table};
use crate::api::agents::{AgentCreated, AgentList, CreateAgent};
use crate::api::approvals::{Approval, ApprovalList, ApproveBody, DenyBody};
use crate::api::tokens::{MintRequest, MintedToken, OneOrMany, PendingApproval, TokenInfo};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Register an agent; prints its key once (or writes it to --out)
    Add {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Write only the agent key to this new file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// Print {"id", "name", "key", "has_policy"} as JSON (with --out: "key_file" for "key")
        #[arg(long)]
        json: bool,
    },
    /// List agents and whether a policy names them
    Ls {
        /// Print the API's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete an agent (by name or agt_… id): revokes its key and every token it holds
    Rm {
        /// The agent's name or id
        agent: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a scoped token (prints the value), or file an approval request when the policy asks
    Create(CreateToken),
    /// Revoke a token by id
    Revoke { id: String },
    /// Show what the current credential is (as JSON, with or without --json)
    Whoami {
        /// Print the API's answer as JSON (the only form it has)
        #[arg(long)]
        json: bool,
    },
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
        /// Print the requests as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Show one request; the requester receives the approved token here, once
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request: the requester can then collect its token
    Approve {
        /// The request's id (apr_…), from `airlock approval ls`
        id: String,
        /// Why it is approved, kept in the audit trail
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a pending request: the agent's proxy answers approval_denied with the reason
    Deny {
        /// The request's id (apr_…), from `airlock approval ls`
        id: String,
        /// Why it is denied, shown to the requester and kept in the audit trail
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
        AgentCommand::Add { name, description, out, json } => {
            // Checked before the agent exists, so a file in the way costs nothing.
            if let Some(path) = out.as_deref().filter(|p| p.exists()) {
                anyhow::bail!("{} exists; --out writes a new file only", path.display());
            }
            let body = CreateAgent { name: name.clone(), description };
            let agent: AgentCreated = client.call(Method::POST, "/v1/agents", &body).await?;
            if !agent.has_policy {
                eprintln!("warning: no policy names '{name}' yet; it cannot mint tokens until one does");
            }
            if json {
                return match out {
                    Some(path) => {
                        write_key_file(&path, agent.key.expose())?;
                        print_json(&json!({ "id": agent.id, "name": agent.name, "key_file": path,
                                            "has_policy": agent.has_policy }))
                    }
                    None => print_json(&as_json(&agent)),
                };
            }
            let shown = json!({ "id": agent.id, "name": agent.name });
            println!("agent {} ({})", field(&shown, "name"), field(&shown, "id"));
            match out {
                Some(path) => {
                    write_key_file(&path, agent.key.expose())?;
                    println!("agent key written to {} (mode 0600), shown nowhere else", path.display());
                }
                None => println!("agent key, shown only this once:\n\n    {}\n", agent.key.expose()),
            }
        }
        AgentCommand::Ls { json } => {
            let body: AgentList = client.get("/v1/agents").await?;
            if json {
                return print_json(&as_json(&body));
            }
            let rows: Vec<[String; 4]> = body
                .agents
                .iter()
                .map(|a| {
                    let a = as_json(a);
                    [field(&a, "id"), field(&a, "name"), field(&a, "has_policy"), field(&a, "created_at")]
                })
                .collect();
            print_table(["ID", "NAME", "POLICY", "CREATED"], &rows)?;
        }
        AgentCommand::Rm { agent } => {
            let id = if agent.starts_with("agt_") {
                agent.clone()
            } else {
                let list: AgentList = client.get("/v1/agents").await?;
                let found = list.agents.into_iter().find(|a| a.name == agent);
                found.map(|a| a.id).ok_or_else(|| anyhow::anyhow!("no agent named '{agent}' (airlock agent ls)"))?
            };
            client.call_empty(Method::DELETE, &format!("/v1/agents/{id}")).await?;
            println!("deleted agent {agent} ({id}); its key and tokens are revoked");
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create_token(client, args).await,
        TokenCommand::Revoke { id } => {
            client.call_empty(Method::DELETE, &format!("/v1/tokens/{id}")).await?;
            println!("revoked {id}");
            Ok(())
        }
        TokenCommand::Whoami { json: _ } => print_json(&as_json(&client.get::<TokenInfo>("/v1/tokens/self").await?)),
    }
}

async fn create_token(client: &Client, args: CreateToken) -> anyhow::Result<()> {
    let ttl = args.ttl.as_deref().map(parse_ttl).transpose()?;
    let body = MintRequest {
        scope: OneOrMany::Many(args.scopes),
        ttl_seconds: ttl,
        description: args.description,
        allowed_ips: (!args.allowed_ips.is_empty()).then_some(args.allowed_ips),
        max_uses: args.max_uses,
    };
    let answer = client.send(Method::POST, "/v1/tokens", &body).await?;
    if answer.status == StatusCode::ACCEPTED {
        let pending: PendingApproval = answer.decode()?;
        let shown = as_json(&pending);
        let id = field(&shown, "approval_request_id");
        eprintln!("approval required: request {id} ({})", field(&shown, "message"));
        if !args.wait {
            println!("{id}");
            return Ok(());
        }
        return wait_for_token(client, &pending.approval_request_id, args.json).await;
    }
    print_token(&answer.decode()?, args.json)
}

fn print_token(token: &MintedToken, as_json_too: bool) -> anyhow::Result<()> {
    if as_json_too {
        return print_json(&as_json(token));
    }
    let shown = json!({ "id": token.id, "expires_at": token.expires_at });
    eprintln!("token {} expires at {}", field(&shown, "id"), field(&shown, "expires_at"));
    println!("{}", token.value.expose());
    Ok(())
}

async fn wait_for_token(client: &Client, id: &str, as_json_too: bool) -> anyhow::Result<()> {
    let url = format!("/v1/approvals/{id}");
    loop {
        let body: Approval = client.get(&url).await?;
        let note = field(&json!({ "note": body.note }), "note");
        match (body.status.as_str(), &body.token) {
            ("approved", Some(token)) => return print_token(token, as_json_too),
            ("approved", None) => anyhow::bail!("request {id} was approved, but its token was already collected"),
            ("denied", _) => anyhow::bail!("request {id} was denied: {note}"),
            // The server answers the requester of a cancelled request with an error; a
            // decider waiting on it sees the status.
            ("cancelled", _) => anyhow::bail!("request {id} was cancelled: {note}"),
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

pub async fn approval(cmd: ApprovalCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        ApprovalCommand::Ls { status, json } => {
            // Page by page to the end: a flood of newer requests hides none filed before it.
            let all = client.list::<ApprovalList>("/v1/approvals", &[("status", status)], usize::MAX).await?;
            if json {
                return print_json(&serde_json::Value::Array(all.iter().map(as_json).collect()));
            }
            let rows: Vec<[String; 5]> = all
                .iter()
                .map(|a| {
                    let a = as_json(a);
                    [
                        field(&a, "id"),
                        field(&a, "status"),
                        field(&a, "agent"),
                        field(&a, "reason"),
                        field(&a, "created_at"),
                    ]
                })
                .collect();
            print_table(["ID", "STATUS", "AGENT", "REASON", "CREATED"], &rows)
        }
        ApprovalCommand::Get { id, json } => {
            let approval: Approval = client.get(&format!("/v1/approvals/{id}")).await?;
            if json {
                return print_json(&as_json(&approval));
            }
            let shown = json!({
                "id": approval.id, "status": approval.status, "agent": approval.agent, "reason": approval.reason,
            });
            println!(
                "{} {} (agent {}): {}",
                field(&shown, "id"),
                field(&shown, "status"),
                field(&shown, "agent"),
                field(&shown, "reason")
            );
            if let Some(token) = &approval.token {
                print_token(token, false)?;
            }
            Ok(())
        }
        ApprovalCommand::Approve { id, comment } => {
            let url = format!("/v1/approvals/{id}/approve");
            let decided: Approval = client.call(Method::POST, &url, &ApproveBody { comment }).await?;
            let shown = as_json(&decided);
            println!("{} {}", field(&shown, "id"), field(&shown, "status"));
            Ok(())
        }
        ApprovalCommand::Deny { id, reason } => {
            let url = format!("/v1/approvals/{id}/deny");
            let decided: Approval = client.call(Method::POST, &url, &DenyBody { reason }).await?;
            let shown = as_json(&decided);
            println!("{} {}", field(&shown, "id"), field(&shown, "status"));
            Ok(())
        }
    }
}

/// Writes `key` (and a newline) to a new file only its owner can read.
fn write_key_file(path: &std::path::Path, key: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{key}\n").as_bytes()).with_context(|| format!("cannot write {}", path.display()))
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
