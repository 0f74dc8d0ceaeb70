//! The Hugging Face Hub's read API, so committers use `huggingface_hub`, the `hf` command and
//! vLLM unchanged: they point `HF_ENDPOINT` at custody (through the host agent, which adds the
//! host's client certificate) and keep their code.
//!
//! Repository ids are `vendor/model`. Revisions: `main` (or `latest`) is the newest revision,
//! and each revision's 40-hex commit id is its `sha`; both are accepted everywhere. Listings
//! and `Link` pages name the resolved commit, so a page never mixes two revisions.
//!
//! Naming follows what the client relies on: files of [`LFS_THRESHOLD`] bytes or more are
//! "LFS" files whose ETag and `lfs.oid` are the SHA-256 custody already records, and whose
//! `oid` is the Git id of their LFS pointer; smaller files are plain Git blobs whose ETag and
//! `oid` are their Git blob id, computed once per stored object by reading it (a bounded cost:
//! they are small) and kept in memory. Directory `oid`s are real Git tree ids over those.
//! `hf cache verify` checks exactly these.
//!
//! Authorization is the native API's (`auth::authorize` through the same helpers): listing and
//! model info need `ReadMetadata`, HEAD and GET on `resolve` need `Fetch` (a HEAD is the
//! client's "may I download" probe and must answer what the GET would). Errors use the Hub's
//! convention (`error::ApiError::into_hub_response`). Nothing here ever emits a Xet signal
//! (`xetHash`, `X-Xet-*`, `rel="xet-auth"`): the client would switch protocols and not fall
//! back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use policy::{Action, Decision};
use store::{FileRecord, RevisionRecord};
use wire::ErrorCode;
use wire::hub::{ModelInfo, Sibling, SiblingLfs, TreeEntry, TreeLfs};

use super::fetch::{find_file, header_value, open_file, serve_file};
use super::models::{Found, authorize_model, load_model, resolve_revision};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::App;

/// Files this large or larger are presented as LFS files (the Hub refuses plain Git files
/// above 10 MiB).
pub(crate) const LFS_THRESHOLD: u64 = 10 * 1024 * 1024;

/// Entries per tree page, as on the Hub.
const PAGE_SIZE: usize = 1000;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/models/{ns}/{name}", get(model_info))
        .route("/api/models/{ns}/{name}/revision/{rev}", get(model_info_at))
        .route("/api/models/{ns}/{name}/tree/{rev}", get(tree_root))
        .route("/api/models/{ns}/{name}/tree/{rev}/{*path}", get(tree_path))
        .route(
            "/{ns}/{name}/resolve/{rev}/{*path}",
            get(resolve_get).head(resolve_head),
        )
}

/// An error rendered in the Hub's convention, with the revision it concerns (if known) as
/// `X-Repo-Commit`.
pub(crate) struct HubError {
    error: ApiError,
    commit: Option<String>,
}

impl From<ApiError> for HubError {
    fn from(error: ApiError) -> Self {
        HubError {
            error,
            commit: None,
        }
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        self.error.into_hub_response(self.commit.as_deref())
    }
}

type HubResult<T> = Result<T, HubError>;

fn in_revision(revision: &RevisionRecord) -> impl FnOnce(ApiError) -> HubError + '_ {
    move |error| HubError {
        error,
        commit: Some(revision.commit.to_string()),
    }
}

/// Loads the model, decides `action` and resolves `rev`, in the native API's order: a
/// refused caller learns nothing about revisions or files.
async fn open_revision(
    app: &App,
    caller: Result<Caller, ApiError>,
    ns: &str,
    name: &str,
    rev: &str,
    action: Action,
) -> HubResult<(Caller, Found, Decision, RevisionRecord)> {
    let caller = caller?;
    let found = load_model(app, ns, name).await?;
    let decision = authorize_model(app, &caller, action, &found).await?;
    let revision = resolve_revision(app, &found, rev).await?;
    Ok((caller, found, decision, revision))
}

/// A file as the Hub names it.
struct HubFile {
    path: String,
    size: u64,
    sha256: String,
    /// Git blob id (hex): of the content for small files, of the LFS pointer for large ones.
    blob_id: String,
    /// Length of the LFS pointer, for LFS files.
    pointer_size: Option<usize>,
}

impl HubFile {
    /// What the client uses as the cache file name: SHA-256 for LFS files, else the blob id.
    fn etag(&self) -> &str {
        if self.pointer_size.is_some() {
            &self.sha256
        } else {
            &self.blob_id
        }
    }

