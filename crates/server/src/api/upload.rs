//! Uploads: a manifest first (every path and digest checked before any byte), then each
//! file's bytes streamed through encryption, then a commit that makes one immutable revision.
//! Until the commit nothing is visible; a refused or abandoned upload leaves no revision.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use blobstore::{PartBuffer, PartLayout, PartReceipt, PartSealer};
use bytes::Buf;
use crypto::hash::ResumableSha256;
use futures::StreamExt;
use policy::Action;
use store::{FileRecord, NewUpload, UploadFileRecord, UploadSession};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinSet;
use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};
use wire::ErrorCode;
use wire::models::FileEntry;
use wire::upload::{CommitRequest, Committed, PutQuery, SessionFile, UploadRequest};

use super::json_body;
use super::models::{authorize_model, load_model};
use crate::auth::{Caller, Target, authorize, policy_ids};
use crate::config::Limits;
use crate::error::ApiError;
use crate::state::App;

const MAX_MESSAGE_LEN: usize = 4096;

/// Checks a manifest as a whole, against `limits` (`[limits]`: files, file size, total size;
/// each path is at most 1024 bytes, see `RepoPath`). Paths are compared case-insensitively
/// too: two names that differ only in case would overwrite each other on a case-insensitive
/// file system.
pub(crate) fn validate_manifest(
    request: &UploadRequest,
    limits: &Limits,
) -> Result<Vec<(RepoPath, u64, Option<Sha256Hex>)>, ApiError> {
    if request.files.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyUpload,
            "the upload lists no files",
        ));
    }
    if request.files.len() > limits.max_upload_files {
        return Err(ApiError::bad_request(
            ErrorCode::TooManyFiles,
            format!(
                "the upload lists {} files; an upload holds at most {} (limits.max_upload_files): split it",
                request.files.len(),
                limits.max_upload_files
            ),
        ));
    }
    if request.message.len() > MAX_MESSAGE_LEN
        || request
            .message
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidMessage,
            format!(
                "the message must be at most {MAX_MESSAGE_LEN} bytes without control characters"
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(request.files.len());
    let mut total: u64 = 0;
    for entry in &request.files {
        let path = RepoPath::parse(&entry.path)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.to_string()))?;
        if !seen.insert(path.as_str().to_lowercase()) {
            return Err(ApiError::bad_request(
                ErrorCode::DuplicatePath,
                format!("path {path:?} appears more than once (names are compared ignoring case)"),
            ));
        }
        let sha256 = entry
            .sha256
            .as_deref()
            .map(Sha256Hex::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidDigest, format!("{path}: {e}")))?;
        if entry.size > limits.max_file_bytes {
            return Err(ApiError::bad_request(
                ErrorCode::FileTooLarge,
                format!(
                    "{path}: {} bytes is over the limit of {} bytes per file (limits.max_file_bytes)",
                    entry.size, limits.max_file_bytes
                ),
            ));
        }
        total = total.saturating_add(entry.size);
        files.push((path, entry.size, sha256));
    }
    if total > limits.max_upload_bytes {
        return Err(ApiError::bad_request(
            ErrorCode::UploadTooLarge,
            format!(
                "the upload declares {total} bytes in all, over the limit of {} bytes per upload (limits.max_upload_bytes)",
                limits.max_upload_bytes
            ),
        ));
    }
    // A name cannot be both a file and a folder.
    let dirs: BTreeSet<String> = files
        .iter()
        .flat_map(|(p, _, _)| {
            let segments: Vec<&str> = p.segments().collect();
            (1..segments.len())
                .map(move |n| segments[..n].join("/").to_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some((p, _, _)) = files
        .iter()
        .find(|(p, _, _)| dirs.contains(&p.as_str().to_lowercase()))
    {
        return Err(ApiError::bad_request(
            ErrorCode::PathConflict,
            format!("{p:?} is both a file and a folder"),
        ));
    }
    Ok(files)
}

/// A digest of the manifest as sent, so the same upload run again finds its session (and
/// an ordinary upload never resumes a derived one, or the other way round).
pub(crate) fn manifest_digest(
    message: &str,
    files: &[(RepoPath, u64, Option<Sha256Hex>)],
    derived_from: Option<&CommitId>,
) -> String {
    let mut hasher = crypto::hash::Sha256::new();
    hasher.update(b"custody-manifest-v1\n");
    hasher.update(message.as_bytes());
    for (path, size, sha256) in files {
        // A digest left out (the client hashes while it sends) is `-`, never a hex digest.
        let sha256 = sha256.as_ref().map_or("-", Sha256Hex::as_str);
        hasher.update(format!("\n{path}\0{size}\0{sha256}").as_bytes());
    }
    if let Some(commit) = derived_from {
        hasher.update(format!("\nderived-from\0{commit}").as_bytes());
    }
    hex::encode(hasher.finish())
}

/// How a session looks to the client: which files are stored, and from where to resume.
fn session_body(name: &str, session: &UploadSession) -> wire::upload::UploadSession {
    let files = session
        .files
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let layout = PartLayout::new(f.file.size);
            let resume_offset =
                (u64::from(f.parts_done) * layout.part_plaintext_len()).min(f.file.size);
            SessionFile {
                index,
                path: f.file.path.clone(),
                size: f.file.size,
                done: f.done,
                resume_offset: if f.done { f.file.size } else { resume_offset },
            }
        })
        .collect();
    wire::upload::UploadSession {
        upload_id: session.id.clone(),
        model: name.to_owned(),
        files,
    }
}

