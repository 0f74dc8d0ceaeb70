//! `custody-bench audit`: the audit log's figures.
//!
//! Rows: (A1–A4) durable appends per second through `Store::record` (group commit, entry and
//! Merkle tree in one transaction) with 1 and 64 concurrent writers, on SQLite (WAL,
//! `synchronous=FULL`) and on PostgreSQL; (A5) filling a SQLite log to N entries (default 1M)
//! the same way with 256 writers; (A6) inclusion proofs from that database at N entries;
//! (A7) offline verification of all N entries (`audit::bundle::verify_bundle`: every leaf
//! rebuilt from its bytes, roots, signatures, manifest).
//!
//! PostgreSQL: `--pg-url` names a server to use as it is configured; without it a throwaway
//! cluster from `testkit` is started with PostgreSQL's durability settings (fsync and
//! synchronous commit on), so its figures are durable appends.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use audit::bundle::{Parts, assemble, verify_bundle};
use audit::checkpoint::{self, Checkpoint};
use audit::merkle;
use clap::Args;
use crypto::sign::SigningKey;
use rand::Rng;
use store::Store;

#[derive(Args)]
pub struct AuditArgs {
    /// Log size for the inclusion-proof and verification rows
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Seconds each append measurement runs
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// A PostgreSQL server to measure (default: a throwaway cluster with fsync on)
    #[arg(long, env = "CUSTODY_BENCH_PG_URL", hide_env_values = true)]
    pg_url: Option<String>,
    /// Skip the PostgreSQL rows
    #[arg(long)]
    no_pg: bool,
    /// Scratch directory for the SQLite databases (default: the system's temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A typical entry: a fetch by a committer from a host, one file touched (about 330 bytes).
fn entry(i: u64) -> audit::Entry {
    let mut e = audit::Entry::new(
        "committer:alice",
        "fetch",
        "acme/llama-next@0123456789abcdef",
    )
    .with_decision(true, "committer-fetches-granted-model")
    .with_request_id(&format!("{i:016x}"))
    .with_touched(vec![audit::Touched {
        path: "model-00001-of-00004.safetensors".into(),
        sha256: "5d41402abc4b2a76b9719d911017c592".repeat(2),
        bytes: 4_987_000_000,
    }]);
    e.host = Some("gpu-01".into());
    e
}

struct Appends {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Entries per transaction.
    batch: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// `writers` tasks call `record` in a loop for `secs`; each call returns once durable.
async fn appends(store: &Store, writers: usize, secs: f64) -> anyhow::Result<Appends> {
    let (batches0, entries0) = store.audit_group_commits();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            let mut i = (w as u64) << 40;
            while Instant::now() < deadline {
                let t = Instant::now();
                store.record(entry(i)).await?;
                waits.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(waits)
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await??);
    }
    let took = start.elapsed();
    waits.sort();
    let (batches, entries) = store.audit_group_commits();
    let (batches, entries) = (batches - batches0, entries - entries0);
    Ok(Appends {
        per_sec: waits.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&waits, 0.5),
        p99_ms: percentile(&waits, 0.99),
        batch: entries as f64 / batches.max(1) as f64,
    })
}

/// Fills the log to `n` entries with `writers` concurrent writers; returns entries per second.
async fn fill(store: &Store, n: u64, writers: usize) -> anyhow::Result<f64> {
    let have = store.audit_size().await?;
    let next = Arc::new(AtomicU64::new(have));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                store.record(entry(0)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let size = store.audit_size().await?;
    if size < n {
        bail!("the log has {size} entries, expected {n}");
    }
    Ok((size - have) as f64 / start.elapsed().as_secs_f64())
}

async fn sqlite(dir: &std::path::Path, name: &str) -> anyhow::Result<Store> {
    let url = format!("sqlite://{}?mode=rwc", dir.join(name).display());
    open(&url).await
}

/// The store, with the vendor its entries concern (so every leaf carries acme's tag, as in
/// a real log: an HMAC per entry and the vendor's key read in each appending transaction).
async fn open(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url).await?;
    let acme = types::VendorName::parse("acme")?;
    if store.vendor(&acme).await?.is_none() {
        let entry = audit::Entry::new("system", "vendor.create", "acme");
        store.create_vendor("v-acme", &acme, entry).await?;
    }
    Ok(store)
}

struct Row {
    id: &'static str,
    what: String,
    figure: String,
    goal: &'static str,
    met: Option<bool>,
}

