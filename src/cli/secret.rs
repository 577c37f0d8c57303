//! `airlock secret …`: the operator commands over `/v1/secrets` (DESIGN §2) — their
//! arguments, where a value comes from (argument or stdin, held in a zeroizing buffer and
//! never shown by `Debug`), the create-or-update logic of `put`, and how results are printed
//! for people (tables, one-line confirmations) and for scripts (`get` prints the bare value,
//! `--json` the API's JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use clap::builder::NonEmptyStringValueParser;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use zeroize::{Zeroize, Zeroizing};

use crate::api::secrets::{
    CreateSecret, PatchSecret, RotateSecret, SecretCreated, SecretList, SecretMetadata, SecretRead, SecretRotated,
    SecretUpdated, SecretVersions, UpdateSecret,
};
use crate::api::usage::SecretUsage;
use crate::client::{Client, ClientError};
use crate::domain::{SecretPath, SecretValue, Tier};

/// Largest secret value the API accepts, in bytes of UTF-8.
const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret, or store a new version of an existing one
    Put(PutArgs),
    /// Print a secret's value (alone, for `$(airlock secret get PATH)`)
    Get(GetArgs),
    /// List secrets (metadata only, never values)
    Ls(LsArgs),
    /// Store a new value, keeping the old version readable for a grace period
    Rotate(RotateArgs),
    /// Delete a secret (recoverable unless --permanent)
    Rm(RmArgs),
    /// Restore a deleted secret
    Undelete(PathArg),
    /// List a secret's versions and their state
    Versions(PathArg),
    /// Show which agents' policies grant a secret, how, and when each last used it
    Usage(UsageArgs),
}

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// Print the API's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PathArg {
    /// Secret path, e.g. production/openai/api-key
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub path: String,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// The value; it lands in your shell history, so prefer --stdin
    #[arg(required_unless_present = "stdin")]
    pub value: Option<ValueArg>,
    /// Read the value from stdin (one trailing newline is removed)
    #[arg(long, conflicts_with = "value")]
    pub stdin: bool,
    /// standard or sensitive
    #[arg(long)]
    pub tier: Option<Tier>,
    #[arg(long)]
    pub description: Option<String>,
    /// Tag KEY=VALUE (repeatable); on update, replaces the secret's tags
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Host the value may be sent to (repeatable); on update, replaces the list
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Write only if the current version is N; 0 means only create
    #[arg(long, value_name = "N")]
    pub cas: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// A previous version (readable during its rotation grace period)
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Print the whole response, metadata included, as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only secrets below this namespace, e.g. production/openai
    pub namespace: Option<String>,
    /// Only secrets with this tag (and value)
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub tag: Option<String>,
    /// Stop after N secrets
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print the items as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// The new value; it lands in your shell history, so prefer --stdin
    #[arg(required_unless_present = "stdin")]
    pub new_value: Option<ValueArg>,
    /// Read the new value from stdin (one trailing newline is removed)
    #[arg(long, conflicts_with = "new_value")]
    pub stdin: bool,
    /// Seconds the old version stays readable with `get --version`
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// Remove every version's ciphertext now; cannot be undone
    #[arg(long)]
    pub permanent: bool,
}

/// A secret value given on the command line: wiped on drop, `Debug` shows `***`.
#[derive(Clone)]
pub struct ValueArg(Zeroizing<String>);

impl FromStr for ValueArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ValueArg(Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for ValueArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueArg(***)")
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

pub async fn run(cmd: SecretCommand, client: &Client) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Put(args) => put(client, args).await,
        SecretCommand::Get(args) => get(client, args).await,
        SecretCommand::Ls(args) => ls(client, args).await,
        SecretCommand::Rotate(args) => rotate(client, args).await,
        SecretCommand::Rm(args) => rm(client, args).await,
        SecretCommand::Undelete(args) => undelete(client, args).await,
        SecretCommand::Versions(args) => versions(client, args).await,
        SecretCommand::Usage(args) => usage(client, args).await,
    }
}

