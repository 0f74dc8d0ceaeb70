//! The `custody` command.
//!
//! One binary for every role: `custody server` runs the service; every other subcommand is a
//! client of its HTTPS API. Client settings come from flags or the environment
//! (`CUSTODY_SERVER`, `CUSTODY_TOKEN`, `CUSTODY_CA`); the token is better passed by
//! environment, where it does not show in the process list.
//!
//! This file only parses the command line and dispatches: each command group is a module
//! with its clap arguments and its `run`. Every body exchanged with the server is a type of
//! the `wire` crate (see [`client::Client`]).
#![forbid(unsafe_code)]

mod access;
mod agent;
mod args;
mod audit;
mod budget;
mod certificate;
mod client;
mod delete;
mod fetch;
mod group;
mod host;
mod init;
mod models;
mod ops;
mod output;
mod policy;
mod private;
mod server;
mod token;
mod upload;
mod vendor;
mod wipe;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::Output;

#[derive(Parser)]
#[command(
    name = "custody",
    version,
    about = "Holds pre-release model weights in trust"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Settings every client command shares.
#[derive(Args)]
struct Global {
    /// Server URL, for example https://custody.example:8443
    #[arg(long, env = "CUSTODY_SERVER", global = true)]
    server: Option<String>,
    /// Bearer token (prefer the environment variable)
    #[arg(long, env = "CUSTODY_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file with the server certificate (or its CA) to trust
    #[arg(long, env = "CUSTODY_CA", global = true)]
    ca: Option<PathBuf>,
    /// The exclusive host's client certificate (PEM), from `custody host enroll`
    #[arg(long, env = "CUSTODY_HOST_CERT", global = true)]
    host_cert: Option<PathBuf>,
    /// The exclusive host's private key (PEM), from `custody host csr`
    #[arg(long, env = "CUSTODY_HOST_KEY", global = true)]
    host_key: Option<PathBuf>,
    /// On an exclusive host: the file where `fetch` notes its copies for `wipe` (default
    /// $XDG_STATE_HOME/custody/fetched.json or ~/.local/state/custody/fetched.json)
    #[arg(long, env = "CUSTODY_HOST_STATE", global = true)]
    host_state: Option<PathBuf>,
    /// Print results as JSON, for scripts
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTPS only)
    Server(server::ServerArgs),
    /// On the server machine, when no operator token is left: write a new single-use
    /// operator bootstrap token to a file (mode 0600), recorded in the audit log
    RecoverOperator(server::RecoverArgs),
    /// Make the service identity once, for several server instances (see `identity_dir`)
    Init(init::InitArgs),
    /// Manage vendors (operator)
    #[command(subcommand)]
    Vendor(vendor::VendorCommand),
    /// Manage tokens (operator); rotate your own
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Who your token says you are, where it counts, and what waits for approval
    Whoami,
    /// Upload a model folder as one immutable revision (vendor admin)
    Upload(upload::UploadArgs),
    /// List models, or a model's revisions
    Ls(models::LsArgs),
    /// Download a revision's files, verifying each file's SHA-256
    Fetch(fetch::FetchArgs),
    /// Show a model's egress budget and its use, or set it (vendor admin): bytes per host and
    /// per person per window, how many hosts may hold it, fetches per host at once
    Budget(budget::BudgetArgs),
    #[command(flatten)]
    Access(access::AccessCommand),
    /// A vendor's user groups (vendor admin): grants may name a group
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Exclusive hosts: key and signing request, enrollment, revocation
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Check a policy directory (schema.cedarschema and *.cedar) offline, strictly
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    #[command(flatten)]
    Delete(delete::DeleteCommand),
    /// Run the host agent on an exclusive server: Hugging Face clients on this machine use
    /// HF_ENDPOINT=http://LISTEN; it forwards to the server with the host certificate
    Agent(agent::AgentArgs),
    /// The audit log: its key, checkpoints, proofs, export and offline verification
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// What happened to a vendor's models, from the audit log: fetches, refusals, grants,
    /// uploads, deletions, each with its log index (the vendor's admins and auditors)
    Activity(audit::ActivityArgs),
    /// Follow a vendor's events as they are committed, resumable from a log index (the
    /// vendor's admins and auditors)
    Watch(audit::WatchArgs),
    /// A vendor's webhook: its events sent to an HTTPS receiver, signed (vendor admin)
    #[command(subcommand)]
    Webhook(audit::WebhookCommand),
    /// Verify a deletion certificate offline (exit 0 valid, 1 invalid, 2 unusable input)
    VerifyCertificate(certificate::VerifyArgs),
    /// On an exclusive host: delete the local copies of models that have been deleted (what
    /// `custody fetch` wrote, and the Hugging Face cache) and confirm it to the server.
    /// Authenticated by the host certificate alone; no token needed
    Wipe(wipe::WipeArgs),
    /// Run a witness of an audit log (C2SP tlog-witness): it cosigns each checkpoint that
    /// extends the last one it cosigned and refuses a rolled-back or forked log
    Witness(witness::WitnessArgs),
    /// Ask a server whether it is up (/healthz) or ready (/readyz); exit 0 yes, 1 no. No
    /// token needed
    Health(ops::HealthArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completions(ops::CompletionsArgs),
    /// Print the man page custody(1), or write every command's page into a directory
    Man(ops::ManArgs),
    /// Print the OpenAPI 3.1 description of the native API (as the server serves it at
    /// /v1/openapi.json)
    Openapi,
}

