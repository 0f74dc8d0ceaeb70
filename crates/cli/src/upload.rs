//! `custody upload`: declare the manifest (paths and sizes), stream each file while hashing
//! it, then commit with the digests, which the server checks against the bytes it stored.
//!
//! Each file is read once: a blocking thread reads and hashes it while the request sends
//! what it read, so hashing runs on another core beside the TLS encryption instead of as a
//! whole pass over every file before the first byte leaves (see docs/performance.md).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde::Serialize;
use types::{RepoPath, RepoRef, Sha256Hex};
use wire::ErrorCode;
use wire::models::FileEntry;
use wire::upload::{
    CommitRequest, Committed, ManifestEntry, PutQuery, UploadRequest, UploadSession,
};

use crate::Global;
use crate::client::Client;
use crate::output::Output;

#[derive(Args)]
pub struct UploadArgs {
    /// Local folder in Hugging Face layout
    dir: PathBuf,
    /// VENDOR/MODEL
    model: String,
    /// A note on the revision, like a commit message
    #[arg(long, short, default_value = "")]
    message: String,
    /// Upload what you made from COMMIT of the same model (converted or quantized
    /// weights, test logs): a revision of the model, shredded with it (committers need a
    /// grant on the model)
    #[arg(long, value_name = "COMMIT")]
    derived_from: Option<String>,
}

/// What `custody upload --json` prints: the new revision, and how much was sent this run.
#[derive(Serialize)]
pub struct Uploaded {
    #[serde(flatten)]
    pub revision: Committed,
    pub bytes_sent: u64,
}

pub async fn run(args: UploadArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let repo = RepoRef::parse(&args.model)?;
    let client = Client::from_settings(global)?;
    let done = upload(
        &client,
        &args.dir,
        &repo,
        &args.message,
        args.derived_from.as_deref(),
        out,
    )
    .await?;
    out.result(&done, || done.revision.commit.to_string())
}

struct LocalFile {
    path: RepoPath,
    local: PathBuf,
    size: u64,
}

/// A progress bar on stderr when it is a terminal and output is for humans; hidden otherwise.
pub fn progress(total: u64, out: &Output, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if out.is_json() || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Takes bytes that were there already (a resumed transfer, files already complete) off the
/// bar: it counts only what this run transfers, so its rate and time left are about new bytes
/// and it never passes 100%; it says "resuming".
pub fn skip_ahead(bar: &ProgressBar, already_here: u64) {
    if already_here == 0 {
        return;
    }
    let length = bar.length().unwrap_or(0);
    bar.set_length(length.saturating_sub(already_here));
    bar.set_message("resuming");
}

/// Every regular file under `dir` (following symbolic links, as a Hugging Face cache snapshot
/// is made of them), except git's and the Hub client's bookkeeping folders.
fn collect(dir: &Path) -> anyhow::Result<Vec<(RepoPath, PathBuf, u64)>> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_str().unwrap_or("");
            !(e.file_type().is_dir() && e.depth() > 0 && (name == ".git" || name == ".cache"))
        });
    for entry in walk {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .context("walked outside the folder")?;
        let text = relative
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8", relative.display()))?;
        let repo_path = RepoPath::parse(&text.replace(std::path::MAIN_SEPARATOR, "/"))
            .with_context(|| format!("cannot upload {:?}", text))?;
        let size = entry.metadata()?.len();
        files.push((repo_path, entry.path().to_owned(), size));
    }
    if files.is_empty() {
        bail!("{} holds no files", dir.display());
    }
    Ok(files)
}

/// The SHA-256 of a whole local file (one the server already holds: its digest is still
/// confirmed at commit).
async fn sha256_file(path: &Path, bar: &ProgressBar) -> anyhow::Result<Sha256Hex> {
    let (chunks, digest) = hashed_chunks(path.to_owned(), 0, u64::MAX);
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        bar.inc(chunk?.len() as u64);
    }
    digest.await?
}