    fn tree_entry(&self) -> TreeEntry {
        TreeEntry::File {
            oid: self.blob_id.clone(),
            size: self.size,
            path: self.path.clone(),
            lfs: self.pointer_size.map(|pointer_size| TreeLfs {
                oid: self.sha256.clone(),
                size: self.size,
                pointer_size,
            }),
        }
    }

    /// The sibling with its size, blob id and LFS details (model info with `blobs=true`).
    fn sibling(&self) -> Sibling {
        Sibling {
            rfilename: self.path.clone(),
            size: Some(self.size),
            blob_id: Some(self.blob_id.clone()),
            lfs: self.pointer_size.map(|pointer_size| SiblingLfs {
                sha256: self.sha256.clone(),
                size: self.size,
                pointer_size,
            }),
        }
    }
}

/// The Git LFS pointer file (spec v1) that stands for a large file in a Git repository.
fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// Blob ids of small files by stored object id. Objects are immutable, so an entry never goes
/// stale; the map is emptied when full, which only costs a re-read.
static BLOB_IDS: LazyLock<Mutex<HashMap<String, [u8; 20]>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
const BLOB_ID_CACHE_MAX: usize = 100_000;

fn cached_blob_id(object_id: &str) -> Option<[u8; 20]> {
    let map = BLOB_IDS.lock().unwrap_or_else(|p| p.into_inner());
    map.get(object_id).copied()
}

fn remember_blob_id(object_id: &str, id: [u8; 20]) {
    let mut map = BLOB_IDS.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= BLOB_ID_CACHE_MAX {
        map.clear();
    }
    map.insert(object_id.to_owned(), id);
}

/// The Git blob id of a small file's content: computed at upload and stored with the object,
/// or (for an object stored before ids were kept, or whose upload was resumed) read and
/// decrypted once, then remembered. No key of a deleted model is ever unwrapped for it.
async fn small_blob_id(app: &App, found: &Found, file: &FileRecord) -> Result<[u8; 20], ApiError> {
    if let Some(id) = cached_blob_id(file.object_id.as_str()) {
        return Ok(id);
    }
    if let Some(stored) = app.store.object_git_blob_id(&file.object_id).await? {
        let id = hex_to_id(&stored)?;
        remember_blob_id(file.object_id.as_str(), id);
        return Ok(id);
    }
    if found.record.deleted_at.is_some() {
        return Err(ApiError::Deleted(format!(
            "{} has been deleted; its weights can never be read again",
            found.name
        )));
    }
    let mut stream = open_file(app, found, file, 0..file.size).await?;
    let mut hasher = crypto::hash::GitObjectHasher::new("blob", file.size);
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if read != file.size {
        return Err(ApiError::Integrity);
    }
    let id = hasher.finish();
    remember_blob_id(file.object_id.as_str(), id);
    Ok(id)
}

async fn describe(app: &App, found: &Found, file: &FileRecord) -> Result<HubFile, ApiError> {
    let sha256 = file.sha256.to_string();
    let (blob_id, pointer_size) = if file.size >= LFS_THRESHOLD {
        let pointer = lfs_pointer(&sha256, file.size);
        (
            crypto::hash::git_object_id("blob", pointer.as_bytes()),
            Some(pointer.len()),
        )
    } else {
        (small_blob_id(app, found, file).await?, None)
    };
    Ok(HubFile {
        path: file.path.to_string(),
        size: file.size,
        sha256,
        blob_id: hex::encode(blob_id),
        pointer_size,
    })
}

async fn describe_all(
    app: &App,
    found: &Found,
    files: &[FileRecord],
) -> Result<Vec<HubFile>, ApiError> {
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        out.push(describe(app, found, file).await?);
    }
    Ok(out)
}

/// `true`, `True` or `1`: Python clients spell booleans differently.
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

// ----- model info ----------------------------------------------------------------------------

