//! `airlock audit …`: the operator commands over `/v1/audit` (DESIGN §2) — `tail`, which
//! prints recent audit records oldest first and with `--follow` polls for new ones, printing
//! each record once, and `verify`, which asks the server to recompute the hash chain and
//! check it against the chain's newest signed checkpoint, and turns a broken chain (or one
//! that fails its checkpoint) into a non-zero exit.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::output::{as_json, field, print_json};
use crate::api::audit::{AuditEvent, AuditPage};
use crate::client::{Client, ClientError};

const AUDIT: &str = "/v1/audit";
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Pages fetched per poll when catching up with a burst of new records.
const CATCH_UP_PAGES: usize = 10;
const CATCH_UP_PAGE_SIZE: usize = 100;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the newest audit records, oldest first
    Tail(TailArgs),
    /// Check that the audit hash chain is intact and holds its newest signed checkpoint
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// How many records to print
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Only records of this type, e.g. secret.read or auth.failure
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only records made by this actor
    #[arg(long)]
    pub actor: Option<String>,
    /// Only records about secrets below this namespace
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only records at or after this instant, e.g. 2025-01-31T12:00:00Z
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
    /// Keep polling every 2 s and print new records as they arrive
    #[arg(long, short)]
    pub follow: bool,
    /// Print the records as one JSON array (with --follow: each record as one line of JSON)
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Print the server's verdict as JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: AuditCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Tail(args) => tail(client, args).await,
        AuditCommand::Verify(args) => verify(client, args).await,
    }
}

impl TailArgs {
    fn filters(&self) -> Vec<(&'static str, String)> {
        [("type", &self.kind), ("actor", &self.actor), ("namespace", &self.namespace), ("since", &self.since)]
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
            .collect()
    }
}

async fn tail(client: &Client, args: TailArgs) -> anyhow::Result<()> {
    let filters = args.filters();
    let mut events = as_values(client.list::<AuditPage>(AUDIT, &filters, args.limit as usize).await?);
    events.reverse(); // the API lists newest first
    let mut newest = Newest::default();
    if args.json && !args.follow {
        return print_json(&Value::Array(events));
    }
    print_events(&events, args.json, &mut newest)?;
    if args.follow {
        follow(client, &filters, newest, args.json).await?;
    }
    Ok(())
}

