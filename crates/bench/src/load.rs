//! `custody-bench load`: many clients at once against a real server, then an abuse round.
//!
//! Load: `--clients` concurrent clients (each with its own connections, all on an enrolled
//! host) mix listings, 1 MiB ranged fetches, small uploads (begin, bytes, commit) and audit
//! reads for `--secs`. Reported: requests/s, p50/p99 latency per kind, errors (goal 0), and
//! the server's resident memory and open file descriptors before and after (goal: no growth).
//!
//! Abuse: while a legitimate `custody fetch` of a large file runs (from 127.0.0.1),
//! `--half-open` connections that never finish TLS, reopened as fast as the server closes them
//! (from 127.0.0.2), a flood of unauthenticated requests (from 127.0.0.3) and oversized
//! declarations (a manifest over the file size limit, a JSON body over
//! the body limit). Reported: whether the fetch completed and how fast, the server's peak
//! resident memory during the round (goal < 128 MiB), what the abusers got back, and how many
//! audit entries the round added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::procs::Server;
use crate::{cli_command, custody_ok, start_custody, write_data};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Seconds of mixed load
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Concurrent clients
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Size of the file the legitimate client fetches during the abuse round, in MiB
    #[arg(long, default_value_t = 1024)]
    fetch_mib: u64,
    /// Half-open connections held during the abuse round
    #[arg(long, default_value_t = 500)]
    half_open: usize,
    /// Scratch directory (about 3x --fetch-mib free); a temporary folder inside it is removed
    /// at the end
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: `custody` beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Listing,
    RangedFetch,
    Upload,
    AuditRead,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Listing => "listing (`GET /v1/models`)",
            Kind::RangedFetch => "ranged fetch (1 MiB of a 64 MiB file)",
            Kind::Upload => "small upload (begin + 4 KiB + commit)",
            Kind::AuditRead => "audit read (100 entries)",
        }
    }
}

/// What the load and abuse rounds need to reach the server.
#[derive(Clone)]
struct Setup {
    url: String,
    ca: PathBuf,
    host_cert: PathBuf,
    host_key: PathBuf,
    reader: String,
    /// Vendor admins for the small uploads, one per [`CLIENTS_PER_UPLOADER`] clients: the
    /// server caps open upload sessions per user, and one user for every client would hit
    /// that cap by design rather than measure the load.
    uploaders: Vec<String>,
    operator: String,
    commit: String,
    db: PathBuf,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let bin = crate::procs::custody_binary(args.custody.clone())?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("custody-bench-load-")
        .tempdir_in(&parent)?;
    let result = run_in(&bin, scratch.path(), &args);
    drop(scratch);
    let report = result?;
    report.print(&args);
    Ok(())
}

