//! The Hugging Face Hub's write API, so a vendor's scripts push to custody unchanged
//! (`create_repo`, `create_commit`, `upload_file`, `upload_folder`, `hf upload`) with
//! `HF_ENDPOINT` pointing at custody and `HF_HUB_DISABLE_XET=1`.
//!
//! A Hub commit becomes one immutable revision made exactly as `custody upload` makes one:
//! every byte goes through [`super::upload::receive_file`] (sealed part by part under the
//! model's key, hashed and checked), the whole manifest through
//! [`super::upload::validate_manifest`], the decision is `Upload` on the vendor, and the
//! entries are `model.create`, `upload.begin` and `upload.commit`. What the Hub adds:
//!
//! - A commit changes the head: the new revision holds `main`'s files, less the deletions,
//!   plus the additions. Unchanged files keep their stored objects. A `parentCommit` that is
//!   not the head is refused, and so is a commit made while `main` moved (checked in the
//!   commit's transaction).
//! - Regular (small) files arrive base64 in the NDJSON commit body. They are held in memory
//!   (at most half of `limits.max_upload_buffer_bytes` per commit, each under
//!   [`LFS_THRESHOLD`]) and stored through a session of their own, opened by the commit.
//! - LFS files go first through the batch API, which stages them in upload sessions of the
//!   caller (`store::hub_uploads`); the client PUTs the bytes to URLs custody hands out. Those
//!   PUTs carry no token, so each URL carries a 256-bit key of its session (only its SHA-256
//!   is stored; new URLs replace it) and every PUT is decided again for the token that asked
//!   for the URLs: a guessed or stale URL, a revoked token or a withdrawn right stores
//!   nothing. The multipart chunk is the object's storage part, so chunks map onto sealed
//!   parts; a chunk sent again (the client retries after a dropped connection, or runs again)
//!   skips what is already durable.
//! - Xet is refused with a message naming `HF_HUB_DISABLE_XET=1`: its protocol would need a
//!   content-addressed chunk store beside custody's sealed objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use blobstore::PartLayout;
use futures::StreamExt;
use policy::{Action, Decision};
use store::{FileRecord, HubCommit, HubLfsSession, ModelRecord, VendorRecord};
use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};
use wire::ErrorCode;
use wire::hub_upload::{
    CommitLine, CommitResponse, CreateRepoConflict, CreateRepoRequest, CreateRepoResponse,
    LfsAction, LfsActions, LfsBatchRequest, LfsBatchResponse, LfsCompleteRequest, LfsObjectAnswer,
    LfsVerifyRequest, PreuploadAnswer, PreuploadRequest, PreuploadResponse, UploadMode,
};
use wire::upload::{ManifestEntry, UploadRequest};

use super::hub::{LFS_THRESHOLD, origin};
use super::json_body;
use super::upload::{Received, commit_id, manifest_digest, receive_file, validate_manifest};
use crate::auth::{Caller, Target, authorize, caller_for_token, policy_ids};
use crate::error::ApiError;
use crate::state::App;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/repos/create", post(create_repo))
        .route("/api/models/{ns}/{name}/preupload/{rev}", post(preupload))
        .route("/api/models/{ns}/{name}/commit/{rev}", post(commit))
        .route(
            "/api/models/{ns}/{name}/xet-write-token/{rev}",
            get(xet_write_token),
        )
        .route(XET_REFUSED_ROUTE, get(xet_refused))
        .route("/{ns}/{name}/info/lfs/objects/batch", post(lfs_batch))
        .route("/{ns}/{name}/info/lfs/objects/verify", post(lfs_verify))
        .route(
            "/api/lfs-upload/{session}/{key}/{index}/parts/{part}",
            put(lfs_put),
        )
        .route(
            "/api/lfs-upload/{session}/{key}/{index}/complete",
            post(lfs_complete),
        )
}

/// What the client is told to do instead of Xet.
pub(crate) const XET_REFUSAL: &str = "custody does not take uploads through Xet: set \
     HF_HUB_DISABLE_XET=1 in the uploading environment (huggingface_hub then uploads large files \
     through the Git LFS API, which custody encrypts as it receives them) and run the upload again";

/// An error in the Hub's convention for the write API.
pub(crate) struct WriteError(ApiError);

impl<E: Into<ApiError>> From<E> for WriteError {
    fn from(error: E) -> Self {
        WriteError(error.into())
    }
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        self.0.into_hub_write_response()
    }
}

type WriteResult<T> = Result<T, WriteError>;

// ----- who may write where ---------------------------------------------------------------------

/// Decides `Upload` on the vendor `ns`. A vendor the caller may not see, or that does not exist,
/// is a missing repository to the client.
async fn vendor_decision(
    app: &App,
    caller: &Caller,
    ns: &str,
) -> Result<(VendorRecord, Decision), ApiError> {
    let missing = || ApiError::ModelNotFound(format!("namespace {ns}"));
    let vendor = VendorName::parse(ns).map_err(|_| missing())?;
    let record = app.store.vendor(&vendor).await?.ok_or_else(missing)?;
    let decision = authorize(app, caller, Action::Upload, Target::Vendor(&record))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => missing(),
            other => other,
        })?;
    Ok((record, decision))
}

/// The live model `ns/name` the caller may upload to.
async fn writable_model(
    app: &App,
    caller: &Caller,
    ns: &str,
    name: &str,
) -> Result<(VendorRecord, ModelRecord, Decision), ApiError> {
    let (vendor, decision) = vendor_decision(app, caller, ns).await?;
    let missing = || ApiError::ModelNotFound(format!("model {ns}/{name}"));
    let model_name = ModelName::parse(name).map_err(|_| missing())?;
    let model = app
        .store
        .model(&vendor.name, &model_name)
        .await?
        .ok_or_else(missing)?;
    if model.deleted_at.is_some() {
        return Err(ApiError::Deleted(format!(
            "model {ns}/{name} has been deleted; upload under a new name"
        )));
    }
    Ok((vendor, model, decision))
}