async fn model_info(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> HubResult<Json<ModelInfo>> {
    info(&app, caller, &ns, &name, "main", &query).await
}

async fn model_info_at(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> HubResult<Json<ModelInfo>> {
    info(&app, caller, &ns, &name, &rev, &query).await
}

async fn info(
    app: &App,
    caller: Result<Caller, ApiError>,
    ns: &str,
    name: &str,
    rev: &str,
    query: &HashMap<String, String>,
) -> HubResult<Json<ModelInfo>> {
    let (_, found, _, revision) =
        open_revision(app, caller, ns, name, rev, Action::ReadMetadata).await?;
    let files = app
        .store
        .revision_files(&revision.commit)
        .await
        .map_err(|e| in_revision(&revision)(e.into()))?;
    let with_blobs = flag(query, "blobs");
    let siblings = if with_blobs {
        describe_all(app, &found, &files)
            .await
            .map_err(in_revision(&revision))?
            .iter()
            .map(HubFile::sibling)
            .collect()
    } else {
        files
            .iter()
            .map(|f| Sibling {
                rfilename: f.path.to_string(),
                size: None,
                blob_id: None,
                lfs: None,
            })
            .collect()
    };
    Ok(Json(ModelInfo {
        id: found.name.clone(),
        model_id: found.name,
        author: found.record.vendor,
        sha: revision.commit,
        private: true,
        gated: false,
        disabled: false,
        tags: Vec::new(),
        siblings,
    }))
}

// ----- tree ----------------------------------------------------------------------------------

/// Every directory of a set of file paths, with its Git tree id, and the listing of any of
/// them. Built per request from the revision's files.
struct Tree {
    files: Vec<HubFile>,
    /// Directory path (`""` for the root) to its Git tree id (hex).
    dirs: BTreeMap<String, String>,
}

/// An entry of a Git tree: its name, whether it is a folder, and its object id.
type TreeChild = (String, bool, [u8; 20]);

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

impl Tree {
    fn new(files: Vec<HubFile>) -> Result<Tree, ApiError> {
        let mut all_dirs = BTreeSet::from([String::new()]);
        for f in &files {
            let mut p = parent(&f.path);
            while !p.is_empty() && all_dirs.insert(p.to_owned()) {
                p = parent(p);
            }
        }
        let mut children: BTreeMap<&str, Vec<TreeChild>> = BTreeMap::new();
        for f in &files {
            let id = hex_to_id(&f.blob_id)?;
            children.entry(parent(&f.path)).or_default().push((
                base_name(&f.path).to_owned(),
                false,
                id,
            ));
        }
        // Deepest first, so every subdirectory's id is known before its parent's.
        let mut order: Vec<&String> = all_dirs.iter().collect();
        order.sort_by_key(|d| {
            std::cmp::Reverse(if d.is_empty() {
                0
            } else {
                d.matches('/').count() + 1
            })
        });
        let mut dirs = BTreeMap::new();
        for dir in order {
            let mut entries = children.remove(dir.as_str()).unwrap_or_default();
            // Git orders entries by name, a directory's name as if it ended with '/'.
            entries.sort_by_key(|(name, is_dir, _)| git_sort_key(name, *is_dir));
            let mut content = Vec::new();
            for (name, is_dir, id) in &entries {
                content.extend_from_slice(if *is_dir { b"40000 " } else { b"100644 " });
                content.extend_from_slice(name.as_bytes());
                content.push(0);
                content.extend_from_slice(id);
            }
            let id = crypto::hash::git_object_id("tree", &content);
            if !dir.is_empty() {
                children.entry(parent(dir)).or_default().push((
                    base_name(dir).to_owned(),
                    true,
                    id,
                ));
            }
            dirs.insert(dir.clone(), hex::encode(id));
        }
        Ok(Tree { files, dirs })
    }

    /// The entries under `dir` (`""` for the root): its direct children, or everything below
    /// it when `recursive`. `None` when `dir` is not a directory.
    fn list(&self, dir: &str, recursive: bool) -> Option<Vec<TreeEntry>> {
        if !self.dirs.contains_key(dir) {
            return None;
        }
        let below = |path: &str| {
            if recursive {
                dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
            } else {
                parent(path) == dir
            }
        };
        let mut entries: Vec<TreeEntry> = Vec::new();
        for (path, id) in &self.dirs {
            if !path.is_empty() && below(path) {
                entries.push(TreeEntry::Directory {
                    oid: id.clone(),
                    size: 0,
                    path: path.clone(),
                });
            }
        }
        for f in &self.files {
            if below(&f.path) {
                entries.push(f.tree_entry());
            }
        }
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Some(entries)
    }
}

fn git_sort_key(name: &str, is_dir: bool) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    if is_dir {
        key.push(b'/');
    }
    key
}

fn hex_to_id(hex_id: &str) -> Result<[u8; 20], ApiError> {
    let bytes = hex::decode(hex_id).map_err(|e| ApiError::Internal(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| ApiError::Internal("a git id is not 20 bytes".into()))
}

async fn tree_root(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> HubResult<Response> {
    tree(&app, caller, (&ns, &name, &rev, ""), &query, &uri, &headers).await
}

async fn tree_path(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev, path)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> HubResult<Response> {
    let path = path.trim_end_matches('/');
    tree(
        &app,
        caller,
        (&ns, &name, &rev, path),
        &query,
        &uri,
        &headers,
    )
    .await
}

/// One page of a tree listing. `cursor` (an offset into the listing of one immutable commit)
/// and `limit` (at most [`PAGE_SIZE`]) page through it; `Link: <...>; rel="next"` names the
/// next page by commit, so it stays the same listing even if `main` moves meanwhile.
async fn tree(
    app: &App,
    caller: Result<Caller, ApiError>,
    (ns, name, rev, dir): (&str, &str, &str, &str),
    query: &HashMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
) -> HubResult<Response> {
    let (_, found, _, revision) =
        open_revision(app, caller, ns, name, rev, Action::ReadMetadata).await?;
    let in_rev = |e: ApiError| in_revision(&revision)(e);
    let recursive = flag(query, "recursive");
    let cursor = match query.get("cursor") {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| {
            in_rev(ApiError::bad_request(
                ErrorCode::InvalidCursor,
                "invalid cursor",
            ))
        })?,
    };
    let limit = match query.get("limit") {
        None => PAGE_SIZE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=PAGE_SIZE).contains(l))
            .ok_or_else(|| {
                in_rev(ApiError::bad_request(
                    ErrorCode::InvalidLimit,
                    format!("limit must be between 1 and {PAGE_SIZE}"),
                ))
            })?,
    };
    let files = app
        .store
        .revision_files(&revision.commit)
        .await
        .map_err(|e| in_rev(e.into()))?;
    let described = describe_all(app, &found, &files).await.map_err(in_rev)?;
    let tree = Tree::new(described).map_err(in_rev)?;
    let entries = tree.list(dir, recursive).ok_or_else(|| {
        in_rev(ApiError::EntryNotFound(format!(
            "folder {dir} in {}@{}",
            found.name, revision.commit
        )))
    })?;
    let end = cursor.saturating_add(limit).min(entries.len());
    let page: Vec<TreeEntry> = entries.get(cursor..end).unwrap_or_default().to_vec();
    let mut response = Json(page).into_response();
    if end < entries.len() {
        let mut next = format!(
            "/api/models/{}/{}/tree/{}",
            found.record.vendor, found.record.name, revision.commit
        );
        if !dir.is_empty() {
            next.push('/');
            next.push_str(&encode_path(dir));
        }
        next.push_str(&format!(
            "?recursive={recursive}&expand={}&limit={limit}&cursor={end}",
            flag(query, "expand")
        ));
        let link = match origin(uri, headers) {
            Some(origin) => format!("<{origin}{next}>; rel=\"next\""),
            None => format!("<{next}>; rel=\"next\""),
        };
        response
            .headers_mut()
            .insert(header::LINK, header_value(link).map_err(in_rev)?);
    }
    Ok(response)
}

