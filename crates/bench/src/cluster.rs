//! `custody-bench cluster`: the same service run as 1 and as 3 instances on one PostgreSQL
//! database (fsync and synchronous commit on) behind HAProxy in TCP mode: audit appends per
//! second from concurrent writers, and aggregate download throughput of concurrent
//! `custody fetch` runs through the load balancer.
//!
//! Storage is a blob directory and a root directory shared by the instances (as an NFS mount
//! would be), so that no S3 emulator sits in the data path. Everything runs on this machine:
//! on few cores the instances, PostgreSQL, HAProxy and the clients share the CPU, and the
//! ratio between 1 and 3 instances says how much of a request is work one instance can do in
//! parallel, not what three machines would do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use testkit::{Cluster, ClusterOptions, PgCluster, Storage};

#[derive(Args)]
pub struct ClusterArgs {
    /// Seconds each append measurement runs
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent writers in all, spread over the instances
    #[arg(long, default_value_t = 96)]
    writers: usize,
    /// Size of the file the download rows fetch, in MiB
    #[arg(long, default_value_t = 512)]
    size_mib: u64,
    /// Concurrent `custody fetch` runs for the download rows
    #[arg(long, default_value_t = 6)]
    fetchers: usize,
    /// Instance counts to measure
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    instances: Vec<usize>,
    /// Scratch directory (about fetchers + 2 times the file size free)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
}

struct Row {
    instances: usize,
    changes_per_sec: f64,
    reads_per_sec: f64,
    download_mib_per_sec: f64,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let bin = crate::procs::custody_binary(args.custody.clone())?;
    let pg: &'static PgCluster = Box::leak(Box::new(
        PgCluster::start_durable().map_err(anyhow::Error::msg)?,
    ));
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("custody-bench-cluster-")
        .tempdir_in(&parent)?;
    let size = args.size_mib << 20;
    let model = scratch.path().join("model");
    crate::write_data(&model.join("model.safetensors"), size)?;
    let mut rows = Vec::new();
    for &n in &args.instances {
        eprintln!("custody-bench: {n} instance(s) on PostgreSQL behind HAProxy");
        let cluster = Cluster::start_with(
            &bin,
            n,
            ClusterOptions {
                storage: Storage::SharedDirectories,
                pg: Some(pg),
                ..ClusterOptions::default()
            },
        )
        .map_err(anyhow::Error::msg)?;
        let changes = appends(&cluster, args.writers, args.secs, Kind::Change)?;
        let reads = appends(&cluster, args.writers, args.secs, Kind::Read)?;
        let work = scratch.path().join(format!("run-{n}"));
        let download = downloads(&bin, &cluster, &model, size, args.fetchers, &work)?;
        std::fs::remove_dir_all(&work).ok();
        rows.push(Row {
            instances: n,
            changes_per_sec: changes,
            reads_per_sec: reads,
            download_mib_per_sec: download,
        });
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\n{threads} cores, PostgreSQL with fsync on, {} writers, {} concurrent fetches of {} MiB:\n",
        args.writers, args.fetchers, args.size_mib
    );
    println!("| instances | audited changes/s | audited reads/s | aggregate download MiB/s |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            r.instances, r.changes_per_sec, r.reads_per_sec, r.download_mib_per_sec
        );
    }
    if let (Some(one), Some(three)) = (
        rows.iter().find(|r| r.instances == 1),
        rows.iter().find(|r| r.instances == 3),
    ) {
        println!(
            "\n3 vs 1 instance: changes x{:.2}, reads x{:.2}, downloads x{:.2}",
            three.changes_per_sec / one.changes_per_sec,
            three.reads_per_sec / one.reads_per_sec,
            three.download_mib_per_sec / one.download_mib_per_sec
        );
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `POST /v1/vendors`: a state change, its entry in its own transaction.
    Change,
    /// `GET /v1/audit/checkpoint`: a read, its entry group-committed with others.
    Read,
}

fn audit_size(cluster: &Cluster) -> anyhow::Result<u64> {
    cluster
        .sql("SELECT tree_size FROM audit_head WHERE id = 1")
        .map_err(anyhow::Error::msg)?
        .trim()
        .parse()
        .context("reading the audit log's size")
}