/// Commits go to `main`, custody's one line of revisions; no pull requests.
fn main_only(rev: &str, query: &HashMap<String, String>) -> Result<(), ApiError> {
    if rev != "main" {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRevision,
            format!("custody takes commits on main only, not on {rev:?}"),
        ));
    }
    let flag = |name: &str| {
        query
            .get(name)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    };
    if flag("create_pr") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "custody has no pull requests: commit to main (create_pr=False)",
        ));
    }
    Ok(())
}

fn request_origin(uri: &Uri, headers: &HeaderMap) -> Result<String, ApiError> {
    origin(uri, headers).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "the request names no host this server can answer for",
        )
    })
}

// ----- create_repo -----------------------------------------------------------------------------

/// `POST /api/repos/create`: creates a model in the vendor's namespace (409 when it exists,
/// which `exist_ok=True` takes as success).
async fn create_repo(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<CreateRepoRequest>, JsonRejection>,
) -> WriteResult<Response> {
    let caller = caller?;
    let request = json_body(body)?;
    if let Some(kind) = request.repo_type.as_deref().filter(|t| *t != "model") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("custody holds models only, not {kind}s"),
        )
        .into());
    }
    if request.private == Some(false) || request.visibility.as_deref() == Some("public") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "models in custody are never public: create it with private=True",
        )
        .into());
    }
    let ns = request.organization.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidName,
            "name the vendor as the namespace: create_repo(\"VENDOR/MODEL\")",
        )
    })?;
    let (vendor, decision) = vendor_decision(&app, &caller, ns).await?;
    let model = ModelName::parse(&request.name)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
    let name = format!("{}/{model}", vendor.name);
    match app.store.model(&vendor.name, &model).await? {
        Some(m) if m.deleted_at.is_some() => {
            return Err(ApiError::Deleted(format!(
                "model {name} has been deleted; create one under a new name"
            ))
            .into());
        }
        Some(_) => {
            // As the Hub answers it: 409 with the repository's URL, which `exist_ok=True` reads.
            let error = format!("model {name} already exists");
            let mut response = (
                StatusCode::CONFLICT,
                Json(CreateRepoConflict {
                    error: error.clone(),
                    url: format!("{}/{name}", request_origin(&uri, &headers)?),
                }),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&error) {
                response
                    .headers_mut()
                    .insert(wire::hub::ERROR_MESSAGE_HEADER, v);
            }
            return Ok(response);
        }
        None => {}
    }
    super::upload::model_to_upload_to(&app, &caller, &decision, &vendor, &model).await?;
    Ok(Json(CreateRepoResponse {
        url: format!("{}/{name}", request_origin(&uri, &headers)?),
        name,
    })
    .into_response())
}

// ----- preupload -------------------------------------------------------------------------------

/// `POST /api/models/{ns}/{name}/preupload/{rev}`: files of [`LFS_THRESHOLD`] bytes or more go
/// through LFS, smaller ones inline; `oid` names what `main` holds at each path.
async fn preupload(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, rev)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<PreuploadRequest>, JsonRejection>,
) -> WriteResult<Json<PreuploadResponse>> {
    let caller = caller?;
    let (_, model, _) = writable_model(&app, &caller, &ns, &name).await?;
    main_only(&rev, &query)?;
    let request = json_body(body)?;
    if request.files.len() > app.config.limits.max_upload_files {
        return Err(ApiError::bad_request(
            ErrorCode::TooManyFiles,
            format!(
                "a commit holds at most {} files (limits.max_upload_files)",
                app.config.limits.max_upload_files
            ),
        )
        .into());
    }
    let head = head_files(&app, &model).await?.1;
    let mut files = Vec::with_capacity(request.files.len());
    for f in request.files {
        let path = RepoPath::parse(&f.path)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
        let oid = match head.get(path.as_str()) {
            Some(held) if held.size >= LFS_THRESHOLD => Some(held.sha256.to_string()),
            Some(held) => app.store.object_git_blob_id(&held.object_id).await?,
            None => None,
        };
        files.push(PreuploadAnswer {
            path: f.path,
            upload_mode: if f.size >= LFS_THRESHOLD {
                UploadMode::Lfs
            } else {
                UploadMode::Regular
            },
            should_ignore: false,
            oid,
        });
    }
    Ok(Json(PreuploadResponse { files }))
}

/// `main`'s revision and its files by path (none for a model without revisions).
async fn head_files(
    app: &App,
    model: &ModelRecord,
) -> Result<(Option<CommitId>, BTreeMap<String, FileRecord>), ApiError> {
    let Some(head) = app.store.latest_revision(&model.id).await? else {
        return Ok((None, BTreeMap::new()));
    };
    let files = app
        .store
        .revision_files(&head.commit)
        .await?
        .into_iter()
        .map(|f| (f.path.to_string(), f))
        .collect();
    Ok((Some(head.commit), files))
}

// ----- Xet -------------------------------------------------------------------------------------

/// `GET /api/models/{ns}/{name}/xet-write-token/{rev}`: refused, with what to do instead.
async fn xet_write_token(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, name, _rev)): Path<(String, String, String)>,
) -> WriteResult<Response> {
    let caller = caller?;
    writable_model(&app, &caller, &ns, &name).await?;
    let entry = caller
        .entry("upload.xet", format!("{ns}/{name}"))
        .with_outcome(audit::Outcome::Denied)
        .with_detail("a Xet upload token was asked for; Xet is not supported");
    app.store.record(entry).await?;
    // `hf_xet` asks for the token itself and reports only a failed request's status and URL,
    // never its body or headers: the refusal's URL is where the user reads what to do.
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_static(XET_REFUSED_ROUTE),
    );
    Ok(response)
}

