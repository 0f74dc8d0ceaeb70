//! `custody fetch`: download each file beside its final name, verify size and SHA-256, and
//! only then rename it into place. A file that fails verification is deleted, never left
//! looking complete.
//!
//! Large files come as parallel ranges written in place; a small state file beside the
//! partial download lists the finished ranges, so an interrupted fetch resumes where it
//! stopped. The whole-file SHA-256 is checked at the end either way, computed while the
//! download runs: small files as their bytes arrive, ranged ones by a task that follows the
//! written prefix of the file and hashes it from the page cache (ranges arrive out of order;
//! SHA-256 is sequential), so no second pass over the file follows the download.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use types::{CommitId, RepoPath, RepoRef, Sha256Hex};
use wire::models::{
    FETCH_RANGES_AT_ONCE as RANGES_AT_ONCE, FileEntry, RevisionFiles, fetch_range_len as range_len,
};

use crate::Global;
use crate::client::{Client, encode_path};
use crate::output::Output;
use crate::upload::{progress, skip_ahead};
use crate::wipe::{self, FetchRecord};

/// Suffix of a download in progress. Nothing with it is ever a finished file.
const PARTIAL_SUFFIX: &str = ".custody-partial";

#[derive(Args)]
pub struct FetchArgs {
    /// VENDOR/MODEL or VENDOR/MODEL@COMMIT (default: the newest revision, main)
    model: String,
    /// Folder to write the revision's files into (created 0700 if missing). Files already
    /// there with the right size and SHA-256 are kept, not downloaded again
    #[arg(long)]
    out: PathBuf,
    /// Remove files in the folder that are not part of this revision (left from another
    /// revision, for example); without it they are left in place and listed
    #[arg(long)]
    delete_extra: bool,
}

/// What `custody fetch --json` prints.
#[derive(Serialize)]
pub struct Fetched {
    pub model: String,
    pub commit: CommitId,
    pub files: Vec<FileEntry>,
    pub bytes_received: u64,
    /// Files that were already complete (size and SHA-256 checked) and were not downloaded.
    pub already_complete: Vec<RepoPath>,
    /// Files in the folder that are not part of this revision (relative paths), left there.
    pub extra: Vec<String>,
    /// Such files removed (`--delete-extra`).
    pub removed: Vec<String>,
}

pub async fn run(args: FetchArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let (name, rev) = match args.model.split_once('@') {
        Some((n, r)) => (n, r),
        None => (args.model.as_str(), "main"),
    };
    let repo = RepoRef::parse(name)?;
    let client = Client::from_settings(global)?;
    let record = wipe::fetch_record(global, &client)?;
    let mut done = fetch(&client, &repo, rev, &args.out, record.as_ref(), out).await?;
    let manifest: std::collections::BTreeSet<&str> =
        done.files.iter().map(|f| f.path.as_str()).collect();
    let extra: Vec<String> = local_files(&args.out)?
        .into_iter()
        .filter(|p| !manifest.contains(p.as_str()))
        .collect();
    if args.delete_extra {
        for path in &extra {
            // The name itself (a link is removed, never followed).
            let local = args.out.join(path);
            std::fs::remove_file(&local)
                .with_context(|| format!("removing {}", local.display()))?;
        }
        done.removed = extra;
    } else {
        done.extra = extra;
    }
    out.result(&done, || {
        let mut text = Vec::new();
        if !done.already_complete.is_empty() {
            text.push(format!(
                "{} files already complete (size and SHA-256 match), not downloaded again",
                done.already_complete.len()
            ));
        }
        text.push(format!(
            "fetched {} files of {}@{} into {}",
            done.files.len() - done.already_complete.len(),
            repo,
            done.commit,
            args.out.display()
        ));
        if !done.removed.is_empty() {
            text.push(format!(
                "removed {} files not in this revision: {}",
                done.removed.len(),
                done.removed.join(", ")
            ));
        }
        if !done.extra.is_empty() {
            text.push(format!(
                "{} files in {} are not in this revision (--delete-extra removes them): {}",
                done.extra.len(),
                args.out.display(),
                done.extra.join(", ")
            ));
        }
        text.join("\n")
    })
}

