//! `custody upload`: hash every file, declare the manifest, stream each file, commit.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use types::{RepoPath, RepoRef};

use crate::client::Client;
use crate::output::Output;

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
    out: &Output,
) -> anyhow::Result<Value> {
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

    let manifest: Vec<Value> = files
        .iter()
        .map(|f| json!({ "path": f.path, "size": f.size, "sha256": f.sha256 }))
        .collect();
    let session = client
        .post_json(
            &format!("/v1/models/{repo}/uploads"),
            &json!({ "message": message, "files": manifest }),
        )
        .await?;
    let upload_id = session["upload_id"]
        .as_str()
        .context("the server did not return an upload id")?
        .to_owned();

    let bar = progress(total, out, "uploading");
    for (index, file) in files.iter().enumerate() {
        let handle = tokio::fs::File::open(&file.local)
            .await
            .with_context(|| format!("opening {}", file.local.display()))?;
        let counter = bar.clone();
        let stream = tokio_util_reader(handle).map(move |chunk| {
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
            .header(reqwest::header::CONTENT_LENGTH, file.size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        client
            .send(request)
            .await
            .with_context(|| format!("uploading {}", file.path))?;
    }
    bar.finish_and_clear();

    client
        .post_json(&format!("/v1/uploads/{upload_id}/commit"), &json!({}))
        .await
}

/// Reads a file as a stream of 1 MiB chunks.
fn tokio_util_reader(
    file: tokio::fs::File,
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