/// Where a Xet token request is sent: its path is the instruction `hf_xet` shows.
const XET_REFUSED_ROUTE: &str =
    "/api/xet-is-not-supported/set-HF_HUB_DISABLE_XET=1-and-upload-again";

/// `GET` [`XET_REFUSED_ROUTE`]: the refusal, with the reason for clients that show it.
async fn xet_refused() -> WriteError {
    WriteError(ApiError::bad_request(
        ErrorCode::InvalidRequest,
        XET_REFUSAL,
    ))
}

// ----- LFS batch -------------------------------------------------------------------------------

/// The repository of a Git LFS route: `name.git`.
fn lfs_repo(name: &str) -> Result<&str, ApiError> {
    name.strip_suffix(".git")
        .ok_or_else(|| ApiError::NotFound("route".into()))
}

/// One object the client still has to send, and where it goes.
struct Pending {
    session: String,
    index: usize,
    size: u64,
}

/// `POST /{ns}/{name}.git/info/lfs/objects/batch`: for each object, nothing (custody holds it
/// already, in a revision of the model or staged by the caller) or where to send it. Objects
/// staged unfinished get new URLs to their session; the others a new session.
async fn lfs_batch(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    Path((ns, repo)): Path<(String, String)>,
    body: Result<Json<LfsBatchRequest>, JsonRejection>,
) -> WriteResult<Response> {
    let caller = caller?;
    let name = lfs_repo(&repo)?;
    let (_, model, decision) = writable_model(&app, &caller, &ns, name).await?;
    let request = json_body(body)?;
    let origin = request_origin(&uri, &headers)?;
    if request.operation != "upload" {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "custody's LFS API takes uploads only; downloads go through the resolve routes",
        )
        .into());
    }
    let limits = &app.config.limits;
    if request.objects.len() > limits.max_upload_files {
        return Err(ApiError::bad_request(
            ErrorCode::TooManyFiles,
            format!(
                "a batch holds at most {} objects (limits.max_upload_files)",
                limits.max_upload_files
            ),
        )
        .into());
    }
    let now = app.store.clock().now();
    let staged = app
        .store
        .staged_files(&model.id, &caller.actor(), now)
        .await?;
    let mut answers = Vec::with_capacity(request.objects.len());
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut new_objects: Vec<(Sha256Hex, u64)> = Vec::new();
    for object in &request.objects {
        let sha256 = Sha256Hex::parse(&object.oid).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidDigest, format!("{}: {e}", object.oid))
        })?;
        if object.size > limits.max_file_bytes {
            return Err(ApiError::bad_request(
                ErrorCode::FileTooLarge,
                format!(
                    "{}: {} bytes is over the limit of {} bytes per file (limits.max_file_bytes)",
                    object.oid, object.size, limits.max_file_bytes
                ),
            )
            .into());
        }
        answers.push((sha256.clone(), object.size));
        if pending.contains_key(sha256.as_str())
            || new_objects.iter().any(|(s, _)| *s == sha256)
            || app
                .store
                .committed_object(&model.id, &sha256, object.size)
                .await?
                .is_some()
        {
            continue;
        }
        let mut same = staged.iter().filter(|s| {
            s.file.file.sha256.as_ref() == Some(&sha256) && s.file.file.size == object.size
        });
        if same.clone().any(|s| s.file.done) {
            continue;
        }
        match same.next() {
            Some(s) => {
                pending.insert(
                    sha256.to_string(),
                    Pending {
                        session: s.session_id.clone(),
                        index: s.index,
                        size: object.size,
                    },
                );
            }
            None => new_objects.push((sha256, object.size)),
        }
    }

    // New URLs (a new key) for each session that has objects to receive.
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    if !new_objects.is_empty() {
        let (session, key) = open_staging(&app, &caller, &decision, &model, &new_objects).await?;
        for (index, (sha256, size)) in new_objects.iter().enumerate() {
            pending.insert(
                sha256.to_string(),
                Pending {
                    session: session.clone(),
                    index,
                    size: *size,
                },
            );
        }
        keys.insert(session, key);
    }
    for p in pending.values() {
        if !keys.contains_key(&p.session) {
            let key = crypto::token::TokenSecret::generate()?;
            let hub = HubLfsSession {
                token_id: caller.credential.token_id.clone(),
                key_sha256: hex::encode(key.hash()),
            };
            app.store.rekey_hub_lfs_session(&p.session, &hub).await?;
            keys.insert(p.session.clone(), key.expose_secret().to_owned());
        }
    }

    let verify = LfsAction {
        href: format!("{origin}/{ns}/{name}.git/info/lfs/objects/verify"),
        header: BTreeMap::new(),
        expires_in: None,
    };
    let mut multipart = false;
    let objects = answers
        .into_iter()
        .map(|(sha256, size)| {
            let actions = pending.get(sha256.as_str()).map(|p| {
                let key = keys.get(&p.session).map_or("", String::as_str);
                let base = format!("{origin}/api/lfs-upload/{}/{key}/{}", p.session, p.index);
                let layout = PartLayout::new(p.size);
                let upload = if layout.part_count() <= 1 {
                    LfsAction {
                        href: format!("{base}/parts/1"),
                        header: BTreeMap::new(),
                        expires_in: Some(app.config.upload_ttl_secs.unsigned_abs()),
                    }
                } else {
                    multipart = true;
                    let mut header: BTreeMap<String, String> = (1..=layout.part_count())
                        .map(|n| (n.to_string(), format!("{base}/parts/{n}")))
                        .collect();
                    header.insert("chunk_size".into(), layout.part_plaintext_len().to_string());
                    LfsAction {
                        href: format!("{base}/complete"),
                        header,
                        expires_in: Some(app.config.upload_ttl_secs.unsigned_abs()),
                    }
                };
                LfsActions {
                    upload,
                    verify: Some(verify.clone()),
                }
            });
            LfsObjectAnswer {
                oid: sha256.to_string(),
                size,
                actions,
                error: None,
            }
        })
        .collect();
    let body = LfsBatchResponse {
        transfer: if multipart { "multipart" } else { "basic" }.into(),
        objects,
        hash_algo: "sha256".into(),
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.git-lfs+json"),
    );
    Ok(response)
}