/// `POST /v1/models/{vendor}/{model}/uploads`: opens an upload session (201), or hands back
/// the caller's unfinished one for the same manifest (200), creating the model on its first
/// upload.
#[utoipa::path(
    post,
    path = "/v1/models/{vendor}/{model}/uploads",
    operation_id = "upload_begin",
    tag = "upload",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = UploadRequest,
    responses(
        (status = 200, description = "done", body = wire::upload::UploadSession),
        (status = 201, description = "done", body = wire::upload::UploadSession),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn begin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<wire::upload::UploadSession>), ApiError> {
    let vendor = VendorName::parse(&vendor)?;
    let model = ModelName::parse(&model)?;
    let name = format!("{vendor}/{model}");
    let vendor_record = app
        .store
        .vendor(&vendor)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("vendor {vendor}")))?;
    // An unreadable body is decided as an ordinary upload and then refused as a bad request.
    let wants_derived = body
        .as_ref()
        .ok()
        .and_then(|Json(r)| r.derived_from.clone());
    let (decision, derived) =
        decide_upload(&app, &caller, &vendor_record, &name, wants_derived).await?;
    let request = json_body(body)?;
    let files = validate_manifest(&request, &app.config.limits)?;
    let digest = manifest_digest(
        &request.message,
        &files,
        derived.as_ref().map(|(_, commit)| commit),
    );
    let model_record = match &derived {
        Some((record, _)) => record.clone(),
        None => model_to_upload_to(&app, &caller, &decision, &vendor_record, &model).await?,
    };

    // The same user sending the same manifest again continues where the last run stopped.
    if let Some(session) = app
        .store
        .find_upload(
            &model_record.id,
            &caller.actor(),
            &digest,
            app.store.clock().now(),
        )
        .await?
    {
        return Ok((StatusCode::OK, Json(session_body(&name, &session))));
    }
    let session = open_session(
        &app,
        &caller,
        &decision,
        &name,
        &model_record,
        &request,
        &files,
        &digest,
        derived.as_ref().map(|(_, c)| c),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session_body(&name, &session))))
}

/// Derived uploads (a committer's conversion of a revision) are decided on the model, which
/// must exist, be alive and hold that revision; the others on the vendor.
async fn decide_upload(
    app: &App,
    caller: &Caller,
    vendor_record: &store::VendorRecord,
    name: &str,
    wants_derived: Option<String>,
) -> Result<(policy::Decision, Option<(store::ModelRecord, CommitId)>), ApiError> {
    let Some(from) = wants_derived else {
        let decision =
            authorize(app, caller, Action::Upload, Target::Vendor(vendor_record)).await?;
        return Ok((decision, None));
    };
    let (vendor, model) = name.split_once('/').unwrap_or((name, ""));
    let found = load_model(app, vendor, model).await?;
    let decision = authorize_model(app, caller, Action::UploadDerived, &found).await?;
    if found.record.deleted_at.is_some() {
        return Err(ApiError::Deleted(format!("model {name} has been deleted")));
    }
    let commit = CommitId::parse(&from)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidDerivedFrom, e.to_string()))?;
    if app
        .store
        .revision(&found.record.id, &commit)
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidDerivedFrom,
            format!("{commit} is not a revision of {name}"),
        ));
    }
    Ok((decision, Some((found.record, commit))))
}