fn run_in(bin: &Path, scratch: &Path, args: &LoadArgs) -> anyhow::Result<Report> {
    let data = scratch.join("custody");
    let (server, ca, operator, admin) = start_custody(bin, &data, &scratch.join("server.log"))?;
    let reader = custody_ok(
        bin,
        &server,
        &ca,
        &operator,
        &["token", "create", "--role", "committer", "--name", "reader"],
    )?;
    let host_dir = scratch.join("host");
    let status = Command::new(bin)
        .args(["host", "csr", "--name", "load-host", "--out"])
        .arg(&host_dir)
        .status()?;
    if !status.success() {
        bail!("custody host csr failed");
    }
    let host_cert = host_dir.join("host.crt");
    custody_ok(
        bin,
        &server,
        &ca,
        &operator,
        &[
            "host",
            "enroll",
            host_dir
                .join("host.csr")
                .to_str()
                .context("non-UTF-8 path")?,
            "--name",
            "load-host",
            "--group",
            "load",
            "--out",
            host_cert.to_str().context("non-UTF-8 path")?,
        ],
    )?;
    // The operator enrolls the host; the vendor approves it for its weights.
    custody_ok(
        bin,
        &server,
        &ca,
        &admin,
        &["host", "approve", "acme", "load-host"],
    )?;
    eprintln!("custody-bench load: uploading the test models");
    let small = scratch.join("small");
    write_data(&small.join("weights.bin"), 64 << 20)?;
    std::fs::write(small.join("config.json"), b"{\"layers\": 2}")?;
    let commit = upload(bin, &server, &ca, &admin, &small, "acme/load")?;
    let big = scratch.join("big");
    write_data(&big.join("model.safetensors"), args.fetch_mib << 20)?;
    upload(bin, &server, &ca, &admin, &big, "acme/big")?;
    std::fs::remove_dir_all(&big)?;

    let mut uploaders = Vec::new();
    for index in 0..args.clients.div_ceil(CLIENTS_PER_UPLOADER) {
        let name = format!("uploader-{index}");
        uploaders.push(custody_ok(
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
                &name,
            ],
        )?);
    }
    // A further admin counts at acme once acme's first admin approves it.
    let pending: wire::access::PendingList = serde_json::from_str(&custody_ok(
        bin,
        &server,
        &ca,
        &admin,
        &["pending", "acme", "--json"],
    )?)?;
    for request in pending.pending.iter().filter(|r| r.state == "pending") {
        custody_ok(bin, &server, &ca, &admin, &["approve", &request.id])?;
    }
    let setup = Setup {
        url: server.url.clone(),
        ca: ca.clone(),
        host_cert: host_cert.clone(),
        host_key: host_dir.join("host.key"),
        reader: reader.clone(),
        uploaders,
        operator,
        commit,
        db: data.join("db/custody.sqlite"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    std::thread::sleep(Duration::from_secs(2));
    let before = Usage::of(&server)?;
    eprintln!(
        "custody-bench load: {} clients for {} s",
        args.clients, args.secs
    );
    let samples = runtime.block_on(load(&setup, args.clients, Duration::from_secs(args.secs)))?;
    // Every client is gone; give the server a moment to close their connections.
    std::thread::sleep(Duration::from_secs(3));
    let after_soak = Usage::of(&server)?;

    eprintln!(
        "custody-bench load: abuse round during a {} MiB fetch",
        args.fetch_mib
    );
    // Start the round's peak from now (`5` resets VmHWM to the current resident size).
    let _ = std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5");
    let audit_before = runtime.block_on(audit_size(&setup.db))?;
    let mut fetch = cli_command(bin, &server, &ca, &reader);
    fetch
        .env("CUSTODY_HOST_CERT", &host_cert)
        .env("CUSTODY_HOST_KEY", host_dir.join("host.key"))
        .args(["fetch", "acme/big", "--out"])
        .arg(scratch.join("fetched"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let abuse = runtime.block_on(abuse(&setup, &server.url, fetch, args.half_open))?;
    let audit_after = runtime.block_on(audit_size(&setup.db))?;
    let abuse_peak_kib = server.peak_rss_kib()?;
    std::thread::sleep(Duration::from_secs(3));
    let after_abuse = Usage::of(&server)?;
    server.stop();
    Ok(Report {
        samples,
        secs: args.secs,
        before,
        after_soak,
        after_abuse,
        abuse,
        abuse_peak_kib,
        audit_added: audit_after.saturating_sub(audit_before),
    })
}

fn upload(
    bin: &Path,
    server: &Server,
    ca: &Path,
    admin: &str,
    dir: &Path,
    model: &str,
) -> anyhow::Result<String> {
    let commit = custody_ok(
        bin,
        server,
        ca,
        admin,
        &["upload", dir.to_str().context("non-UTF-8 path")?, model],
    )?;
    custody_ok(bin, server, ca, admin, &["grant", model, "--to", "reader"])?;
    custody_ok(bin, server, ca, admin, &["host", "allow", model, "load"])?;
    Ok(commit)
}

async fn audit_size(db: &Path) -> anyhow::Result<u64> {
    let store = store::Store::connect(&format!("sqlite://{}?mode=rw", db.display())).await?;
    Ok(store.audit_size().await?)
}

/// Resident memory and open descriptors of the server.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Usage {
    fn of(server: &Server) -> anyhow::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))?.count();
        Ok(Usage { rss_kib, fds })
    }
}