pub async fn upload(
    client: &Client,
    dir: &Path,
    repo: &RepoRef,
    message: &str,
    derived_from: Option<&str>,
    out: &Output,
) -> anyhow::Result<Uploaded> {
    let files: Vec<LocalFile> = collect(dir)?
        .into_iter()
        .map(|(path, local, size)| LocalFile { path, local, size })
        .collect();
    let total: u64 = files.iter().map(|f| f.size).sum();

    // Digests are left out: each file is hashed while it is sent, and confirmed at commit.
    let begin = UploadRequest {
        message: message.to_owned(),
        files: files
            .iter()
            .map(|f| ManifestEntry {
                path: f.path.to_string(),
                size: f.size,
                sha256: None,
            })
            .collect(),
        derived_from: derived_from.map(str::to_owned),
    };
    let begin_path = format!("/v1/models/{repo}/uploads");
    // Sending the same manifest again returns the open session with what it already holds.
    let mut session: UploadSession = client.post(&begin_path, &begin).await?;
    let upload_id = session.upload_id.clone();

    let bar = progress(total, out, "uploading");
    let mut bytes_sent = 0u64;
    let mut digests = std::collections::BTreeMap::new();
    for attempt in 0..2 {
        let offsets = resume_offsets(&session, files.len())?;
        let stored: u64 = offsets.iter().map(|o| o.unwrap_or(0)).sum::<u64>()
            + files
                .iter()
                .zip(&offsets)
                .filter(|(_, o)| o.is_none())
                .map(|(f, _)| f.size)
                .sum::<u64>();
        if attempt == 0 {
            skip_ahead(&bar, stored);
        }
        let pending: Vec<(usize, &LocalFile, u64)> = files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| offsets[i].map(|offset| (i, f, offset)))
            .collect();
        // Large files one at a time (the server already spreads one file over every core and
        // keeps its memory bounded per file); small files several at once.
        let (large, small): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, f, _)| f.size >= LARGE_FILE);
        let mut results: Vec<anyhow::Result<(u64, &LocalFile, Sha256Hex)>> = Vec::new();
        for (index, file, offset) in large {
            results.push(send_file(client, &upload_id, index, file, offset, &bar).await);
        }
        results.extend(
            futures::stream::iter(small)
                .map(|(index, file, offset)| {
                    send_file(client, &upload_id, index, file, offset, &bar)
                })
                .buffer_unordered(SMALL_FILES_AT_ONCE)
                .collect::<Vec<_>>()
                .await,
        );
        let mut failure = None;
        for result in results {
            match result {
                Ok((n, file, digest)) => {
                    bytes_sent += n;
                    digests.insert(file.path.to_string(), digest.to_string());
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            None => break,
            // Another run of the same upload moved the server ahead: look again, once.
            Some(e) if attempt == 0 && is_resume_mismatch(&e) => {
                session = client.post(&begin_path, &begin).await?;
            }
            Some(e) => return Err(e),
        }
    }
    // Files an earlier run stored: their digests are confirmed too, from the local copy.
    for file in &files {
        if !digests.contains_key(file.path.as_str()) {
            let digest = sha256_file(&file.local, &ProgressBar::hidden()).await?;
            digests.insert(file.path.to_string(), digest.to_string());
        }
    }
    bar.finish_and_clear();

    let revision: Committed = client
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &CommitRequest { sha256: digests },
        )
        .await?;
    Ok(Uploaded {
        revision,
        bytes_sent,
    })
}

/// Files at least this large are sent one at a time: the server seals and stores one file's
/// parts three at a time (8 MiB each), so a file this size keeps its pipeline full; smaller
/// ones go several at once.
const LARGE_FILE: u64 = 24 << 20;
const SMALL_FILES_AT_ONCE: usize = 4;

/// For each file of the session: `None` when stored, else the offset to send from.
fn resume_offsets(session: &UploadSession, count: usize) -> anyhow::Result<Vec<Option<u64>>> {
    let files = &session.files;
    if files.len() != count {
        bail!(
            "the server's session lists {} files, expected {count}",
            files.len()
        );
    }
    Ok(files
        .iter()
        .map(|f| (!f.done).then_some(f.resume_offset))
        .collect())
}

