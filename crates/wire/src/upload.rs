//! Uploads: a manifest (`POST /v1/models/{vendor}/{model}/uploads`), each file's bytes
//! (`PUT /v1/uploads/{id}/files/{index}?offset=N`, raw bytes, answered with a
//! [`crate::models::FileEntry`]), then a commit (`POST /v1/uploads/{id}/commit`).

use serde::{Deserialize, Serialize};
use types::{CommitId, RepoPath};

/// `POST /v1/models/{vendor}/{model}/uploads`: the manifest, checked as a whole before any
/// byte. Sending the same manifest again finds the open session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadRequest {
    #[serde(default)]
    pub message: String,
    pub files: Vec<ManifestEntry>,
    /// A commit of the same model this upload was made from: the revision is a derived
    /// artifact, shredded with the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    /// Lowercase hex. Left out, the client hashes the file while it sends it (one read, not
    /// two) and confirms the digest in the commit ([`CommitRequest`]); the server refuses
    /// the commit without that confirmation or when it differs from the bytes it stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST .../uploads`: 201 for a new session, 200 for the open one of the same manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadSession {
    pub upload_id: String,
    /// `vendor/model`.
    pub model: String,
    /// In manifest order; `index` is the file's number in the upload's URLs.
    pub files: Vec<SessionFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionFile {
    pub index: usize,
    pub path: RepoPath,
    pub size: u64,
    /// Stored completely.
    pub done: bool,
    /// Where to resume sending (the file's size once done).
    pub resume_offset: u64,
}

/// The query of `PUT /v1/uploads/{id}/files/{index}`: the offset the body starts at.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    #[serde(default)]
    pub offset: u64,
}

/// `POST /v1/uploads/{id}/commit`: the digests of the files the manifest listed without one,
/// computed by the client from the bytes it sent (an empty body, or `{}`, when every digest
/// was declared up front).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitRequest {
    /// Path to lowercase hex SHA-256.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sha256: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/uploads/{id}/commit` (201): the new revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Committed {
    pub model: String,
    pub commit: CommitId,
    /// How many files the revision holds.
    pub files: usize,
    pub derived_from: Option<CommitId>,
}
