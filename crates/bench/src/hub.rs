//! `custody-bench hub`: the Hugging Face path against `custody fetch`, in one run.
//!
//! One custody server (filesystem backend), an enrolled exclusive host, and a model of one
//! large file plus a small `config.json`. Timed: `custody fetch` of the model, and `hf download
//! acme/MODEL --local-dir DIR` (huggingface_hub's command, from `$CUSTODY_TEST_VENV`) through
//! `custody agent`, which presents the host certificate, as tests/e2e/hub.rs sets it up
//! (`HF_ENDPOINT` is the agent, `HF_TOKEN` the committer's custody token). Then, to see where
//! the Hugging Face path's time goes, one stream of the large file with curl into /dev/null:
//! through the agent, and straight from the server with the host certificate (no agent). Each
//! row reports the CPU the server, the agent and the client used over its transfer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::procs::{self, Direction, Server, Timed};
use crate::s3::{Custody, children_cpu_time, mbps, scratch_dir, with_cpu};
use crate::{file_len, write_data};

const MIB: u64 = 1 << 20;
const MODEL: &str = "acme/hubbench";
const FILE: &str = "model.safetensors";

#[derive(clap::Args)]
pub struct HubArgs {
    /// Size of the model's large file, in MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Scratch directory; a temporary folder is made inside it and removed at the end.
    /// Needs about 3x the size free.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: `custody` beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
    /// The Python venv with huggingface_hub's `hf` (default: $CUSTODY_TEST_VENV, else .venv
    /// at the workspace root)
    #[arg(long)]
    venv: Option<PathBuf>,
}

pub fn run(args: HubArgs) -> anyhow::Result<()> {
    if args.size_mib < 64 {
        bail!("--size-mib must be at least 64 (where custody fetch switches to ranges)");
    }
    let bin = procs::custody_binary(args.custody.clone())?;
    let venv = match args.venv {
        Some(v) => v,
        None => match std::env::var_os("CUSTODY_TEST_VENV") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
        },
    };
    let hf = venv.join("bin/hf");
    if !hf.is_file() {
        bail!(
            "no hf command at {} (tests/run installs huggingface_hub; or pass --venv DIR)",
            hf.display()
        );
    }
    let scratch = scratch_dir(args.dir.as_deref())?;
    let result = bench(&bin, &hf, scratch.path(), args.size_mib * MIB);
    drop(scratch);
    print(&result?);
    Ok(())
}

/// One timed transfer of the large file (or the whole model) and the CPU it took.
struct Row {
    id: &'static str,
    what: &'static str,
    wall: Duration,
    /// Percent of one core over the transfer: server, agent (if it relayed), client.
    server_cpu: f64,
    agent_cpu: Option<f64>,
    client_cpu: f64,
    /// The server's share (first MiB out to last byte out), from `/proc/PID/io`.
    server_side: Option<Duration>,
}

struct Report {
    size: u64,
    rows: Vec<Row>,
}

