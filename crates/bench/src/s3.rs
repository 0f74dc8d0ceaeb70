//! `custody-bench s3`: custody on its S3 backend against the raw S3 client, on one moto server.
//!
//! One `moto_server` (testkit, from `$CUSTODY_TEST_VENV`), one bucket on it, and a custody
//! server whose blobs live in that bucket (`--config FILE` with an `[s3]` section, as
//! tests/e2e/scale.rs starts it). In the same run and on the same moto: `custody upload` and
//! `custody fetch` of one file, against aws-sdk-s3 (set up like custody's backend: the `cloud`
//! crate's client, path style, checksums only when required) putting the same bytes as a
//! multipart upload with custody's server's pattern (8 MiB parts, 3 at a time) and getting them
//! back with `custody fetch`'s pattern (its ranged GETs, as many at a time, written in place,
//! fsync).
//! Then the raw client alone over a grid of part sizes and concurrencies, with moto's CPU use
//! over each transfer (from `/proc/PID/stat`): moto is one Python process, so what it can serve
//! bounds every figure here.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};

use crate::procs::{self, Direction, Server, Timed};
use crate::{cli_command, custody_ok, file_len, start_custody_with, write_data};

const MIB: u64 = 1 << 20;
const BUCKET: &str = "custody-bench";
/// The raw client's objects: beside custody's `objects/` prefix, never under it.
const RAW_KEY: &str = "raw/model.safetensors";

#[derive(clap::Args)]
pub struct S3Args {
    /// Size of the test file, in MiB
    #[arg(long, default_value_t = 512)]
    size_mib: u64,
    /// Scratch directory; a temporary folder is made inside it and removed at the end
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: `custody` beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
    /// Skip the raw client's part size x concurrency grid
    #[arg(long)]
    no_tune: bool,
}

pub fn run(args: S3Args) -> anyhow::Result<()> {
    if args.size_mib < 64 {
        bail!("--size-mib must be at least 64 (where custody fetch switches to ranges)");
    }
    let bin = procs::custody_binary(args.custody.clone())?;
    let scratch = scratch_dir(args.dir.as_deref())?;
    let result = bench(&bin, scratch.path(), args.size_mib * MIB, !args.no_tune);
    drop(scratch);
    let report = result?;
    report.print();
    Ok(())
}

/// A temporary folder in `dir` (default: the system's), removed when dropped.
pub(crate) fn scratch_dir(dir: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let parent = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&parent)?;
    tempfile::Builder::new()
        .prefix("custody-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a scratch folder in {}", parent.display()))
}

// ----- a custody server with an enrolled host: shared with `custody-bench hub` ---------------

/// A running custody server with vendor `acme`, its admin, a committer `reader` and an enrolled
/// exclusive host (group `bench`), as `custody-bench`'s transfer rows set it up.
pub(crate) struct Custody {
    pub bin: PathBuf,
    pub server: Server,
    pub ca: PathBuf,
    pub admin: String,
    pub reader: String,
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
}

impl Custody {
    /// Starts the server on `scratch/custody` with `extra` flags and enrolls a host.
    pub fn start(bin: &Path, scratch: &Path, extra: &[&std::ffi::OsStr]) -> anyhow::Result<Self> {
        let data = scratch.join("custody");
        let (server, ca, operator, admin) =
            start_custody_with(bin, &data, &scratch.join("server.log"), extra)?;
        let reader = custody_ok(
            bin,
            &server,
            &ca,
            &operator,
            &["token", "create", "--role", "committer", "--name", "reader"],
        )?;
        // Weight bytes go only to an enrolled exclusive host: fetches run as one.
        let host_dir = scratch.join("host");
        let host_cert = crate::enroll_bench_host(bin, &server, &ca, &operator, &admin, &host_dir)?;
        Ok(Custody {
            bin: bin.to_owned(),
            server,
            ca,
            admin,
            reader,
            host_cert,
            host_key: host_dir.join("host.key"),
        })
    }

    /// `custody upload DIR MODEL` as the vendor admin, timed.
    pub fn upload(&self, dir: &Path, model: &str) -> anyhow::Result<Timed> {
        let mut cmd = cli_command(&self.bin, &self.server, &self.ca, &self.admin);
        cmd.arg("upload").arg(dir).arg(model);
        procs::run_timed(cmd, self.server.pid(), Direction::Upload)
    }

    /// The grant of `model` to `reader` and its allowance on the host's group.
    pub fn publish(&self, model: &str) -> anyhow::Result<()> {
        let ok = |args: &[&str]| custody_ok(&self.bin, &self.server, &self.ca, &self.admin, args);
        ok(&["grant", model, "--to", "reader"])?;
        ok(&["host", "allow", model, "bench"])?;
        Ok(())
    }