/// `https://HOST[:PORT]` as the client addressed this server (the client needs an absolute
/// `Link`). The host agent rewrites it to its own address. `None` if the request names no
/// plausible authority.
pub(crate) fn origin(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(ToString::to_string))?;
    let plausible = !authority.is_empty()
        && authority.len() <= 255
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then(|| format!("https://{authority}"))
}

/// Percent-encodes each segment of a repository path for a URL.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ----- resolve -------------------------------------------------------------------------------

/// Naming headers of a file: `X-Repo-Commit` (the client files the download under this
/// commit; it must equal the revision call's `sha`) and the ETag the client caches by.
fn name_headers(
    headers: &mut HeaderMap,
    revision: &RevisionRecord,
    file: &HubFile,
) -> Result<(), ApiError> {
    headers.insert(
        wire::hub::REPO_COMMIT_HEADER,
        header_value(revision.commit.to_string())?,
    );
    headers.insert(header::ETAG, header_value(format!("\"{}\"", file.etag()))?);
    Ok(())
}

/// What HEAD and GET on `resolve` both need: the decided fetch, the revision and the file.
struct Resolved {
    caller: Caller,
    found: Found,
    decision: Decision,
    revision: RevisionRecord,
    file: FileRecord,
    hub_file: HubFile,
}

