//! `custody upload`: hash every file, declare the manifest, stream each file, commit.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use types::{RepoPath, RepoRef};
use wire::ErrorCode;
use wire::models::FileEntry;
use wire::upload::{Committed, ManifestEntry, PutQuery, UploadRequest, UploadSession};

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
    sha256: String,
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

async fn sha256_file(path: &Path, bar: &ProgressBar) -> anyhow::Result<String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = crypto::hash::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(hex::encode(hasher.finish()))
}

pub async fn upload(
    client: &Client,
    dir: &Path,
    repo: &RepoRef,
    message: &str,
    derived_from: Option<&str>,
    out: &Output,
) -> anyhow::Result<Uploaded> {
    let found = collect(dir)?;
    let total: u64 = found.iter().map(|f| f.2).sum();

    let bar = progress(total, out, "hashing");
    let mut files = Vec::with_capacity(found.len());
    for (path, local, size) in found {
        let sha256 = sha256_file(&local, &bar).await?;
        files.push(LocalFile {
            path,
            local,
            size,
            sha256,
        });
    }
    bar.finish_and_clear();

    let begin = UploadRequest {
        message: message.to_owned(),
        files: files
            .iter()
            .map(|f| ManifestEntry {
                path: f.path.to_string(),
                size: f.size,
                sha256: f.sha256.clone(),
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
        let mut results: Vec<anyhow::Result<u64>> = Vec::new();
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
                Ok(n) => bytes_sent += n,
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
    bar.finish_and_clear();

    let revision: Committed = client
        .post(&format!("/v1/uploads/{upload_id}/commit"), &wire::Empty {})
        .await?;
    Ok(Uploaded {
        revision,
        bytes_sent,
    })
}

/// Files at least this large are sent one at a time.
const LARGE_FILE: u64 = 8 << 20;
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

/// Sends one file from `offset` to its end; returns the bytes sent.
async fn send_file(
    client: &Client,
    upload_id: &str,
    index: usize,
    file: &LocalFile,
    offset: u64,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut handle = tokio::fs::File::open(&file.local)
        .await
        .with_context(|| format!("opening {}", file.local.display()))?;
    handle.seek(std::io::SeekFrom::Start(offset)).await?;
    let length = file.size - offset;
    let counter = bar.clone();
    let stream = file_chunks(handle.take(length)).map(move |chunk| {
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
    if stored.path != file.path || stored.sha256.as_str() != file.sha256 {
        bail!(
            "the server stored {} with sha256 {} instead of {} with {}",
            stored.path,
            stored.sha256,
            file.path,
            file.sha256
        );
    }
    Ok(length)
}

/// Reads a file as a stream of 1 MiB chunks.
fn file_chunks(
    file: tokio::io::Take<tokio::fs::File>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
}