/// The abusers' source addresses: an attacker is not the legitimate client (127.0.0.1), and
/// the server's per-source cap is what keeps them apart.
const ABUSER: [u8; 4] = [127, 0, 0, 2];
const FLOODER: [u8; 4] = [127, 0, 0, 3];

async fn connect_from(source: [u8; 4], addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    let addr = addr
        .parse()
        .map_err(|_| std::io::Error::other("not a socket address"))?;
    socket.connect(addr).await
}

/// An HTTPS client of the server, on the enrolled host.
fn client(setup: &Setup) -> anyhow::Result<reqwest::Client> {
    client_from(setup, None)
}

fn client_from(setup: &Setup, source: Option<[u8; 4]>) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&setup.ca)? {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_file_iter(&setup.host_cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&setup.host_key)?;
    let tls = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(Arc::new(roots))
        .with_client_auth_cert(chain, key)?;
    let mut builder = reqwest::Client::builder().use_preconfigured_tls(tls);
    if let Some(source) = source {
        builder = builder.local_address(std::net::IpAddr::from(source));
    }
    Ok(builder.build()?)
}

struct Sample {
    kind: Kind,
    latency: Duration,
    ok: bool,
    /// Why it failed, when it did (the first of each kind is printed under the table).
    error: Option<String>,
}

async fn load(setup: &Setup, clients: usize, secs: Duration) -> anyhow::Result<Vec<Sample>> {
    let deadline = Instant::now() + secs;
    let setup = Arc::new(setup.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..clients {
        let setup = setup.clone();
        let http = client(&setup)?;
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut turn = index;
            while Instant::now() < deadline {
                let kind = match turn % 10 {
                    0..=3 => Kind::Listing,
                    4..=6 => Kind::RangedFetch,
                    7 => Kind::Upload,
                    _ => Kind::AuditRead,
                };
                turn += 1;
                let started = Instant::now();
                let outcome = one(&http, &setup, kind, index, turn).await;
                samples.push(Sample {
                    kind,
                    latency: started.elapsed(),
                    ok: outcome.is_ok(),
                    error: outcome.err().map(|e| format!("{e:#}")),
                });
            }
            samples
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done?);
    }
    Ok(all)
}

/// How many load clients share one uploading user (the server's default cap on one user's
/// open upload sessions is 16).
const CLIENTS_PER_UPLOADER: usize = 8;

/// An unexpected answer as the report shows it: the status and the server's error code.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<wire::ErrorBody>().await {
        Ok(body) => format!("status {status} ({})", body.error.code),
        Err(_) => format!("status {status}"),
    }
}