    /// `custody fetch MODEL --out OUT` as `reader` on the enrolled host.
    pub fn fetch_command(&self, model: &str, out: &Path) -> Command {
        let mut cmd = cli_command(&self.bin, &self.server, &self.ca, &self.reader);
        cmd.env("CUSTODY_HOST_CERT", &self.host_cert)
            .env("CUSTODY_HOST_KEY", &self.host_key)
            .args(["fetch", model, "--out"])
            .arg(out);
        cmd
    }
}

// ----- CPU use of the processes involved ------------------------------------------------------

/// CPU time (user + system) a process has used so far; `None` once it is gone.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks_to_time(ticks))
}

/// CPU time of this process's waited-for children (`cutime + cstime`): the clients
/// `procs::run_timed` ran.
pub(crate) fn children_cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ticks_to_time(field(13) + field(14))
}

fn ticks_to_time(ticks: u64) -> Duration {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    });
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// Measures the CPU the watched processes use while `f` runs: `(f's result, wall, CPU per
/// process as a percentage of one core)`.
pub(crate) fn with_cpu<T>(
    pids: &[u32],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Duration, Vec<f64>)> {
    let before: Vec<Option<Duration>> = pids.iter().map(|&p| cpu_time(p)).collect();
    let start = Instant::now();
    let value = f()?;
    let wall = start.elapsed();
    let percent = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| match (b, cpu_time(p)) {
            (Some(b), Some(a)) => 100.0 * (a - b).as_secs_f64() / wall.as_secs_f64(),
            _ => f64::NAN,
        })
        .collect();
    Ok((value, wall, percent))
}

fn threads(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

fn rss_mib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// moto's process id: testkit prints it in `MotoServer`'s `Debug` (`pid: N`).
fn moto_pid(moto: &testkit::MotoServer) -> anyhow::Result<u32> {
    let debug = format!("{moto:?}");
    debug
        .split("pid: ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no pid in {debug}"))
}

// ----- the raw client -------------------------------------------------------------------------

/// aws-sdk-s3 as custody's S3 backend builds it (crates/blobstore/src/s3.rs `connect`).
async fn raw_client(endpoint: &str) -> anyhow::Result<Client> {
    let secret = cloud::Secret::new("test");
    let shared = cloud::sdk_config("s3", "us-east-1", Some("test"), Some(&secret))
        .await
        .map_err(anyhow::Error::msg)?;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .behavior_version(BehaviorVersion::latest())
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .endpoint_url(endpoint)
        .build();
    Ok(Client::from_conf(config))
}

