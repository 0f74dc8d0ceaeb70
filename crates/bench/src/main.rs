//! `custody-bench`: how close custody comes to the cipher's ceiling and to plain HTTPS and
//! plain disk baselines, all measured in one run on one machine. See README.md, "Benchmark".
//!
//! Rows: (1) ring's raw AES-256-GCM seal on one core; (2) the stream format's seal
//! (`blobstore::PartSealer`, 8 MiB parts) and open (`ObjectOpener::open_segment`) on one core
//! and on every core; (3) `custody upload` and `custody fetch` of one large file through a real
//! server over HTTPS (filesystem backend); (4) the baselines: the same file served by a minimal
//! static HTTPS server and fetched with the same client stack, and written as a plain file with
//! fsync; (5) ratios, and the server's peak resident memory.
#![forbid(unsafe_code)]

mod audit;
mod cluster;
mod hub;
mod load;
mod micro;
mod plain;
mod procs;
mod s3;
mod shred;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::procs::{Direction, Server, Timed};

#[derive(Parser)]
#[command(
    name = "custody-bench",
    about = "Cipher, format and HTTPS transfer throughput against plain baselines"
)]
struct Cli {
    /// Size of the file sent through the HTTPS API, in GiB (fractions allowed, at least 1/16)
    #[arg(long, default_value_t = 4.0)]
    size_gib: f64,
    /// Scratch directory; a temporary folder is made inside it and removed at the end.
    /// Needs about 3x the file size free.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: `custody` beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
    /// Another custody binary (an earlier build) measured in the same run for rows 3 and 5,
    /// printed beside the figures of `--custody`: a change's before and after
    #[arg(long, value_name = "PATH")]
    before: Option<PathBuf>,
    /// Record CPU profiles with `perf record` into DIR (the server during each transfer and
    /// each CLI run; see docs/performance.md). Profiling slows the run: its figures are not
    /// the benchmark's
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// Only the cipher and format rows (1 and 2)
    #[arg(long)]
    crypto_only: bool,
    #[command(subcommand)]
    command: Option<Hidden>,
}

