//! `custody server`: runs the service.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::output::init_logging_as;

#[derive(Args)]
pub struct ServerArgs {
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
    /// Seconds a request waiting for a vendor's approval stays open (default: 7 days)
    #[arg(long)]
    pending_ttl_secs: Option<i64>,
    /// Log format on stderr: text (for people) or json (one object a line, for pipelines)
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Address of the Prometheus metrics listener, plain HTTP (default 127.0.0.1:9464)
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Serve no metrics (no second listener; wins over --metrics-listen)
    #[arg(long)]
    no_metrics: bool,
}

/// glibc's allocator gives each thread that allocates its own arena (up to 8 per core) and
/// keeps freed transfer buffers there, so the server's resident memory grew with the number
/// of threads that had touched a buffer (measured moving 2 GiB: 108-140 MiB; with two arenas
/// 79 MiB). The arena limit is read only at process start, so the server re-executes itself
/// once with it set. `exec` keeps the process id.
pub fn limit_malloc_arenas() {
    #[cfg(target_os = "linux")]
    {
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
}

/// The installation's configuration: the file, with the data directory and database flags
/// over it.
fn installation(
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<server::ServerConfig> {
    let mut config = match (config, &data_dir) {
        (Some(path), _) => server::ServerConfig::from_toml_file(path)?,
        (None, Some(dir)) => server::ServerConfig::new(dir.clone()),
        (None, None) => anyhow::bail!("give --data-dir DIR or --config FILE"),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = database_url {
        config.database_url = Some(url);
    }
    Ok(config)
}

#[derive(Args)]
pub struct RecoverArgs {
    /// The server's data directory (as given to `custody server`)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's TOML configuration file (as given to `custody server`)
    #[arg(long)]
    config: Option<PathBuf>,
    /// The server's database, when not in the data directory: sqlite://PATH or postgres://...
    #[arg(long, env = "CUSTODY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where to write the token (default: the bootstrap token file of the installation); the
    /// file must not exist yet
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `custody recover-operator --json` prints (never the token itself: it is in the file).
#[derive(serde::Serialize)]
struct RecoveredReport {
    token_file: PathBuf,
    token_id: String,
    expires_at: String,
}

/// `custody recover-operator`: on the server machine, a new single-use operator bootstrap
/// token when no operator token is left (see `server::recover_operator`).
pub async fn recover(args: RecoverArgs, out: &crate::output::Output) -> anyhow::Result<()> {
    let config = installation(args.config.as_deref(), args.data_dir, args.database_url)?;
    let local_user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let recovered = server::recover_operator(&config, args.out, &local_user).await?;
    let expires_at = crate::args::rfc3339(recovered.expires_at);
    let report = RecoveredReport {
        token_file: recovered.path,
        token_id: recovered.token_id,
        expires_at,
    };
    out.result(&report, || {
        format!(
            "operator bootstrap token {} written to {} (readable by this user only; single \
             use: it only creates a named operator token, with `custody token create --role \
             operator --name NAME`; it expires at {}). The audit log records this recovery.",
            report.token_id,
            report.token_file.display(),
            report.expires_at
        )
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = installation(args.config.as_deref(), args.data_dir, args.database_url)?;
    if let Some(format) = &args.log_format {
        config.log_format = format.parse().map_err(anyhow::Error::msg)?;
    }
    init_logging_as(config.log_format == server::LogFormat::Json);
    if let Some(listen) = args.metrics_listen {
        config.metrics.listen = listen;
        config.metrics.enabled = true;
    }
    if args.no_metrics {
        config.metrics.enabled = false;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(ttl) = args.upload_ttl_secs {
        config.upload_ttl_secs = ttl;
    }
    if let Some(dir) = args.policy_dir {
        config.policy_dir = Some(dir);
    }
    if let Some(ttl) = args.pending_ttl_secs {
        anyhow::ensure!(ttl > 0, "--pending-ttl-secs must be positive");
        config.pending_ttl_secs = ttl;
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
        if let Some((path, expires_at)) = &started.bootstrap_token {
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(*expires_at).unwrap_or(0));
            let _ = writeln!(
                stdout,
                "custody: operator bootstrap token written to {} (readable by this user only; \
                 single use: it only creates a named operator token, with \
                 `custody token create --role operator --name NAME`; it expires at {})",
                path.display(),
                humantime::format_rfc3339_seconds(at)
            );
        }
        if let Some(metrics) = started.metrics_listen {
            let _ = writeln!(stdout, "custody: metrics on http://{metrics}/metrics");
        }
        let _ = writeln!(stdout, "custody: listening on https://{}", started.listen);
        let _ = stdout.flush();
    })
    .await
    .context("server stopped")
}