/// Opens a staging session for `objects`, with the key of its URLs.
async fn open_staging(
    app: &App,
    caller: &Caller,
    decision: &Decision,
    model: &ModelRecord,
    objects: &[(Sha256Hex, u64)],
) -> Result<(String, String), ApiError> {
    let id = hex::encode(crypto::random_bytes::<16>()?);
    let files = objects
        .iter()
        .map(|(sha256, size)| {
            Ok(store::UploadFileRecord::from(FileRecord {
                path: RepoPath::parse(&format!("lfs/{sha256}"))
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
                object_id: ObjectId::from_bytes(&crypto::random_bytes::<16>()?),
                size: *size,
                sha256: sha256.clone(),
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let manifest: Vec<_> = files
        .iter()
        .map(|f| (f.path.clone(), f.size, f.sha256.clone()))
        .collect();
    let digest = manifest_digest("hub-lfs", &manifest, None);
    let key = crypto::token::TokenSecret::generate()?;
    let entry = caller
        .entry("upload.begin", format!("{}/{}", model.vendor, model.name))
        .with_decision(true, &policy_ids(decision))
        .with_detail(format!(
            "upload {id}: {} files, {total} bytes, through the Hub's LFS API",
            files.len()
        ));
    app.store
        .create_hub_lfs_upload(
            &store::NewUpload {
                id: &id,
                manifest_digest: &digest,
                model_id: &model.id,
                created_by: &caller.actor(),
                message: "",
                expires_at: app.store.clock().now() + app.config.upload_ttl_secs,
                files: &files,
                max_open_by_creator: app.config.limits.max_open_uploads_per_user,
            },
            &HubLfsSession {
                token_id: caller.credential.token_id.clone(),
                key_sha256: hex::encode(key.hash()),
            },
            entry,
        )
        .await?;
    Ok((id, key.expose_secret().to_owned()))
}

// ----- LFS transfers ---------------------------------------------------------------------------

/// What a staging URL opens, once its key, its token and the right to upload held.
struct Staged {
    session: store::UploadSession,
    model: ModelRecord,
    index: usize,
}

/// Checks a staging URL: the session exists and is a staging session, the key is its current
/// one (compared in constant time), the token it acts for is live and still may upload to the
/// vendor, the model lives and the session has not expired. Anything else is the same
/// "not found", counted like refused authentication.
async fn open_staged(
    app: &App,
    parts: &axum::http::request::Parts,
    session_id: &str,
    key: &str,
    index: usize,
) -> Result<Staged, ApiError> {
    const REFUSED: &str = "invalid or expired upload URL";
    let refused = || {
        let source = parts
            .extensions
            .get::<crate::refusals::PeerSource>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |s| s.0);
        let verdict = app.refusals.note(source, REFUSED, app.store.clock().now());
        (verdict, source)
    };
    let valid_id = session_id.len() == 32
        && session_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let hub = if valid_id {
        app.store.hub_lfs_session(session_id).await?
    } else {
        None
    };
    let key_matches = hub.as_ref().is_some_and(|h| {
        hex::decode(&h.key_sha256).is_ok_and(|stored| {
            crypto::token::verify(
                &crypto::token::TokenSecret::from_string(key.to_owned()),
                &stored,
            )
        })
    });
    let (Some(hub), true) = (hub, key_matches) else {
        let (verdict, source) = refused();
        if verdict.record {
            let entry = audit::Entry::new("anonymous", "upload.part", "service")
                .with_request_id(&crate::auth::request_id(parts))
                .with_outcome(audit::Outcome::Denied)
                .with_detail(format!("{REFUSED} (from {source})"));
            app.store.record(entry).await?;
        }
        return Err(match verdict.limited {
            Some(retry_after) => ApiError::RateLimited {
                message: format!("too many refused requests from {source}: {REFUSED}"),
                retry_after,
            },
            None => ApiError::NotFound("upload URL".into()),
        });
    };
    let caller = caller_for_token(app, parts, &hub.token_id).await?;
    let session = app
        .store
        .upload(session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("upload URL".into()))?;
    if session.created_by != caller.actor() {
        return Err(ApiError::NotFound("upload URL".into()));
    }
    let model = app
        .store
        .model_by_id(&session.model_id)
        .await?
        .ok_or_else(|| ApiError::Internal("upload of a model that does not exist".into()))?;
    let vendor = app
        .store
        .vendor(&model.vendor)
        .await?
        .ok_or_else(|| ApiError::Internal("upload to a vendor that does not exist".into()))?;
    authorize(app, &caller, Action::Upload, Target::Vendor(&vendor)).await?;
    if model.deleted_at.is_some() {
        return Err(ApiError::Deleted(format!(
            "model {}/{} has been deleted",
            model.vendor, model.name
        )));
    }
    if session.expires_at <= app.store.clock().now() {
        return Err(ApiError::Conflict(
            "these upload URLs have expired; run the upload again".into(),
        ));
    }
    if index >= session.files.len() {
        return Err(ApiError::NotFound("upload URL".into()));
    }
    Ok(Staged {
        session,
        model,
        index,
    })
}

/// The ETag of part `n`: the client sends it back in the completion request.
fn part_etag(n: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("\"part-{n}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// `PUT /api/lfs-upload/{session}/{key}/{index}/parts/{part}`: one chunk of a staged object
/// (the whole object for a basic transfer). Chunks are storage parts: a chunk whose bytes are
/// durable already is read and dropped, one that overlaps the durable end skips that much.
async fn lfs_put(
    State(app): State<Arc<App>>,
    Path((session_id, key, index, part)): Path<(String, String, usize, u32)>,
    request: Request,
) -> WriteResult<Response> {
    let (parts, body) = request.into_parts();
    let staged = match open_staged(&app, &parts, &session_id, &key, index).await {
        Ok(staged) => staged,
        Err(error) => {
            // Read (and drop) a chunk's worth first: answering before the body is read makes
            // the client see a broken connection instead of the reason.
            let mut stream = body.into_data_stream();
            let mut read = 0usize;
            while read <= REFUSED_BODY_DRAIN {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            return Err(error.into());
        }
    };
    let upload_file = &staged.session.files[staged.index];
    let size = upload_file.file.size;
    let layout = PartLayout::new(size);
    if part == 0 || part > layout.part_count().max(1) {
        return Err(ApiError::NotFound(format!("part {part} of this object")).into());
    }
    let start = u64::from(part - 1) * layout.part_plaintext_len();
    let end = (start + layout.part_plaintext_len()).min(size);
    let durable = if upload_file.done {
        size
    } else {
        (u64::from(upload_file.parts_done) * layout.part_plaintext_len()).min(size)
    };
    let mut stream = body.into_data_stream();
    if (upload_file.done || size != 0) && end <= durable {
        // Sent before: what is stored stays, these bytes are dropped.
        while let Some(chunk) = stream.next().await {
            chunk
                .map_err(|e| ApiError::bad_request(ErrorCode::UploadInterrupted, e.to_string()))?;
        }
    } else {
        if start > durable {
            return Err(ApiError::Conflict(format!(
                "part {part} arrived before the bytes ahead of it: the server holds the first \
                 {durable} bytes; send the parts in order"
            ))
            .into());
        }
        let skip = durable - start;
        let body = skip_prefix(stream, skip);
        let received = receive_file(
            &app,
            &staged.session,
            &staged.model,
            staged.index,
            durable,
            (end < size).then_some(end),
            Box::pin(body),
        )
        .await?;
        if matches!(received, Received::Partial) && end == size {
            return Err(
                ApiError::Internal("the last part left the object unfinished".into()).into(),
            );
        }
    }
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(header::ETAG, part_etag(part));
    Ok(response)
}

/// How much of a refused PUT's body is read before the answer: one chunk of an object up to
/// 78 GiB, and then some.
const REFUSED_BODY_DRAIN: usize = 16 << 20;

/// `stream` without its first `skip` bytes.
fn skip_prefix(
    stream: impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>>,
    skip: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> {
    let mut left = skip;
    stream.filter_map(move |chunk| {
        let out = match chunk {
            Ok(mut bytes) if left > 0 => {
                let drop = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                left -= drop as u64;
                let rest = bytes.split_off(drop);
                (!rest.is_empty()).then_some(Ok(rest))
            }
            other => Some(other),
        };
        std::future::ready(out)
    })
}

/// `POST /api/lfs-upload/{session}/{key}/{index}/complete`: the multipart transfer's end. The
/// last part completed the object already; this checks that every part is there.
async fn lfs_complete(
    State(app): State<Arc<App>>,
    Path((session_id, key, index)): Path<(String, String, usize)>,
    request: Request,
) -> WriteResult<Json<wire::Empty>> {
    let (parts, body) = request.into_parts();
    let staged = open_staged(&app, &parts, &session_id, &key, index).await?;
    let bytes = axum::body::to_bytes(Body::new(body), 1 << 20)
        .await
        .map_err(|_| ApiError::TooLarge("the completion request is too large".into()))?;
    let completion: LfsCompleteRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
    let file = &staged.session.files[staged.index];
    // Objects staged through the LFS API always declare their oid.
    let oid = file.file.sha256.as_ref().map_or("", Sha256Hex::as_str);
    if completion.oid != oid {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidDigest,
            format!("this URL is for object {oid}, not {}", completion.oid),
        )
        .into());
    }
    if !file.done {
        let layout = PartLayout::new(file.file.size);
        return Err(ApiError::bad_request(
            ErrorCode::UploadInterrupted,
            format!(
                "{} of {} parts of object {} are stored: send the others",
                file.parts_done,
                layout.part_count(),
                oid
            ),
        )
        .into());
    }
    Ok(Json(wire::Empty {}))
}

/// `POST /{ns}/{name}.git/info/lfs/objects/verify`: whether custody holds the object now.
async fn lfs_verify(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Path((ns, repo)): Path<(String, String)>,
    body: Result<Json<LfsVerifyRequest>, JsonRejection>,
) -> WriteResult<Json<wire::Empty>> {
    let caller = caller?;
    let name = lfs_repo(&repo)?;
    let (_, model, _) = writable_model(&app, &caller, &ns, name).await?;
    let request = json_body(body)?;
    let sha256 = Sha256Hex::parse(&request.oid)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidDigest, e.to_string()))?;
    if find_object(&app, &caller, &model, &sha256, Some(request.size))
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(
            ErrorCode::UploadInterrupted,
            format!(
                "object {sha256} of {} bytes is not stored yet",
                request.size
            ),
        )
        .into());
    }
    Ok(Json(wire::Empty {}))
}

/// A stored object of the model with this content: staged by the caller (with its session and
/// index), or in one of the model's revisions.
async fn find_object(
    app: &App,
    caller: &Caller,
    model: &ModelRecord,
    sha256: &Sha256Hex,
    size: Option<u64>,
) -> Result<Option<(FileRecord, Option<(String, usize)>)>, ApiError> {
    let staged = app
        .store
        .staged_files(&model.id, &caller.actor(), app.store.clock().now())
        .await?;
    if let Some((record, s)) = staged.into_iter().find_map(|s| {
        let record = s.file.file.record()?;
        (s.file.done && record.sha256 == *sha256 && size.is_none_or(|n| n == record.size))
            .then_some((record, s))
    }) {
        return Ok(Some((record, Some((s.session_id, s.index)))));
    }
    let Some(size) = size else {
        // A copy names no size: take it from `main`.
        let (_, head) = head_files(app, model).await?;
        return Ok(head
            .into_values()
            .find(|f| f.sha256 == *sha256)
            .map(|f| (f, None)));
    };
    Ok(app
        .store
        .committed_object(&model.id, sha256, size)
        .await?
        .map(|f| (f, None)))
}

// ----- commit ----------------------------------------------------------------------------------

/// A regular file held in memory until it is sealed.
struct Inline {
    path: RepoPath,
    content: Vec<u8>,
    sha256: Sha256Hex,
}

/// What a commit body asks for.
#[derive(Default)]
struct Operations {
    summary: String,
    description: String,
    parent: Option<String>,
    inline: Vec<Inline>,
    lfs: Vec<(RepoPath, Sha256Hex, Option<u64>)>,
    deleted_files: Vec<String>,
    deleted_folders: Vec<String>,
    /// The inline content's share of the budget of all uploads' buffers
    /// (`limits.max_upload_buffer_bytes`, in KiB), held until the commit is done, so that
    /// concurrent commits cannot together hold more in memory than that budget.
    room: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// `POST /api/models/{ns}/{name}/commit/{rev}` (NDJSON): one revision, on `main`.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of one request, as axum extracts them"
)]
async fn commit(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    Path((ns, name, rev)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> WriteResult<Json<CommitResponse>> {
    let caller = caller?;
    let (_, model, decision) = writable_model(&app, &caller, &ns, &name).await?;
    let origin = request_origin(&uri, &headers)?;
    let full_name = format!("{}/{}", model.vendor, model.name);
    let result = async {
        main_only(&rev, &query)?;
        let operations = read_commit_body(&app, body).await?;
        make_commit(&app, &caller, &decision, &model, operations).await
    }
    .await;
    match result {
        Ok(commit) => Ok(Json(CommitResponse {
            success: true,
            commit_url: format!("{origin}/{full_name}/commit/{commit}"),
            commit_oid: commit,
        })),
        Err(error) => {
            if !matches!(error, ApiError::Internal(_)) {
                let entry = caller
                    .entry("upload.commit", full_name.as_str())
                    .with_outcome(audit::Outcome::Denied)
                    .with_detail(format!("Hub commit refused: {error}"));
                app.store.record(entry).await?;
            }
            Err(error.into())
        }
    }
}

/// Reads the NDJSON body line by line, each line at most what a regular file of just under
/// [`LFS_THRESHOLD`] bytes needs in base64, the inline content at most half of
/// `limits.max_upload_buffer_bytes` in all.
async fn read_commit_body(app: &App, body: Body) -> Result<Operations, ApiError> {
    let max_line = (LFS_THRESHOLD as usize).div_ceil(3) * 4 + 64 * 1024;
    let max_inline = app.config.limits.max_upload_buffer_bytes / 2;
    let mut inline_total: u64 = 0;
    let mut ops = Operations::default();
    let mut header_seen = false;
    let mut buf: Vec<u8> = Vec::new();
    let mut stream = body.into_data_stream();
    let mut ended = false;
    while !ended {
        match stream.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| {
                    ApiError::bad_request(ErrorCode::UploadInterrupted, e.to_string())
                })?;
                buf.extend_from_slice(&chunk);
            }
            None => ended = true,
        }
        while let Some(newline) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=newline).collect();
            take_line(
                &line,
                &mut ops,
                &mut header_seen,
                &mut inline_total,
                max_inline,
                &app.upload_buffers,
            )?;
        }
        if ended && !buf.is_empty() {
            let line = std::mem::take(&mut buf);
            take_line(
                &line,
                &mut ops,
                &mut header_seen,
                &mut inline_total,
                max_inline,
                &app.upload_buffers,
            )?;
        }
        if buf.len() > max_line {
            return Err(ApiError::TooLarge(format!(
                "a line of the commit is over {max_line} bytes: files of {LFS_THRESHOLD} bytes \
                 or more go through LFS"
            )));
        }
    }
    if !header_seen {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "the commit has no header line",
        ));
    }
    Ok(ops)
}

