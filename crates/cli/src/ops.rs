//! Commands for operators and packagers: shell completions and man pages (made from the same
//! clap definitions as `--help`), and `custody health`, which asks a server's `/healthz` or
//! `/readyz` (the systemd unit waits for `/readyz` with it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::Global;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write one page per command (custody.1, custody-server.1, ...) into this directory
    /// instead of printing custody(1)
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct HealthArgs {
    /// Ask /readyz (database, key hierarchy, storage) instead of /healthz (process up)
    #[arg(long)]
    ready: bool,
    /// Keep asking for up to this many seconds until the answer is yes
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

/// `custody openapi`: the native API's OpenAPI description on stdout.
pub fn openapi() -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", server::openapi::json()?)?;
    Ok(())
}

/// `custody completions SHELL`: the completion script on stdout.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "custody", &mut stdout);
    Ok(())
}

/// `custody man`: custody(1) on stdout, or every command's page into `--out`.
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<()> {
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            Ok(())
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .context("writing the man page")
        }
    }
}

/// `custody health [--ready] [--wait SECS]`: exit 0 when the server says yes, 1 otherwise.
/// Needs `--server` and `--ca` (no token: the routes are unauthenticated).
pub async fn health(args: &HealthArgs, global: &Global) -> anyhow::Result<()> {
    let client = crate::client::Client::unauthenticated(global)?;
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let answer = client.probe(path).await;
        match answer {
            Ok(200) => {
                println!("{} {path}: yes", client.base());
                return Ok(());
            }
            Ok(status) if Instant::now() >= deadline => {
                anyhow::bail!("{} {path}: no (HTTP {status})", client.base())
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{} {path}", client.base())));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
