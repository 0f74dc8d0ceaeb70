//! `custody fetch`: download each file beside its final name, verify size and SHA-256, and
//! only then rename it into place. A file that fails verification is deleted, never left
//! looking complete.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use types::{RepoPath, RepoRef, Sha256Hex};

use crate::client::{Client, encode_path};
use crate::output::Output;
use crate::upload::progress;

/// Suffix of a download in progress. Nothing with it is ever a finished file.
const PARTIAL_SUFFIX: &str = ".custody-partial";

struct Remote {
    path: RepoPath,
    size: u64,
    sha256: Sha256Hex,
}

fn parse_manifest(revision: &Value) -> anyhow::Result<Vec<Remote>> {
    let files = revision["files"]
        .as_array()
        .context("the server's revision has no file list")?;
    files
        .iter()
        .map(|f| {
            // The server is checked too: a path that could escape the output folder is refused.
            let path = RepoPath::parse(f["path"].as_str().unwrap_or(""))
                .context("the server sent an unsafe path")?;
            Ok(Remote {
                path,
                size: f["size"].as_u64().context("file without size")?,
                sha256: Sha256Hex::parse(f["sha256"].as_str().unwrap_or(""))?,
            })
        })
        .collect()
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
    out: &Output,
) -> anyhow::Result<Value> {
    let revision = client
        .get_json(&format!("/v1/models/{repo}/revisions/{rev}"))
        .await?;
    let commit = revision["commit"]
        .as_str()
        .context("the server's revision has no commit id")?
        .to_owned();
    let files = parse_manifest(&revision)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress(total, out, "fetching");
    let mut fetched = Vec::new();
    for file in &files {
        let local = local_path(out_dir, &file.path);
        download(client, repo, &commit, file, &local, &bar).await?;
        fetched.push(json!({ "path": file.path, "size": file.size, "sha256": file.sha256 }));
    }
    bar.finish_and_clear();
    Ok(json!({ "model": repo.to_string(), "commit": commit, "files": fetched }))
}

async fn download(
    client: &Client,
    repo: &RepoRef,
    commit: &str,
    file: &Remote,
    local: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if let Some(parent) = local.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut partial_name = local.as_os_str().to_owned();
    partial_name.push(PARTIAL_SUFFIX);
    let partial = PathBuf::from(partial_name);
    let result = download_to(client, repo, commit, file, &partial, bar).await;
    match result {
        Ok(()) => {
            tokio::fs::rename(&partial, local)
                .await
                .with_context(|| format!("moving {} into place", local.display()))?;
            Ok(())
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

async fn download_to(
    client: &Client,
    repo: &RepoRef,
    commit: &str,
    file: &Remote,
    partial: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let url = format!(
        "/v1/models/{repo}/revisions/{commit}/files/{}",
        encode_path(file.path.as_str())
    );
    let response = client
        .send(client.request(Method::GET, &url))
        .await
        .with_context(|| format!("fetching {}", file.path))?;
    let mut out = tokio::fs::File::create(partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
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
