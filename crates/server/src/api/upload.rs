//! Uploads: a manifest first (every path and digest checked before any byte), then each
//! file's bytes streamed through encryption, then a commit that makes one immutable revision.
//! Until the commit nothing is visible; a refused or abandoned upload leaves no revision.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::StreamExt;
use policy::{Action, Resource};
use serde::Deserialize;
use serde_json::{Value, json};
use shred::WrappedModelKey;
use store::{FileRecord, NewModel, NewUpload, UploadSession};
use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};

use super::json_body;
use crate::App;
use crate::auth::{Caller, authorize, store_now};
use crate::error::ApiError;

/// Largest accepted file: the stream format's limit is far above; this is a sanity bound.
const MAX_FILE_SIZE: u64 = 4 << 40;
const MAX_FILES: usize = 100_000;
const MAX_MESSAGE_LEN: usize = 4096;

#[derive(Deserialize)]
pub(crate) struct UploadRequest {
    #[serde(default)]
    message: String,
    files: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
}

/// Checks a manifest as a whole. Paths are compared case-insensitively too: two names that
/// differ only in case would overwrite each other on a case-insensitive file system.
fn validate_manifest(request: &UploadRequest) -> Result<Vec<(RepoPath, u64, Sha256Hex)>, ApiError> {
    if request.files.is_empty() {
        return Err(ApiError::bad_request(
            "empty_upload",
            "the upload lists no files",
        ));
    }
    if request.files.len() > MAX_FILES {
        return Err(ApiError::bad_request(
            "too_many_files",
            format!("an upload holds at most {MAX_FILES} files"),
        ));
    }
    if request.message.len() > MAX_MESSAGE_LEN
        || request
            .message
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(
            "invalid_message",
            format!(
                "the message must be at most {MAX_MESSAGE_LEN} bytes without control characters"
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(request.files.len());
    for entry in &request.files {
        let path = RepoPath::parse(&entry.path)
            .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
        if !seen.insert(path.as_str().to_lowercase()) {
            return Err(ApiError::bad_request(
                "duplicate_path",
                format!("path {path:?} appears more than once (names are compared ignoring case)"),
            ));
        }
        let sha256 = Sha256Hex::parse(&entry.sha256)
            .map_err(|e| ApiError::bad_request("invalid_digest", format!("{path}: {e}")))?;
        if entry.size > MAX_FILE_SIZE {
            return Err(ApiError::bad_request(
                "file_too_large",
                format!(
                    "{path}: {} bytes is over the limit of {MAX_FILE_SIZE}",
                    entry.size
                ),
            ));
        }
        files.push((path, entry.size, sha256));
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
            "path_conflict",
            format!("{p:?} is both a file and a folder"),
        ));
    }
    Ok(files)
}

pub(crate) async fn begin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let vendor = VendorName::parse(&vendor)?;
    let model = ModelName::parse(&model)?;
    let name = format!("{vendor}/{model}");
    let vendor_record = app
        .store
        .vendor(&vendor)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("vendor {vendor}")))?;
    let decision = authorize(
        &app,
        &caller,
        Action::Upload,
        Resource::Vendor { vendor: &vendor },
        &name,
    )
    .await?;
    let request = json_body(body)?;
    let files = validate_manifest(&request)?;

    let model_record = match app.store.model(&vendor, &model).await? {
        Some(m) => m,
        None => {
            let id = crypto::token::random_id()?;
            let (_key, wrapped) = app.keys.new_model_key(&id)?;
            let entry = caller
                .entry("model.create", name.as_str())
                .with_decision(true, decision.policy)
                .with_detail(format!("key epoch {}", wrapped.epoch));
            let created = app
                .store
                .create_model(
                    &NewModel {
                        id: &id,
                        vendor_id: &vendor_record.id,
                        name: &model,
                        key_epoch: wrapped.epoch,
                        wrapped_key: &wrapped.wrapped,
                    },
                    entry,
                )
                .await;
            match created {
                // Lost a race with a concurrent first upload: use the winner's model.
                Ok(()) | Err(store::StoreError::Conflict(_)) => app
                    .store
                    .model(&vendor, &model)
                    .await?
                    .ok_or_else(|| ApiError::Internal("model vanished after creation".into()))?,
                Err(e) => return Err(e.into()),
            }
        }
    };

    let upload_id = hex::encode(crypto::random_bytes::<16>()?);
    let records = files
        .iter()
        .map(|(path, size, sha256)| {
            Ok(FileRecord {
                path: path.clone(),
                object_id: ObjectId::from_bytes(&crypto::random_bytes::<16>()?),
                size: *size,
                sha256: sha256.clone(),
            })
        })
        .collect::<Result<Vec<_>, crypto::CryptoError>>()?;
    let total: u64 = records.iter().map(|f| f.size).sum();
    let entry = caller
        .entry("upload.begin", name.as_str())
        .with_decision(true, decision.policy)
        .with_detail(format!(
            "upload {upload_id}: {} files, {total} bytes",
            records.len()
        ));
    app.store
        .create_upload(
            &NewUpload {
                id: &upload_id,
                model_id: &model_record.id,
                created_by: &caller.actor(),
                message: &request.message,
                expires_at: store_now() + app.config.upload_ttl_secs,
                files: &records,
            },
            entry,
        )
        .await?;
    let files: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(index, f)| json!({ "index": index, "path": f.path, "size": f.size }))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "upload_id": upload_id, "model": name, "files": files })),
    ))
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
    let name = format!("{}/{}", model.vendor, model.name);
    let decision = authorize(
        app,
        caller,
        Action::Upload,
        Resource::Vendor {
            vendor: &model.vendor,
        },
        &name,
    )
    .await?;
    if session.expires_at <= store_now() {
        return Err(ApiError::Conflict(format!(
            "upload {id} has expired; start the upload again"
        )));
    }
    Ok((session, model, decision.policy))
}