/// One request (an upload: three) of `kind`; an error for any unexpected status.
async fn one(
    http: &reqwest::Client,
    setup: &Setup,
    kind: Kind,
    client: usize,
    turn: usize,
) -> anyhow::Result<()> {
    let url = &setup.url;
    let expect = |response: reqwest::Response, status: u16| async move {
        if response.status().as_u16() != status {
            bail!("{}", refusal(response).await);
        }
        Ok(response.bytes().await?)
    };
    match kind {
        Kind::Listing => {
            let r = http
                .get(format!("{url}/v1/models"))
                .bearer_auth(&setup.reader)
                .send()
                .await?;
            expect(r, 200).await?;
        }
        Kind::RangedFetch => {
            let start = (turn as u64 * 7919 % 63) << 20;
            let r = http
                .get(format!(
                    "{url}/v1/models/acme/load/revisions/{}/files/weights.bin",
                    setup.commit
                ))
                .bearer_auth(&setup.reader)
                .header("range", format!("bytes={start}-{}", start + (1 << 20) - 1))
                .send()
                .await?;
            let body = expect(r, 206).await?;
            if body.len() != 1 << 20 {
                bail!("{} bytes", body.len());
            }
        }
        Kind::Upload => {
            let uploader = &setup.uploaders[client / CLIENTS_PER_UPLOADER];
            let bytes: Vec<u8> = format!("client {client} turn {turn} ")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(4096)
                .collect();
            let sha = hex::encode(crypto::hash::sha256(&bytes));
            let r = http
                .post(format!("{url}/v1/models/acme/up-{client}/uploads"))
                .bearer_auth(uploader)
                .json(&serde_json::json!({
                    "message": "load",
                    "files": [{ "path": "f.bin", "size": bytes.len(), "sha256": sha }],
                }))
                .send()
                .await?;
            let session: serde_json::Value = serde_json::from_slice(&expect(r, 201).await?)?;
            let id = session["upload_id"].as_str().context("no upload_id")?;
            let r = http
                .put(format!("{url}/v1/uploads/{id}/files/0"))
                .bearer_auth(uploader)
                .body(bytes)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("put: {}", refusal(r).await);
            }
            let r = http
                .post(format!("{url}/v1/uploads/{id}/commit"))
                .bearer_auth(uploader)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("commit: {}", refusal(r).await);
            }
        }
        Kind::AuditRead => {
            let r = http
                .get(format!("{url}/v1/audit/entries?from=0&to=100"))
                .bearer_auth(&setup.operator)
                .send()
                .await?;
            expect(r, 200).await?;
        }
    }
    Ok(())
}

struct Abuse {
    fetch_ok: bool,
    fetch_secs: f64,
    fetch_error: String,
    half_open_opened: u64,
    flood: BTreeMap<u16, u64>,
    oversized: BTreeMap<u16, u64>,
}

async fn abuse(
    setup: &Setup,
    url: &str,
    mut fetch: Command,
    half_open: usize,
) -> anyhow::Result<Abuse> {
    let addr = url.trim_start_matches("https://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();

    // Half-open: connections that send the first bytes of a TLS record and nothing more,
    // reopened as soon as the server closes them.
    for _ in 0..half_open {
        let (addr, stop, opened) = (addr.clone(), stop.clone(), opened.clone());
        tasks.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = connect_from(ABUSER, &addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.write_all(&[0x16, 0x03, 0x01]).await;
                let mut byte = [0u8; 1];
                // Held until the server closes it (or the round ends).
                tokio::select! {
                    _ = tcp.read(&mut byte) => {}
                    () = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(200)).await } } => {}
                }
            }
            BTreeMap::new()
        });
    }
    // Unauthenticated flood.
    for _ in 0..16 {
        let (stop, http, url) = (
            stop.clone(),
            client_from(setup, Some(FLOODER))?,
            url.to_owned(),
        );
        tasks.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let status = match http.get(format!("{url}/v1/models")).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *statuses.entry(status).or_insert(0) += 1;
            }
            statuses
        });
    }
    // Oversized declarations: a file over the size limit, a JSON body over the body limit.
    let oversized_task = {
        let (stop, http, url, admin) = (
            stop.clone(),
            client(setup)?,
            url.to_owned(),
            setup.uploaders[0].clone(),
        );
        tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            let huge_body = serde_json::json!({ "files": [], "padding": "x".repeat(8 << 20) });
            let mut turn = 0u64;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let request = if turn.is_multiple_of(2) {
                    http.post(format!("{url}/v1/models/acme/huge/uploads")).json(&serde_json::json!({
                        "files": [{ "path": "w.bin", "size": 5u64 << 40, "sha256": "0".repeat(64) }],
                    }))
                } else {
                    http.post(format!("{url}/v1/models/acme/huge/uploads"))
                        .json(&huge_body)
                };
                let status = match request.bearer_auth(&admin).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *statuses.entry(status).or_insert(0u64) += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };

    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || fetch.output()).await??;
    let fetch_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut flood = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        for (status, n) in done? {
            *flood.entry(status).or_insert(0) += n;
        }
    }
    let oversized = oversized_task.await?;
    Ok(Abuse {
        fetch_ok: output.status.success(),
        fetch_secs,
        fetch_error: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        half_open_opened: opened.load(Ordering::Relaxed),
        flood,
        oversized,
    })
}