/// Every file below `dir` (relative, `/`-separated), not following links, except the Hugging
/// Face client's `.cache` folder (it names the copy for `custody wipe`).
fn local_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            if relative == ".cache" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &format!("{relative}/"), out)?;
            } else {
                out.push(relative);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn local_path(out: &Path, path: &RepoPath) -> PathBuf {
    let mut local = out.to_owned();
    local.extend(path.segments());
    local
}

pub async fn fetch(
    client: &Client,
    repo: &RepoRef,
    rev: &str,
    out_dir: &Path,
    record: Option<&FetchRecord>,
    out: &Output,
) -> anyhow::Result<Fetched> {
    // The server is checked too: a path that could escape the output folder does not parse.
    let revision: RevisionFiles = client
        .get(&format!("/v1/models/{repo}/revisions/{rev}"))
        .await?;
    let commit = revision.revision.commit;
    let files = revision.files;
    // On a host, note where the files go before the first byte arrives, so `custody wipe`
    // finds them (and any partial download) once the model is deleted.
    if let Some(record) = record {
        let paths: Vec<&RepoPath> = files.iter().map(|f| &f.path).collect();
        record.note(repo, commit.as_str(), out_dir, &paths)?;
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress(total, out, "fetching");
    let mut bytes_received = 0;
    let mut already_complete = Vec::new();
    for file in &files {
        let local = local_path(out_dir, &file.path);
        // Folders 0700, created without going through a link someone planted.
        let folder = std::path::Path::new(file.path.as_str())
            .parent()
            .unwrap_or(std::path::Path::new(""));
        crate::private::create_dirs(out_dir, folder)?;
        if is_complete(&local, file).await {
            skip_ahead(&bar, file.size);
            already_complete.push(file.path.clone());
            continue;
        }
        bytes_received += download(client, repo, &commit, file, &local, &bar).await?;
    }
    bar.finish_and_clear();
    Ok(Fetched {
        model: repo.to_string(),
        commit,
        files,
        bytes_received,
        already_complete,
        extra: Vec::new(),
        removed: Vec::new(),
    })
}

/// Whether `local` already is `file`: a private regular file of ours (see `private`) with
/// the published size and SHA-256.
async fn is_complete(local: &Path, file: &FileEntry) -> bool {
    let Some(handle) = crate::private::open_own(local) else {
        return false;
    };
    if handle.metadata().map(|m| m.len()).ok() != Some(file.size) {
        return false;
    }
    hash_file(handle)
        .await
        .is_ok_and(|digest| digest == file.sha256)
}

/// Files from this size on are fetched as parallel ranges, resumably.
const PARALLEL_FROM: u64 = 64 << 20;

/// Downloads one file into place; returns the bytes received over the network.
async fn download(
    client: &Client,
    repo: &RepoRef,
    commit: &CommitId,
    file: &FileEntry,
    local: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut partial_name = local.as_os_str().to_owned();
    partial_name.push(PARTIAL_SUFFIX);
    let partial = PathBuf::from(partial_name);
    let url = format!(
        "/v1/models/{repo}/revisions/{commit}/files/{}",
        encode_path(file.path.as_str())
    );
    if file.size < PARALLEL_FROM {
        let result = download_to(client, &url, file, &partial, bar).await;
        return match result {
            Ok(()) => {
                tokio::fs::rename(&partial, local)
                    .await
                    .with_context(|| format!("moving {} into place", local.display()))?;
                Ok(file.size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        };
    }
    let state_path = PathBuf::from(format!("{}.state", partial.display()));
    let (received, digest) =
        download_ranges(client, &url, file, &partial, &state_path, bar).await?;
    // Every range arrived: the whole file must have the published digest.
    let _ = tokio::fs::remove_file(&state_path).await;
    if digest != file.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!(
            "{}: integrity check failed: sha256 is {digest}, expected {}",
            file.path,
            file.sha256
        );
    }
    tokio::fs::rename(&partial, local)
        .await
        .with_context(|| format!("moving {} into place", local.display()))?;
    Ok(received)
}

/// Progress of a ranged download, kept beside the partial file.
#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct RangeState {
    sha256: String,
    size: u64,
    range_len: u64,
    done: std::collections::BTreeSet<u64>,
}

async fn download_ranges(
    client: &Client,
    url: &str,
    file: &FileEntry,
    partial: &Path,
    state_path: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, Sha256Hex)> {
    let fresh = RangeState {
        sha256: file.sha256.to_string(),
        size: file.size,
        range_len: range_len(file.size),
        done: Default::default(),
    };
    // Resume only a download of the same bytes, laid out the same way, into a partial file
    // that is ours and private (see `private`); anything else starts over in a fresh file.
    let previous = crate::private::read_own(state_path)
        .and_then(|b| serde_json::from_slice::<RangeState>(&b).ok())
        .filter(|s| {
            s.sha256 == fresh.sha256 && s.size == fresh.size && s.range_len == fresh.range_len
        });
    let reused = match previous {
        Some(_) => crate::private::reopen_own(partial)?
            .filter(|f| f.metadata().is_ok_and(|m| m.len() == file.size)),
        None => None,
    };
    let (mut state, out) = match (previous, reused) {
        (Some(s), Some(out)) => (s, out),
        _ => (fresh, crate::private::create_new(partial)?),
    };
    out.set_len(file.size)?;
    let range_len = state.range_len;
    let ranges = file.size.div_ceil(range_len);
    // A state file names only ranges of this file (a damaged one must not index past its end).
    state.done.retain(|i| *i < ranges);
    // Ranges already here are off the bar (the last one may be short).
    let resumed: u64 = state
        .done
        .iter()
        .map(|i| (i * range_len + range_len).min(file.size) - i * range_len)
        .sum();
    skip_ahead(bar, resumed);
    let partial = std::sync::Arc::new(PartialFile::new(out, file.size, range_len, &state.done));
    let todo: Vec<u64> = (0..ranges).filter(|i| !state.done.contains(i)).collect();
    let downloads = async {
        let mut received = 0;
        let mut fetches = futures::stream::iter(todo)
            .map(|i| {
                let partial = partial.clone();
                async move {
                    let start = i * range_len;
                    let end = (start + range_len).min(file.size);
                    fetch_range(client, url, file, start, end, partial, bar)
                        .await
                        .map(|()| (i, end - start))
                }
            })
            .buffer_unordered(RANGES_AT_ONCE);
        while let Some(result) = fetches.next().await {
            let (i, len) = result?;
            received += len;
            state.done.insert(i);
            save_state(state_path, &state).await?;
        }
        anyhow::Ok(received)
    };
    // A failed range ends the hashing with it (the join drops it).
    let (received, digest) =
        futures::future::try_join(downloads, hash_written_prefix(partial.clone())).await?;
    partial.file.sync_all()?;
    Ok((received, digest))
}

/// A file being downloaded as ranges, and how far each range has been written, so the
/// hashing can follow the contiguous prefix of the file. A range is written from its start,
/// in order.
struct PartialFile {
    file: std::fs::File,
    size: u64,
    range_len: u64,
    per_range: Vec<std::sync::atomic::AtomicU64>,
    /// Bumped after every write: the hashing wakes up and looks again.
    grew: tokio::sync::watch::Sender<()>,
}

impl PartialFile {
    fn new(
        file: std::fs::File,
        size: u64,
        range_len: u64,
        done: &std::collections::BTreeSet<u64>,
    ) -> Self {
        let per_range = (0..size.div_ceil(range_len))
            .map(|i| {
                let len = (i * range_len + range_len).min(size) - i * range_len;
                std::sync::atomic::AtomicU64::new(if done.contains(&i) { len } else { 0 })
            })
            .collect();
        PartialFile {
            file,
            size,
            range_len,
            per_range,
            grew: tokio::sync::watch::Sender::new(()),
        }
    }

    fn add(&self, range_start: u64, len: u64) {
        self.per_range[(range_start / self.range_len) as usize]
            .fetch_add(len, std::sync::atomic::Ordering::Release);
        self.grew.send_replace(());
    }

    /// The length of the written prefix of the file.
    fn prefix(&self) -> u64 {
        let mut prefix = 0;
        for written in &self.per_range {
            let got = written.load(std::sync::atomic::Ordering::Acquire);
            prefix += got;
            if got < self.range_len {
                break;
            }
        }
        prefix.min(self.size)
    }
}

/// The SHA-256 of a file being written range by range, read back from the page cache as
/// its written prefix grows; done when the prefix is the whole file.
async fn hash_written_prefix(partial: std::sync::Arc<PartialFile>) -> anyhow::Result<Sha256Hex> {
    let mut grew = partial.grew.subscribe();
    let mut hasher = crypto::hash::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut hashed = 0u64;
    loop {
        grew.borrow_and_update();
        let prefix = partial.prefix();
        if prefix > hashed {
            let reader = partial.clone();
            (hasher, buf) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                use std::os::unix::fs::FileExt;
                let mut at = hashed;
                while at < prefix {
                    let n = (prefix - at).min(buf.len() as u64) as usize;
                    reader.file.read_exact_at(&mut buf[..n], at)?;
                    hasher.update(&buf[..n]);
                    at += n as u64;
                }
                Ok((hasher, buf))
            })
            .await??;
            hashed = prefix;
            continue;
        }
        if hashed == partial.size {
            return Ok(Sha256Hex::from_bytes(&hasher.finish()));
        }
        grew.changed()
            .await
            .context("the download stopped before the file was whole")?;
    }
}

