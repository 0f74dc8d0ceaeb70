//! `custody wipe` on an exclusive host, and the local record it works from.
//!
//! Every `custody fetch` run with a host certificate notes, before the first byte arrives,
//! where it writes each file of which model (the *host state* file: `--host-state`,
//! `CUSTODY_HOST_STATE`, default `$XDG_STATE_HOME/custody/fetched.json` or
//! `~/.local/state/custody/fetched.json`). `custody wipe` asks the server, with the host
//! certificate alone, which of this host's copies belong to deleted models; removes those
//! files with their partial downloads and resume state, and the model's folder in the Hugging
//! Face cache (where the host agent's clients put what they fetch); forgets them in the
//! record; and sends the server its confirmation, per model and deletion.
//!
//! It also finds the copies the Hugging Face client writes with `--local-dir`: such a folder
//! holds `.cache/huggingface/download/PATH.metadata`, whose first line is the commit the file
//! came from. `wipe` searches the current folder (or the folders given with `--search`) for
//! them and removes the files whose commit belongs to a deleted model, with their metadata,
//! locks and unfinished downloads.
//!
//! What it cannot cover, and says so: copies made by other means (a `cp`, a converted model
//! written by vLLM or a script elsewhere, a Hub client with a cache folder other than the
//! one given, a `--local-dir` outside the folders searched), and files already moved or
//! renamed. The confirmation is the host's own word, and it names every place searched: it
//! never claims more than was checked.
//!
//! The record is one JSON document (version field `v`), rewritten whole (temporary file, then
//! rename) under an exclusive lock on a sibling `.lock` file, so concurrent fetches and a wipe
//! never lose each other's entries.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use types::{HostName, RepoPath, RepoRef};
use wire::wipe::{ConfirmWipe, WipeConfirmed, WipeList};

use crate::Global;
use crate::client::Client;
use crate::output::Output;

const STATE_VERSION: u32 = 1;

/// Suffixes of what an unfinished `custody fetch` leaves beside a file (see `fetch.rs`).
const LEFTOVER_SUFFIXES: [&str; 3] = [
    ".custody-partial",
    ".custody-partial.state",
    ".custody-partial.state.tmp",
];

#[derive(Serialize, Deserialize, Default)]
struct HostState {
    v: u32,
    copies: Vec<LocalCopy>,
}

/// The files of one revision fetched into one folder.
#[derive(Serialize, Deserialize, Clone)]
struct LocalCopy {
    server: String,
    /// `vendor/model`.
    model: String,
    commit: String,
    /// Absolute output folder.
    dir: PathBuf,
    /// Repository paths under `dir`.
    paths: Vec<String>,
}

/// Where `custody fetch` on a host notes its copies: the state file and the server.
pub struct FetchRecord {
    state: PathBuf,
    server: String,
}

/// The host state file to use.
pub fn state_path(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.host_state {
        return Ok(p.clone());
    }
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("cannot place the host state file: set CUSTODY_HOST_STATE or HOME")?;
            PathBuf::from(home).join(".local/state")
        }
    };
    Ok(base.join("custody/fetched.json"))
}

/// The record a fetch on a host keeps; `None` without a host certificate (a fetch without one
/// is refused by the server anyway).
pub fn fetch_record(global: &Global, client: &Client) -> anyhow::Result<Option<FetchRecord>> {
    if global.host_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(FetchRecord {
        state: state_path(global)?,
        server: client.base().to_owned(),
    }))
}

impl FetchRecord {
    /// Notes that `paths` of `model@commit` are being written under `dir`. Called before the
    /// download starts, so an interrupted fetch's partial files are covered too.
    pub fn note(
        &self,
        model: &RepoRef,
        commit: &str,
        dir: &Path,
        paths: &[&RepoPath],
    ) -> anyhow::Result<()> {
        crate::private::create_dirs(dir, Path::new(""))?;
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let _lock = lock(&self.state)?;
        let mut state = load(&self.state)?;
        let model = model.to_string();
        let entry = match state.copies.iter_mut().find(|c| {
            c.server == self.server && c.model == model && c.commit == commit && c.dir == dir
        }) {
            Some(entry) => entry,
            None => {
                state.copies.push(LocalCopy {
                    server: self.server.clone(),
                    model,
                    commit: commit.to_owned(),
                    dir,
                    paths: Vec::new(),
                });
                let last = state.copies.len() - 1;
                &mut state.copies[last]
            }
        };
        for p in paths {
            if !entry.paths.iter().any(|e| e == p.as_str()) {
                entry.paths.push(p.as_str().to_owned());
            }
        }
        save(&self.state, &state)
    }
}