fn take_line(
    line: &[u8],
    ops: &mut Operations,
    header_seen: &mut bool,
    inline_total: &mut u64,
    max_inline: u64,
    buffers: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<(), ApiError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(());
    }
    let parsed: CommitLine = serde_json::from_slice(line).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidRequest, format!("a commit line: {e}"))
    })?;
    let path_of = |p: &str| {
        RepoPath::parse(p)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))
    };
    match parsed {
        CommitLine::Header(h) => {
            if *header_seen {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    "the commit has two header lines",
                ));
            }
            *header_seen = true;
            ops.summary = h.summary;
            ops.description = h.description;
            ops.parent = h.parent_commit;
            return Ok(());
        }
        _ if !*header_seen => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "the commit's first line must be its header",
            ));
        }
        CommitLine::File(f) => {
            if f.encoding.as_deref().is_some_and(|e| e != "base64") {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    format!("{}: content must be base64", f.path),
                ));
            }
            let path = path_of(&f.path)?;
            let content = base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request(ErrorCode::InvalidRequest, format!("{path}: {e}"))
                })?;
            if content.len() as u64 >= LFS_THRESHOLD {
                return Err(ApiError::TooLarge(format!(
                    "{path}: files of {LFS_THRESHOLD} bytes or more go through LFS"
                )));
            }
            *inline_total += content.len() as u64;
            if *inline_total > max_inline {
                return Err(ApiError::TooLarge(format!(
                    "the commit carries over {max_inline} bytes of regular files \
                     (half of limits.max_upload_buffer_bytes): split it into several commits"
                )));
            }
            let kib = u32::try_from(content.len().div_ceil(1024)).unwrap_or(u32::MAX);
            let room =
                buffers
                    .clone()
                    .try_acquire_many_owned(kib)
                    .map_err(|_| ApiError::RateLimited {
                        message: "the server's budget for upload buffers is in use by other \
                              uploads: retry this commit in a few seconds"
                            .into(),
                        retry_after: 5,
                    })?;
            ops.room.push(room);
            let mut hasher = crypto::hash::Sha256::new();
            hasher.update(&content);
            ops.inline.push(Inline {
                path,
                sha256: Sha256Hex::from_bytes(&hasher.finish()),
                content,
            });
        }
        CommitLine::LfsFile(f) => {
            if f.algo.as_deref().is_some_and(|a| a != "sha256") {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidDigest,
                    format!("{}: LFS objects are named by sha256", f.path),
                ));
            }
            let sha256 = Sha256Hex::parse(&f.oid).map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidDigest, format!("{}: {e}", f.path))
            })?;
            ops.lfs.push((path_of(&f.path)?, sha256, f.size));
        }
        CommitLine::DeletedFile(d) => ops.deleted_files.push(d.path),
        CommitLine::DeletedFolder(d) => ops
            .deleted_folders
            .push(d.path.trim_end_matches('/').to_owned()),
    }
    Ok(())
}