/// Creates the secret; if it exists, writes a new version. `--cas N` skips the create
/// (the caller expects version N to exist) and `--cas 0` skips the update.
async fn put(client: &Client, mut args: PutArgs) -> anyhow::Result<()> {
    let value = read_value(args.value.take(), args.stdin).await?;
    let path = args.secret.path.as_str();
    if args.cas.is_none_or(|cas| cas == 0) {
        match client.call::<_, SecretCreated>(Method::POST, "/v1/secrets", &create_request(&args, &value)?).await {
            Ok(created) => {
                println!("created {path} version {}", created.version);
                return Ok(());
            }
            Err(e) if args.cas.is_none() && e.api_code() == Some("conflict") => {}
            Err(e) => return Err(e.into()),
        }
    }
    let updated: SecretUpdated = client
        .call(Method::PUT, &Client::secret_url(path), &update_request(&args, &value)?)
        .await
        .map_err(|e| explain_update_failure(e, path))?;
    let version = updated.version;
    if !args.allowed_hosts.is_empty() {
        // The PUT body carries no allowed_hosts (DESIGN §2); they are metadata, set by PATCH.
        let hosts = PatchSecret { allowed_hosts: Some(args.allowed_hosts.clone()), ..PatchSecret::default() };
        client
            .call::<_, SecretMetadata>(Method::PATCH, &Client::secret_url(path), &hosts)
            .await
            .with_context(|| format!("updated {path} to version {version}, but setting its allowed hosts failed"))?;
    }
    println!("updated {path} version {version}");
    Ok(())
}

/// The metadata flags given to `put`, as API fields: tier, description, tags.
fn metadata(args: &PutArgs) -> (Option<Tier>, Option<String>, Option<BTreeMap<String, String>>) {
    let tags = (!args.tags.is_empty()).then(|| args.tags.iter().cloned().collect());
    (args.tier, args.description.clone(), tags)
}

fn create_request(args: &PutArgs, value: &str) -> anyhow::Result<CreateSecret> {
    let (tier, description, tags) = metadata(args);
    let path = &args.secret.path;
    Ok(CreateSecret {
        path: SecretPath::parse(path).map_err(|e| anyhow!("invalid secret path '{path}': {e}"))?,
        value: SecretValue::new(value.to_owned()),
        tier,
        description,
        tags,
        allowed_hosts: (!args.allowed_hosts.is_empty()).then(|| args.allowed_hosts.clone()),
        owner: None,
        expires_at: None,
        not_before: None,
    })
}

fn update_request(args: &PutArgs, value: &str) -> anyhow::Result<UpdateSecret> {
    let (tier, description, tags) = metadata(args);
    let cas = args.cas.map(|cas| i64::try_from(cas).map_err(|_| anyhow!("--cas {cas}: no version is that high")));
    Ok(UpdateSecret { value: SecretValue::new(value.to_owned()), cas: cas.transpose()?, tier, description, tags })
}

#[cfg(test)]
fn create_body(args: &PutArgs, value: &str) -> Value {
    serde_json::to_value(create_request(args, value).expect("a valid path")).expect("a request body is JSON")
}

#[cfg(test)]
fn update_body(args: &PutArgs, value: &str) -> Value {
    serde_json::to_value(update_request(args, value).expect("a valid cas")).expect("a request body is JSON")
}

/// A create answered "exists" and the update "not found": the secret is soft-deleted.
fn explain_update_failure(e: ClientError, path: &str) -> anyhow::Error {
    let deleted = e.api_code() == Some("not_found");
    let e = anyhow::Error::from(e);
    if !deleted {
        return e;
    }
    e.context(format!(
        "'{path}' exists but is deleted; restore it with 'airlock secret undelete {path}' \
         or remove it for good with 'airlock secret rm --permanent {path}'"
    ))
}

/// The value from the argument (with a warning) or from stdin.
async fn read_value(arg: Option<ValueArg>, from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    match arg {
        Some(ValueArg(value)) => {
            eprintln!(
                "warning: a value given on the command line lands in your shell history and the \
                 process list; prefer --stdin"
            );
            Ok(value)
        }
        None if from_stdin => read_stdin_value().await,
        None => bail!("give the value as an argument, or pipe it in with --stdin"),
    }
}

