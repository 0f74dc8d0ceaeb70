//! The Hugging Face Hub's read API as custody serves it (`/api/models/...`,
//! `/{ns}/{name}/resolve/...`): the JSON the real `huggingface_hub` client reads, field names
//! and all. These follow the Hub, not custody's conventions: absent values are omitted, and
//! names are camelCase where the Hub's are.

use serde::{Deserialize, Serialize};
use types::{CommitId, VendorName};

/// `GET /api/models/{ns}/{name}[/revision/{rev}]`. With `?blobs=true` each sibling carries
/// its size, blob id and (for LFS files) LFS details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// `vendor/model`.
    pub id: String,
    #[serde(rename = "modelId")]
    pub model_id: String,
    pub author: VendorName,
    /// The resolved revision; the client files downloads under it.
    pub sha: CommitId,
    pub private: bool,
    pub gated: bool,
    pub disabled: bool,
    pub tags: Vec<String>,
    pub siblings: Vec<Sibling>,
}

/// A file of a model, as model info lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Git blob id (hex): of the content for small files, of the LFS pointer for large ones.
    #[serde(rename = "blobId", default, skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<SiblingLfs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiblingLfs {
    pub sha256: String,
    pub size: u64,
    #[serde(rename = "pointerSize")]
    pub pointer_size: usize,
}

/// One entry of `GET /api/models/{ns}/{name}/tree/{rev}[/{path}]` (the body is a JSON array
/// of them; the next page is named by a `Link: <...>; rel="next"` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TreeEntry {
    File {
        /// Git blob id (hex), as for [`Sibling::blob_id`].
        oid: String,
        size: u64,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lfs: Option<TreeLfs>,
    },
    Directory {
        /// Git tree id (hex).
        oid: String,
        /// Always 0.
        size: u64,
        path: String,
    },
}

impl TreeEntry {
    pub fn path(&self) -> &str {
        match self {
            TreeEntry::File { path, .. } | TreeEntry::Directory { path, .. } => path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreeLfs {
    /// SHA-256 (hex) of the content.
    pub oid: String,
    pub size: u64,
    #[serde(rename = "pointerSize")]
    pub pointer_size: usize,
}

/// The body of a Hub error: `{"error": "..."}` (the same reason is in `X-Error-Message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubError {
    pub error: String,
}

/// Header naming the kind of a Hub error ([`HubErrorCode`]).
pub const ERROR_CODE_HEADER: &str = "x-error-code";
/// Header carrying a Hub error's reason (HEAD responses have no body).
pub const ERROR_MESSAGE_HEADER: &str = "x-error-message";
/// Header with a warning the client prints whatever error it raises (`topic; message`;
/// `huggingface_hub` logs each topic's first one): the `hf` command shows a refused
/// download only as "requires approval" or "not found", so custody's reason travels here.
pub const WARNING_HEADER: &str = "x-hf-warning";
/// Header naming the revision a response (or a missing file) belongs to.
pub const REPO_COMMIT_HEADER: &str = "x-repo-commit";
/// Header with a file's size on a HEAD of `resolve`.
pub const LINKED_SIZE_HEADER: &str = "x-linked-size";

/// The values of `X-Error-Code` that `huggingface_hub` turns into its typed errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubErrorCode {
    /// `GatedRepoError`: refused. A bare 403 would make the client blame the network.
    GatedRepo,
    /// `RepositoryNotFoundError`.
    RepoNotFound,
    /// `RevisionNotFoundError`.
    RevisionNotFound,
    /// `EntryNotFoundError`.
    EntryNotFound,
}

impl HubErrorCode {
    pub const ALL: &'static [HubErrorCode] = &[
        HubErrorCode::GatedRepo,
        HubErrorCode::RepoNotFound,
        HubErrorCode::RevisionNotFound,
        HubErrorCode::EntryNotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HubErrorCode::GatedRepo => "GatedRepo",
            HubErrorCode::RepoNotFound => "RepoNotFound",
            HubErrorCode::RevisionNotFound => "RevisionNotFound",
            HubErrorCode::EntryNotFound => "EntryNotFound",
        }
    }
}