/// Builds the revision: `main`'s files, less the deletions, plus the additions, checked as
/// one manifest; stores the regular files through a session of their own; commits.
async fn make_commit(
    app: &Arc<App>,
    caller: &Caller,
    decision: &Decision,
    model: &ModelRecord,
    ops: Operations,
) -> Result<CommitId, ApiError> {
    let name = format!("{}/{}", model.vendor, model.name);
    let (head, mut files) = head_files(app, model).await?;
    if let Some(parent) = &ops.parent {
        let parent = parent.to_ascii_lowercase();
        let current = head.as_ref().map(CommitId::as_str).unwrap_or_default();
        if parent.is_empty() || !current.starts_with(&parent) {
            return Err(ApiError::Conflict(format!(
                "the commit was made on {parent}, but main is at {}: fetch the new head and \
                 commit again",
                head.as_ref().map_or("no revision yet", CommitId::as_str)
            )));
        }
    }
    for path in &ops.deleted_files {
        if files.remove(path.as_str()).is_none() {
            return Err(ApiError::EntryNotFound(format!(
                "{path} (a file with this name doesn't exist in {name}@main)"
            )));
        }
    }
    for folder in &ops.deleted_folders {
        let before = files.len();
        files.retain(|path, _| !(folder.is_empty() || path.starts_with(&format!("{folder}/"))));
        if files.len() == before {
            return Err(ApiError::EntryNotFound(format!(
                "folder {folder} (no file lies in it in {name}@main)"
            )));
        }
    }
    // LFS files: staged by the caller, or held already.
    let mut consumed: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut added: Vec<FileRecord> = Vec::new();
    for (path, sha256, size) in &ops.lfs {
        let Some((found, staged)) = find_object(app, caller, model, sha256, *size).await? else {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "{path}: LFS object {sha256} was never uploaded completely; run the upload \
                     again"
                ),
            ));
        };
        if let Some((session, index)) = staged {
            consumed.entry(session).or_default().insert(index);
        }
        added.push(FileRecord {
            path: path.clone(),
            object_id: found.object_id,
            size: found.size,
            sha256: sha256.clone(),
        });
    }
    for path in added
        .iter()
        .map(|f| f.path.as_str())
        .chain(ops.inline.iter().map(|f| f.path.as_str()))
    {
        files.remove(path);
    }
    let mut message = ops.summary.trim().to_owned();
    if !ops.description.trim().is_empty() {
        message.push_str("\n\n");
        message.push_str(ops.description.trim());
    }
    // Checked as `custody upload` checks a manifest: the revision as a whole.
    let manifest = UploadRequest {
        message: message.clone(),
        files: files
            .values()
            .chain(added.iter())
            .map(|f| (f.path.as_str(), f.size, f.sha256.as_str()))
            .chain(
                ops.inline
                    .iter()
                    .map(|f| (f.path.as_str(), f.content.len() as u64, f.sha256.as_str())),
            )
            .map(|(path, size, sha256)| ManifestEntry {
                path: path.to_owned(),
                size,
                sha256: Some(sha256.to_owned()),
            })
            .collect(),
        derived_from: None,
    };
    validate_manifest(&manifest, &app.config.limits)?;

    // Regular files: sealed and stored through a session of their own.
    let mut consumed_sessions: Vec<String> = Vec::new();
    if !ops.inline.is_empty() {
        let inline_manifest: Vec<_> = ops
            .inline
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    f.content.len() as u64,
                    Some(f.sha256.clone()),
                )
            })
            .collect();
        let digest = manifest_digest(&message, &inline_manifest, None);
        let request = UploadRequest {
            message: message.clone(),
            files: Vec::new(),
            derived_from: None,
        };
        let session = super::upload::open_session(
            app,
            caller,
            decision,
            &name,
            model,
            &request,
            &inline_manifest,
            &digest,
            None,
        )
        .await?;
        for (index, file) in ops.inline.into_iter().enumerate() {
            let body = futures::stream::iter([Ok(bytes::Bytes::from(file.content))]);
            receive_file(app, &session, model, index, 0, None, body).await?;
        }
        for f in &session.files {
            // Declared, so known before the bytes came.
            added.push(
                f.file
                    .record()
                    .ok_or_else(|| ApiError::Internal(format!("{} has no digest", f.file.path)))?,
            );
        }
        consumed_sessions.push(session.id);
    }
    // A staging session all of whose objects this commit took is done with.
    for (session, used) in consumed {
        if let Some(s) = app.store.upload(&session).await?
            && (0..s.files.len()).all(|i| used.contains(&i))
        {
            consumed_sessions.push(session);
        }
    }

    let revision: Vec<FileRecord> = files.into_values().chain(added).collect();
    let commit = commit_id(&model.id, revision.iter())?;
    let touched = revision
        .iter()
        .map(|f| audit::Touched {
            path: f.path.to_string(),
            sha256: f.sha256.to_string(),
            bytes: f.size,
        })
        .collect();
    let entry = caller
        .entry("upload.commit", format!("{name}@{commit}"))
        .with_decision(true, &policy_ids(decision))
        .with_touched(touched)
        .with_detail(format!(
            "through the Hub API, on {}",
            head.as_ref().map_or("an empty model", CommitId::as_str)
        ));
    app.store
        .commit_hub_revision(
            &HubCommit {
                model_id: &model.id,
                commit: &commit,
                parent: head.as_ref(),
                message: &message,
                created_by: &caller.actor(),
                files: &revision,
                consumed_sessions: &consumed_sessions,
            },
            entry,
        )
        .await?;
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_sent_again_skips_what_is_stored() {
        let chunks = || {
            [&b"abc"[..], b"defg", b"h"].map(|c| Ok::<_, axum::Error>(bytes::Bytes::from_static(c)))
        };
        for (skip, want) in [
            (0, "abcdefgh"),
            (2, "cdefgh"),
            (3, "defgh"),
            (5, "fgh"),
            (8, ""),
        ] {
            let got: Vec<u8> = futures::executor::block_on(
                skip_prefix(futures::stream::iter(chunks()), skip)
                    .map(|c| c.unwrap().to_vec())
                    .concat(),
            );
            assert_eq!(String::from_utf8(got).unwrap(), want, "skip {skip}");
        }
    }

    /// Inline content takes its room in the budget of all uploads' buffers and gives it back
    /// when the commit is done: a commit that does not fit beside the others is told to retry.
    #[test]
    fn inline_content_holds_its_room_in_the_upload_buffer_budget() {
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
        let file = |kib: usize| {
            let content = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; kib * 1024]);
            format!(
                r#"{{"key":"file","value":{{"path":"f{kib}","content":"{content}","encoding":"base64"}}}}"#
            )
        };
        let header = r#"{"key":"header","value":{"summary":"s","description":""}}"#;
        let mut first = Operations::default();
        let (mut seen, mut total) = (false, 0);
        for l in [header.to_owned(), file(2)] {
            take_line(
                l.as_bytes(),
                &mut first,
                &mut seen,
                &mut total,
                1 << 30,
                &budget,
            )
            .unwrap();
        }
        assert_eq!(
            budget.available_permits(),
            1,
            "2 KiB held by the first commit"
        );
        let mut second = Operations::default();
        let (mut seen, mut total) = (false, 0);
        take_line(
            header.as_bytes(),
            &mut second,
            &mut seen,
            &mut total,
            1 << 30,
            &budget,
        )
        .unwrap();
        let refused = take_line(
            file(2).as_bytes(),
            &mut second,
            &mut seen,
            &mut total,
            1 << 30,
            &budget,
        );
        assert_eq!(refused.err().map(|e| e.status().0.as_u16()), Some(429));
        drop(first);
        assert_eq!(
            budget.available_permits(),
            3,
            "given back when the commit is done"
        );
        take_line(
            file(2).as_bytes(),
            &mut second,
            &mut seen,
            &mut total,
            1 << 30,
            &budget,
        )
        .unwrap();
    }

    #[test]
    fn commit_lines_follow_the_client() {
        let mut ops = Operations::default();
        let mut header = false;
        let mut total = 0;
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1024));
        let line = |s: &str, ops: &mut Operations, header: &mut bool, total: &mut u64| {
            take_line(s.as_bytes(), ops, header, total, 1 << 20, &budget)
                .map_err(|e| e.status().1.as_str())
        };
        assert_eq!(
            line(
                r#"{"key":"file","value":{"path":"a","content":"","encoding":"base64"}}"#,
                &mut ops,
                &mut header,
                &mut total
            ),
            Err("invalid_request"),
            "an operation before the header"
        );
        line(
            r#"{"key":"header","value":{"summary":"s","description":"","parentCommit":"abc12"}}"#,
            &mut ops,
            &mut header,
            &mut total,
        )
        .unwrap();
        line(
            r#"{"key":"file","value":{"path":"d/a.json","content":"aGk=","encoding":"base64"}}"#,
            &mut ops,
            &mut header,
            &mut total,
        )
        .unwrap();
        line(&format!(r#"{{"key":"lfsFile","value":{{"path":"w.bin","algo":"sha256","oid":"{}","size":5}}}}"#, "a".repeat(64)), &mut ops, &mut header, &mut total).unwrap();
        line(
            r#"{"key":"deletedFolder","value":{"path":"old/"}}"#,
            &mut ops,
            &mut header,
            &mut total,
        )
        .unwrap();
        assert_eq!(ops.parent.as_deref(), Some("abc12"));
        assert_eq!(ops.inline[0].content, b"hi");
        assert_eq!(ops.lfs[0].2, Some(5));
        assert_eq!(ops.deleted_folders, ["old"]);
        assert_eq!(total, 2);
        assert_eq!(
            line(
                r#"{"key":"file","value":{"path":"../x","content":"","encoding":"base64"}}"#,
                &mut ops,
                &mut header,
                &mut total
            ),
            Err("invalid_request")
        );
        assert_eq!(
            line(
                r#"{"key":"lfsFile","value":{"path":"x","algo":"sha256","oid":"nothex"}}"#,
                &mut ops,
                &mut header,
                &mut total
            ),
            Err("invalid_digest")
        );
        assert_eq!(
            line(
                r#"{"key":"header","value":{"summary":"again"}}"#,
                &mut ops,
                &mut header,
                &mut total
            ),
            Err("invalid_request")
        );
    }
}