async fn read_stdin_value() -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading the value from stdin; end it with Ctrl-D");
    }
    // Read at most one byte past the largest value plus a CRLF, into a buffer allocated once
    // with the slack read_to_end wants, so no reallocation leaves an unwiped copy behind.
    let limit = MAX_VALUE_BYTES + 3;
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 64));
    tokio::io::stdin().take(limit as u64).read_to_end(&mut buf).await.context("cannot read the value from stdin")?;
    let len = len_without_newline(&buf);
    buf.truncate(len);
    if buf.len() > MAX_VALUE_BYTES {
        bail!("the value on stdin is larger than {} KiB, the most a secret can hold", MAX_VALUE_BYTES / 1024);
    }
    String::from_utf8(std::mem::take(&mut *buf)).map(Zeroizing::new).map_err(|e| {
        e.into_bytes().zeroize();
        anyhow!("the value on stdin is not UTF-8 text")
    })
}

/// Length of `bytes` without one trailing `\n` or `\r\n` (the one `echo` and editors add).
fn len_without_newline(bytes: &[u8]) -> usize {
    if bytes.ends_with(b"\r\n") {
        bytes.len() - 2
    } else if bytes.ends_with(b"\n") {
        bytes.len() - 1
    } else {
        bytes.len()
    }
}

async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let version: Vec<(&str, String)> = args.version.map(|v| ("version", v.to_string())).into_iter().collect();
    let read: SecretRead = client.get(&Client::with_query(&Client::secret_url(&args.secret.path), &version)).await?;
    if args.json {
        return print_json(&as_json(&read));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(read.value.expose().as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// A response type as JSON, for `--json` and for printing its fields with [`field`].
pub(super) fn as_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let filters: Vec<(&str, String)> = [("namespace", args.namespace), ("tag", args.tag)]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect();
    let limit = args.limit.map_or(usize::MAX, |n| n as usize);
    let items: Vec<Value> =
        client.list::<SecretList>("/v1/secrets", &filters, limit).await?.iter().map(as_json).collect();
    if args.json {
        return print_json(&Value::Array(items));
    }
    if items.is_empty() {
        eprintln!("no secrets found");
        return Ok(());
    }
    let rows: Vec<_> = items.iter().map(|i| ["path", "version", "tier", "updated_at"].map(|k| field(i, k))).collect();
    print_table(["PATH", "VERSION", "TIER", "UPDATED"], &rows)
}

async fn rotate(client: &Client, mut args: RotateArgs) -> anyhow::Result<()> {
    let value = read_value(args.new_value.take(), args.stdin).await?;
    let path = args.secret.path.as_str();
    let grace = args.grace.unwrap_or(0);
    let grace_period_seconds =
        u32::try_from(grace).map_err(|_| anyhow!("--grace {grace}: the longest grace period is {} s", u32::MAX))?;
    let body = RotateSecret { new_value: SecretValue::new(value.to_string()), grace_period_seconds };
    let url = format!("{}/rotate", Client::secret_url(path));
    let rotated: SecretRotated = client.call(Method::POST, &url, &body).await?;
    let until = field(&as_json(&rotated), "old_expires_at");
    let (old, new) = (rotated.old_version, rotated.new_version);
    println!("rotated {path}: version {old} -> {new} (old readable until {until})");
    Ok(())
}

async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    let path = args.secret.path.as_str();
    let permanent: &[(&str, &str)] = if args.permanent { &[("permanent", "true")] } else { &[] };
    client.call_empty(Method::DELETE, &Client::with_query(&Client::secret_url(path), permanent)).await?;
    if args.permanent {
        println!("permanently deleted {path}");
    } else {
        println!("deleted {path} (recoverable for 30 days with 'airlock secret undelete')");
    }
    Ok(())
}

async fn undelete(client: &Client, args: PathArg) -> anyhow::Result<()> {
    let url = format!("{}/undelete", Client::secret_url(&args.path));
    client.call_bodiless::<SecretMetadata>(Method::POST, &url).await?;
    println!("restored {}", args.path);
    Ok(())
}