/// The model an ordinary upload goes to, made on its first upload (under the current key
/// epoch). A deleted model's name stays taken: its key is gone, so nothing can be added.
pub(crate) async fn model_to_upload_to(
    app: &App,
    caller: &Caller,
    decision: &policy::Decision,
    vendor_record: &store::VendorRecord,
    model: &ModelName,
) -> Result<store::ModelRecord, ApiError> {
    let vendor = &vendor_record.name;
    let name = format!("{vendor}/{model}");
    match app.store.model(vendor, model).await? {
        Some(m) if m.deleted_at.is_some() => Err(ApiError::Deleted(format!(
            "model {name} has been deleted; upload under a new name"
        ))),
        Some(m) => Ok(m),
        None => {
            let id = crypto::token::random_id()?;
            let entry = caller
                .entry("model.create", name.as_str())
                .with_decision(true, &policy_ids(decision));
            // Committed only under the current key epoch (made again if a rotation wins).
            let created =
                crate::keys::create_model(app, &id, &vendor_record.id, model, entry).await?;
            match created {
                // Lost a race with a concurrent first upload: use the winner's model.
                Ok(()) | Err(store::StoreError::Conflict(_)) => app
                    .store
                    .model(vendor, model)
                    .await?
                    .ok_or_else(|| ApiError::Internal("model vanished after creation".into())),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Opens a new session for the manifest's files, each to be stored under a fresh object id,
/// in the transaction of its `upload.begin` entry.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the parts of one request"
)]
pub(crate) async fn open_session(
    app: &App,
    caller: &Caller,
    decision: &policy::Decision,
    name: &str,
    model_record: &store::ModelRecord,
    request: &UploadRequest,
    files: &[(RepoPath, u64, Option<Sha256Hex>)],
    digest: &str,
    derived_from: Option<&CommitId>,
) -> Result<UploadSession, ApiError> {
    let upload_id = hex::encode(crypto::random_bytes::<16>()?);
    let records = files
        .iter()
        .map(|(path, size, sha256)| {
            Ok(UploadFileRecord {
                path: path.clone(),
                object_id: ObjectId::from_bytes(&crypto::random_bytes::<16>()?),
                size: *size,
                sha256: sha256.clone(),
                declared: sha256.is_some(),
            })
        })
        .collect::<Result<Vec<_>, crypto::CryptoError>>()?;
    let total: u64 = records.iter().map(|f| f.size).sum();
    let entry = caller
        .entry("upload.begin", name)
        .with_decision(true, &policy_ids(decision))
        .with_detail(format!(
            "upload {upload_id}: {} files, {total} bytes{}",
            records.len(),
            derived_from
                .map(|c| format!(", derived from {c}"))
                .unwrap_or_default()
        ));
    app.store
        .create_upload_from(
            &NewUpload {
                id: &upload_id,
                manifest_digest: digest,
                model_id: &model_record.id,
                created_by: &caller.actor(),
                message: &request.message,
                expires_at: app.store.clock().now() + app.config.upload_ttl_secs,
                files: &records,
                max_open_by_creator: app.config.limits.max_open_uploads_per_user,
            },
            derived_from,
            entry,
        )
        .await?;
    app.store
        .upload(&upload_id)
        .await?
        .ok_or_else(|| ApiError::Internal("new upload session vanished".into()))
}

/// Loads an upload session for its owner, re-checking the right to upload.
async fn owned_session(
    app: &App,
    caller: &Caller,
    id: &str,
) -> Result<(UploadSession, store::ModelRecord, &'static str), ApiError> {
    let valid_id = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let not_found = || ApiError::NotFound(format!("upload {id}"));
    if !valid_id {
        return Err(not_found());
    }
    let session = app.store.upload(id).await?.ok_or_else(not_found)?;
    if session.created_by != caller.actor() {
        return Err(not_found());
    }
    let model = app
        .store
        .model_by_id(&session.model_id)
        .await?
        .ok_or_else(|| ApiError::Internal("upload of a model that does not exist".into()))?;
    let vendor_record = app
        .store
        .vendor(&model.vendor)
        .await?
        .ok_or_else(|| ApiError::Internal("upload to a vendor that does not exist".into()))?;
    // The same action as at the start: a derived upload is decided on the model, so a grant
    // revoked or an exclusion added meanwhile stops it.
    let decision = if session.derived_from.is_some() {
        authorize(app, caller, Action::UploadDerived, Target::Model(&model)).await?
    } else {
        authorize(app, caller, Action::Upload, Target::Vendor(&vendor_record)).await?
    };
    if session.expires_at <= app.store.clock().now() {
        return Err(ApiError::Conflict(format!(
            "upload {id} has expired; start the upload again"
        )));
    }
    Ok((session, model, decision.policy))
}

#[utoipa::path(
    put,
    path = "/v1/uploads/{id}/files/{index}",
    operation_id = "upload_put_file",
    tag = "upload",
    params(("id" = String, Path, description = "id (see the route)"), ("index" = String, Path, description = "index (see the route)"), PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "done", body = FileEntry),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn put_file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, index)): Path<(String, usize)>,
    Query(query): Query<PutQuery>,
    body: Body,
) -> Result<Json<FileEntry>, ApiError> {
    let (session, model, _) = owned_session(&app, &caller, &id).await?;
    match receive_file(
        &app,
        &session,
        &model,
        index,
        query.offset,
        None,
        body.into_data_stream(),
    )
    .await?
    {
        Received::Stored(entry) => Ok(Json(entry)),
        Received::Partial => Err(ApiError::Internal(
            "a body meant to reach the end of the file stopped short".into(),
        )),
    }
}