/// A multipart upload of `source` to `key`: parts of `part` bytes, `at_once` in flight.
async fn raw_put(
    client: &Client,
    key: &str,
    source: &Path,
    size: u64,
    part: u64,
    at_once: usize,
) -> anyhow::Result<()> {
    let created = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?;
    let id = created.upload_id().context("no upload id")?.to_owned();
    let file = Arc::new(std::fs::File::open(source)?);
    let mut parts: Vec<CompletedPart> = futures::stream::iter(1..=size.div_ceil(part))
        .map(|n| {
            let (client, file, id) = (client.clone(), file.clone(), id.clone());
            async move {
                let start = (n - 1) * part;
                let len = part.min(size - start) as usize;
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, start).map(|()| buf)
                })
                .await??;
                let number = i32::try_from(n)?;
                let done = client
                    .upload_part()
                    .bucket(BUCKET)
                    .key(key)
                    .upload_id(&id)
                    .part_number(number)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await?;
                anyhow::Ok(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(done.e_tag().map(str::to_owned))
                        .build(),
                )
            }
        })
        .buffer_unordered(at_once)
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Ranged GETs of `range` bytes, `at_once` at a time, each written in place into `out` as it
/// arrives (as `custody fetch` writes), fsync at the end.
async fn raw_get(
    client: &Client,
    key: &str,
    out: &Path,
    size: u64,
    range: u64,
    at_once: usize,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    file.set_len(size)?;
    let file = Arc::new(file);
    futures::stream::iter(0..size.div_ceil(range))
        .map(|i| {
            let (client, file) = (client.clone(), file.clone());
            async move {
                let start = i * range;
                let end = (start + range).min(size);
                let got = client
                    .get_object()
                    .bucket(BUCKET)
                    .key(key)
                    .range(format!("bytes={start}-{}", end - 1))
                    .send()
                    .await?;
                let mut body = got.body;
                let mut offset = start;
                while let Some(chunk) = body.try_next().await? {
                    if offset + chunk.len() as u64 > end {
                        bail!("S3 sent more bytes than asked for");
                    }
                    let len = chunk.len() as u64;
                    let file = file.clone();
                    tokio::task::spawn_blocking(move || file.write_all_at(&chunk, offset))
                        .await??;
                    offset += len;
                }
                if offset != end {
                    bail!("range {start}-{end} ended after {} bytes", offset - start);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(at_once)
        .try_collect::<()>()
        .await?;
    file.sync_all()?;
    Ok(())
}

async fn raw_delete(client: &Client, key: &str) -> anyhow::Result<()> {
    client
        .delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?;
    Ok(())
}

// ----- the run --------------------------------------------------------------------------------

/// One transfer: wall time and the CPU of moto and of the custody server (percent of a core).
struct Transfer {
    wall: Duration,
    moto_cpu: f64,
    custody_cpu: Option<f64>,
}

/// One point of the tuning grid.
struct Tuned {
    chunk_mib: u64,
    at_once: usize,
    put: Transfer,
    get: Transfer,
}

struct Report {
    size: u64,
    upload: Transfer,
    fetch: Transfer,
    put: Transfer,
    get: Transfer,
    grid: Vec<Tuned>,
    /// GETs of 1 MiB, 16 at a time: what custody's server asks of S3 during `custody fetch`.
    segment_gets: Option<Transfer>,
    moto_threads: Option<u64>,
    moto_peak_mib: Option<u64>,
}

fn bench(bin: &Path, scratch: &Path, size: u64, tune: bool) -> anyhow::Result<Report> {
    let model = scratch.join("model");
    let source = model.join("model.safetensors");
    eprintln!(
        "custody-bench s3: writing a {} MiB test file in {}",
        size / MIB,
        scratch.display()
    );
    write_data(&source, size)?;

    let moto = testkit::MotoServer::start().map_err(anyhow::Error::msg)?;
    let moto_pid = moto_pid(&moto)?;
    moto.create_bucket(BUCKET, false)
        .map_err(anyhow::Error::msg)?;
    let config = scratch.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[s3]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
             bucket = \"{BUCKET}\"\nforce_path_style = true\naccess_key_id = \"test\"\n\
             secret_access_key = \"test\"\nprefix = \"objects/\"\n",
            scratch.join("custody").display(),
            moto.url()
        ),
    )?;
    let custody = Custody::start(bin, scratch, &["--config".as_ref(), config.as_os_str()])?;
    let server_pid = custody.server.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(raw_client(moto.url()))?;
    let pids = [moto_pid, server_pid];

    // Interleaved: custody upload, raw put, custody fetch, raw get.
    procs::settle();
    eprintln!("custody-bench s3: custody upload");
    let (timed, _, cpu) = with_cpu(&pids, || custody.upload(&model, "acme/bench"))?;
    custody.publish("acme/bench")?;
    let upload = Transfer {
        wall: timed.wall,
        moto_cpu: cpu[0],
        custody_cpu: Some(cpu[1]),
    };

    procs::settle();
    eprintln!("custody-bench s3: raw multipart put, 8 MiB parts x3");
    let put = raw_transfer(moto_pid, || {
        runtime.block_on(raw_put(&client, RAW_KEY, &source, size, 8 * MIB, 3))
    })?;

    procs::settle();
    eprintln!("custody-bench s3: custody fetch");
    let fetched = scratch.join("fetched");
    let (timed, _, cpu) = with_cpu(&pids, || {
        procs::run_timed(
            custody.fetch_command("acme/bench", &fetched),
            server_pid,
            Direction::Download,
        )
    })?;
    let fetch = Transfer {
        wall: timed.wall,
        moto_cpu: cpu[0],
        custody_cpu: Some(cpu[1]),
    };
    if file_len(&fetched.join("model.safetensors"))? != size {
        bail!("custody fetch wrote a file of the wrong size");
    }
    std::fs::remove_dir_all(&fetched)?;

    procs::settle();
    let range_len = wire::models::fetch_range_len(size);
    eprintln!(
        "custody-bench s3: raw ranged get, {} MiB ranges x{}",
        range_len / MIB,
        wire::models::FETCH_RANGES_AT_ONCE
    );
    let out = scratch.join("raw-fetched");
    let get = raw_transfer(moto_pid, || {
        runtime.block_on(raw_get(
            &client,
            RAW_KEY,
            &out,
            size,
            range_len,
            wire::models::FETCH_RANGES_AT_ONCE,
        ))
    })?;
    if file_len(&out)? != size {
        bail!("the raw get wrote a file of the wrong size");
    }
    std::fs::remove_file(&out)?;
    // custody's server is done: its CPU is not to be shared with the grid.
    custody.server.stop();

    let mut grid = Vec::new();
    let mut segment_gets = None;
    if tune {
        for chunk_mib in [8, 16, 32] {
            for at_once in [1, 3, 6] {
                procs::settle();
                eprintln!("custody-bench s3: raw, {chunk_mib} MiB x{at_once}");
                let key = format!("raw/{chunk_mib}x{at_once}");
                let put = raw_transfer(moto_pid, || {
                    runtime.block_on(raw_put(
                        &client,
                        &key,
                        &source,
                        size,
                        chunk_mib * MIB,
                        at_once,
                    ))
                })?;
                let get = raw_transfer(moto_pid, || {
                    runtime.block_on(raw_get(&client, &key, &out, size, chunk_mib * MIB, at_once))
                })?;
                std::fs::remove_file(&out)?;
                runtime.block_on(raw_delete(&client, &key))?;
                grid.push(Tuned {
                    chunk_mib,
                    at_once,
                    put,
                    get,
                });
            }
        }
        procs::settle();
        eprintln!("custody-bench s3: raw, 1 MiB GETs x16 (custody's server read pattern)");
        let got = raw_transfer(moto_pid, || {
            runtime.block_on(raw_get(&client, RAW_KEY, &out, size, MIB, 16))
        })?;
        std::fs::remove_file(&out)?;
        segment_gets = Some(got);
    }
    runtime.block_on(raw_delete(&client, RAW_KEY))?;
    let moto_threads = threads(moto_pid);
    let moto_peak_mib = rss_mib(moto_pid);
    drop(moto);
    Ok(Report {
        size,
        upload,
        fetch,
        put,
        get,
        grid,
        segment_gets,
        moto_threads,
        moto_peak_mib,
    })
}

fn raw_transfer(moto_pid: u32, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Transfer> {
    let ((), wall, cpu) = with_cpu(&[moto_pid], f)?;
    Ok(Transfer {
        wall,
        moto_cpu: cpu[0],
        custody_cpu: None,
    })
}

/// MB/s (10^6 bytes per second).
pub(crate) fn mbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64().max(1e-9) / 1e6
}

impl Report {
    fn cell(&self, t: &Transfer) -> String {
        let mut s = format!(
            "{:.0} MB/s ({:.2} s; moto {:.0}% CPU",
            mbps(self.size, t.wall),
            t.wall.as_secs_f64(),
            t.moto_cpu
        );
        if let Some(c) = t.custody_cpu {
            s.push_str(&format!(", custody server {c:.0}%"));
        }
        s.push(')');
        s
    }

    fn print(&self) {
        let mib = self.size / MIB;
        println!(
            "machine: {} cores; moto_server: one Python process, {} threads at the end, peak RSS {} MiB",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            self.moto_threads.map_or("?".into(), |t| t.to_string()),
            self.moto_peak_mib.map_or("?".into(), |t| t.to_string()),
        );
        println!();
        println!("| row | what | custody | raw S3 | ratio |");
        println!("|---|---|---|---|---|");
        let rows = [
            (
                "s1",
                format!(
                    "upload {mib} MiB: `custody upload` (server: 8 MiB parts x3 to S3) vs raw multipart put (8 MiB parts x3)"
                ),
                &self.upload,
                &self.put,
            ),
            (
                "s2",
                format!(
                    "download {mib} MiB: `custody fetch` (its ranges x4, fsync, SHA-256) vs raw ranged GETs (the same ranges, written in place, fsync)"
                ),
                &self.fetch,
                &self.get,
            ),
        ];
        for (id, what, ours, raw) in rows {
            println!(
                "| {id} | {what} | {} | {} | {:.2}x |",
                self.cell(ours),
                self.cell(raw),
                raw.wall.as_secs_f64() / ours.wall.as_secs_f64()
            );
        }
        if !self.grid.is_empty() {
            println!();
            println!(
                "Raw client alone, {mib} MiB (put: multipart, part size x parts in flight; get: ranged GETs of the same size x in flight):"
            );
            println!();
            println!("| part / range | in flight | put | moto CPU | get | moto CPU |");
            println!("|---|---|---|---|---|---|");
            for t in &self.grid {
                println!(
                    "| {} MiB | {} | {:.0} MB/s | {:.0}% | {:.0} MB/s | {:.0}% |",
                    t.chunk_mib,
                    t.at_once,
                    mbps(self.size, t.put.wall),
                    t.put.moto_cpu,
                    mbps(self.size, t.get.wall),
                    t.get.moto_cpu
                );
            }
            if let Some(g) = &self.segment_gets {
                println!(
                    "| 1 MiB (custody server's segment reads) | 16 | | | {:.0} MB/s | {:.0}% |",
                    mbps(self.size, g.wall),
                    g.moto_cpu
                );
            }
        }
        println!();
        println!(
            "MB/s = 10^6 bytes per second; ratio = custody throughput / raw S3 throughput; CPU = \
             share of one core over the transfer (/proc/PID/stat). One run each, same moto, \
             the test file in the page cache."
        );
    }
}