/// Entries appended per second by `writers` concurrent writers, spread over the instances,
/// each talking to its instance directly.
fn appends(cluster: &Cluster, writers: usize, secs: u64, kind: Kind) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let urls: Vec<String> = (0..cluster.len())
        .map(|i| cluster.instance_url(i))
        .collect();
    let ca = cluster.ca.clone();
    let operator = cluster.operator.clone();
    let before = audit_size(cluster)?;
    let started = Instant::now();
    let failures = runtime.block_on(async move {
        // One client (one connection pool) per instance.
        let clients: Vec<reqwest::Client> = urls
            .iter()
            .map(|_| crate::plain::client(&ca))
            .collect::<Result<_, _>>()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let i = w % urls.len();
            let (client, url, operator) = (clients[i].clone(), urls[i].clone(), operator.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = 0u64;
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let request = match kind {
                        Kind::Change => client
                            .post(format!("{url}/v1/vendors"))
                            .json(&serde_json::json!({ "name": format!("b{w}x{k}") })),
                        Kind::Read => client.get(format!("{url}/v1/audit/checkpoint")),
                    };
                    match request.bearer_auth(&operator).send().await {
                        Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {}
                        _ => failures += 1,
                    }
                    k += 1;
                }
                failures
            }));
        }
        let mut failures = 0;
        for t in tasks {
            failures += t.await?;
        }
        anyhow::Ok(failures)
    })?;
    let elapsed = started.elapsed();
    if failures > 0 {
        bail!("{failures} requests failed");
    }
    let after = audit_size(cluster)?;
    Ok((after - before) as f64 / elapsed.as_secs_f64())
}

fn cli(bin: &Path, cluster: &Cluster, token: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("CUSTODY_SERVER", cluster.url())
        .env("CUSTODY_TOKEN", token)
        .env("CUSTODY_CA", &cluster.ca)
        .stdin(Stdio::null());
    cmd
}

fn ok(mut cmd: Command, args: &[&str]) -> anyhow::Result<String> {
    let out = cmd.args(args).output()?;
    if !out.status.success() {
        bail!("custody {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Uploads the model once, then runs `fetchers` concurrent fetches through the load balancer;
/// returns the aggregate MiB/s (bytes delivered by all / time until the last one finished).
fn downloads(
    bin: &Path,
    cluster: &Cluster,
    model: &Path,
    size: u64,
    fetchers: usize,
    work: &Path,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(work)?;
    let operator = cluster.operator.as_str();
    ok(cli(bin, cluster, operator), &["vendor", "create", "acme"])?;
    let admin = ok(
        cli(bin, cluster, operator),
        &[
            "token",
            "create",
            "--role",
            "vendor-admin",
            "--vendor",
            "acme",
            "--name",
            "admin",
        ],
    )?;
    let reader = ok(
        cli(bin, cluster, operator),
        &["token", "create", "--role", "committer", "--name", "reader"],
    )?;
    let host = work.join("host");
    ok(
        Command::new(bin),
        &[
            "host",
            "csr",
            "--name",
            "bench-host",
            "--out",
            host.to_str().context("path")?,
        ],
    )?;
    let cert = host.join("host.crt");
    ok(
        cli(bin, cluster, operator),
        &[
            "host",
            "enroll",
            host.join("host.csr").to_str().context("path")?,
            "--name",
            "bench-host",
            "--group",
            "bench",
            "--out",
            cert.to_str().context("path")?,
        ],
    )?;
    // The operator enrolls the host; the vendor approves it for its weights.
    ok(
        cli(bin, cluster, &admin),
        &["host", "approve", "acme", "bench-host"],
    )?;
    ok(
        cli(bin, cluster, &admin),
        &["upload", model.to_str().context("path")?, "acme/bench"],
    )?;
    ok(
        cli(bin, cluster, &admin),
        &["grant", "acme/bench", "--to", "reader"],
    )?;
    ok(
        cli(bin, cluster, &admin),
        &["host", "allow", "acme/bench", "bench"],
    )?;
    crate::procs::settle();
    let started = Instant::now();
    let children = (0..fetchers)
        .map(|i| {
            cli(bin, cluster, &reader)
                .env("CUSTODY_HOST_CERT", &cert)
                .env("CUSTODY_HOST_KEY", host.join("host.key"))
                .env("CUSTODY_HOST_STATE", work.join(format!("fetched-{i}.json")))
                .args(["fetch", "acme/bench", "--out"])
                .arg(work.join(format!("out-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("a fetch failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let elapsed = started.elapsed();
    Ok((size * fetchers as u64) as f64 / (1u64 << 20) as f64 / elapsed.as_secs_f64())
}