/// What one body brought to a file.
pub(crate) enum Received {
    /// The file is stored whole, checked against its size and digest.
    Stored(FileEntry),
    /// The body ended where it was meant to, before the end of the file (a Hub multipart
    /// chunk): its parts are durable, the file continues with the next body.
    Partial,
}

/// Receives the bytes of file `index` of `session` from `offset` (which must be where the
/// stored prefix ends) to `end` (`None`: the end of the file; otherwise a part boundary), sealing
/// and storing them part by part; at the end of the file checks size and digest and completes
/// the object.
pub(crate) async fn receive_file(
    app: &Arc<App>,
    session: &UploadSession,
    model: &store::ModelRecord,
    index: usize,
    offset: u64,
    end: Option<u64>,
    body: impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
) -> Result<Received, ApiError> {
    let id = session.id.clone();
    let upload_file = session
        .files
        .get(index)
        .ok_or_else(|| ApiError::NotFound(format!("file {index} of upload {id}")))?
        .clone();
    if upload_file.done {
        return Err(ApiError::Conflict(format!(
            "{} is already stored in this upload",
            upload_file.file.path
        )));
    }
    let file = &upload_file.file;
    let layout = PartLayout::new(file.size);
    let stored = (u64::from(upload_file.parts_done) * layout.part_plaintext_len()).min(file.size);
    if offset != stored {
        return Err(ApiError::ResumeMismatch(format!(
            "the server holds the first {stored} bytes of {}; resend from offset {stored}",
            file.path
        )));
    }
    let end = end.unwrap_or(file.size).min(file.size);
    if end != file.size && (end % layout.part_plaintext_len() != 0 || end <= offset) {
        return Err(ApiError::Internal(format!(
            "a body must end at a part boundary after its start, not at {end}"
        )));
    }
    let key = crate::keys::model_key(app, model).await?;
    let backend = app.blobs.backend().clone();
    let object_key = file.object_id.as_str().to_owned();
    let resumable = match (
        &upload_file.header,
        &upload_file.backend_upload_id,
        &upload_file.hash_state,
    ) {
        (Some(header), Some(upload), state) => {
            Some((header.clone(), upload.clone(), state.clone()))
        }
        _ => None,
    };
    let (sealer, backend_upload, hasher) = match resumable {
        Some((header, upload, state)) => {
            let sealer = PartSealer::resume(
                &key,
                &model.vendor_id,
                &model.id,
                &file.object_id,
                file.size,
                &header,
            )?;
            let hasher = match state {
                Some(state) => ResumableSha256::import(&state)?,
                None => ResumableSha256::new(),
            };
            (sealer, upload, hasher)
        }
        None => {
            let sealer = PartSealer::new(
                &key,
                &model.vendor_id,
                &model.id,
                &file.object_id,
                file.size,
            )?;
            let upload = backend.create_upload(&object_key).await?;
            app.store
                .start_file_upload(&id, index, Some(&sealer.header()), Some(&upload))
                .await?;
            (sealer, upload, ResumableSha256::new())
        }
    };
    drop(key);

    let mut pipeline = PartPipeline {
        app: app.clone(),
        upload_id: id.clone(),
        index,
        sealer: Arc::new(sealer),
        backend_upload: backend_upload.clone(),
        object_key: object_key.clone(),
        path: file.path.clone(),
        hashing: Baton::Here(Box::new(Hashing {
            sha256: hasher,
            // Small files are plain Git blobs in the Hub's listings: their id is computed
            // here, from the first byte (a resumed stream has lost its prefix: the Hub
            // computes it later, from the stored object, while the model lives).
            git: (file.size < super::hub::LFS_THRESHOLD && upload_file.parts_done == 0)
                .then(|| crypto::hash::GitObjectHasher::new("blob", file.size)),
        })),
        next_part: upload_file.parts_done + 1,
        durable: upload_file.parts_done,
        in_flight: JoinSet::new(),
        finished: BTreeMap::new(),
        received: stored,
        end,
    };
    let outcome = pipeline.run(body, file).await;
    let hashing = match outcome {
        Ok(hashing) => hashing,
        Err(Failure::Interrupted(error)) => return Err(error),
        Err(Failure::Refused(error)) => {
            // The bytes were not the declared file: forget every part, and the header with
            // them, so a new attempt never reuses nonces under it.
            if let Err(e) = backend.abort_upload(&object_key, &backend_upload).await {
                tracing::warn!(upload = %id, error = %e, "could not remove the parts of a refused file");
            }
            app.store.start_file_upload(&id, index, None, None).await?;
            return Err(error);
        }
    };
    if end < file.size {
        return Ok(Received::Partial);
    }
    let parts = app.store.stored_parts(&id, index).await?;
    let receipts: Vec<PartReceipt> = parts
        .into_iter()
        .map(|p| PartReceipt {
            part_number: p.part_number,
            etag: p.etag,
            size: p.size,
        })
        .collect();
    if receipts.len() != layout.part_count() as usize {
        return Err(ApiError::Internal(format!(
            "{} parts recorded for {}, expected {}",
            receipts.len(),
            file.path,
            layout.part_count()
        )));
    }
    backend
        .complete_upload(&object_key, &backend_upload, receipts)
        .await?;
    let stored = FileRecord {
        path: file.path.clone(),
        object_id: file.object_id.clone(),
        size: file.size,
        sha256: Sha256Hex::from_bytes(&hashing.sha256.finish()),
    };
    let git_blob_id = hashing.git.map(|g| hex::encode(g.finish()));
    app.store
        .upload_file_done(
            &id,
            index,
            &model.id,
            &stored,
            crypto::stream::ciphertext_len(file.size),
            git_blob_id.as_deref(),
        )
        .await?;
    Ok(Received::Stored(FileEntry {
        path: stored.path,
        size: stored.size,
        sha256: stored.sha256,
    }))
}