#[derive(Subcommand)]
enum Hidden {
    /// The audit log: durable appends/s (SQLite, PostgreSQL; 1 and 64 writers), inclusion
    /// proofs and offline verification at 1M entries
    Audit(audit::AuditArgs),
    /// Deletion: crypto-shred time for a small and a large model, beside `shred -u`
    Shred(shred::ShredArgs),
    /// Many clients at once (listings, ranged fetches, uploads, audit reads), then an abuse
    /// round (half-open connections, unauthenticated flood, oversized declarations) during a
    /// large fetch
    Load(load::LoadArgs),
    /// Scale-out: 1 and 3 instances on PostgreSQL behind HAProxy: audit appends per second,
    /// aggregate download throughput
    Cluster(cluster::ClusterArgs),
    /// The S3 backend: `custody upload`/`fetch` with blobs in a bucket on moto, against the
    /// raw aws-sdk-s3 client on the same moto; then part size and concurrency of the raw client
    S3(s3::S3Args),
    /// The Hugging Face path: `hf download` through `custody agent` against `custody fetch`
    Hub(hub::HubArgs),
    /// The baseline server: one file over HTTPS, nothing else
    #[command(hide = true)]
    StaticServer {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        /// Where to write the self-signed certificate (PEM)
        #[arg(long)]
        cert_out: PathBuf,
    },
    /// The baseline client: ranged download like `custody fetch`, without custody's checks
    #[command(hide = true)]
    PlainFetch {
        #[arg(long)]
        url: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        size: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Hidden::StaticServer {
            file,
            listen,
            cert_out,
        }) => plain::static_server(&file, listen, &cert_out),
        Some(Hidden::PlainFetch { url, ca, out, size }) => {
            plain::plain_fetch(&url, &ca, &out, size)
        }
        Some(Hidden::Audit(args)) => audit::run(args),
        Some(Hidden::Shred(args)) => shred::run(args),
        Some(Hidden::Load(args)) => load::run(args),
        Some(Hidden::Cluster(args)) => cluster::run(args),
        Some(Hidden::S3(args)) => s3::run(args),
        Some(Hidden::Hub(args)) => hub::run(args),
        None => bench(
            cli.size_gib,
            cli.dir,
            cli.custody,
            cli.before,
            cli.perf,
            cli.crypto_only,
        ),
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// One custody binary's upload and fetch of the test file.
struct Transfer {
    upload: Timed,
    fetch: Timed,
    server_peak_kib: u64,
}

/// One of a transfer's two timed runs (its upload or its fetch).
type PickTimed = fn(&Transfer) -> &Timed;

struct Https {
    size: u64,
    now: Transfer,
    /// The same with `--before`.
    before: Option<Transfer>,
    plain_fetch: Timed,
    plain_write: Duration,
    /// CPU time of this process over the plain write (it runs nothing else meanwhile).
    plain_write_cpu: Option<Duration>,
    static_peak_kib: u64,
}

fn bench(
    size_gib: f64,
    dir: Option<PathBuf>,
    custody: Option<PathBuf>,
    before: Option<PathBuf>,
    perf: Option<PathBuf>,
    crypto_only: bool,
) -> anyhow::Result<()> {
    if size_gib.is_nan() || size_gib < 1.0 / 16.0 {
        bail!(
            "--size-gib must be at least 0.0625 (64 MiB, where custody fetch switches to ranges)"
        );
    }
    // Whole MiB: the data generator writes 1 MiB blocks.
    let size = ((size_gib * GIB) as u64 >> 20) << 20;
    let custody = if crypto_only {
        None
    } else {
        Some(procs::custody_binary(custody)?)
    };
    let before = before.map(|b| procs::custody_binary(Some(b))).transpose()?;
    let perf = match perf {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            Some(procs::Perf { dir })
        }
        None => None,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let micro = micro::run(threads)?;
    let https = match custody {
        Some(bin) => {
            let parent = match dir {
                Some(d) => d,
                None => std::env::temp_dir(),
            };
            std::fs::create_dir_all(&parent)?;
            let scratch = tempfile::Builder::new()
                .prefix("custody-bench-")
                .tempdir_in(&parent)
                .with_context(|| format!("making a scratch folder in {}", parent.display()))?;
            let result = https(&bin, before.as_deref(), perf.as_ref(), scratch.path(), size);
            // Removing the scratch folder (several GiB) before printing anything.
            drop(scratch);
            Some(result?)
        }
        None => None,
    };
    print_report(threads, &micro, https.as_ref());
    Ok(())
}

/// Writes `len` bytes of incompressible-looking data (a random 1 MiB block, each copy stamped
/// with its index), like the end-to-end tests' data, and syncs it.
fn write_data(path: &Path, len: u64) -> anyhow::Result<()> {
    use rand::RngCore;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut block = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut block);
    let mut file = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut index = 0u64;
    while written < len {
        block[..8].copy_from_slice(&index.to_le_bytes());
        let n = (len - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        written += n as u64;
        index += 1;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Runs a custody CLI command as the holder of `token`; returns its stdout.
fn custody_ok(
    bin: &Path,
    server: &Server,
    ca: &Path,
    token: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let output = cli_command(bin, server, ca, token)
        .args(args)
        .output()
        .context("running custody")?;
    if !output.status.success() {
        bail!(
            "custody {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Starts a custody server on `data` with vendor `acme`; returns it, its certificate, the
/// operator's token (made with the bootstrap token) and an `acme` vendor admin's token.
fn start_custody(
    bin: &Path,
    data: &Path,
    log: &Path,
) -> anyhow::Result<(Server, PathBuf, String, String)> {
    start_custody_with(bin, data, log, &[])
}

/// [`start_custody`] with extra server flags (`--config FILE`).
fn start_custody_with(
    bin: &Path,
    data: &Path,
    log: &Path,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<(Server, PathBuf, String, String)> {
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("CUSTODY_LOG", "info");
    let server = Server::start(cmd, "custody: listening on ", log)?;
    let ca = data.join("tls/cert.pem");
    let bootstrap_file = server
        .stdout
        .iter()
        .find_map(|l| {
            l.split("operator bootstrap token written to ")
                .nth(1)
                .and_then(|rest| rest.split(" (").next())
        })
        .map(PathBuf::from)
        .context("the server wrote no bootstrap token")?;
    let bootstrap = std::fs::read_to_string(&bootstrap_file)
        .with_context(|| format!("reading {}", bootstrap_file.display()))?;
    let operator = custody_ok(
        bin,
        &server,
        &ca,
        bootstrap.trim(),
        &[
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "bench-operator",
        ],
    )?;
    custody_ok(bin, &server, &ca, &operator, &["vendor", "create", "acme"])?;
    let admin = custody_ok(
        bin,
        &server,
        &ca,
        &operator,
        &[
            "token",
            "create",
            "--role",
            "vendor-admin",
            "--vendor",
            "acme",
            "--name",
            "acme-admin",
        ],
    )?;
    Ok((server, ca, operator, admin))
}

/// Makes host `bench-host` (group `bench`) in `dir`: its key and CSR, enrolled by the
/// operator, approved by acme's admin. Returns its certificate's path (the key is `host.key`
/// beside it).
pub(crate) fn enroll_bench_host(
    bin: &Path,
    server: &Server,
    ca: &Path,
    operator: &str,
    admin: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let status = Command::new(bin)
        .args(["host", "csr", "--name", "bench-host", "--out"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("custody host csr failed");
    }
    let csr = dir.join("host.csr");
    let cert = dir.join("host.crt");
    custody_ok(
        bin,
        server,
        ca,
        operator,
        &[
            "host",
            "enroll",
            csr.to_str().context("non-UTF-8 path")?,
            "--name",
            "bench-host",
            "--group",
            "bench",
            "--out",
            cert.to_str().context("non-UTF-8 path")?,
        ],
    )?;
    // The operator enrolls the host; the vendor approves it for its weights.
    custody_ok(
        bin,
        server,
        ca,
        admin,
        &["host", "approve", "acme", "bench-host"],
    )?;
    Ok(cert)
}

fn cli_command(bin: &Path, server: &Server, ca: &Path, token: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("CUSTODY_SERVER", &server.url)
        .env("CUSTODY_TOKEN", token)
        .env("CUSTODY_CA", ca)
        .stdin(std::process::Stdio::null());
    cmd
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

fn https(
    bin: &Path,
    before: Option<&Path>,
    perf: Option<&procs::Perf>,
    scratch: &Path,
    size: u64,
) -> anyhow::Result<Https> {
    let gib = size as f64 / GIB;
    let model = scratch.join("model");
    let source = model.join("model.safetensors");
    eprintln!(
        "custody-bench: writing a {gib:.2} GiB test file in {}",
        scratch.display()
    );
    write_data(&source, size)?;

    // Baseline: the same bytes written as a plain file, 8 MiB buffer, fsync.
    procs::settle();
    eprintln!("custody-bench: plain write + fsync");
    let copy = scratch.join("plain-copy");
    let cpu_before = procs::cpu_time(std::process::id());
    let plain_write = plain::plain_write(&source, &copy)?;
    let plain_write_cpu = procs::cpu_time(std::process::id())
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    std::fs::remove_file(&copy)?;

    let before = match before {
        Some(old) => {
            eprintln!("custody-bench: the --before binary");
            Some(transfer(old, "before", perf, scratch, &model, size)?)
        }
        None => None,
    };
    let now = transfer(bin, "now", perf, scratch, &model, size)?;

    // Baseline: the same file from a static HTTPS server, fetched the same way.
    let cert = scratch.join("static-cert.pem");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("static-server")
        .arg("--file")
        .arg(&source)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--cert-out")
        .arg(&cert);
    let statik = Server::start(
        cmd,
        "custody-bench: listening on ",
        &scratch.join("static.log"),
    )?;
    procs::settle();
    eprintln!("custody-bench: plain HTTPS fetch");
    let plain_out = scratch.join("plain-fetched");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("plain-fetch")
        .args(["--url", &format!("{}/model.safetensors", statik.url)])
        .arg("--ca")
        .arg(&cert)
        .arg("--out")
        .arg(&plain_out)
        .args(["--size", &size.to_string()]);
    let plain_fetch = procs::run_timed(cmd, statik.pid(), Direction::Download)?;
    if file_len(&plain_out)? != size {
        bail!("the plain fetch wrote a file of the wrong size");
    }
    let static_peak_kib = statik.peak_rss_kib()?;
    statik.stop();

    Ok(Https {
        size,
        now,
        before,
        plain_fetch,
        plain_write,
        plain_write_cpu,
        static_peak_kib,
    })
}

/// `custody upload` and `custody fetch` of the folder `model` (one file of `size` bytes)
/// through a server of `bin` on a fresh data directory, as tests/e2e/support.rs starts it.
fn transfer(
    bin: &Path,
    label: &str,
    perf: Option<&procs::Perf>,
    scratch: &Path,
    model: &Path,
    size: u64,
) -> anyhow::Result<Transfer> {
    let data = scratch.join("custody");
    let (server, ca, operator, admin) = start_custody(bin, &data, &scratch.join("server.log"))?;
    let reader = custody_ok(
        bin,
        &server,
        &ca,
        &operator,
        &["token", "create", "--role", "committer", "--name", "reader"],
    )?;

    // Weight bytes go only to an enrolled exclusive host: the fetch below runs as one.
    let host_dir = scratch.join("host");
    let host_cert = enroll_bench_host(bin, &server, &ca, &operator, &admin, &host_dir)?;

    procs::settle();
    eprintln!("custody-bench: custody upload");
    let mut cmd = cli_command(bin, &server, &ca, &admin);
    cmd.arg("upload").arg(model).arg("acme/bench");
    let recording = perf
        .map(|p| p.attach(server.pid(), &format!("{label}-server-upload")))
        .transpose()?;
    if let Some(p) = perf {
        cmd = p.wrap(&cmd, &format!("{label}-cli-upload"));
    }
    let upload = procs::run_timed(cmd, server.pid(), Direction::Upload)?;
    if let Some(r) = recording {
        r.stop();
    }
    custody_ok(
        bin,
        &server,
        &ca,
        &admin,
        &["grant", "acme/bench", "--to", "reader"],
    )?;
    custody_ok(
        bin,
        &server,
        &ca,
        &admin,
        &["host", "allow", "acme/bench", "bench"],
    )?;

    procs::settle();
    eprintln!("custody-bench: custody fetch");
    let fetched = scratch.join("fetched");
    let mut cmd = cli_command(bin, &server, &ca, &reader);
    cmd.env("CUSTODY_HOST_CERT", &host_cert)
        .env("CUSTODY_HOST_KEY", host_dir.join("host.key"))
        .args(["fetch", "acme/bench", "--out"])
        .arg(&fetched);
    let recording = perf
        .map(|p| p.attach(server.pid(), &format!("{label}-server-fetch")))
        .transpose()?;
    if let Some(p) = perf {
        cmd = p.wrap(&cmd, &format!("{label}-cli-fetch"));
    }
    let fetch = procs::run_timed(cmd, server.pid(), Direction::Download)?;
    if let Some(r) = recording {
        r.stop();
    }
    if file_len(&fetched.join("model.safetensors"))? != size {
        bail!("custody fetch wrote a file of the wrong size");
    }
    let server_peak_kib = server.peak_rss_kib()?;
    server.stop();
    std::fs::remove_dir_all(&fetched)?;
    std::fs::remove_dir_all(&data)?;
    std::fs::remove_dir_all(&host_dir)?;
    Ok(Transfer {
        upload,
        fetch,
        server_peak_kib,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A figure of the `--before` binary and its ratio to the baseline, when it has one.
type Before = (String, Option<f64>);

struct Row {
    id: &'static str,
    what: String,
    /// The `--before` binary's figure and ratio, for rows that have one.
    before: Option<Before>,
    ours: String,
    baseline: String,
    ratio: Option<f64>,
    goal: String,
    met: Option<bool>,
}

impl Row {
    fn new(id: &'static str, what: impl Into<String>, ours: String) -> Row {
        Row {
            id,
            what: what.into(),
            before: None,
            ours,
            baseline: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
        }
    }

    fn against(mut self, baseline: String, ratio: f64) -> Row {
        self.baseline = baseline;
        self.ratio = Some(ratio);
        self
    }

    fn before(mut self, figure: Option<Before>) -> Row {
        self.before = figure;
        self
    }

    /// A row whose goal is a minimum ratio.
    fn at_least(mut self, goal: f64) -> Row {
        self.goal = format!(">= {goal:.2}x");
        self.met = self.ratio.map(|r| r >= goal);
        self
    }

    /// A row whose goal is a memory ceiling.
    fn below_mib(mut self, peak_kib: u64, ceiling: f64) -> Row {
        self.goal = format!("< {ceiling:.0} MiB");
        self.met = Some((peak_kib as f64 / 1024.0) < ceiling);
        self
    }
}

/// `server 4.1 s + CLI 2.0 s = 1.42 core-s/GB, 2 cores 78% busy`: the CPU time of a transfer
/// of `size` bytes that took `wall`, per GB and against all `cores` over `wall`.
fn cpu_use(
    size: u64,
    wall: Duration,
    server: Option<Duration>,
    client: Option<Duration>,
    client_name: &str,
    cores: usize,
) -> String {
    let Some(client) = client else {
        return "(not measured)".to_string();
    };
    let total = server.unwrap_or_default() + client;
    let parts = match server {
        Some(server) => format!(
            "server {:.1} s + {client_name} {:.1} s",
            server.as_secs_f64(),
            client.as_secs_f64()
        ),
        None => format!("{client_name} {:.1} s", client.as_secs_f64()),
    };
    format!(
        "{parts} = {:.2} core-s/GB, {} cores {:.0}% busy",
        total.as_secs_f64() / (size as f64 / 1e9),
        cores,
        100.0 * total.as_secs_f64() / (wall.as_secs_f64().max(1e-9) * cores as f64)
    )
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn rate(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64().max(1e-9) / 1e9
}

fn gbps(v: f64) -> String {
    format!("{v:.2} GB/s")
}

fn timed(bytes: u64, time: Duration) -> String {
    format!("{} ({:.2} s)", gbps(rate(bytes, time)), time.as_secs_f64())
}

fn print_report(threads: usize, m: &micro::Micro, https: Option<&Https>) {
    println!(
        "machine: {threads} cores (available_parallelism), {}",
        cpu_model()
    );
    println!();
    let mut rows = vec![
        Row::new(
            "1",
            "ring AES-256-GCM seal, raw, 1 MiB in place, 1 core (the ceiling)",
            gbps(m.raw_one),
        ),
        Row::new(
            "2a",
            "format seal (PartSealer::seal, 8 MiB parts), 1 core",
            gbps(m.seal_one),
        )
        .against(
            format!("{} (row 1)", gbps(m.raw_one)),
            m.seal_one / m.raw_one,
        )
        .at_least(0.9),
        Row::new(
            "2b",
            "format open (ObjectOpener::open_segment), 1 core",
            gbps(m.open_one),
        )
        .against(
            format!("{} (row 1)", gbps(m.raw_one)),
            m.open_one / m.raw_one,
        )
        .at_least(0.9),
        Row::new(
            "2c",
            format!("format seal, {threads} threads"),
            gbps(m.seal_all),
        )
        .against(
            format!("{} (raw, {threads} threads)", gbps(m.raw_all)),
            m.seal_all / m.raw_all,
        ),
        Row::new(
            "2d",
            format!("format open, {threads} threads"),
            gbps(m.open_all),
        )
        .against(
            format!("{} (raw, {threads} threads)", gbps(m.raw_all)),
            m.open_all / m.raw_all,
        ),
    ];
    if let Some(h) = https {
        let size = h.size;
        let gib = size as f64 / GIB;
        let write = rate(size, h.plain_write);
        let plain_dl = rate(size, h.plain_fetch.wall);
        let was = |pick: &dyn Fn(&Transfer) -> Option<Before>| h.before.as_ref().and_then(pick);
        rows.push(
            Row::new(
                "3a",
                format!(
                    "upload {gib:.2} GiB over HTTPS (`custody upload` as the user waits: reading and hashing, transfer, seal, store, commit)"
                ),
                timed(size, h.now.upload.wall),
            )
            .against(
                format!("{} (row 4b)", timed(size, h.plain_write)),
                rate(size, h.now.upload.wall) / write,
            )
            .before(was(&|t| {
                Some((
                    timed(size, t.upload.wall),
                    Some(rate(size, t.upload.wall) / write),
                ))
            }))
            .at_least(0.8),
        );
        rows.push(
            Row::new(
                "3b",
                format!(
                    "download {gib:.2} GiB over HTTPS (`custody fetch`: {} MiB ranges x{}, SHA-256 check, fsync)",
                    wire::models::fetch_range_len(size) >> 20,
                    wire::models::FETCH_RANGES_AT_ONCE
                ),
                timed(size, h.now.fetch.wall),
            )
            .against(
                format!("{} (row 4a)", timed(size, h.plain_fetch.wall)),
                rate(size, h.now.fetch.wall) / plain_dl,
            )
            .before(was(&|t| {
                Some((
                    timed(size, t.fetch.wall),
                    Some(rate(size, t.fetch.wall) / plain_dl),
                ))
            }))
            .at_least(0.9),
        );
        if let Some(up) = h.now.upload.server_side {
            rows.push(
                Row::new(
                    "3c",
                    "upload, server side only (first MiB stored to commit)",
                    timed(size, up),
                )
                .against(
                    format!("{} (row 4b)", timed(size, h.plain_write)),
                    rate(size, up) / write,
                )
                .before(was(&|t| {
                    let up = t.upload.server_side?;
                    Some((timed(size, up), Some(rate(size, up) / write)))
                }))
                .at_least(0.9),
            );
        }
        if let (Some(ours), Some(base)) = (h.now.fetch.server_side, h.plain_fetch.server_side) {
            let base_rate = rate(size, base);
            rows.push(
                Row::new(
                    "3d",
                    "download, server side only (first MiB to last byte out)",
                    timed(size, ours),
                )
                .against(
                    format!("{} (static server, same window)", timed(size, base)),
                    rate(size, ours) / base_rate,
                )
                .before(was(&|t| {
                    let down = t.fetch.server_side?;
                    Some((timed(size, down), Some(rate(size, down) / base_rate)))
                }))
                .at_least(0.95),
            );
        }
        rows.push(
            Row::new(
                "4a",
                "baseline: plain file over HTTPS (static hyper+rustls server, same client stack and ranges, fsync)",
                timed(size, h.plain_fetch.wall),
            ),
        );
        rows.push(Row::new(
            "4b",
            "baseline: plain file write, 8 MiB buffer, fsync",
            timed(size, h.plain_write),
        ));
        rows.push(
            Row::new(
                "5a",
                "custody server peak resident memory (VmHWM) over start-up, 3a and 3b",
                mib(h.now.server_peak_kib),
            )
            .before(was(&|t| Some((mib(t.server_peak_kib), None))))
            .below_mib(h.now.server_peak_kib, 128.0),
        );
        if let Some(r) = rows.last_mut() {
            r.baseline = format!("{} (static server)", mib(h.static_peak_kib));
        }
        let client = |t: &Transfer| t.upload.client_peak_kib.max(t.fetch.client_peak_kib);
        rows.push(
            Row::new(
                "5b",
                "custody CLI peak resident memory (VmHWM), the larger of 3a and 3b",
                mib(client(&h.now)),
            )
            .before(was(&|t| Some((mib(client(t)), None))))
            .below_mib(client(&h.now), 128.0),
        );
        // What the machine gave each transfer: when client and server together keep every
        // core busy, the run is bound by this machine's CPU, which they share here and would
        // not in a deployment.
        let cpu = |t: &Timed, client: &str| {
            cpu_use(size, t.wall, t.server_cpu, t.client_cpu, client, threads)
        };
        let write_cpu = cpu_use(
            size,
            h.plain_write,
            None,
            h.plain_write_cpu,
            "writer",
            threads,
        );
        let transfers: [(&str, &str, PickTimed, String); 2] = [
            ("6a", "3a", |t| &t.upload, format!("{write_cpu} (row 4b)")),
            (
                "6b",
                "3b",
                |t| &t.fetch,
                format!("{} (row 4a)", cpu(&h.plain_fetch, "client")),
            ),
        ];
        for (id, of, pick, baseline) in transfers {
            let mut row = Row::new(
                id,
                format!(
                    "CPU of {of}: server + CLI, per GB moved, and how busy the machine's cores were"
                ),
                cpu(pick(&h.now), "CLI"),
            )
            .before(was(&|t| Some((cpu(pick(t), "CLI"), None))));
            row.baseline = baseline;
            rows.push(row);
        }
    }
    let ratio = |r: Option<f64>| r.map(|v| format!("{v:.2}x")).unwrap_or_default();
    let with_before = rows.iter().any(|r| r.before.is_some());
    if with_before {
        println!(
            "| row | what | before (--before) | ratio before | now | baseline | ratio now | goal | met? |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!("| row | what | ours | baseline | ratio | goal | met? |");
        println!("|---|---|---|---|---|---|---|");
    }
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        if with_before {
            let (before, before_ratio) = r.before.clone().unwrap_or_default();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                r.what,
                before,
                ratio(before_ratio),
                r.ours,
                r.baseline,
                ratio(r.ratio),
                r.goal,
                met
            );
        } else {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                r.what,
                r.ours,
                r.baseline,
                ratio(r.ratio),
                r.goal,
                met
            );
        }
    }
    println!();
    println!(
        "GB/s = 10^9 bytes per second. Ratio = ours / baseline throughput. Rows 1-2: median of 5 \
         rounds of 1 GiB per thread; all-thread figures are sums of per-thread rates. Rows 3-4: \
         one run each; the test file is in the page cache. Rows 6: CPU time (user + system) from \
         /proc/PID/stat; client and server share this machine's cores."
    );
}