async fn versions(client: &Client, args: PathArg) -> anyhow::Result<()> {
    let body: SecretVersions = client.get(&format!("{}/versions", Client::secret_url(&args.path))).await?;
    let versions: Vec<Value> = body.versions.iter().map(as_json).collect();
    let rows: Vec<_> =
        versions.iter().map(|v| ["version", "state", "created_at", "expires_at"].map(|k| field(v, k))).collect();
    print_table(["VERSION", "STATE", "CREATED", "EXPIRES"], &rows)
}

async fn usage(client: &Client, args: UsageArgs) -> anyhow::Result<()> {
    let body: SecretUsage = client.get(&format!("{}/usage", Client::secret_url(&args.secret.path))).await?;
    if args.json {
        return print_json(&as_json(&body));
    }
    if body.agents.is_empty() {
        eprintln!("no agent's policy grants {}", args.secret.path);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(format_usage(&body).as_bytes())?;
    Ok(())
}

/// One row per agent, then the inject rules and routes of each that has any.
fn format_usage(body: &SecretUsage) -> String {
    let list = |items: Vec<String>| if items.is_empty() { "-".to_owned() } else { items.join(",") };
    let rows: Vec<[String; 7]> = body
        .agents
        .iter()
        .map(|a| {
            let mut placement = a.placement.headers.clone();
            if a.placement.query {
                placement.push("query".into());
            }
            let v = as_json(a);
            [
                field(&v, "agent"),
                field(&v, "agent_id"),
                field(&v, "grant"),
                list(a.hosts.iter().map(|h| escaped(h)).collect()),
                list(placement.iter().map(|p| escaped(p)).collect()),
                if a.approval_required { "yes".into() } else { "no".into() },
                field(&v, "last_used"),
            ]
        })
        .collect();
    let mut text = format_table(["AGENT", "ID", "GRANT", "HOSTS", "PLACEMENT", "APPROVAL", "LAST USED"], &rows);
    for a in &body.agents {
        for rule in &a.injects {
            text.push_str(&format!(
                "{}: inject {} on {}\n",
                escaped(&a.agent),
                escaped(&rule.header),
                escaped(&rule.host)
            ));
        }
        for route in &a.routes {
            text.push_str(&format!(
                "{}: route /r/{}/ -> {}\n",
                escaped(&a.agent),
                escaped(&route.name),
                escaped(&route.upstream)
            ));
        }
    }
    text
}

/// A response field as one printable word: strings as they are, numbers and booleans as
/// JSON, absent or null as `-`. Control and bidi-override characters are escaped, since
/// fields may carry text from untrusted clients (user agents, failed-auth actors) and must
/// not drive the terminal. Also used by `audit`.
pub(super) fn field(v: &Value, key: &str) -> String {
    let raw = match v.get(key) {
        None | Some(Value::Null) => return "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => return "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    escaped(&raw)
}

/// `raw` with control and bidi-override characters escaped, as [`field`] prints it.
fn escaped(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn print_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format_table(headers, rows).as_bytes())?;
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn format_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = headers.map(str::to_owned);
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: SecretCommand,
    }

    fn parse(args: &[&str]) -> Result<SecretCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("secret").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn arguments_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn put_takes_the_value_or_stdin_but_not_both_or_neither() {
        let Ok(SecretCommand::Put(args)) = parse(&["put", "a/b", "v"]) else { panic!("put did not parse") };
        assert_eq!(args.secret.path, "a/b");
        assert_eq!(args.value.map(|v| v.0.to_string()).as_deref(), Some("v"));
        assert!(parse(&["put", "a/b", "--stdin"]).is_ok());
        assert!(parse(&["put", "a/b", "v", "--stdin"]).is_err());
        assert!(parse(&["put", "a/b"]).is_err());
        assert!(parse(&["put", "", "v"]).is_err(), "an empty path would address the collection");
    }

    #[test]
    fn put_flags_become_api_fields() {
        let Ok(SecretCommand::Put(args)) = parse(&[
            "put",
            "prod/db",
            "--stdin",
            "--tier",
            "sensitive",
            "--description",
            "main db",
            "--tag",
            "team=core",
            "--tag",
            "env=prod",
            "--allowed-host",
            "db.example",
            "--cas",
            "3",
        ]) else {
            panic!("put did not parse")
        };
        let create = create_body(&args, "pw");
        assert_eq!(
            create,
            json!({"path": "prod/db", "value": "pw", "tier": "sensitive", "description": "main db",
                   "tags": {"team": "core", "env": "prod"}, "allowed_hosts": ["db.example"]})
        );
        let update = update_body(&args, "pw");
        assert_eq!(
            update,
            json!({"value": "pw", "cas": 3, "tier": "sensitive", "description": "main db",
                   "tags": {"team": "core", "env": "prod"}})
        );
    }

    #[test]
    fn tags_must_be_key_value() {
        assert_eq!(parse_tag("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert_eq!(parse_tag("k="), Ok(("k".into(), String::new())));
        assert!(parse_tag("k").is_err());
        assert!(parse_tag("=v").is_err());
    }

    #[test]
    fn debug_output_never_shows_a_value_from_the_command_line() {
        let cmd = parse(&["put", "a/b", "hunter2"]).unwrap();
        let shown = format!("{cmd:?}");
        assert!(!shown.contains("hunter2") && shown.contains("***"), "{shown}");
        let cmd = parse(&["rotate", "a/b", "hunter3", "--grace", "60"]).unwrap();
        assert!(!format!("{cmd:?}").contains("hunter3"));
    }

    #[test]
    fn one_trailing_newline_is_stripped() {
        let cases: [(&[u8], usize); 6] =
            [(b"abc\n", 3), (b"abc\r\n", 3), (b"abc\n\n", 4), (b"abc", 3), (b"\n", 0), (b"", 0)];
        for (input, len) in cases {
            assert_eq!(len_without_newline(input), len, "{input:?}");
        }
    }

    #[test]
    fn the_value_is_taken_from_the_response_strictly() {
        let read = |body: Value| crate::api::decode_value::<SecretRead>("GET /v1/secrets/a", body);
        let mut whole = json!({
            "path": "a", "version": 2, "tier": "standard", "description": null, "tags": {}, "allowed_hosts": [],
            "owner": null, "created_at": "t", "updated_at": "t", "accessed_at": null, "expires_at": null,
            "not_before": null, "value": "s3cret",
        });
        assert_eq!(read(whole.clone()).unwrap().value.expose(), "s3cret");
        assert!(read(json!({"path": "a"})).is_err());
        whole["value"] = 5.into();
        assert!(read(whole).is_err());
        assert!(read(json!(["value"])).is_err());
    }

    #[test]
    fn fields_are_single_printable_words() {
        let v = json!({"s": "prod/db", "n": 7, "null": null, "empty": "", "esc": "a\u{1b}[2Jb", "bidi": "x\u{202E}y"});
        assert_eq!(field(&v, "s"), "prod/db");
        assert_eq!(field(&v, "n"), "7");
        assert_eq!(field(&v, "null"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(field(&v, "empty"), "-");
        assert_eq!(field(&v, "esc"), "a\\u{1b}[2Jb");
        assert_eq!(field(&v, "bidi"), "x\\u{202e}y");
    }

    #[test]
    fn tables_align_columns() {
        let rows = [
            [
                "prod/openai/api-key".to_owned(),
                "12".to_owned(),
                "sensitive".to_owned(),
                "2025-01-01T00:00:00Z".to_owned(),
            ],
            ["a".to_owned(), "1".to_owned(), "standard".to_owned(), "-".to_owned()],
        ];
        let table = format_table(["PATH", "VERSION", "TIER", "UPDATED"], &rows);
        let expected = "\
PATH                 VERSION  TIER       UPDATED
prod/openai/api-key  12       sensitive  2025-01-01T00:00:00Z
a                    1        standard   -
";
        assert_eq!(table, expected);
    }
}