struct Report {
    samples: Vec<Sample>,
    secs: u64,
    before: Usage,
    after_soak: Usage,
    after_abuse: Usage,
    abuse: Abuse,
    abuse_peak_kib: u64,
    audit_added: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn statuses(map: &BTreeMap<u16, u64>) -> String {
    map.iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("{n} connection errors")
            } else {
                format!("{n} x {s}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    fn print(&self, args: &LoadArgs) {
        println!(
            "load: {} clients for {} s; abuse: {} half-open connections, 16 unauthenticated flooders, oversized declarations, during a {} MiB fetch",
            args.clients, self.secs, args.half_open, args.fetch_mib
        );
        println!();
        println!("| kind | requests | requests/s | p50 | p99 | errors |");
        println!("|---|---|---|---|---|---|");
        let mut total = 0;
        let mut errors_total = 0;
        for kind in [
            Kind::Listing,
            Kind::RangedFetch,
            Kind::Upload,
            Kind::AuditRead,
        ] {
            let mut latencies: Vec<Duration> = self
                .samples
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| s.latency)
                .collect();
            latencies.sort();
            let errors = self
                .samples
                .iter()
                .filter(|s| s.kind == kind && !s.ok)
                .count();
            total += latencies.len();
            errors_total += errors;
            println!(
                "| {} | {} | {:.0} | {} | {} | {} |",
                kind.name(),
                latencies.len(),
                latencies.len() as f64 / self.secs as f64,
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                errors
            );
        }
        println!(
            "| all (goal: 0 errors) | {total} | {:.0} | | | {errors_total} |",
            total as f64 / self.secs as f64
        );
        let mut shown = Vec::new();
        for s in self.samples.iter().filter(|s| !s.ok) {
            if !shown.contains(&s.kind.name()) {
                shown.push(s.kind.name());
                let why = s.error.as_deref().unwrap_or("unknown");
                println!("\nfirst error of {}: {why}", s.kind.name());
            }
        }
        println!();
        let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
        println!("| server | before | after the load | after the abuse round | goal |");
        println!("|---|---|---|---|---|");
        println!(
            "| resident memory (VmRSS) | {} | {} | {} | no growth after the soak |",
            mib(self.before.rss_kib),
            mib(self.after_soak.rss_kib),
            mib(self.after_abuse.rss_kib)
        );
        println!(
            "| open file descriptors | {} | {} | {} | no growth after the soak |",
            self.before.fds, self.after_soak.fds, self.after_abuse.fds
        );
        println!();
        let a = &self.abuse;
        let gb = (args.fetch_mib << 20) as f64 / 1e9;
        println!("| abuse round | result | goal |");
        println!("|---|---|---|");
        println!(
            "| legitimate `custody fetch` of {} MiB | {} | completes |",
            args.fetch_mib,
            if a.fetch_ok {
                format!(
                    "completed in {:.1} s ({:.2} GB/s)",
                    a.fetch_secs,
                    gb / a.fetch_secs
                )
            } else {
                format!("FAILED after {:.1} s: {}", a.fetch_secs, a.fetch_error)
            }
        );
        println!(
            "| server peak resident memory during the round (VmHWM) | {} | < 128 MiB |",
            mib(self.abuse_peak_kib)
        );
        println!(
            "| half-open connections opened (each held until the server cut it) | {} | |",
            a.half_open_opened
        );
        println!(
            "| unauthenticated flood, answers | {} | refused |",
            statuses(&a.flood)
        );
        println!(
            "| oversized declarations (5 TiB file; 8 MiB JSON body), answers | {} | refused |",
            statuses(&a.oversized)
        );
        println!(
            "| audit entries added during the round | {} | bounded |",
            self.audit_added
        );
    }
}
