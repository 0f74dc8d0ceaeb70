//! `custody-bench shred`: how long a crypto-shred takes for a small and a large model, beside
//! `shred -u` overwriting the same number of bytes. The shred's work is in keys, not bytes
//! (new epoch, re-wrap, destroy the old root, delete the objects, post-checks, certificate),
//! so its time should barely grow with the model; `shred -u` grows with every byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{custody_ok, start_custody, write_data};

#[derive(clap::Args)]
pub struct ShredArgs {
    /// Model sizes in MiB
    #[arg(long, value_delimiter = ',', default_values_t = [16u64, 4096])]
    sizes_mib: Vec<u64>,
    /// Scratch directory (about 3x the largest size free)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The custody binary (default: `custody` beside this executable)
    #[arg(long)]
    custody: Option<PathBuf>,
}

pub fn run(args: ShredArgs) -> anyhow::Result<()> {
    let bin = crate::procs::custody_binary(args.custody)?;
    let base = args.dir.unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&base).context("making a scratch directory")?;
    let mut rows = Vec::new();
    for mib in &args.sizes_mib {
        let size = mib << 20;
        let dir = scratch.path().join(format!("{mib}"));
        std::fs::create_dir_all(&dir)?;
        let custody = custody_shred(&bin, &dir, size)?;
        let plain = plain_shred(&dir, size)?;
        rows.push((*mib, custody, plain));
        std::fs::remove_dir_all(&dir)?;
    }
    println!();
    println!(
        "| model size | custody delete, request to certificate | `shred -u` of the same bytes | custody / shred |"
    );
    println!("|---|---|---|---|");
    for (mib, custody, plain) in &rows {
        println!(
            "| {mib} MiB | {:.3} s | {:.3} s | {:.2}x |",
            custody.as_secs_f64(),
            plain.as_secs_f64(),
            custody.as_secs_f64() / plain.as_secs_f64().max(1e-9)
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!();
        println!(
            "custody's time grew {:.2}x from {} MiB to {} MiB; shred -u's grew {:.2}x",
            last.1.as_secs_f64() / first.1.as_secs_f64().max(1e-9),
            first.0,
            last.0,
            last.2.as_secs_f64() / first.2.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

/// Uploads a model of `size` bytes to a fresh server, then times `custody delete` until the
/// certificate is written.
fn custody_shred(bin: &Path, dir: &Path, size: u64) -> anyhow::Result<Duration> {
    let model = dir.join("model");
    write_data(&model.join("model.safetensors"), size)?;
    let data = dir.join("custody");
    let (server, ca, _operator, admin) = start_custody(bin, &data, &dir.join("server.log"))?;
    let model_arg = model.to_str().context("non-UTF-8 path")?;
    custody_ok(bin, &server, &ca, &admin, &["upload", model_arg, "acme/m"])?;
    eprintln!("custody-bench: custody delete of {} MiB", size >> 20);
    let cert = dir.join("certificate.json");
    let started = Instant::now();
    custody_ok(
        bin,
        &server,
        &ca,
        &admin,
        &[
            "delete",
            "--yes",
            "acme/m",
            "--certificate-out",
            cert.to_str().context("non-UTF-8 path")?,
        ],
    )?;
    let took = started.elapsed();
    if !cert.exists() {
        bail!("custody delete wrote no certificate");
    }
    server.stop();
    Ok(took)
}

/// `shred -u` (3 overwrite passes, then unlink) of a fresh file of `size` bytes.
fn plain_shred(dir: &Path, size: u64) -> anyhow::Result<Duration> {
    let file = dir.join("plain.bin");
    write_data(&file, size)?;
    eprintln!("custody-bench: shred -u of {} MiB", size >> 20);
    let started = Instant::now();
    let status = Command::new("shred")
        .arg("-u")
        .arg(&file)
        .status()
        .context("running shred (coreutils)")?;
    if !status.success() {
        bail!("shred -u failed");
    }
    Ok(started.elapsed())
}