fn append_row(
    id: &'static str,
    what: String,
    a: &Appends,
    goal: &'static str,
    min: Option<f64>,
) -> Row {
    Row {
        id,
        what,
        figure: format!(
            "{:.0}/s (wait p50 {:.2} ms, p99 {:.2} ms; {:.1} entries per transaction)",
            a.per_sec, a.p50_ms, a.p99_ms, a.batch
        ),
        goal,
        met: min.map(|m| a.per_sec >= m),
    }
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: AuditArgs) -> anyhow::Result<()> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("custody-bench-audit-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a scratch folder in {}", parent.display()))?;
    let mut rows = Vec::new();

    for (id, writers) in [("A1", 1usize), ("A2", 64)] {
        eprintln!("custody-bench: SQLite appends, {writers} writer(s)");
        let store = sqlite(scratch.path(), &format!("appends-{writers}.sqlite")).await?;
        let a = appends(&store, writers, args.secs).await?;
        let (goal, min) = if writers == 64 {
            (">= 10,000/s", Some(10_000.0))
        } else {
            ("", None)
        };
        rows.push(append_row(
            id,
            format!("durable appends, SQLite (WAL, synchronous=FULL), {writers} writer(s)"),
            &a,
            goal,
            min,
        ));
    }

    if !args.no_pg {
        // Kept alive until the PostgreSQL rows are done.
        let mut cluster = None;
        let (url, note) = match &args.pg_url {
            Some(url) => (url.clone(), "as configured"),
            None => {
                let c = tokio::task::spawn_blocking(testkit::PgCluster::start_durable)
                    .await?
                    .map_err(|e| anyhow::anyhow!(e))?;
                let url = c.fresh_database().map_err(|e| anyhow::anyhow!(e))?;
                cluster = Some(c);
                (url, "throwaway cluster, fsync on: durable")
            }
        };
        for (id, writers) in [("A3", 1usize), ("A4", 64)] {
            eprintln!("custody-bench: PostgreSQL appends, {writers} writer(s)");
            let store = open(&url).await?;
            let a = appends(&store, writers, args.secs).await?;
            rows.push(append_row(
                id,
                format!("appends, PostgreSQL ({note}), {writers} writer(s)"),
                &a,
                "",
                None,
            ));
        }
        drop(cluster);
    }

    let n = args.entries;
    eprintln!("custody-bench: filling a SQLite log to {n} entries");
    let store = sqlite(scratch.path(), "big.sqlite").await?;
    let rate = fill(&store, n, 256).await?;
    rows.push(Row {
        id: "A5",
        what: format!("fill a SQLite log to {n} entries, 256 writers (durable appends)"),
        figure: format!("{rate:.0}/s ({:.1} s)", n as f64 / rate),
        goal: "",
        met: None,
    });

    eprintln!("custody-bench: inclusion proofs at {n} entries");
    let root = store.audit_root(n).await?;
    let mut rng = rand::thread_rng();
    let mut times = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let index = rng.gen_range(0..n);
        let t = Instant::now();
        let (leaf, proof) = store.audit_inclusion_proof(index, n).await?;
        times.push(t.elapsed());
        if !merkle::verify_inclusion(&leaf, index, n, &proof, &root) {
            bail!("inclusion proof of {index} does not verify");
        }
    }
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e3 / times.len() as f64;
    rows.push(Row {
        id: "A6",
        what: format!(
            "inclusion proof from the database at {n} entries (random index, 2000 proofs)"
        ),
        figure: format!(
            "mean {mean:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        ),
        goal: "",
        met: None,
    });

    eprintln!("custody-bench: offline verification of {n} entries");
    let (entries, tags): (Vec<Vec<u8>>, Vec<_>) = store
        .audit_entries_tagged(0, n)
        .await?
        .into_iter()
        .map(|e| (e.bytes, e.tag))
        .unzip();
    let leaves = store.audit_leaf_hashes(0, n).await?;
    drop(store);
    let (key, _) = SigningKey::generate()?;
    let origin = "custody.example/audit";
    let notes = [n / 2, n]
        .iter()
        .map(|&size| {
            let cp = Checkpoint {
                origin: origin.into(),
                size,
                root: merkle::root_from_leaves(&leaves[..size as usize]),
            };
            checkpoint::sign(&cp, origin, &key)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = entries.iter().map(|e| e.len() + 1).sum();
    let files = assemble(&Parts {
        first: 0,
        edge: &[],
        entries: &entries,
        checkpoints: &notes,
        leaves: Some(&leaves),
        tags: Some(&tags),
        vendor: None,
    });
    drop(entries);
    let t = Instant::now();
    let report = verify_bundle(&files, &key.public_key(), origin, origin, Some(&notes[0]));
    let took = t.elapsed();
    if !report.intact {
        bail!("the bundle did not verify: {:?}", report.first_problem);
    }
    rows.push(Row {
        id: "A7",
        what: format!(
            "offline verification of {n} entries ({:.0} MB; leaves rebuilt, 2 checkpoints, previous, stored leaves, manifest)",
            bytes as f64 / 1e6
        ),
        figure: format!("{:.2} s", took.as_secs_f64()),
        goal: "< 2 s",
        met: Some(took < Duration::from_secs(2)),
    });

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cores} cores (available_parallelism), {}",
        crate::cpu_model()
    );
    println!();
    println!("| row | what | figure | goal | met? |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {met} |",
            r.id, r.what, r.figure, r.goal
        );
    }
    println!();
    println!(
        "Appends: Store::record (group commit; entry, leaf and subtree hashes in one transaction), \
         each call returning once committed; wait = one call's latency. Entries are about {} bytes.",
        entry(0).to_canonical_bytes().len()
    );
    Ok(())
}
