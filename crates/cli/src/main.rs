//! The `custody` command.
//!
//! One binary for every role: `custody server` runs the service; every other subcommand is a
//! client of its HTTPS API. Client settings come from flags or the environment
//! (`CUSTODY_SERVER`, `CUSTODY_TOKEN`, `CUSTODY_CA`); the token is better passed by
//! environment, where it does not show in the process list.
#![forbid(unsafe_code)]

mod access;
mod agent;
mod audit;
mod certificate;
mod client;
mod delete;
mod fetch;
mod init;
mod output;
mod upload;
mod wipe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use types::{RepoRef, VendorName};

use crate::client::Client;

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
    Server(ServerArgs),
    /// Make the service identity once, for several server instances (see `identity_dir`)
    Init(init::InitArgs),
    /// Manage vendors (operator)
    #[command(subcommand)]
    Vendor(VendorCommand),
    /// Manage tokens (operator)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Upload a model folder as one immutable revision (vendor admin)
    Upload {
        /// Local folder in Hugging Face layout
        dir: PathBuf,
        /// VENDOR/MODEL
        model: String,
        #[arg(long, short, default_value = "")]
        message: String,
        /// Upload what you made from COMMIT of the same model (converted or quantized
        /// weights, test logs): a revision of the model, shredded with it (committers need a
        /// grant on the model)
        #[arg(long, value_name = "COMMIT")]
        derived_from: Option<String>,
    },
    /// List models, or a model's revisions
    Ls {
        /// VENDOR or VENDOR/MODEL
        target: Option<String>,
    },
    /// Download a revision's files, verifying each file's SHA-256
    Fetch {
        /// VENDOR/MODEL or VENDOR/MODEL@COMMIT
        model: String,
        #[arg(long)]
        out: PathBuf,
    },
    #[command(flatten)]
    Access(access::AccessCommand),
    #[command(flatten)]
    Delete(delete::DeleteCommand),
    /// Run the host agent on an exclusive server: Hugging Face clients on this machine use
    /// HF_ENDPOINT=http://LISTEN; it forwards to the server with the host certificate
    Agent {
        /// Loopback address to listen on, for example 127.0.0.1:8090
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The audit log: its key, checkpoints, proofs, export and offline verification
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Verify a deletion certificate offline (exit 0 valid, 1 invalid, 2 unusable input)
    VerifyCertificate(certificate::VerifyArgs),
    /// On an exclusive host: delete the local copies of models that have been deleted (what
    /// `custody fetch` wrote, and the Hugging Face cache) and confirm it to the server.
    /// Authenticated by the host certificate alone; no token needed
    Wipe {
        /// Show what would be removed; remove nothing, confirm nothing
        #[arg(long)]
        dry_run: bool,
        /// Hugging Face cache folder to clean (default: HF_HUB_CACHE, HF_HOME/hub or
        /// ~/.cache/huggingface/hub)
        #[arg(long)]
        hf_cache: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// Data directory; created with the embedded default on first start
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML configuration file (see deploy/custody.toml); flags override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// sqlite://PATH or postgres://... (default: SQLite inside the data directory)
    #[arg(long, env = "CUSTODY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Seconds an uncommitted upload is kept before its parts are removed
    #[arg(long)]
    upload_ttl_secs: Option<i64>,
    /// Cedar policy directory to use instead of the built-in policies (strictly validated)
    #[arg(long)]
    policy_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Create a vendor
    Create { name: String },
    /// List vendors
    Ls,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        vendor: Option<String>,
        /// Who the token is for (grants name this user)
        #[arg(long)]
        name: String,
        /// Lifetime such as 30d or 12h
        #[arg(long)]
        expires_in: Option<humantime_arg::Duration>,
    },
    #[command(flatten)]
    Admin(access::TokenAdmin),
}

mod humantime_arg {
    /// A duration flag like `30d`, parsed without pulling a date library into the CLI.
    #[derive(Clone, Copy)]
    pub struct Duration(pub u64);

    impl std::str::FromStr for Duration {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (number, unit) =
                s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = number
                .parse()
                .map_err(|_| format!("invalid duration {s:?}"))?;
            let scale = match unit {
                "s" | "" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return Err(format!("invalid duration unit in {s:?} (use s, m, h or d)")),
            };
            n.checked_mul(scale)
                .map(Duration)
                .ok_or_else(|| "duration too long".into())
        }
    }
}