/// The client settings of [`Global`] (all but `--json`).
const CLIENT_FLAGS: [&str; 6] = [
    "server",
    "token",
    "ca",
    "host_cert",
    "host_key",
    "host_state",
];

/// Whether the command line runs a command that talks to no server (`server`, `init`,
/// `recover-operator`, `policy`, `verify-certificate`, `audit verify`, `host csr`, or help
/// about one): its help then leaves the client settings out.
fn offline(args: &[String]) -> bool {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| !a.starts_with('-') && *a != "help")
        .take(2)
        .collect();
    match words.as_slice() {
        [first, ..]
            if [
                "server",
                "init",
                "recover-operator",
                "policy",
                "verify-certificate",
                "completions",
                "man",
            ]
            .contains(first) =>
        {
            true
        }
        ["audit", "verify"] | ["host", "csr"] => true,
        _ => false,
    }
}

/// The command line; see [`offline`].
fn parse() -> Cli {
    let args: Vec<String> = std::env::args().collect();
    let mut command = <Cli as clap::CommandFactory>::command();
    if offline(&args) {
        for flag in CLIENT_FLAGS {
            command = command.mut_arg(flag, |a| a.hide(true));
        }
    }
    let matches = command.get_matches_from(&args);
    match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

fn main() -> ExitCode {
    let Cli { global, command } = parse();
    let out = Output::new(global.json);
    let (global, out) = (&global, &out);
    match command {
        Command::Server(args) => {
            server::limit_malloc_arenas();
            block_on(out, server::run(args))
        }
        Command::RecoverOperator(args) => block_on(out, server::recover(args, out)),
        Command::Init(args) => finish(out, init::run(&args, out)),
        Command::Vendor(command) => block_on(out, vendor::run(command, global, out)),
        Command::Token(command) => block_on(out, token::run(command, global, out)),
        Command::Whoami => block_on(out, token::whoami(global, out)),
        Command::Upload(args) => block_on(out, upload::run(args, global, out)),
        Command::Ls(args) => block_on(out, models::run(args, global, out)),
        Command::Fetch(args) => block_on(out, fetch::run(args, global, out)),
        Command::Budget(args) => block_on(out, budget::run(args, global, out)),
        Command::Access(command) => block_on(out, access::run(command, global, out)),
        Command::Group(command) => block_on(out, group::run(command, global, out)),
        Command::Host(command) => block_on(out, host::run(command, global, out)),
        Command::Policy(command) => finish(out, policy::run(command, out)),
        Command::Delete(command) => block_on(out, delete::run(command, global, out)),
        Command::Agent(args) => block_on(out, agent::run(args, global)),
        // Offline and synchronous, with its own exit codes: no runtime, no server settings.
        Command::Audit(audit::AuditCommand::Verify(args)) => audit::verify(&args, out),
        Command::Activity(args) => block_on(out, audit::activity(&args, global, out)),
        Command::Watch(args) => block_on(out, audit::watch(&args, global, out)),
        Command::Webhook(command) => block_on(out, audit::webhook(command, global, out)),
        Command::Audit(audit::AuditCommand::Online(command)) => {
            block_on(out, audit::run(command, global, out))
        }
        Command::VerifyCertificate(args) => certificate::run(&args, out),
        Command::Wipe(args) => block_on(out, wipe::run(args, global, out)),
        Command::Witness(args) => block_on(out, witness::run(args)),
        Command::Health(args) => block_on(out, ops::health(&args, global)),
        Command::Completions(args) => finish(out, ops::completions(&args, clap_command())),
        Command::Man(args) => finish(out, ops::man(&args, clap_command())),
        Command::Openapi => finish(out, ops::openapi()),
    }
}

/// The whole command tree, as `--help` shows it (for completions and man pages).
fn clap_command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs a command on an async runtime and reports how it ended.
fn block_on(out: &Output, command: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    // Few blocking threads: each one that allocates gets its own allocator arena, and the
    // server's blocking work (sealing, opening, file I/O) needs only a handful.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&anyhow::anyhow!("starting the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    finish(out, runtime.block_on(command))
}

fn finish(out: &Output, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            if e.downcast_ref::<delete::WaitingForApproval>().is_some() {
                ExitCode::from(delete::WaitingForApproval::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn client_settings_are_left_out_of_offline_commands_only() {
        let line = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
        for command in [
            "custody server --data-dir d",
            "custody --json policy validate",
            "custody help verify-certificate",
            "custody audit verify b --log-key k",
            "custody host csr --name h --out d",
            "custody recover-operator --help",
        ] {
            assert!(super::offline(&line(command)), "{command}");
        }
        for command in [
            "custody fetch acme/m --out d",
            "custody audit export --out d",
            "custody host enroll f",
            "custody help",
            "custody",
        ] {
            assert!(!super::offline(&line(command)), "{command}");
        }
    }

    /// Every argument of every command says what it is in `--help` (issue 19).
    #[test]
    fn every_argument_is_described() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "custody", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a description: {missing:#?}"
        );
    }
}
