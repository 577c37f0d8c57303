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
use serde_json::Value;
use tokio::io::AsyncReadExt;
use zeroize::{Zeroize, Zeroizing};

use super::output::{as_json, escaped, field, format_table, print_json, print_table};
use crate::api::secrets::{
    CreateSecret, ImportItem, ManagedMode, PatchSecret, RemoteImport, RemoteImportCandidates, RemoteImportPreview,
    RemoteImported, RotateSecret, SecretCreated, SecretList, SecretMetadata, SecretRead, SecretRotated, SecretStatus,
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
    Versions(VersionsArgs),
    /// Show which agents' policies grant a secret, how, and when each last used it
    Usage(UsageArgs),
    /// Set a secret's status: a disabled or archived secret stays listed but does not resolve
    Status(StatusArgs),
    /// Import secrets from a provider config as external references: preview, confirm, create
    Import(ImportArgs),
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
pub struct StatusArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// active (resolves), disabled or archived (listed, not readable; agents are refused)
    pub status: StatusArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusArg {
    Active,
    Disabled,
    Archived,
}

impl From<StatusArg> for SecretStatus {
    fn from(s: StatusArg) -> SecretStatus {
        match s {
            StatusArg::Active => SecretStatus::Active,
            StatusArg::Disabled => SecretStatus::Disabled,
            StatusArg::Archived => SecretStatus::Archived,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The provider config to list and read through (its id, from `airlock provider ls`)
    #[arg(long, value_name = "ID")]
    pub provider_config: String,
    /// A Vault/OpenBao folder (MOUNT/PATH) or an AWS Secrets Manager name filter
    #[arg(long, value_name = "Q")]
    pub query: Option<String>,
    /// Import the ready candidates without asking
    #[arg(long)]
    pub yes: bool,
}

#[derive(clap::Args, Debug)]
pub struct PathArg {
    /// Secret path, e.g. production/openai/api-key
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub path: String,
}

#[derive(clap::Args, Debug)]
pub struct VersionsArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// Print the API's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub secret: PathArg,
    /// The value; it lands in your shell history, so prefer --stdin
    #[arg(required_unless_present_any = ["stdin", "external_ref", "provider_version"])]
    pub value: Option<ValueArg>,
    /// Read the value from stdin (one trailing newline is removed)
    #[arg(long, conflicts_with = "value")]
    pub stdin: bool,
    /// Keep the value in an external provider and read it from there when needed:
    /// vault+kv2://MOUNT/PATH[#field] or aws-sm://NAME[#json-field]
    #[arg(long, value_name = "REF", conflicts_with_all = ["value", "stdin"])]
    pub external_ref: Option<String>,
    /// Pin the provider's version (a KV2 version number; an AWS version id or stage); an
    /// existing external secret takes it alone as its new version
    #[arg(long, value_name = "V", conflicts_with_all = ["value", "stdin"])]
    pub provider_version: Option<String>,
    /// The provider config to read through (default: the tenant's default config of the
    /// reference's provider)
    #[arg(long, value_name = "ID", requires = "external_ref")]
    pub provider_config: Option<String>,
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
    /// Store an empty value on purpose (refused otherwise)
    #[arg(long)]
    pub allow_empty: bool,
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
    /// Only secrets with this status (active, disabled, archived)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
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
    #[arg(required_unless_present_any = ["stdin", "external_ref", "provider_version"])]
    pub new_value: Option<ValueArg>,
    /// Read the new value from stdin (one trailing newline is removed)
    #[arg(long, conflicts_with = "new_value")]
    pub stdin: bool,
    /// An external secret's new reference
    #[arg(long, value_name = "REF", conflicts_with_all = ["new_value", "stdin"])]
    pub external_ref: Option<String>,
    /// An external secret's new provider version
    #[arg(long, value_name = "V", conflicts_with_all = ["new_value", "stdin"])]
    pub provider_version: Option<String>,
    /// Seconds the old version stays readable with `get --version`
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
    /// Store an empty value on purpose (refused otherwise)
    #[arg(long)]
    pub allow_empty: bool,
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
        SecretCommand::Status(args) => status(client, args).await,
        SecretCommand::Import(args) => import(client, args).await,
    }
}

/// Creates the secret; if it exists, writes a new version. `--cas N` skips the create
/// (the caller expects version N to exist) and `--cas 0` skips the update.
async fn put(client: &Client, mut args: PutArgs) -> anyhow::Result<()> {
    let external = args.external_ref.is_some() || args.provider_version.is_some();
    let value =
        if external { Zeroizing::new(String::new()) } else { read_value(args.value.take(), args.stdin).await? };
    let path = args.secret.path.as_str();
    if args.cas.is_none_or(|cas| cas == 0) && (!external || args.external_ref.is_some()) {
        match client.call::<_, SecretCreated>(Method::POST, "/v1/secrets", &create_request(&args, &value)?).await {
            Ok(created) => {
                println!("created {path} version {}", created.version);
                return Ok(());
            }
            Err(e) if args.cas.is_none() && e.api_code() == Some("conflict") => {}
            Err(e) => return Err(e.into()),
        }
    }
    let updated: SecretUpdated =
        client.call(Method::PUT, &Client::secret_url(path), &update_request(&args, &value)?).await.map_err(|e| {
            // `--provider-version` alone only updates: a 404 is then a secret that is not there.
            if args.external_ref.is_none() && args.provider_version.is_some() && e.api_code() == Some("not_found") {
                anyhow::Error::from(e)
                    .context(format!("'{path}' is not an existing secret; create it with --external-ref first"))
            } else {
                explain_update_failure(e, path)
            }
        })?;
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
    let external = args.external_ref.is_some();
    Ok(CreateSecret {
        path: SecretPath::parse(path).map_err(|e| anyhow!("invalid secret path '{path}': {e}"))?,
        value: (!external).then(|| SecretValue::new(value.to_owned())),
        managed_mode: external.then_some(ManagedMode::ExternalReference),
        external_ref: args.external_ref.clone(),
        provider_version_ref: args.provider_version.clone(),
        provider_config_id: args.provider_config.clone(),
        tier,
        description,
        tags,
        allowed_hosts: (!args.allowed_hosts.is_empty()).then(|| args.allowed_hosts.clone()),
        owner: None,
        expires_at: None,
        not_before: None,
        allow_empty: args.allow_empty,
    })
}

fn update_request(args: &PutArgs, value: &str) -> anyhow::Result<UpdateSecret> {
    let (tier, description, tags) = metadata(args);
    let cas = args.cas.map(|cas| i64::try_from(cas).map_err(|_| anyhow!("--cas {cas}: no version is that high")));
    let external = args.external_ref.is_some() || args.provider_version.is_some();
    Ok(UpdateSecret {
        value: (!external).then(|| SecretValue::new(value.to_owned())),
        external_ref: args.external_ref.clone(),
        provider_version_ref: args.provider_version.clone(),
        cas: cas.transpose()?,
        tier,
        description,
        tags,
        allow_empty: args.allow_empty,
        expires_at: None,
        not_before: None,
    })
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

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let filters: Vec<(&str, String)> = [("namespace", args.namespace), ("tag", args.tag), ("status", args.status)]
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
    let rows: Vec<_> = items
        .iter()
        .map(|i| ["path", "version", "tier", "managed_mode", "provider", "status", "updated_at"].map(|k| field(i, k)))
        .collect();
    print_table(["PATH", "VERSION", "TIER", "MODE", "PROVIDER", "STATUS", "UPDATED"], &rows)
}

async fn rotate(client: &Client, mut args: RotateArgs) -> anyhow::Result<()> {
    let external = args.external_ref.is_some() || args.provider_version.is_some();
    let value = if external { None } else { Some(read_value(args.new_value.take(), args.stdin).await?) };
    let path = args.secret.path.as_str();
    let grace = args.grace.unwrap_or(0);
    let grace_period_seconds =
        u32::try_from(grace).map_err(|_| anyhow!("--grace {grace}: the longest grace period is {} s", u32::MAX))?;
    let body = RotateSecret {
        new_value: value.map(|v| SecretValue::new(v.to_string())),
        external_ref: args.external_ref.clone(),
        provider_version_ref: args.provider_version.clone(),
        grace_period_seconds,
        allow_empty: args.allow_empty,
    };
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

async fn versions(client: &Client, args: VersionsArgs) -> anyhow::Result<()> {
    let body: SecretVersions = client.get(&format!("{}/versions", Client::secret_url(&args.secret.path))).await?;
    if args.json {
        return print_json(&as_json(&body));
    }
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
        for rule in &a.signs {
            text.push_str(&format!(
                "{}: sign {} on {} ({})\n",
                escaped(&a.agent),
                escaped(&rule.kind),
                escaped(&rule.host),
                escaped(&rule.role)
            ));
        }
    }
    text
}

async fn status(client: &Client, args: StatusArgs) -> anyhow::Result<()> {
    let path = args.secret.path.as_str();
    let body = PatchSecret { status: Some(args.status.into()), ..PatchSecret::default() };
    let meta: SecretMetadata = client.call(Method::PATCH, &Client::secret_url(path), &body).await?;
    println!("{path} is {}", meta.status.as_str());
    Ok(())
}

/// Previews every page of the config's listing, asks (unless `--yes`), and imports the
/// candidates that are ready at their default paths.
async fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
    let mut candidates = Vec::new();
    let mut next_token = None;
    loop {
        let body = RemoteImportPreview {
            provider_config_id: args.provider_config.clone(),
            query: args.query.clone(),
            page_size: Some(100),
            next_token: next_token.take(),
        };
        let page: RemoteImportCandidates =
            client.call(Method::POST, "/v1/secrets/remote-import/preview", &body).await?;
        candidates.extend(page.candidates);
        match page.next_token {
            Some(t) if candidates.len() < 10_000 => next_token = Some(t),
            _ => break,
        }
    }
    if candidates.is_empty() {
        eprintln!("the provider lists nothing there");
        return Ok(());
    }
    let rows: Vec<_> = candidates
        .iter()
        .map(|c| {
            let v = as_json(c);
            ["status", "path", "external_ref", "existing_path"].map(|k| field(&v, k))
        })
        .collect();
    print_table(["STATUS", "PATH", "EXTERNAL_REF", "EXISTING"], &rows)?;
    let ready: Vec<ImportItem> = candidates
        .iter()
        .filter(|c| c.status == "ready")
        .map(|c| ImportItem {
            external_ref: c.external_ref.clone(),
            path: Some(c.path.clone()),
            description: c.description.clone(),
            tags: None,
        })
        .collect();
    if ready.is_empty() {
        eprintln!("nothing to import: every candidate is a duplicate or a conflict");
        return Ok(());
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("{} secrets are ready to import; run again with --yes to import them", ready.len());
        }
        eprint!("import {} secrets as external references? [y/N] ", ready.len());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing imported");
            return Ok(());
        }
    }
    let mut totals = (0, 0, 0);
    for chunk in ready.chunks(500) {
        let body = RemoteImport { provider_config_id: args.provider_config.clone(), secrets: chunk.to_vec() };
        let done: RemoteImported = client.call(Method::POST, "/v1/secrets/remote-import", &body).await?;
        for r in done.results.iter().filter(|r| r.outcome != "imported") {
            let v = as_json(r);
            eprintln!("{} {}: {}", r.outcome, field(&v, "external_ref"), field(&v, "message"));
        }
        totals = (totals.0 + done.imported, totals.1 + done.skipped, totals.2 + done.errored);
    }
    println!("imported {}, skipped {}, failed {}", totals.0, totals.1, totals.2);
    if totals.2 > 0 {
        bail!("{} secrets could not be imported", totals.2);
    }
    Ok(())
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
    fn put_and_rotate_take_a_reference_instead_of_a_value() {
        let Ok(SecretCommand::Put(args)) =
            parse(&["put", "a/b", "--external-ref", "vault+kv2://secret/a#k", "--provider-config", "pcf_1"])
        else {
            panic!("put --external-ref did not parse")
        };
        let body = create_body(&args, "");
        assert_eq!(body["managed_mode"], "external_reference");
        assert_eq!(
            (&body["external_ref"], &body["provider_config_id"]),
            (&json!("vault+kv2://secret/a#k"), &json!("pcf_1"))
        );
        assert!(body.get("value").is_none(), "{body}");
        let Ok(SecretCommand::Put(args)) = parse(&["put", "a/b", "--provider-version", "3"]) else {
            panic!("put --provider-version did not parse")
        };
        let body = update_body(&args, "");
        assert_eq!(body, json!({"provider_version_ref": "3"}));
        assert!(parse(&["put", "a/b", "v", "--external-ref", "aws-sm://x"]).is_err());
        assert!(parse(&["put", "a/b", "--stdin", "--external-ref", "aws-sm://x"]).is_err());
        assert!(parse(&["rotate", "a/b", "--provider-version", "AWSPREVIOUS"]).is_ok());
        assert!(matches!(
            parse(&["status", "a/b", "disabled"]),
            Ok(SecretCommand::Status(StatusArgs { status: StatusArg::Disabled, .. }))
        ));
        assert!(parse(&["status", "a/b", "paused"]).is_err());
        assert!(parse(&["import", "--provider-config", "pcf_1", "--query", "secret/team", "--yes"]).is_ok());
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
            "not_before": null,
            "managed_mode": "airlock_managed", "status": "active", "provider": null, "provider_config_id": null, "external_ref": null,
            "provider_version_ref": null, "last_rotated_at": null, "last_resolved_at": null, "value": "s3cret",
        });
        assert_eq!(read(whole.clone()).unwrap().value.expose(), "s3cret");
        assert!(read(json!({"path": "a"})).is_err());
        whole["value"] = 5.into();
        assert!(read(whole).is_err());
        assert!(read(json!(["value"])).is_err());
    }
}