/// An exclusive lock on `STATE.lock`, released when the file is dropped.
fn lock(state: &Path) -> anyhow::Result<File> {
    if let Some(parent) = state.parent() {
        create_private_dir(parent)?;
    }
    let path = PathBuf::from(format!("{}.lock", state.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn load(path: &Path) -> anyhow::Result<HostState> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HostState {
                v: STATE_VERSION,
                copies: Vec::new(),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: HostState = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a custody host state file", path.display()))?;
    if state.v != STATE_VERSION {
        bail!(
            "{} has version {}; this custody understands version {STATE_VERSION}",
            path.display(),
            state.v
        );
    }
    Ok(state)
}

fn save(path: &Path, state: &HostState) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(state)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The Hugging Face cache folder (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`), as the Hub client resolves it.
fn default_hf_cache() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = var("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// Removes a file if it is there; `true` if it was.
fn remove_if_present(path: &Path, dry_run: bool) -> anyhow::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => bail!("{} is a folder, not a fetched file", path.display()),
        Ok(_) => {
            if !dry_run {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}

/// Removes the now empty folders between `file` and `root` (best effort: a folder that holds
/// anything else stays).
fn prune_empty_dirs(file: &Path, root: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
}

/// Removes one local copy's files; returns the paths removed.
fn wipe_copy(copy: &LocalCopy, dry_run: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !copy.dir.is_absolute() {
        bail!("the host state names a relative folder {:?}", copy.dir);
    }
    let mut removed = Vec::new();
    for p in &copy.paths {
        // The record is checked like a server's manifest: no path leaves its folder.
        let path = RepoPath::parse(p)
            .with_context(|| format!("the host state holds an unsafe path {p:?}"))?;
        let mut local = copy.dir.clone();
        local.extend(path.segments());
        refuse_links_below(&copy.dir, &local)?;
        let mut candidates = vec![local.clone()];
        for suffix in LEFTOVER_SUFFIXES {
            let mut name = local.as_os_str().to_owned();
            name.push(suffix);
            candidates.push(PathBuf::from(name));
        }
        for candidate in candidates {
            if remove_if_present(&candidate, dry_run)? {
                removed.push(candidate);
            }
        }
        if !dry_run {
            prune_empty_dirs(&local, &copy.dir);
        }
    }
    Ok(removed)
}

/// Removes a model's folder (and its lock folder) from the Hugging Face cache; returns the
/// files that were in it.
fn wipe_hf_cache(cache: &Path, model: &RepoRef, dry_run: bool) -> anyhow::Result<Vec<PathBuf>> {
    let folder = format!("models--{}--{}", model.vendor, model.model);
    let mut removed = Vec::new();
    for dir in [cache.join(&folder), cache.join(".locks").join(&folder)] {
        if !dir.exists() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&dir).follow_links(false) {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            if !entry.file_type().is_dir() {
                removed.push(entry.path().to_owned());
            }
        }
        if !dry_run {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(removed)
}

#[derive(Args)]
pub struct WipeArgs {
    /// Show what would be removed; remove nothing, confirm nothing
    #[arg(long)]
    dry_run: bool,
    /// Hugging Face cache folder to clean (default: HF_HUB_CACHE, HF_HOME/hub or
    /// ~/.cache/huggingface/hub)
    #[arg(long)]
    hf_cache: Option<PathBuf>,
    /// Search this folder, and every folder below it, for copies the Hugging Face client wrote
    /// with --local-dir (repeatable; default: the current folder)
    #[arg(long = "search", value_name = "DIR")]
    search: Vec<PathBuf>,
}

/// One file the Hugging Face client wrote into a `--local-dir` folder, as its download
/// metadata describes it.
struct LocalDirFile {
    /// The `--local-dir` folder.
    root: PathBuf,
    /// `ROOT/.cache/huggingface/download/PATH.metadata`.
    metadata: PathBuf,
    /// The repository path.
    path: String,
    commit: String,
}

/// The `--local-dir` copies under `roots`: every `.cache/huggingface/download` folder and the
/// metadata files in it. Links are not followed; unreadable metadata is skipped (it names no
/// commit, so it cannot be matched to a deleted model).
fn find_local_dir_files(roots: &[PathBuf]) -> anyhow::Result<Vec<LocalDirFile>> {
    let mut found = Vec::new();
    for root in roots {
        let walk = walkdir::WalkDir::new(root).follow_links(false).into_iter();
        for entry in walk.filter_map(Result::ok) {
            let dir = entry.path();
            if !entry.file_type().is_dir() || !dir.ends_with(".cache/huggingface/download") {
                continue;
            }
            let Some(local_root) = dir.ancestors().nth(3) else {
                continue;
            };
            for meta in walkdir::WalkDir::new(dir).follow_links(false) {
                let meta = meta.with_context(|| format!("reading {}", dir.display()))?;
                let Some(rel) = meta
                    .path()
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|p| p.to_str())
                    .and_then(|p| p.strip_suffix(".metadata"))
                else {
                    continue;
                };
                if !meta.file_type().is_file() || RepoPath::parse(rel).is_err() {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(meta.path()) else {
                    continue;
                };
                let commit = text.lines().next().unwrap_or_default().trim().to_owned();
                found.push(LocalDirFile {
                    root: local_root.to_owned(),
                    metadata: meta.path().to_owned(),
                    path: rel.to_owned(),
                    commit,
                });
            }
        }
    }
    Ok(found)
}

/// Fails when any folder between `root` (excluded) and `path` (its parent included) is a
/// symbolic link, so removal stays inside `root` (a link at `path` itself is removed as a
/// link, never followed). A link swapped in after this check is not caught.
fn refuse_links_below(root: &Path, path: &Path) -> anyhow::Result<()> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        if std::fs::symlink_metadata(d).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "{} is a symbolic link inside a copy's folder; not following it (remove {} by hand if it is yours)",
                d.display(),
                path.display()
            );
        }
        dir = d.parent();
    }
    Ok(())
}

/// Removes the `--local-dir` files of `commits`: each file, its metadata and lock, and the
/// client's unfinished downloads in those folders; returns what was removed.
fn wipe_local_dirs(
    files: &[LocalDirFile],
    commits: &[&str],
    dry_run: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut download_dirs = Vec::new();
    for f in files
        .iter()
        .filter(|f| commits.contains(&f.commit.as_str()))
    {
        let path = RepoPath::parse(&f.path)?;
        let mut local = f.root.clone();
        local.extend(path.segments());
        // The searched folders may be writable by others than the one running wipe (often
        // root): a planted link (`ROOT/x -> /etc`) beside planted metadata must not turn the
        // wipe into a deletion outside the copy.
        refuse_links_below(&f.root, &local)?;
        let lock = f.metadata.with_extension("lock");
        for candidate in [local.clone(), f.metadata.clone(), lock] {
            if remove_if_present(&candidate, dry_run)? {
                removed.push(candidate);
            }
        }
        if !dry_run {
            prune_empty_dirs(&local, &f.root);
        }
        let download = f.root.join(".cache/huggingface/download");
        if !download_dirs.contains(&download) {
            download_dirs.push(download);
        }
    }
    // Unfinished downloads are named by a hash and an etag, not by path: in a folder that
    // held a deleted model's files, every one goes.
    for dir in download_dirs {
        for entry in walkdir::WalkDir::new(&dir).follow_links(false) {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy();
            if entry.file_type().is_file() && name.ends_with(".incomplete") {
                let path = entry.path().to_owned();
                if remove_if_present(&path, dry_run)? {
                    removed.push(path);
                }
            }
        }
    }
    Ok(removed)
}

/// What `custody wipe --json` prints.
#[derive(Serialize)]
struct Wiped {
    host: HostName,
    dry_run: bool,
    hf_cache: Option<String>,
    /// Every place looked in; the confirmation covers these and no others.
    searched: Vec<String>,
    models: Vec<ModelWiped>,
}

/// One deleted model: what was removed, and whether the server has the confirmation.
#[derive(Serialize)]
struct ModelWiped {
    model: String,
    removed: Vec<String>,
    files: usize,
    confirmed: bool,
    /// Whether the confirmation came after the certificate was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    late: Option<bool>,
    /// Why the model was not wiped completely or not confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(args: WipeArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let done = wipe(global, &args, out).await?;
    out.result(&done, || human(&done))
}

/// Asks the server which copies of this host belong to deleted models, removes them, and
/// confirms. A model whose files could not all be removed is not confirmed (the error says
/// why) and stays in the record for the next run.
async fn wipe(global: &Global, args: &WipeArgs, out: &Output) -> anyhow::Result<Wiped> {
    let client = Client::for_host(global)?;
    let state_file = state_path(global)?;
    let hf_cache = args.hf_cache.clone().or_else(default_hf_cache);
    let listing: WipeList = client.get("/v1/host/wipe").await?;
    let search = if args.search.is_empty() {
        vec![std::env::current_dir().context("finding the current folder")?]
    } else {
        args.search.clone()
    };
    let search: Vec<PathBuf> = search
        .iter()
        .map(|d| std::fs::canonicalize(d).with_context(|| format!("searching {}", d.display())))
        .collect::<anyhow::Result<_>>()?;
    let local_dir_files = find_local_dir_files(&search)?;
    let mut searched = vec!["the folders custody fetch recorded".to_owned()];
    if let Some(cache) = &hf_cache {
        searched.push(format!("the Hugging Face cache {}", cache.display()));
    }
    for dir in &search {
        searched.push(format!("--local-dir copies under {}", dir.display()));
    }

    let _lock = lock(&state_file)?;
    let mut state = load(&state_file)?;
    let mut reports = Vec::new();
    let mut failed = 0usize;
    for m in listing.models {
        let name = m.model.as_str();
        let model = RepoRef::parse(name).context("the server named an invalid model")?;
        // Every revision of a deleted model is gone, so every local copy of it goes, from
        // whichever server or folder it was fetched.
        let (mine, rest): (Vec<LocalCopy>, Vec<LocalCopy>) = std::mem::take(&mut state.copies)
            .into_iter()
            .partition(|c| c.model == name);
        state.copies = rest;
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for copy in &mine {
            match wipe_copy(copy, args.dry_run) {
                Ok(files) => removed.extend(files),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if let Some(cache) = &hf_cache {
            match wipe_hf_cache(cache, &model, args.dry_run) {
                Ok(files) => removed.extend(files),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let commits: Vec<&str> = m.files.iter().map(|f| f.commit.as_str()).collect();
        match wipe_local_dirs(&local_dir_files, &commits, args.dry_run) {
            Ok(files) => removed.extend(files),
            Err(e) => errors.push(format!("{e:#}")),
        }
        let removed_names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        let mut report = ModelWiped {
            model: m.model.clone(),
            removed: removed_names,
            files: removed.len(),
            confirmed: false,
            late: None,
            error: None,
        };
        if !errors.is_empty() {
            // Keep the record of what could not be removed, for the next run.
            state.copies.extend(mine);
            failed += 1;
            report.error = Some(errors.join("; "));
            reports.push(report);
            continue;
        }
        if args.dry_run {
            state.copies.extend(mine);
            reports.push(report);
            continue;
        }
        let confirmation = ConfirmWipe {
            model_id: m.model_id.clone(),
            files: removed.len() as u64,
            searched: searched.clone(),
        };
        let confirmed: anyhow::Result<WipeConfirmed> =
            client.post("/v1/host/wipe", &confirmation).await;
        match confirmed {
            Ok(confirmed) => {
                // Forget the copies only once the server has the confirmation.
                save(&state_file, &state)?;
                report.confirmed = true;
                report.late = Some(confirmed.late);
            }
            Err(e) => {
                state.copies.extend(mine);
                failed += 1;
                report.error = Some(format!("files removed, confirmation failed: {e:#}"));
            }
        }
        reports.push(report);
    }
    if !args.dry_run {
        save(&state_file, &state)?;
    }
    let result = Wiped {
        host: listing.host,
        dry_run: args.dry_run,
        hf_cache: hf_cache.map(|p| p.display().to_string()),
        searched,
        models: reports,
    };
    if failed > 0 {
        out.result(&result, || human(&result))?;
        bail!(
            "{failed} deleted models could not be wiped completely; nothing was confirmed for them"
        );
    }
    Ok(result)
}

/// The human summary of a wipe.
fn human(result: &Wiped) -> String {
    if result.models.is_empty() {
        return "no copies of deleted models on this host".to_owned();
    }
    let mut lines = Vec::new();
    for m in &result.models {
        let (name, files) = (&m.model, m.files);
        let line = if let Some(e) = &m.error {
            format!("{name}: NOT wiped: {e}")
        } else if result.dry_run {
            format!("{name}: would remove {files} files")
        } else {
            format!("{name}: removed {files} files, wipe confirmed")
        };
        lines.push(line);
        for f in &m.removed {
            lines.push(format!("  {f}"));
        }
        if files == 0 && m.error.is_none() {
            lines.push("  no local copy found in the places searched".to_owned());
        }
    }
    lines.push(format!("searched: {}", result.searched.join("; ")));
    lines.push(
        "not covered: copies made by other means (cp, converted models, other folders)".to_owned(),
    );
    lines.join("\n")
}