/// Parts being sealed and stored concurrently, at most this many per file.
const PARTS_IN_FLIGHT: usize = 3;

/// `CUSTODY_FAILPOINT_UPLOAD=unrecorded` (test-hooks builds only): parts are sealed and
/// stored but never recorded as durable, and the body then fails, as when a server dies
/// between storing parts and recording them; a retry sends those parts again.
#[cfg(feature = "test-hooks")]
fn failpoint_unrecorded() -> bool {
    std::env::var("CUSTODY_FAILPOINT_UPLOAD").is_ok_and(|v| v == "unrecorded")
}

#[cfg(not(feature = "test-hooks"))]
fn failpoint_unrecorded() -> bool {
    false
}

enum Failure {
    /// The stream broke or storage failed: what is durable stays, the client resumes.
    Interrupted(ApiError),
    /// The client sent other bytes than it declared: everything of this file is dropped.
    Refused(ApiError),
}

/// The running digests of one file, handed from part to part in byte order.
struct Hashing {
    sha256: ResumableSha256,
    /// The Git blob id of a small file streamed from its first byte.
    git: Option<crypto::hash::GitObjectHasher>,
}

/// Where the digests are: here (no part in flight), or on their way from the part in flight
/// that hashes last.
enum Baton {
    Here(Box<Hashing>),
    Coming(oneshot::Receiver<Hashing>),
}

impl Baton {
    async fn take(self) -> Result<Hashing, ApiError> {
        match self {
            Baton::Here(hashing) => Ok(*hashing),
            Baton::Coming(receiver) => receiver
                .await
                .map_err(|_| ApiError::Internal("a part failed before it was hashed".into())),
        }
    }
}

type PartState = Option<[u8; crypto::hash::STATE_LEN]>;

/// What a part's task ends with: its number, and its receipt and the hash state at its end.
type PartOutcome = (u32, Result<(PartReceipt, PartState), Failure>);

/// Receives one file's plaintext and hands each part to a blocking task that hashes it
/// (after the part before it: SHA-256 is sequential), passes the digests on, then seals
/// and stores the part. So the receiving task only copies bytes, the hash of part n+1 runs
/// beside the sealing of part n on another core, and each durable prefix is recorded so an
/// interruption loses at most the parts in flight.
struct PartPipeline {
    app: Arc<App>,
    upload_id: String,
    index: usize,
    sealer: Arc<PartSealer>,
    backend_upload: String,
    object_key: String,
    /// The file's path, for messages.
    path: RepoPath,
    hashing: Baton,
    next_part: u32,
    /// Leading parts known to be stored.
    durable: u32,
    in_flight: JoinSet<PartOutcome>,
    /// Stored parts beyond the durable prefix, with the hash state at their end.
    finished: BTreeMap<u32, (PartReceipt, PartState)>,
    received: u64,
    /// Where this body ends: the end of the file, or a part boundary before it.
    end: u64,
}

