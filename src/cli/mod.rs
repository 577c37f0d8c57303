//! The `airlock` command line: the server's own commands and the operator CLI, a thin
//! client of the HTTP API. `anyhow` lives here, at the edge, and nowhere else.

mod access;
pub mod audit;
mod ca;
mod dev;
mod doctor;
mod k8s;
mod logging;
mod output;
mod policy;
mod provider;
mod proxy;
mod run;
pub mod secret;
mod server;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::Client;

#[derive(Parser, Debug)]
#[command(name = "airlock", version, about = "Keeps credentials away from AI agents")]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    /// PEM file of the CA (or self-signed certificate) that an https:// central API's
    /// certificate is checked against, besides the system's roots
    #[arg(long, env = "AIRLOCK_SERVER_CA", global = true)]
    server_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The quickstart: server, demo proxy and demo upstream in ./.airlock, one command
    Dev(dev::DevCommand),
    /// Run the central secret API, or initialise / rekey its data
    Server(server::ServerArgs),
    /// Run the sidecar proxy for one agent
    Proxy(proxy::ProxyCommand),
    /// Run a command with an in-process proxy and the proxy/CA environment set
    Run(run::RunCommand),
    /// Manage secrets
    Secret {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: secret::SecretCommand,
    },
    /// Register agents (their power comes from their policy file)
    Agent {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: access::AgentCommand,
    },
    /// Mint and revoke scoped tokens
    Token {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: access::TokenCommand,
    },
    /// Decide token requests that a policy sends for approval
    Approval {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: access::ApprovalCommand,
    },
    /// Configure external secret stores (OpenBao/Vault, AWS Secrets Manager)
    Provider {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: provider::ProviderCommand,
    },
    /// Read and verify the audit trail
    Audit {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: audit::AuditCommand,
    },
    /// The proxy's local CA, which agents must trust for HTTPS through it
    Ca {
        #[command(subcommand)]
        cmd: ca::CaCommand,
    },
    /// Check policy files offline, or make the server reload its policies
    Policy {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: policy::PolicyCommand,
    },
    /// Check this setup, one line a check, each failure with its fix
    ///
    /// Server reachable (TLS trusted), key valid and whose, policy loaded for the agent, proxy
    /// ready, its CA in the bundles SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and
    /// CURL_CA_BUNDLE name, clock within 30 s of the server's. Exits 1 when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Kubernetes: add the Airlock proxy to workload manifests
    K8s {
        #[command(subcommand)]
        cmd: k8s::K8sCommand,
    },
    /// Print a shell completion script: airlock completions bash > /etc/bash_completion.d/airlock
    /// (zsh: into a directory of $fpath as _airlock; fish: ~/.config/fish/completions/airlock.fish)
    Completions {
        /// bash, zsh, fish (also elvish, powershell)
        shell: clap_complete::Shell,
    },
}

/// Where the central API is and what credential to present.
#[derive(Args)]
struct ConnArgs {
    /// Central API address
    #[arg(long, env = "AIRLOCK_ADDR", default_value = "http://127.0.0.1:7878", global = true)]
    addr: String,
    /// API key or token (prefer the environment variable: flags show up in `ps`)
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl std::fmt::Debug for ConnArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnArgs")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ConnArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let token = self.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no credential: set AIRLOCK_TOKEN (or pass --token) to an API key or token")
        })?;
        Ok(Client::new(&self.addr, token)?)
    }
}

/// The command line as parsed: the derived [`Cli`] with an environment variable for every
/// flag that names none itself (see [`with_env`]).
pub fn command() -> clap::Command {
    with_env(Cli::command(), "AIRLOCK")
}

/// Gives every flag without an environment variable one, `AIRLOCK_<SUBCOMMAND…>_<FLAG>`
/// (`airlock secret ls --limit` reads `AIRLOCK_SECRET_LS_LIMIT`), shown in `--help` by name
/// (values hidden: some are credentials). Positional arguments and `--json` get none.
/// Flags shared across commands name theirs where they are declared (`AIRLOCK_ADDR`,
/// `AIRLOCK_TOKEN`, the server's and proxy's settings), and keep it.
fn with_env(cmd: clap::Command, prefix: &str) -> clap::Command {
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    let cmd = cmd.mut_args(|arg| {
        let skipped = arg.is_positional() || arg.get_env().is_some() || arg.get_id() == "json";
        match arg.get_long() {
            Some(long) if !skipped => {
                let name = format!("{prefix}_{}", upper(long));
                arg.env(name).hide_env_values(true)
            }
            _ => arg,
        }
    });
    cmd.mut_subcommands(|sub| {
        let prefix = format!("{prefix}_{}", upper(sub.get_name()));
        with_env(sub, &prefix)
    })
}

pub fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("error: {}", describe(&e));
        return ExitCode::from(2);
    }
    crate::install_crypto_provider();
    if let Some(path) = &cli.server_ca
        && let Err(e) = crate::trust::trust_server_ca(path)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many libraries end their message