async fn fetch_range(
    client: &Client,
    url: &str,
    file: &FileEntry,
    start: u64,
    end: u64,
    partial: std::sync::Arc<PartialFile>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let response = client
        .send_within_budget(|| {
            client
                .request(Method::GET, url)
                .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
        })
        .await
        .with_context(|| format!("fetching {}", file.path))?;
    if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        bail!("{}: the server ignored a range request", file.path);
    }
    let mut offset = start;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| {
            format!(
                "download of {} was cut off (the server aborts a transfer whose stored data fails its integrity check)",
                file.path
            )
        })?;
        if offset + chunk.len() as u64 > end {
            bail!("{}: the server sent more bytes than asked for", file.path);
        }
        let len = chunk.len() as u64;
        let writer = partial.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            writer.file.write_all_at(&chunk, offset)
        })
        .await??;
        partial.add(start, len);
        offset += len;
        bar.inc(len);
    }
    if offset != end {
        bail!(
            "{}: integrity check failed: range {start}-{end} ended after {} bytes",
            file.path,
            offset - start
        );
    }
    Ok(())
}

async fn save_state(path: &Path, state: &RangeState) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    crate::private::create_new(&tmp)?.write_all(&serde_json::to_vec(state)?)?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// The SHA-256 of an open file, read on a blocking thread.
async fn hash_file(mut input: std::fs::File) -> anyhow::Result<Sha256Hex> {
    let digest = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
        use std::io::Read;
        let mut hasher = crypto::hash::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    })
    .await??;
    Ok(Sha256Hex::from_bytes(&digest))
}

async fn download_to(
    client: &Client,
    url: &str,
    file: &FileEntry,
    partial: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let response = client
        .send_within_budget(|| client.request(Method::GET, url))
        .await
        .with_context(|| format!("fetching {}", file.path))?;
    let mut out = tokio::fs::File::from_std(crate::private::create_new(partial)?);
    let mut hasher = crypto::hash::Sha256::new();
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| {
            format!(
                "download of {} was cut off after {received} of {} bytes (the server aborts a \
                 transfer whose stored data fails its integrity check)",
                file.path, file.size
            )
        })?;
        received += chunk.len() as u64;
        if received > file.size {
            bail!(
                "{}: the server sent more bytes than the file has",
                file.path
            );
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    if received != file.size {
        bail!(
            "{}: integrity check failed: received {received} bytes, expected {}",
            file.path,
            file.size
        );
    }
    let digest = Sha256Hex::from_bytes(&hasher.finish());
    if digest != file.sha256 {
        bail!(
            "{}: integrity check failed: sha256 is {digest}, expected {}",
            file.path,
            file.sha256
        );
    }
    out.sync_all().await?;
    Ok(())
}