fn is_resume_mismatch(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<crate::client::ServerError>())
        .any(|s| s.code == ErrorCode::ResumeMismatch)
}

/// Sends one file from `offset` to its end; returns the bytes sent, the file and the SHA-256
/// of the whole file (the part before `offset` is read and hashed first).
async fn send_file<'a>(
    client: &Client,
    upload_id: &str,
    index: usize,
    file: &'a LocalFile,
    offset: u64,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, &'a LocalFile, Sha256Hex)> {
    let length = file.size - offset;
    let (chunks, digest) = hashed_chunks(file.local.clone(), offset, length);
    let counter = bar.clone();
    let stream = chunks.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            counter.inc(bytes.len() as u64);
        }
        chunk
    });
    let request = client
        .request(
            Method::PUT,
            &format!("/v1/uploads/{upload_id}/files/{index}"),
        )
        .query(&PutQuery { offset })
        .header(reqwest::header::CONTENT_LENGTH, length)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream));
    let stored: FileEntry = client
        .call(request)
        .await
        .with_context(|| format!("uploading {}", file.path))?;
    if stored.path != file.path {
        bail!("the server stored {} instead of {}", stored.path, file.path);
    }
    let digest = digest
        .await
        .with_context(|| format!("reading {}", file.local.display()))??;
    // The server's digest is checked again at commit, where a difference ends the upload.
    if stored.sha256 != digest {
        bail!(
            "{}: the server stored bytes with sha256 {}, this file has {digest}: did it change while it was sent?",
            file.path,
            stored.sha256
        );
    }
    Ok((length, file, digest))
}

/// Bytes read ahead of the network, in 1 MiB chunks.
const CHUNKS_AHEAD: usize = 4;
const CHUNK: u64 = 1 << 20;

/// Reads `len` bytes of the file at `path` from `offset` as a stream of 1 MiB chunks, on a
/// blocking thread that also hashes the whole file:
/// first the prefix before `offset` (read, hashed, not sent), then every chunk it sends. The
/// digest arrives once the stream has ended; a file shorter than promised is an error on the
/// stream. `len` of `u64::MAX` reads to the end.
fn hashed_chunks(
    path: PathBuf,
    offset: u64,
    len: u64,
) -> (
    impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    tokio::sync::oneshot::Receiver<anyhow::Result<Sha256Hex>>,
) {
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let (digest_tx, digest_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let read = || -> std::io::Result<Option<Sha256Hex>> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = crypto::hash::Sha256::new();
            let mut buf = Vec::with_capacity(CHUNK as usize);
            // The prefix the server already holds.
            let mut prefix = (&mut file).take(offset);
            loop {
                buf.clear();
                if (&mut prefix).take(CHUNK).read_to_end(&mut buf)? == 0 {
                    break;
                }
                hasher.update(&buf);
            }
            if prefix.limit() > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than it was", path.display()),
                ));
            }
            let mut rest = file.take(len);
            loop {
                let mut chunk = Vec::with_capacity(CHUNK as usize);
                if (&mut rest).take(CHUNK).read_to_end(&mut chunk)? == 0 {
                    break;
                }
                hasher.update(&chunk);
                if chunks_tx
                    .blocking_send(Ok(bytes::Bytes::from(chunk)))
                    .is_err()
                {
                    return Ok(None); // the request stopped: nobody waits for the digest
                }
            }
            if len != u64::MAX && rest.limit() > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than it was", path.display()),
                ));
            }
            Ok(Some(Sha256Hex::from_bytes(&hasher.finish())))
        };
        match read() {
            Ok(Some(digest)) => {
                let _ = digest_tx.send(Ok(digest));
            }
            Ok(None) => {}
            Err(e) => {
                let message = e.to_string();
                let _ = chunks_tx.blocking_send(Err(e));
                let _ = digest_tx.send(Err(anyhow::anyhow!(message)));
            }
        }
    });
    let stream = futures::stream::unfold(chunks_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (stream, digest_rx)
}