/// glibc's allocator gives each thread that allocates its own arena (up to 8 per core) and
/// keeps freed transfer buffers there, so the server's resident memory grew with the number
/// of threads that had touched a buffer (measured moving 2 GiB: 108-140 MiB; with two arenas
/// 79 MiB). The arena limit is read only at process start, so the server re-executes itself
/// once with it set. `exec` keeps the process id.
#[cfg(target_os = "linux")]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    // Only reached when exec failed: run on with the default allocator settings.
    eprintln!("custody: could not limit allocator arenas ({error}); continuing");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(target_os = "linux")]
    if matches!(cli.command, Command::Server(_)) {
        limit_malloc_arenas();
    }
    let output = Output::new(cli.global.json);
    // Offline and synchronous, with its own exit codes: no runtime, no server settings.
    if let Command::VerifyCertificate(args) = &cli.command {
        return certificate::run(args, &output);
    }
    if let Command::Audit(audit::AuditCommand::Verify(args)) = &cli.command {
        return audit::verify(args, &output);
    }
    // Few blocking threads: each one that allocates gets its own allocator arena, and the
    // server's blocking work (sealing, opening, file I/O) needs only a handful.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output.error(&anyhow::anyhow!("starting the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output.error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &Output) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Server(args) => run_server(args).await,
        Command::Init(args) => init::run(&args, out),
        Command::Vendor(VendorCommand::Create { name }) => {
            let name = VendorName::parse(&name)?;
            let client = Client::from_settings(&global)?;
            let v = client
                .post_json("/v1/vendors", &json!({ "name": name }))
                .await?;
            out.result(&v, || format!("created vendor {name}"));
            Ok(())
        }
        Command::Vendor(VendorCommand::Ls) => {
            let client = Client::from_settings(&global)?;
            let v = client.get_json("/v1/vendors").await?;
            out.result(&v, || {
                output::lines(&v["vendors"], |x| x.as_str().unwrap_or("").to_owned())
            });
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            role,
            vendor,
            name,
            expires_in,
        }) => {
            let client = Client::from_settings(&global)?;
            let v = client
                .post_json(
                    "/v1/tokens",
                    &json!({
                        "role": role, "vendor": vendor, "name": name,
                        "expires_in_secs": expires_in.map(|d| d.0),
                    }),
                )
                .await?;
            // The token itself goes to stdout alone, so `$(custody token create …)` captures it.
            out.result(&v, || v["token"].as_str().unwrap_or("").to_owned());
            Ok(())
        }
        Command::Upload {
            dir,
            model,
            message,
            derived_from,
        } => {
            let repo = RepoRef::parse(&model)?;
            let client = Client::from_settings(&global)?;
            let done = upload::upload(&client, &dir, &repo, &message, derived_from.as_deref(), out)
                .await?;
            out.result(&done, || done["commit"].as_str().unwrap_or("").to_owned());
            Ok(())
        }
        Command::Access(command) => access::run(command, &global, out).await,
        Command::Audit(command) => audit::run(command, &global, out).await,
        Command::Wipe { dry_run, hf_cache } => {
            let done = wipe::wipe(&global, &wipe::WipeArgs { dry_run, hf_cache }, out).await?;
            out.result(&done, || wipe::human(&done));
            Ok(())
        }
        Command::Delete(command) => delete::run(command, &global, out).await,
        Command::VerifyCertificate(_) => {
            anyhow::bail!("verify-certificate runs before the async runtime starts")
        }
        Command::Agent { listen } => {
            init_logging();
            agent::run(listen, &global).await
        }
        Command::Token(TokenCommand::Admin(command)) => {
            access::run_token_admin(command, &global, out).await
        }
        Command::Ls { target } => {
            let client = Client::from_settings(&global)?;
            match target.as_deref() {
                Some(t) if t.contains('/') => {
                    let repo = RepoRef::parse(t)?;
                    let v = client.get_json(&format!("/v1/models/{repo}")).await?;
                    out.result(&v, || {
                        output::lines(&v["revisions"], |r| {
                            let derived = r["derived_from"]
                                .as_str()
                                .map(|c| format!("  (derived from {c})"))
                                .unwrap_or_default();
                            format!(
                                "{}  {}  {}{derived}",
                                r["commit"].as_str().unwrap_or(""),
                                r["created_by"].as_str().unwrap_or(""),
                                r["message"].as_str().unwrap_or("")
                            )
                        })
                    });
                }
                vendor => {
                    let vendor = vendor.map(VendorName::parse).transpose()?;
                    let path = match &vendor {
                        Some(v) => format!("/v1/models?vendor={v}"),
                        None => "/v1/models".to_owned(),
                    };
                    let v = client.get_json(&path).await?;
                    out.result(&v, || {
                        output::lines(&v["models"], |m| {
                            format!(
                                "{}  {}",
                                m["id"].as_str().unwrap_or(""),
                                m["latest"].as_str().unwrap_or("(no revision)")
                            )
                        })
                    });
                }
            }
            Ok(())
        }
        Command::Fetch { model, out: dir } => {
            let (name, rev) = match model.split_once('@') {
                Some((n, r)) => (n, r),
                None => (model.as_str(), "main"),
            };
            let repo = RepoRef::parse(name)?;
            let client = Client::from_settings(&global)?;
            let record = wipe::fetch_record(&global, &client)?;
            let done = fetch::fetch(&client, &repo, rev, &dir, record.as_ref(), out).await?;
            out.result(&done, || {
                format!(
                    "fetched {} files of {}@{} into {}",
                    done["files"].as_array().map_or(0, Vec::len),
                    repo,
                    done["commit"].as_str().unwrap_or(""),
                    dir.display()
                )
            });
            Ok(())
        }
    }
}

/// Logs to stderr, filtered by `CUSTODY_LOG` (default `info`): for the long-running commands.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let mut config = match (&args.config, &args.data_dir) {
        (Some(path), _) => server::ServerConfig::from_toml_file(path)?,
        (None, Some(dir)) => server::ServerConfig::new(dir.clone()),
        (None, None) => anyhow::bail!("give --data-dir DIR or --config FILE"),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = args.database_url {
        config.database_url = Some(url);
    }
    if let Some(ttl) = args.upload_ttl_secs {
        config.upload_ttl_secs = ttl;
    }
    if let Some(dir) = args.policy_dir {
        config.policy_dir = Some(dir);
    }
    server::run(config, |started| {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        // Printed to stdout, line by line, for the operator and for scripts; never logged.
        let _ = writeln!(
            stdout,
            "custody: certificate {}",
            started.cert_path.display()
        );
        let _ = writeln!(
            stdout,
            "custody: certificate fingerprint {}",
            started.fingerprint
        );
        for notice in &started.notices {
            let _ = writeln!(stdout, "custody: {notice}");
        }
        if let Some(token) = &started.bootstrap_token {
            let _ = writeln!(
                stdout,
                "custody: operator bootstrap token (shown once, store it now): {token}"
            );
        }
        let _ = writeln!(stdout, "custody: listening on https://{}", started.listen);
        let _ = stdout.flush();
    })
    .await
    .context("server stopped")
}