impl PartPipeline {
    async fn run(
        &mut self,
        mut body: impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
        file: &UploadFileRecord,
    ) -> Result<Hashing, Failure> {
        let layout = self.sealer.layout();
        let mut buf: Option<PartBuffer> = None;
        let mut filling: Option<OwnedSemaphorePermit> = None;
        let mut leftover = bytes::Bytes::new();
        // The last part this body fills.
        let last_part = if self.end >= file.size {
            layout.part_count()
        } else {
            u32::try_from(self.end / layout.part_plaintext_len()).unwrap_or(u32::MAX)
        };
        while self.next_part <= last_part {
            let range = layout.part_range(self.next_part);
            if buf.is_none() && (range.is_empty() || !leftover.is_empty()) {
                // Room for the ciphertext too: the part is sealed in this buffer. The whole of
                // it is taken from the budget of all uploads at once, before the first byte
                // (the stream waits while the budget is spent): a stream never holds part of a
                // buffer while it waits for the rest, so streams cannot deadlock each other,
                // and the parts it has in flight free their room on their own.
                let need = self.sealer.stored_part_len(self.next_part);
                filling = Some(self.reserve(need).await?);
                buf = Some(
                    self.sealer
                        .part_buffer(self.next_part)
                        .map_err(|e| Failure::Interrupted(e.into()))?,
                );
            }
            if let Some(filled) = buf.as_mut() {
                // Each byte goes once, straight to where its ciphertext will be.
                let taken = filled.fill(&leftover);
                leftover.advance(taken);
            }
            if let Some(full) = buf.take_if(|b| b.is_full()) {
                self.dispatch(self.next_part, full, filling.take());
                self.next_part += 1;
                while self.in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Err(e) = self.settle_one().await {
                        self.drain().await;
                        return Err(e);
                    }
                }
                continue;
            }
            match self.next_chunk(&mut body, file).await? {
                Some(chunk) => leftover = chunk,
                None => break,
            }
        }
        // Every part is on its way: anything more is more than was declared.
        while self.next_part > last_part {
            match self.next_chunk(&mut body, file).await? {
                Some(_) => {}
                None => break,
            }
        }
        while !self.in_flight.is_empty() {
            if let Err(e) = self.settle_one().await {
                self.drain().await;
                return Err(e);
            }
        }
        if self.received != self.end || self.next_part <= last_part {
            return Err(Failure::Refused(ApiError::bad_request(
                ErrorCode::SizeMismatch,
                format!(
                    "{}: received {} bytes, the manifest declared {}",
                    file.path, self.received, self.end
                ),
            )));
        }
        if failpoint_unrecorded() {
            return Err(Failure::Interrupted(ApiError::Internal(
                "failpoint: the stored parts were not recorded".into(),
            )));
        }
        let hashing = std::mem::replace(&mut self.hashing, Baton::Coming(oneshot::channel().1))
            .take()
            .await
            .map_err(Failure::Interrupted)?;
        if self.end < file.size {
            return Ok(hashing);
        }
        let digest = Sha256Hex::from_bytes(&hashing.sha256.clone().finish());
        // A digest left out of the manifest is checked at the commit, against the client's.
        if file.declared
            && let Some(declared) = &file.sha256
            && digest != *declared
        {
            return Err(Failure::Refused(ApiError::bad_request(
                ErrorCode::DigestMismatch,
                format!(
                    "{}: the bytes received have sha256 {digest}, the manifest declared {declared}",
                    file.path
                ),
            )));
        }
        Ok(hashing)
    }

    /// The next piece of the body, or `None` at its end. Counts bytes, and stops the pipeline
    /// on a broken stream or on more bytes than declared.
    async fn next_chunk(
        &mut self,
        body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
        file: &UploadFileRecord,
    ) -> Result<Option<bytes::Bytes>, Failure> {
        match body.next().await {
            None => Ok(None),
            Some(Err(e)) => {
                self.drain().await;
                Err(Failure::Interrupted(ApiError::bad_request(
                    ErrorCode::UploadInterrupted,
                    format!("the request body ended early: {e}"),
                )))
            }
            Some(Ok(chunk)) => {
                self.received += chunk.len() as u64;
                if self.received > file.size {
                    self.drain().await;
                    return Err(Failure::Refused(ApiError::bad_request(
                        ErrorCode::SizeMismatch,
                        format!(
                            "{} is longer than the {} bytes declared",
                            file.path, file.size
                        ),
                    )));
                }
                if self.received > self.end {
                    // A chunk longer than it was given: what is durable stays.
                    self.drain().await;
                    return Err(Failure::Interrupted(ApiError::bad_request(
                        ErrorCode::SizeMismatch,
                        format!(
                            "{}: this part runs past byte {}, where it was to end",
                            file.path, self.end
                        ),
                    )));
                }
                Ok(Some(chunk))
            }
        }
    }

    /// Room for a part buffer of `bytes` in the budget of all uploads
    /// (`limits.max_upload_buffer_bytes`, in KiB), held until the part is stored.
    async fn reserve(&mut self, bytes: usize) -> Result<OwnedSemaphorePermit, Failure> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        match self
            .app
            .upload_buffers
            .clone()
            .acquire_many_owned(kib)
            .await
        {
            Ok(permit) => Ok(permit),
            Err(e) => {
                self.drain().await;
                Err(Failure::Interrupted(ApiError::Internal(format!(
                    "upload buffer budget: {e}"
                ))))
            }
        }
    }

    fn dispatch(&mut self, part: u32, plaintext: PartBuffer, room: Option<OwnedSemaphorePermit>) {
        let sealer = self.sealer.clone();
        let backend = self.app.blobs.backend().clone();
        let key = self.object_key.clone();
        let upload = self.backend_upload.clone();
        let (pass_on, next) = oneshot::channel();
        let previous = std::mem::replace(&mut self.hashing, Baton::Coming(next));
        let store = self.app.store.clone();
        let (upload_id, index, path) = (self.upload_id.clone(), self.index, self.path.clone());
        self.in_flight.spawn(async move {
            let result = async {
                let mut hashing = previous.take().await.map_err(Failure::Interrupted)?;
                let (state, prefix, ciphertext) = tokio::task::spawn_blocking(move || {
                    for segment in plaintext.plaintext() {
                        hashing.sha256.update(segment);
                        if let Some(git) = hashing.git.as_mut() {
                            git.update(segment);
                        }
                    }
                    let state = hashing.sha256.export();
                    let prefix = hex::encode(hashing.sha256.clone().finish());
                    // The next part may hash now; the receiver is gone only if the upload
                    // stopped, and then nothing waits for the digests.
                    let _ = pass_on.send(hashing);
                    sealer.seal(plaintext).map(|sealed| (state, prefix, sealed))
                })
                .await
                .map_err(|e| ApiError::Internal(format!("sealing task failed: {e}")))
                .and_then(|sealed| sealed.map_err(ApiError::from))
                .map_err(Failure::Interrupted)?;
                // Before the ciphertext can be seen in storage: these nonces are this
                // plaintext's, for good (see `Store::claim_sealed_part`).
                let claimed = store
                    .claim_sealed_part(&upload_id, index, part, &prefix)
                    .await
                    .map_err(|e| Failure::Interrupted(e.into()))?;
                if !claimed {
                    return Err(Failure::Refused(ApiError::ResumeMismatch(format!(
                        "{path}: part {part} differs from the bytes sent for it before: the file \
                         changed since this upload began; what was stored of it is dropped, send \
                         it again from its first byte"
                    ))));
                }
                let receipt = backend
                    .upload_part(&key, &upload, part, bytes::Bytes::from(ciphertext))
                    .await
                    .map_err(|e| Failure::Interrupted(e.into()))?;
                Ok((receipt, state))
            }
            .await;
            // The buffer is gone: its room goes back to the budget.
            drop(room);
            (part, result)
        });
    }

    /// Waits for one part to be stored and records how far the durable prefix reaches.
    async fn settle_one(&mut self) -> Result<(), Failure> {
        let Some(joined) = self.in_flight.join_next().await else {
            return Ok(());
        };
        let (part, result) = joined.map_err(|e| {
            Failure::Interrupted(ApiError::Internal(format!("part task failed: {e}")))
        })?;
        let (receipt, state) = result?;
        self.finished.insert(part, (receipt, state));
        if failpoint_unrecorded() {
            return Ok(());
        }
        while let Some((receipt, state)) = self.finished.remove(&(self.durable + 1)) {
            self.durable += 1;
            let stored = store::StoredPart {
                part_number: receipt.part_number,
                etag: receipt.etag,
                size: receipt.size,
            };
            self.app
                .store
                .record_part(
                    &self.upload_id,
                    self.index,
                    &stored,
                    self.durable,
                    state.as_ref().map(|s| &s[..]),
                )
                .await
                .map_err(|e| Failure::Interrupted(e.into()))?;
        }
        Ok(())
    }

    /// After a failure: let parts in flight land and record what became durable.
    async fn drain(&mut self) {
        while !self.in_flight.is_empty() {
            if let Err(Failure::Interrupted(e) | Failure::Refused(e)) = self.settle_one().await {
                tracing::warn!(upload = %self.upload_id, error = %e, "a part failed while stopping");
            }
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/commit",
    operation_id = "upload_commit",
    tag = "upload",
    params(("id" = String, Path, description = "id (see the route)")),
    request_body(content = CommitRequest, description = "the digests of the files listed without one (optional: an empty body when every digest was declared)"),
    responses(
        (status = 201, description = "done", body = Committed),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn commit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Committed>), ApiError> {
    // Clients that declared every digest may send no body at all.
    let request: CommitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CommitRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("the commit body is not a JSON commit request: {e}"),
            )
        })?
    };
    let (session, model, policy) = owned_session(&app, &caller, &id).await?;
    let missing = session.files.iter().filter(|f| !f.done).count();
    if missing > 0 {
        return Err(ApiError::Conflict(format!(
            "{missing} of {} files have not been uploaded yet",
            session.files.len()
        )));
    }
    let name = format!("{}/{}", model.vendor, model.name);
    let files = confirmed_files(&app, &caller, &session, &name, &request).await?;
    let commit = commit_id(&model.id, files.iter())?;
    let touched = files
        .iter()
        .map(|f| audit::Touched {
            path: f.path.to_string(),
            sha256: f.sha256.to_string(),
            bytes: f.size,
        })
        .collect();
    let entry = caller
        .entry("upload.commit", format!("{name}@{commit}"))
        .with_decision(true, policy)
        .with_touched(touched);
    let entry = match &session.derived_from {
        Some(from) => entry.with_detail(format!("derived from {from}")),
        None => entry,
    };
    app.store.commit_upload(&session, &commit, entry).await?;
    Ok((
        StatusCode::CREATED,
        Json(Committed {
            model: name,
            commit,
            files: session.files.len(),
            derived_from: session.derived_from,
        }),
    ))
}

