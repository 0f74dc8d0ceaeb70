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
        None => bench(cli.size_gib, cli.dir, cli.custody, cli.crypto_only),
    }
}

const GIB: f64 = (1u64 << 30) as f64;

struct Https {
    size: u64,
    upload: Timed,
    fetch: Timed,
    plain_fetch: Timed,
    plain_write: Duration,
    server_peak_kib: u64,
    static_peak_kib: u64,
}

fn bench(
    size_gib: f64,
    dir: Option<PathBuf>,
    custody: Option<PathBuf>,
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
            let result = https(&bin, scratch.path(), size);
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

fn https(bin: &Path, scratch: &Path, size: u64) -> anyhow::Result<Https> {
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
    let plain_write = plain::plain_write(&source, &copy)?;
    std::fs::remove_file(&copy)?;

    // custody: a real server on a fresh data directory, as tests/e2e/support.rs starts it.
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
    let host_out = host_dir.to_str().context("non-UTF-8 path")?;
    let status = Command::new(bin)
        .args(["host", "csr", "--name", "bench-host", "--out", host_out])
        .status()?;
    if !status.success() {
        bail!("custody host csr failed");
    }
    let csr = host_dir.join("host.csr");
    let host_cert = host_dir.join("host.crt");
    custody_ok(
        bin,
        &server,
        &ca,
        &operator,
        &[
            "host",
            "enroll",
            csr.to_str().context("non-UTF-8 path")?,
            "--name",
            "bench-host",
            "--group",
            "bench",
            "--out",
            host_cert.to_str().context("non-UTF-8 path")?,
        ],
    )?;

    procs::settle();
    eprintln!("custody-bench: custody upload");
    let mut cmd = cli_command(bin, &server, &ca, &admin);
    cmd.arg("upload").arg(&model).arg("acme/bench");
    let upload = procs::run_timed(cmd, server.pid(), Direction::Upload)?;
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
    let fetch = procs::run_timed(cmd, server.pid(), Direction::Download)?;
    if file_len(&fetched.join("model.safetensors"))? != size {
        bail!("custody fetch wrote a file of the wrong size");
    }
    let server_peak_kib = server.peak_rss_kib()?;
    server.stop();
    std::fs::remove_dir_all(&fetched)?;
    std::fs::remove_dir_all(&data)?;

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
        upload,
        fetch,
        plain_fetch,
        plain_write,
        server_peak_kib,
        static_peak_kib,
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

struct Row {
    id: &'static str,
    what: String,
    ours: String,
    baseline: String,
    ratio: Option<f64>,
    goal: String,
    met: Option<bool>,
}

impl Row {
    /// A row whose goal is a minimum ratio.
    fn at_least(mut self, goal: f64) -> Row {
        self.goal = format!(">= {goal:.1}x");
        self.met = self.ratio.map(|r| r >= goal);
        self
    }
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
        Row {
            id: "1",
            what: "ring AES-256-GCM seal, raw, 1 MiB in place, 1 core (the ceiling)".into(),
            ours: gbps(m.raw_one),
            baseline: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
        },
        Row {
            id: "2a",
            what: "format seal (PartSealer::seal_part, 8 MiB parts), 1 core".into(),
            ours: gbps(m.seal_one),
            baseline: format!("{} (row 1)", gbps(m.raw_one)),
            ratio: Some(m.seal_one / m.raw_one),
            goal: String::new(),
            met: None,
        }
        .at_least(0.9),
        Row {
            id: "2b",
            what: "format open (ObjectOpener::open_segment), 1 core".into(),
            ours: gbps(m.open_one),
            baseline: format!("{} (row 1)", gbps(m.raw_one)),
            ratio: Some(m.open_one / m.raw_one),
            goal: String::new(),
            met: None,
        }
        .at_least(0.9),
        Row {
            id: "2c",
            what: format!("format seal, {threads} threads"),
            ours: gbps(m.seal_all),
            baseline: format!("{} (raw, {threads} threads)", gbps(m.raw_all)),
            ratio: Some(m.seal_all / m.raw_all),
            goal: String::new(),
            met: None,
        },
        Row {
            id: "2d",
            what: format!("format open, {threads} threads"),
            ours: gbps(m.open_all),
            baseline: format!("{} (raw, {threads} threads)", gbps(m.raw_all)),
            ratio: Some(m.open_all / m.raw_all),
            goal: String::new(),
            met: None,
        },
    ];
    if let Some(h) = https {
        let size = h.size;
        let gib = size as f64 / GIB;
        let write = rate(size, h.plain_write);
        let plain_dl = rate(size, h.plain_fetch.wall);
        rows.push(Row {
            id: "3a",
            what: format!(
                "upload {gib:.2} GiB over HTTPS (`custody upload`: CLI hashing + transfer + seal + store + commit)"
            ),
            ours: timed(size, h.upload.wall),
            baseline: format!("{} (row 4b)", timed(size, h.plain_write)),
            ratio: Some(rate(size, h.upload.wall) / write),
            goal: String::new(),
            met: None,
        }
        .at_least(0.7));
        rows.push(Row {
            id: "3b",
            what: format!(
                "download {gib:.2} GiB over HTTPS (`custody fetch`: 16 MiB ranges x4, fsync, CLI SHA-256 check)"
            ),
            ours: timed(size, h.fetch.wall),
            baseline: format!("{} (row 4a)", timed(size, h.plain_fetch.wall)),
            ratio: Some(rate(size, h.fetch.wall) / plain_dl),
            goal: String::new(),
            met: None,
        }
        .at_least(0.8));
        if let Some(up) = h.upload.server_side {
            rows.push(Row {
                id: "3c",
                what: "upload, server side only (first MiB of body in → commit; without the CLI's hashing)".into(),
                ours: timed(size, up),
                baseline: format!("{} (row 4b)", timed(size, h.plain_write)),
                ratio: Some(rate(size, up) / write),
                goal: String::new(),
            met: None,
            });
        }
        if let (Some(ours), Some(base)) = (h.fetch.server_side, h.plain_fetch.server_side) {
            rows.push(Row {
                id: "3d",
                what: "download, server side only (first MiB to last byte out; without client fsync and check)".into(),
                ours: timed(size, ours),
                baseline: format!("{} (static server, same window)", timed(size, base)),
                ratio: Some(rate(size, ours) / rate(size, base)),
                goal: String::new(),
            met: None,
            });
        }
        rows.push(Row {
            id: "4a",
            what: "baseline: plain file over HTTPS (static hyper+rustls server, same client stack and ranges, fsync)".into(),
            ours: timed(size, h.plain_fetch.wall),
            baseline: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
        });
        rows.push(Row {
            id: "4b",
            what: "baseline: plain file write, 8 MiB buffer, fsync".into(),
            ours: timed(size, h.plain_write),
            baseline: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
        });
        let peak_mib = h.server_peak_kib as f64 / 1024.0;
        rows.push(Row {
            id: "5",
            what: "custody server peak resident memory (VmHWM) over start-up, 3a and 3b".into(),
            ours: format!("{peak_mib:.0} MiB"),
            baseline: format!(
                "{:.0} MiB (static server)",
                h.static_peak_kib as f64 / 1024.0
            ),
            ratio: None,
            goal: "< 128 MiB".into(),
            met: Some(peak_mib < 128.0),
        });
    }
    println!("| row | what | ours | baseline | ratio | goal | met? |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let ratio = r.ratio.map(|v| format!("{v:.2}x")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id, r.what, r.ours, r.baseline, ratio, r.goal, met
        );
    }
    println!();
    println!(
        "GB/s = 10^9 bytes per second. Ratio = ours / baseline throughput. Rows 1-2: median of 5 \
         rounds of 1 GiB per thread; all-thread figures are sums of per-thread rates. Rows 3-4: \
         one run each; the test file is in the page cache."
    );
}