fn bench(bin: &Path, hf: &Path, scratch: &Path, size: u64) -> anyhow::Result<Report> {
    let model = scratch.join("model");
    eprintln!(
        "custody-bench hub: writing a {} MiB test file in {}",
        size / MIB,
        scratch.display()
    );
    write_data(&model.join(FILE), size)?;
    std::fs::write(
        model.join("config.json"),
        b"{\"model_type\": \"bench\", \"hidden_size\": 4096}\n",
    )?;

    let custody = Custody::start(bin, scratch, &[])?;
    eprintln!("custody-bench hub: custody upload");
    custody.upload(&model, MODEL)?;
    custody.publish(MODEL)?;
    let server_pid = custody.server.pid();

    // The host agent, as tests/e2e/hub.rs starts it.
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "--listen", "127.0.0.1:0"])
        .arg("--host-cert")
        .arg(&custody.host_cert)
        .arg("--host-key")
        .arg(&custody.host_key)
        .env("CUSTODY_SERVER", &custody.server.url)
        .env("CUSTODY_CA", &custody.ca)
        .env_remove("CUSTODY_TOKEN")
        .env_remove("CUSTODY_HOST_CERT")
        .env_remove("CUSTODY_HOST_KEY")
        .env("CUSTODY_LOG", "info")
        .env("NO_COLOR", "1");
    let agent = Server::start(
        cmd,
        "custody: agent listening on ",
        &scratch.join("agent.log"),
    )?;
    let agent_url = agent
        .url
        .split(',')
        .next()
        .context("no agent URL")?
        .to_owned();
    let agent_pid = agent.pid();
    let mut rows = Vec::new();

    procs::settle();
    eprintln!("custody-bench hub: custody fetch");
    let out = scratch.join("fetched");
    rows.push(timed_row(
        "h1",
        "`custody fetch` of the model (ranges x4 over HTTPS, fsync, SHA-256 check)",
        &[server_pid],
        || {
            procs::run_timed(
                custody.fetch_command(MODEL, &out),
                server_pid,
                Direction::Download,
            )
        },
    )?);
    if file_len(&out.join(FILE))? != size {
        bail!("custody fetch wrote a file of the wrong size");
    }
    std::fs::remove_dir_all(&out)?;

    procs::settle();
    eprintln!("custody-bench hub: hf download through the agent");
    let local = scratch.join("hf-local");
    let home = scratch.join("hf-home");
    let mut cmd = hf_command(hf, &agent_url, &custody.reader, &home);
    cmd.args(["download", MODEL, "--local-dir"]).arg(&local);
    rows.push(timed_row(
        "h2",
        "`hf download acme/MODEL --local-dir DIR` through `custody agent` (goal >= 0.8x h1)",
        &[server_pid, agent_pid],
        || procs::run_timed(cmd, server_pid, Direction::Download),
    )?);
    if file_len(&local.join(FILE))? != size {
        bail!("hf download wrote a file of the wrong size");
    }
    std::fs::remove_dir_all(&local)?;
    std::fs::remove_dir_all(&home)?;

    // Where the time goes: one stream of the large file, nothing written.
    procs::settle();
    eprintln!("custody-bench hub: curl through the agent into /dev/null");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-o", "/dev/null", "-H"])
        .arg(format!("Authorization: Bearer {}", custody.reader))
        .arg(format!("{agent_url}/{MODEL}/resolve/main/{FILE}"));
    rows.push(timed_row(
        "h3",
        "one stream of the large file through the agent (curl, plain HTTP, into /dev/null)",
        &[server_pid, agent_pid],
        || procs::run_timed(cmd, server_pid, Direction::Download),
    )?);

    procs::settle();
    eprintln!("custody-bench hub: curl straight from the server into /dev/null");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-o", "/dev/null", "--cacert"])
        .arg(&custody.ca)
        .arg("--cert")
        .arg(&custody.host_cert)
        .arg("--key")
        .arg(&custody.host_key)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", custody.reader))
        .arg(format!(
            "{}/{MODEL}/resolve/main/{FILE}",
            custody.server.url
        ));
    rows.push(timed_row(
        "h4",
        "one stream of the large file straight from the server (curl, HTTPS with the host certificate, into /dev/null; no agent)",
        &[server_pid],
        || procs::run_timed(cmd, server_pid, Direction::Download),
    )?);

    agent.stop();
    custody.server.stop();
    Ok(Report { size, rows })
}

/// The `hf` command as a committer runs it (tests/e2e/hub.rs `Hf::command`): the agent as the
/// endpoint, the custody token, an empty `HF_HOME`, no proxies, no progress bars.
fn hf_command(hf: &Path, endpoint: &str, token: &str, home: &Path) -> Command {
    let mut c = Command::new(hf);
    c.env("HF_ENDPOINT", endpoint)
        .env("HF_TOKEN", token)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_DISABLE_UPDATE_CHECK", "1")
        .env("NO_PROXY", "127.0.0.1,localhost");
    for var in [
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HF_HUB_DISABLE_XET",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs one timed client with the CPU of `pids` (server, then agent) and of the client.
fn timed_row(
    id: &'static str,
    what: &'static str,
    pids: &[u32],
    f: impl FnOnce() -> anyhow::Result<Timed>,
) -> anyhow::Result<Row> {
    let client_before = children_cpu_time();
    let (timed, _, cpu) = with_cpu(pids, f)?;
    let client = children_cpu_time().saturating_sub(client_before);
    let wall = timed.wall;
    Ok(Row {
        id,
        what,
        wall,
        server_cpu: cpu[0],
        agent_cpu: cpu.get(1).copied(),
        client_cpu: 100.0 * client.as_secs_f64() / wall.as_secs_f64(),
        server_side: timed.server_side,
    })
}

fn print(r: &Report) {
    println!(
        "machine: {} cores; large file {} MiB (plus a small config.json)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        r.size / MIB
    );
    println!();
    println!(
        "| row | what | time | MB/s | vs h1 | server's share | CPU: server / agent / client |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = r.rows.first().map(|h1| h1.wall);
    for row in &r.rows {
        let ratio = base.map_or(String::new(), |b| {
            format!("{:.2}x", b.as_secs_f64() / row.wall.as_secs_f64())
        });
        let agent = row.agent_cpu.map_or("-".to_owned(), |a| format!("{a:.0}%"));
        let share = row
            .server_side
            .map_or(String::new(), |s| format!("{:.2} s", s.as_secs_f64()));
        println!(
            "| {} | {} | {:.2} s | {:.0} | {ratio} | {share} | {:.0}% / {agent} / {:.0}% |",
            row.id,
            row.what,
            row.wall.as_secs_f64(),
            mbps(r.size, row.wall),
            row.server_cpu,
            row.client_cpu
        );
    }
    println!();
    println!(
        "MB/s = 10^6 bytes of the large file per second; vs h1 = throughput / `custody fetch`'s. \
         Server's share: first MiB out to last byte out (/proc/PID/io). CPU: share of one core \
         over the run (/proc/PID/stat; the client's from this process's waited-for children). \
         One run each, the server's blobs in the page cache."
    );
}