/// Polls until interrupted. An unreachable server is reported once and retried; any
/// other error (a revoked credential, say) ends the command.
async fn follow(client: &Client, filters: &[(&str, String)], mut newest: Newest, json: bool) -> anyhow::Result<()> {
    let mut offline = false;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        match events_after(client, filters, &newest).await {
            Ok(mut events) => {
                offline = false;
                events.reverse();
                print_events(&events, json, &mut newest)?;
            }
            Err(e @ ClientError::Unreachable { .. }) => {
                if !offline {
                    let e = anyhow::Error::from(e);
                    eprintln!("warning: {}; still trying every {} s", super::describe(&e), POLL_INTERVAL.as_secs());
                }
                offline = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The records newer than `newest`, newest first, paging back until an old one shows up.
async fn events_after(client: &Client, filters: &[(&str, String)], newest: &Newest) -> Result<Vec<Value>, ClientError> {
    let mut fresh = Vec::new();
    let mut cursor = None;
    for _ in 0..CATCH_UP_PAGES {
        let mut params = filters.to_vec();
        params.push(("limit", CATCH_UP_PAGE_SIZE.to_string()));
        params.extend(cursor.map(|c| ("cursor", c)));
        let page = client.page::<AuditPage>(AUDIT, &params).await?;
        let count = page.items.len();
        let before = fresh.len();
        fresh.extend(as_values(page.items).into_iter().take_while(|e| newest.is_older_than(e)));
        if fresh.len() - before < count || page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    Ok(fresh)
}

/// Records as the JSON they are printed from.
fn as_values(events: Vec<AuditEvent>) -> Vec<Value> {
    events.iter().map(as_json).collect()
}

/// The newest record printed so far. Records are ordered by `seq` when the server sends
/// it; otherwise by id, whose ULID sorts by creation time.
#[derive(Debug, Default)]
struct Newest {
    seq: Option<i64>,
    id: Option<String>,
}

impl Newest {
    fn is_older_than(&self, event: &Value) -> bool {
        if let (Some(seen), Some(seq)) = (self.seq, event.get("seq").and_then(Value::as_i64)) {
            return seq > seen;
        }
        match (&self.id, event.get("id").and_then(Value::as_str)) {
            (None, _) => true,
            (Some(seen), Some(id)) => id > seen.as_str(),
            (Some(_), None) => false,
        }
    }

    fn advance(&mut self, event: &Value) {
        if self.is_older_than(event) {
            self.seq = event.get("seq").and_then(Value::as_i64);
            self.id = event.get("id").and_then(Value::as_str).map(str::to_owned);
        }
    }
}

/// Prints `events` (oldest first) and moves `newest` past them.
fn print_events(events: &[Value], json: bool, newest: &mut Newest) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for event in events {
        if json {
            writeln!(out, "{event}")?;
        } else {
            writeln!(out, "{}", event_line(event))?;
        }
        newest.advance(event);
    }
    out.flush()?;
    Ok(())
}

/// `TIMESTAMP TYPE PATH ACTOR ok|FAILED [host=…] [error=…]`, one word per column. The
/// actor is its name (the credential's or agent's) when the record carries one, else its id;
/// a record about a host (the proxy's access reports) names it, and a failure its error code.
fn event_line(event: &Value) -> String {
    let outcome = match event.get("success").and_then(Value::as_bool) {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "-",
    };
    let [timestamp, kind, path] = ["timestamp", "type", "path"].map(|k| field(event, k));
    let actor = match field(event, "actor_description") {
        name if name != "-" => name,
        _ => field(event, "actor"),
    };
    let mut line = format!("{timestamp} {kind:<16} {path} {actor} {outcome}");
    let detail = event.get("detail").unwrap_or(&Value::Null);
    if let Some(host) = detail.get("host").filter(|h| h.is_string()) {
        line.push_str(&format!(" host={}", field(&serde_json::json!({ "h": host }), "h")));
    }
    if outcome == "FAILED" {
        let code = ["error_code", "error", "outcome"].into_iter().map(|k| field(detail, k)).find(|c| c != "-");
        if let Some(code) = code {
            line.push_str(&format!(" error={code}"));
        }
    }
    line
}

async fn verify(client: &Client, args: VerifyArgs) -> anyhow::Result<()> {
    let verdict = client.get_json("/v1/audit/verify").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    }
    match verdict.get("ok").and_then(Value::as_bool) {
        Some(true) if !args.json => {
            println!("audit chain intact: {} records verified", field(&verdict, "checked"));
            if let Some(line) = checkpoint_line(&verdict) {
                println!("{line}");
            }
        }
        Some(true) => {}
        Some(false) => {
            if !args.json {
                if verdict.get("first_broken").is_some_and(|b| !b.is_null()) {
                    println!("{}", broken_line(&verdict));
                } else if let Some(line) = checkpoint_line(&verdict) {
                    println!("{line}");
                }
            }
            anyhow::bail!("the audit chain failed verification");
        }
        None => return Err(ClientError::Protocol("the verify response has no boolean `ok`".into()).into()),
    }
    Ok(())
}

/// What the server found about the chain's signed checkpoint (a server from before
/// checkpoints says nothing about one).
fn checkpoint_line(verdict: &Value) -> Option<String> {
    let checkpoint = verdict.get("checkpoint").filter(|c| c.is_object())?;
    let [status, message] = ["status", "message"].map(|k| field(checkpoint, k));
    Some(match status.as_str() {
        "verified" | "none" => format!("checkpoint: {message}"),
        _ => format!("audit checkpoint FAILED ({status}): {message}"),
    })
}

fn broken_line(verdict: &Value) -> String {
    let broken = verdict.get("first_broken").unwrap_or(&Value::Null);
    let [id, seq, reason] = ["id", "seq", "reason"].map(|k| field(broken, k));
    format!("audit chain BROKEN at record {id} (seq {seq}): {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_consistent() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: AuditCommand,
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn filters_become_query_parameters() {
        let args = TailArgs {
            limit: 20,
            kind: Some("secret.read".into()),
            actor: None,
            namespace: Some("prod/openai".into()),
            since: Some("2025-01-31T12:00:00+01:00".into()),
            follow: false,
            json: false,
        };
        let url = Client::with_query(AUDIT, &args.filters());
        assert_eq!(url, "/v1/audit?type=secret.read&namespace=prod%2Fopenai&since=2025-01-31T12%3A00%3A00%2B01%3A00");
    }

    #[test]
    fn follow_prints_each_record_once_ordered_by_seq() {
        let mut newest = Newest::default();
        assert!(newest.is_older_than(&json!({"id": "evt_B", "seq": 5})));
        newest.advance(&json!({"id": "evt_B", "seq": 5}));
        assert!(!newest.is_older_than(&json!({"id": "evt_B", "seq": 5})));
        // seq wins over id order: ULIDs made in the same millisecond may sort either way.
        assert!(newest.is_older_than(&json!({"id": "evt_A", "seq": 6})));
        assert!(!newest.is_older_than(&json!({"id": "evt_C", "seq": 4})));
        newest.advance(&json!({"id": "evt_C", "seq": 4}));
        assert_eq!(newest.seq, Some(5), "an older record does not move the mark back");
    }

    #[test]
    fn without_seq_records_are_ordered_by_id() {
        let mut newest = Newest::default();
        newest.advance(&json!({"id": "evt_01HZZ0000000000000000000B"}));
        assert!(newest.is_older_than(&json!({"id": "evt_01HZZ0000000000000000000C"})));
        assert!(!newest.is_older_than(&json!({"id": "evt_01HZZ0000000000000000000A"})));
        assert!(!newest.is_older_than(&json!({"type": "access"})));
    }

    #[test]
    fn event_lines() {
        let ok = json!({"timestamp": "2025-01-31T12:00:00Z", "type": "secret.read", "path": "prod/db",
                        "actor": "ak_admin", "success": true});
        assert_eq!(event_line(&ok), "2025-01-31T12:00:00Z secret.read      prod/db ak_admin ok");
        let failed = json!({"timestamp": "2025-01-31T12:00:01Z", "type": "auth.failure", "path": null,
                            "actor": "\u{1b}]0;pwned\u{7}", "success": false});
        assert_eq!(event_line(&failed), "2025-01-31T12:00:01Z auth.failure     - \\u{1b}]0;pwned\\u{7} FAILED");
        let named = json!({"timestamp": "t", "type": "secret.read", "path": "prod/db", "actor": "ak_01J",
                           "actor_description": "ci-deployer", "success": true});
        assert_eq!(event_line(&named), "t secret.read      prod/db ci-deployer ok");
        let refused = json!({"timestamp": "t", "type": "access.refused", "path": "prod/db", "actor": "agt_01J",
                             "actor_description": "research-agent", "success": false,
                             "detail": {"host": "evil.example", "outcome": "refused", "error_code": "host_not_allowed"}});
        assert_eq!(
            event_line(&refused),
            "t access.refused   prod/db research-agent FAILED host=evil.example error=host_not_allowed"
        );
    }

    #[test]
    fn a_broken_chain_names_the_record() {
        let verdict = json!({"ok": false, "checked": 41, "head_seq": 50,
                             "first_broken": {"id": "evt_X", "seq": 42, "reason": "hash mismatch"}});
        assert_eq!(broken_line(&verdict), "audit chain BROKEN at record evt_X (seq 42): hash mismatch");
        assert_eq!(broken_line(&json!({"ok": false})), "audit chain BROKEN at record - (seq -): -");
    }

    #[test]
    fn the_checkpoint_is_reported() {
        let holds = json!({"ok": true, "checkpoint": {"status": "verified", "message": "the chain holds it"}});
        assert_eq!(checkpoint_line(&holds).unwrap(), "checkpoint: the chain holds it");
        let forged = json!({"ok": false, "checkpoint": {"status": "invalid", "message": "does not verify"}});
        assert_eq!(checkpoint_line(&forged).unwrap(), "audit checkpoint FAILED (invalid): does not verify");
        assert_eq!(checkpoint_line(&json!({"ok": true})), None, "an older server");
    }
}