async fn resolve(
    app: &App,
    caller: Result<Caller, ApiError>,
    ns: &str,
    name: &str,
    rev: &str,
    path: &str,
) -> HubResult<Resolved> {
    let (caller, found, decision, revision) =
        open_revision(app, caller, ns, name, rev, Action::Fetch).await?;
    let in_rev = |e: ApiError| in_revision(&revision)(e);
    let file = find_file(app, &found, &revision, path)
        .await
        .map_err(in_rev)?;
    let hub_file = describe(app, &found, &file).await.map_err(in_rev)?;
    Ok(Resolved {
        caller,
        found,
        decision,
        revision,
        file,
        hub_file,
    })
}

async fn resolve_head(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev, path)): Path<(String, String, String, String)>,
) -> HubResult<Response> {
    let Resolved {
        caller,
        found,
        decision,
        revision,
        file,
        hub_file,
    } = resolve(&app, caller, &ns, &name, &rev, &path).await?;
    let in_rev = |e: ApiError| in_revision(&revision)(e);
    // An allowed decision is recorded like every other: a HEAD serves no bytes, only the
    // file's name, size and hash.
    let entry = caller
        .entry("fetch.head", format!("{}@{}", found.name, revision.commit))
        .with_decision(true, &crate::auth::policy_ids(&decision))
        .with_detail(file.path.to_string());
    app.store
        .record(entry)
        .await
        .map_err(|e| in_rev(e.into()))?;
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    name_headers(headers, &revision, &hub_file).map_err(in_rev)?;
    let size = header_value(file.size.to_string()).map_err(in_rev)?;
    headers.insert(wire::hub::LINKED_SIZE_HEADER, size.clone());
    headers.insert(header::CONTENT_LENGTH, size);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

async fn resolve_get(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> HubResult<Response> {
    let Resolved {
        caller,
        found,
        decision,
        revision,
        file,
        hub_file,
    } = resolve(&app, caller, &ns, &name, &rev, &path).await?;
    let in_rev = |e: ApiError| in_revision(&revision)(e);
    let mut response = serve_file(
        &app,
        &caller,
        &found,
        &decision,
        &revision,
        &file,
        headers.get(header::RANGE),
    )
    .await
    .map_err(in_rev)?;
    name_headers(response.headers_mut(), &revision, &hub_file).map_err(in_rev)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, blob_id: [u8; 20]) -> HubFile {
        HubFile {
            path: path.into(),
            size: 1,
            sha256: "00".repeat(32),
            blob_id: hex::encode(blob_id),
            pointer_size: None,
        }
    }

    #[test]
    fn tree_ids_match_git() {
        // `git write-tree` over: a-b = "x", a.txt = "hello\n", sub/c.json = "{}". The
        // ordering of "a-b", "a.txt" and a folder "a" is where Git's rule (folders sort as
        // "name/") differs from plain byte order.
        let blob = |s: &[u8]| crypto::hash::git_object_id("blob", s);
        let tree = Tree::new(vec![
            file("a-b", blob(b"x")),
            file("a.txt", blob(b"hello\n")),
            file("sub/c.json", blob(b"{}")),
        ])
        .unwrap();
        assert_eq!(tree.dirs[""], "f76ebfad446a41b95ae3668c0d4cd10265e6ba97");
        assert_eq!(tree.dirs["sub"], "222fa7009e34e6887d266adcd15cdf62d90b90bd");

        // A folder "a" between "a-b" and "a.txt" in byte order, after both in Git's.
        let tree = Tree::new(vec![
            file("a-b", blob(b"x")),
            file("a.txt", blob(b"hello\n")),
            file("a/y", blob(b"y")),
        ])
        .unwrap();
        assert_eq!(tree.dirs[""], "fc33107c39f5ed24291d0839bfe9a07977d47995");
    }

    #[test]
    fn listings_are_direct_children_or_everything_below() {
        let blob = |s: &[u8]| crypto::hash::git_object_id("blob", s);
        let tree = Tree::new(vec![
            file("config.json", blob(b"1")),
            file("a/b/c.bin", blob(b"2")),
            file("a/d.txt", blob(b"3")),
            file("ab.txt", blob(b"4")),
        ])
        .unwrap();
        let paths = |v: Vec<TreeEntry>| -> Vec<String> {
            v.iter()
                .map(|e| match e {
                    TreeEntry::File { path, .. } => format!("file:{path}"),
                    TreeEntry::Directory { path, .. } => format!("directory:{path}"),
                })
                .collect()
        };
        assert_eq!(
            paths(tree.list("", false).unwrap()),
            ["directory:a", "file:ab.txt", "file:config.json"]
        );
        assert_eq!(
            paths(tree.list("", true).unwrap()),
            [
                "directory:a",
                "directory:a/b",
                "file:a/b/c.bin",
                "file:a/d.txt",
                "file:ab.txt",
                "file:config.json"
            ]
        );
        assert_eq!(
            paths(tree.list("a", false).unwrap()),
            ["directory:a/b", "file:a/d.txt"]
        );
        assert_eq!(
            paths(tree.list("a", true).unwrap()),
            ["directory:a/b", "file:a/b/c.bin", "file:a/d.txt"]
        );
        assert!(
            tree.list("config.json", false).is_none(),
            "a file is no folder"
        );
        assert!(tree.list("nope", true).is_none());
    }

    #[test]
    fn lfs_files_are_named_by_sha256_and_their_pointer() {
        let sha = "9be78edb5b928eba33aa88f431551348f7466ba9f5ef3daf1d552398722a5436";
        let pointer = lfs_pointer(sha, 548123560);
        // The pointer of this file on the real Hub: 134 bytes, Git id 64eaa9c5...
        assert_eq!(pointer.len(), 134);
        assert_eq!(
            hex::encode(crypto::hash::git_object_id("blob", pointer.as_bytes())),
            "64eaa9c526867e404b68f2c5d66fd78e27026523"
        );
        let f = HubFile {
            path: "pytorch_model.bin".into(),
            size: 548123560,
            sha256: sha.into(),
            blob_id: "64eaa9c526867e404b68f2c5d66fd78e27026523".into(),
            pointer_size: Some(pointer.len()),
        };
        assert_eq!(f.etag(), sha);
        let TreeEntry::File { lfs: Some(lfs), .. } = f.tree_entry() else {
            panic!("a large file is an LFS file");
        };
        assert_eq!((lfs.oid.as_str(), lfs.pointer_size), (sha, 134));
        let text = serde_json::to_string(&f.tree_entry()).unwrap();
        assert!(!text.contains("xet"), "{text}");
    }

    fn hub_response(e: ApiError, commit: Option<&str>) -> (u16, Option<String>, Option<String>) {
        let r = e.into_hub_response(commit);
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), h("x-error-code"), h("x-error-message"))
    }

    #[test]
    fn errors_follow_the_hub_convention() {
        assert_eq!(
            hub_response(ApiError::Denied("no grant — ask the vendor".into()), None),
            (
                403,
                Some("GatedRepo".into()),
                Some("no grant - ask the vendor".into())
            )
        );
        assert_eq!(
            hub_response(
                ApiError::Unauthenticated("invalid, expired or revoked token"),
                None
            ),
            (401, None, Some("invalid, expired or revoked token".into()))
        );
        assert_eq!(
            hub_response(ApiError::ModelNotFound("model a/b".into()), None).1,
            Some("RepoNotFound".into())
        );
        assert_eq!(
            hub_response(ApiError::bad_request(ErrorCode::InvalidName, "bad"), None).1,
            Some("RepoNotFound".into())
        );
        assert_eq!(
            hub_response(
                ApiError::bad_request(ErrorCode::InvalidRevision, "bad"),
                None
            )
            .1,
            Some("RevisionNotFound".into())
        );
        let deleted = hub_response(
            ApiError::Deleted("model a/b was deleted; deletion certificate c1".into()),
            None,
        );
        assert_eq!(deleted.0, 404);
        assert!(deleted.2.unwrap().contains("deletion certificate c1"));
        let missing = ApiError::EntryNotFound("x in a/b@c".into()).into_hub_response(Some("c"));
        assert_eq!(missing.status().as_u16(), 404);
        assert_eq!(missing.headers()["x-error-code"], "EntryNotFound");
        assert_eq!(missing.headers()["x-repo-commit"], "c");
        // Internal details stay in the log.
        let internal = hub_response(ApiError::Internal("db password wrong".into()), None);
        assert_eq!(internal.0, 500);
        assert!(!internal.2.unwrap().contains("password"));
    }

    #[test]
    fn links_name_the_origin_the_client_used() {
        let uri: Uri = "/api/models/a/b/tree/main".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("custody.example:8443"),
        );
        assert_eq!(
            origin(&uri, &headers).as_deref(),
            Some("https://custody.example:8443")
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil>; rel=x"));
        assert_eq!(origin(&uri, &headers), None);
        assert_eq!(encode_path("a b/c%d"), "a%20b/c%25d");
    }
}