pub(crate) async fn put_file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, index)): Path<(String, usize)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (session, model, _) = owned_session(&app, &caller, &id).await?;
    let upload_file = session
        .files
        .get(index)
        .ok_or_else(|| ApiError::NotFound(format!("file {index} of upload {id}")))?;
    if upload_file.done {
        return Err(ApiError::Conflict(format!(
            "{} is already stored in this upload",
            upload_file.file.path
        )));
    }
    let file = &upload_file.file;
    let key = app.keys.unwrap_model_key(
        &model.id,
        &WrappedModelKey {
            epoch: model.key_epoch,
            wrapped: model.wrapped_key.clone(),
        },
    )?;
    let mut writer = app
        .blobs
        .begin(&key, &model.vendor_id, &model.id, &file.object_id)
        .await?;
    let mut stream = body.into_data_stream();
    let failure = loop {
        match stream.next().await {
            None => break None,
            Some(Err(e)) => {
                break Some(ApiError::bad_request(
                    "upload_interrupted",
                    format!("the request body ended early: {e}"),
                ));
            }
            Some(Ok(chunk)) => {
                if writer.plaintext_len() + chunk.len() as u64 > file.size {
                    break Some(ApiError::bad_request(
                        "size_mismatch",
                        format!(
                            "{} is longer than the {} bytes declared",
                            file.path, file.size
                        ),
                    ));
                }
                if let Err(e) = writer.write(&chunk).await {
                    break Some(e.into());
                }
            }
        }
    };
    let failure = failure.or_else(|| {
        if writer.plaintext_len() != file.size {
            return Some(ApiError::bad_request(
                "size_mismatch",
                format!(
                    "{}: received {} bytes, the manifest declared {}",
                    file.path,
                    writer.plaintext_len(),
                    file.size
                ),
            ));
        }
        let digest = Sha256Hex::from_bytes(&writer.digest());
        (digest != file.sha256).then(|| {
            ApiError::bad_request(
                "digest_mismatch",
                format!(
                    "{}: the bytes received have sha256 {digest}, the manifest declared {}",
                    file.path, file.sha256
                ),
            )
        })
    });
    if let Some(error) = failure {
        if let Err(e) = writer.abort().await {
            tracing::warn!(upload = %id, error = %e, "could not remove the parts of a refused file");
        }
        return Err(error);
    }
    let written = writer.finish().await?;
    app.store
        .upload_file_done(&id, index, &model.id, file, written.stored_len)
        .await?;
    Ok(Json(
        json!({ "path": file.path, "size": file.size, "sha256": file.sha256 }),
    ))
}

pub(crate) async fn commit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (session, model, policy) = owned_session(&app, &caller, &id).await?;
    let missing = session.files.iter().filter(|f| !f.done).count();
    if missing > 0 {
        return Err(ApiError::Conflict(format!(
            "{missing} of {} files have not been uploaded yet",
            session.files.len()
        )));
    }
    let commit = commit_id(&model.id, &session)?;
    let name = format!("{}/{}", model.vendor, model.name);
    let touched = session
        .files
        .iter()
        .map(|f| audit::Touched {
            path: f.file.path.to_string(),
            sha256: f.file.sha256.to_string(),
            bytes: f.file.size,
        })
        .collect();
    let entry = caller
        .entry("upload.commit", format!("{name}@{commit}"))
        .with_decision(true, policy)
        .with_touched(touched);
    app.store.commit_upload(&session, &commit, entry).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "model": name, "commit": commit, "files": session.files.len() })),
    ))
}

/// A fresh 160-bit revision id over the model, the files and a random nonce. Revisions are
/// immutable, so an id is never reused even for identical content.
fn commit_id(model_id: &str, session: &UploadSession) -> Result<CommitId, ApiError> {
    let mut hasher = crypto::hash::Sha256::new();
    hasher.update(b"custody-commit-v1\n");
    hasher.update(model_id.as_bytes());
    hasher.update(b"\n");
    for f in &session.files {
        hasher.update(f.file.path.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(f.file.sha256.as_str().as_bytes());
        hasher.update(format!("\0{}\n", f.file.size).as_bytes());
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
                .map(|p| ManifestEntry {
                    path: (*p).to_owned(),
                    size: 1,
                    sha256: "0".repeat(64),
                })
                .collect(),
        }
    }

    fn code(paths: &[&str]) -> &'static str {
        match validate_manifest(&manifest(paths)) {
            Ok(_) => "ok",
            Err(e) => e.status().1,
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