/// The files of a stored session as its revision will hold them, after checking the client's
/// confirmation of every digest the manifest left out against the digest of the bytes the
/// server stored. A file that differs (it changed on the client's disk while it was sent, or
/// a resumed session held another file's prefix) ends the session: the sweep removes what it
/// stored, and the next run starts over.
async fn confirmed_files(
    app: &App,
    caller: &Caller,
    session: &UploadSession,
    name: &str,
    request: &CommitRequest,
) -> Result<Vec<FileRecord>, ApiError> {
    let listed: HashSet<&str> = session.files.iter().map(|f| f.file.path.as_str()).collect();
    if let Some(stray) = request.sha256.keys().find(|p| !listed.contains(p.as_str())) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPath,
            format!("the commit confirms {stray:?}, which this upload does not list"),
        ));
    }
    let mut files = Vec::with_capacity(session.files.len());
    let mut differ = Vec::new();
    for f in &session.files {
        let stored = f.file.record().ok_or_else(|| {
            ApiError::Internal(format!("{} is stored without a digest", f.file.path))
        })?;
        if !f.file.declared {
            let confirmed = request.sha256.get(f.file.path.as_str()).ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidDigest,
                    format!(
                        "{} was listed without a digest: the commit must confirm the sha256 the client computed while sending it",
                        f.file.path
                    ),
                )
            })?;
            let confirmed = Sha256Hex::parse(confirmed).map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidDigest, format!("{}: {e}", f.file.path))
            })?;
            if confirmed != stored.sha256 {
                differ.push(format!(
                    "{}: the server stored bytes with sha256 {}, the client sent {confirmed}",
                    f.file.path, stored.sha256
                ));
            }
        }
        files.push(stored);
    }
    if !differ.is_empty() {
        let entry = caller.entry("upload.refuse", name).with_detail(format!(
            "upload {}: digests differ at commit; the session is ended: {}",
            session.id,
            differ.join("; ")
        ));
        app.store.expire_upload(&session.id, entry).await?;
        return Err(ApiError::bad_request(
            ErrorCode::DigestMismatch,
            format!(
                "{}; the files changed while they were sent, so this upload is abandoned: run it again",
                differ.join("; ")
            ),
        ));
    }
    Ok(files)
}