/// with their source's, which printing the chain (`{:#}`) would repeat.
pub(crate) fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(cmd) => return run::run(cmd).await,
        Command::Policy { cmd: policy::PolicyCommand::Check { path, json }, .. } => {
            return Ok(match policy::check(&path, json) {
                policy::Checked::Valid => ExitCode::SUCCESS,
                policy::Checked::Invalid => ExitCode::FAILURE,
            });
        }
        Command::Doctor(args) => {
            return Ok(if doctor::run(args).await? { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut self::command(), "airlock", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    dispatch(command).await.map(|()| ExitCode::SUCCESS)
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(_) | Command::Completions { .. } | Command::Doctor(_) => unreachable!("handled by run"),
        Command::Policy { conn, cmd } => match cmd {
            policy::PolicyCommand::Reload => policy::reload(&conn.client()?).await,
            policy::PolicyCommand::Check { .. } => unreachable!("handled by run"),
        },
        Command::Server(args) => server::run(args).await,
        Command::Dev(cmd) => dev::run(cmd).await,
        Command::Proxy(cmd) => proxy::run(cmd).await,
        Command::Secret { conn, cmd } => secret::run(cmd, &conn.client()?).await,
        Command::Audit { conn, cmd } => audit::run(cmd, &conn.client()?).await,
        Command::Agent { conn, cmd } => access::agent(cmd, &conn.client()?).await,
        Command::Token { conn, cmd } => access::token(cmd, &conn.client()?).await,
        Command::Approval { conn, cmd } => access::approval(cmd, &conn.client()?).await,
        Command::Provider { conn, cmd } => provider::run(cmd, &conn.client()?).await,
        Command::Ca { cmd } => ca::run(cmd),
        Command::K8s { cmd } => k8s::run(cmd),
    }
}

/// Installs the process's Prometheus recorder (`None`, logged, if one is already installed)
/// and keeps it drained: histogram samples wait in the recorder until upkeep folds them into
/// their summaries, so without it memory grows with every request.
pub(crate) fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{command, describe};

    /// Walks every (sub)command: each flag but help, version and --json has an environment
    /// variable, named AIRLOCK_…_<FLAG>, and one variable means one flag wherever it appears.
    #[test]
    fn every_flag_has_an_environment_variable_named_after_it() {
        fn walk(
            cmd: &clap::Command,
            path: &str,
            missing: &mut Vec<String>,
            uses: &mut BTreeMap<String, BTreeSet<String>>,
        ) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || matches!(id, "help" | "version" | "json") {
                    continue;
                }
                let long = arg.get_long().unwrap_or(id).to_owned();
                match arg.get_env() {
                    Some(env) => {
                        let env = env.to_str().expect("a variable name is UTF-8").to_owned();
                        uses.entry(env).or_default().insert(long);
                    }
                    None => missing.push(format!("{path} --{long}")),
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing, uses);
            }
        }
        let mut cmd = command();
        cmd.build();
        let (mut missing, mut uses) = (Vec::new(), BTreeMap::new());
        walk(&cmd, "airlock", &mut missing, &mut uses);
        assert!(missing.is_empty(), "flags without an environment variable: {missing:#?}");
        // Names that predate the rule, kept: the central API's address for clients and the
        // proxy alike, and the log filter.
        let aliases: BTreeMap<&str, &[&str]> =
            [("AIRLOCK_ADDR", &["addr", "server"][..]), ("AIRLOCK_LOG", &["log-level"])].into();
        for (env, longs) in &uses {
            if let Some(allowed) = aliases.get(env.as_str()) {
                assert!(longs.iter().all(|l| allowed.contains(&l.as_str())), "{env} is used by {longs:?}");
                continue;
            }
            assert_eq!(longs.len(), 1, "{env} is used by different flags: {longs:?}");
            let long = longs.first().unwrap();
            let suffix = format!("_{}", long.to_uppercase().replace('-', "_"));
            assert!(env.starts_with("AIRLOCK_") && env.ends_with(&suffix), "--{long} reads {env}");
        }
        assert!(uses.len() > 60, "{} variables: the walk missed commands", uses.len());
    }

    #[test]
    fn help_shows_the_environment_variable() {
        let shown = command().try_get_matches_from(["airlock", "secret", "put", "--help"]).unwrap_err();
        assert_eq!(shown.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = shown.to_string();
        assert!(help.contains("[env: AIRLOCK_SECRET_PUT_TIER]"), "{help}");
        assert!(help.contains("[env: AIRLOCK_TOKEN]"), "{help}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error communicating with database: {0}")]
    struct Wrapping(#[source] std::io::Error);

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let e = anyhow::Error::new(Wrapping(io)).context("cannot open the database");
        assert_eq!(
            describe(&e),
            "cannot open the database: error communicating with database: invalid peer certificate: UnknownIssuer"
        );
        let e = anyhow::anyhow!("no such file").context("cannot read policies/a.toml");
        assert_eq!(describe(&e), "cannot read policies/a.toml: no such file");
    }
}
