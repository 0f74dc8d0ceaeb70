//! `custody wipe` on an exclusive host (`/v1/host/wipe`), authenticated by the host's client
//! certificate alone.

use serde::{Deserialize, Serialize};
use types::{CommitId, HostName, RepoPath};

/// `GET /v1/host/wipe`: the host's copies of deleted models, by model. Deletion ids are the
/// vendor's business and never reach a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WipeList {
    pub host: HostName,
    pub revoked: bool,
    pub models: Vec<DeletedModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedModel {
    /// `vendor/model`, as the host fetched it.
    pub model: String,
    /// What to confirm the wipe of.
    pub model_id: String,
    pub files: Vec<DeletedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedFile {
    pub commit: CommitId,
    pub path: RepoPath,
    pub bytes: u64,
}

/// `POST /v1/host/wipe`: the host removed its copies of a deleted model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmWipe {
    pub model_id: String,
    /// Local files the host removed.
    pub files: u64,
    /// Where the host looked (recorded fetch folders, its Hugging Face cache, folders searched
    /// for `--local-dir` copies): the confirmation covers these places and no others.
    #[serde(default)]
    pub searched: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WipeConfirmed {
    pub host: HostName,
    pub model: String,
    pub files: u64,
    /// After the deletion's certificate was issued.
    pub late: bool,
    /// The host had confirmed before; the first confirmation stands.
    pub repeated: bool,
}