/// A fresh 160-bit revision id over the model, the files and a random nonce. Revisions are
/// immutable, so an id is never reused even for identical content.
pub(crate) fn commit_id<'a>(
    model_id: &str,
    files: impl Iterator<Item = &'a FileRecord>,
) -> Result<CommitId, ApiError> {
    let mut hasher = crypto::hash::Sha256::new();
    hasher.update(b"custody-commit-v1\n");
    hasher.update(model_id.as_bytes());
    hasher.update(b"\n");
    for f in files {
        hasher.update(f.path.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(f.sha256.as_str().as_bytes());
        hasher.update(format!("\0{}\n", f.size).as_bytes());
    }
    hasher.update(&crypto::random_bytes::<16>()?);
    let digest = hasher.finish();
    let mut id = [0u8; 20];
    id.copy_from_slice(&digest[..20]);
    Ok(CommitId::from_bytes(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(paths: &[&str]) -> UploadRequest {
        UploadRequest {
            message: String::new(),
            files: paths
                .iter()
                .map(|p| wire::upload::ManifestEntry {
                    path: (*p).to_owned(),
                    size: 1,
                    sha256: Some("0".repeat(64)),
                })
                .collect(),
            derived_from: None,
        }
    }

    fn code(paths: &[&str]) -> &'static str {
        match validate_manifest(&manifest(paths), &Limits::default()) {
            Ok(_) => "ok",
            Err(e) => e.status().1.as_str(),
        }
    }

    #[test]
    fn manifests_are_checked_as_a_whole() {
        assert_eq!(code(&["config.json", "a/b.safetensors"]), "ok");
        assert_eq!(code(&[]), "empty_upload");
        assert_eq!(code(&["../x"]), "invalid_path");
        assert_eq!(code(&["/abs"]), "invalid_path");
        assert_eq!(code(&["a\0b"]), "invalid_path");
        assert_eq!(code(&["a", "a"]), "duplicate_path");
        assert_eq!(code(&["A.json", "a.json"]), "duplicate_path");
        assert_eq!(code(&["a", "a/b"]), "path_conflict");
        assert_eq!(code(&["x/y/z", "X/y"]), "path_conflict");
    }
}
