//! Models, their revisions and files (`/v1/models/...`), and grants.

use serde::{Deserialize, Serialize};
use types::{CommitId, RepoPath, Sha256Hex, UserName};

/// The query of `GET /v1/models`.
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
pub struct ModelListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

/// `GET /v1/models`: the models the caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelSummary {
    /// `vendor/model`.
    pub id: String,
    /// The newest revision, if there is one.
    pub latest: Option<CommitId>,
    /// Set when the model was deleted: it serves nothing any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
}

/// A deleted model's mark. Its deletion is named only to those who may read the vendor's
/// deletions (the vendor's admins and auditors, the operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    /// When access ended (Unix seconds): the deletion request's transaction.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<String>,
    /// When its certificate was issued (Unix seconds); absent while the shred is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified_at: Option<i64>,
}

/// `GET /v1/models/{vendor}/{model}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub id: String,
    /// Oldest first.
    pub revisions: Vec<Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revision {
    pub commit: CommitId,
    pub seq: u64,
    pub message: String,
    pub created_by: String,
    pub created_at: i64,
    /// The revision of the same model this one was made from (a derived artifact).
    pub derived_from: Option<CommitId>,
}

/// `GET /v1/models/{vendor}/{model}/revisions/{rev}`: a revision and its files. `rev` is
/// `main` (or `latest`) for the newest, or a commit id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionFiles {
    /// `vendor/model`.
    pub id: String,
    #[serde(flatten)]
    pub revision: Revision,
    pub files: Vec<FileEntry>,
}

/// A file of a revision (also what an upload stored: `PUT /v1/uploads/{id}/files/{index}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    pub path: RepoPath,
    pub size: u64,
    pub sha256: Sha256Hex,
}

// ----- grants --------------------------------------------------------------------------------

/// `POST /v1/models/{vendor}/{model}/grants`: name exactly one of a user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Unix seconds; the grant stops counting at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Instead of `expires_at`: seconds from now, by the server's clock (the CLI sends this, so
    /// a client's clock never decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<i64>,
}

/// `POST .../grants`: 201 [`Granted`], or 202 [`GrantPending`] under the vendor's two-person
/// rule (the grant waits for a second admin and gives no access until then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum GrantResponse {
    // First: only this one has `pending`, so a granted body never reads as pending.
    Pending(GrantPending),
    Granted(Granted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Granted {
    pub model: String,
    /// `user:NAME` or `group:NAME`.
    pub to: String,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantPending {
    pub model: String,
    /// The pending request's id, for `POST /v1/pending/{id}/approve`.
    pub pending: String,
    pub message: String,
    /// Distinct people of the vendor who must approve it.
    #[serde(default)]
    pub approvals_needed: i64,
    /// Unix seconds; unapproved by then, it expires.
    #[serde(default)]
    pub expires_at: i64,
}

/// `GET /v1/models/{vendor}/{model}/grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantList {
    pub model: String,
    /// The users holding a direct grant.
    pub users: Vec<UserName>,
    /// Every grant, users' and groups'.
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// `user:NAME` or `group:NAME`.
    pub to: String,
    pub granted_by: String,
    pub expires_at: Option<i64>,
}

/// The query of `DELETE /v1/models/{vendor}/{model}/grants/{name}`: `group=true` names a
/// group's grant, otherwise a user's.
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
pub struct RevokeQuery {
    #[serde(default)]
    pub group: bool,
}

/// `DELETE .../grants/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantRevoked {
    pub model: String,
    /// `user:NAME` or `group:NAME`.
    pub from: String,
}

/// How many ranges `custody fetch` keeps in flight for one large file. A client's choice, not
/// part of the API (the server serves any range); here so that the CLI and the benchmark's
/// plain baseline fetch alike.
pub const FETCH_RANGES_AT_ONCE: usize = 4;

/// The length of the ranges `custody fetch` reads a file of `size` bytes in: 16 MiB for files
/// up to 256 MiB (each of the parallel streams gets several), growing with the file up to
/// 64 MiB, in whole MiB. Every range is a request the server authorizes, audits and counts
/// against the host's egress budget: 64 MiB ranges fetched a 1-2 GiB file 10-60% faster than
/// 16 MiB ranges on the development machine (docs/performance.md), and a cut connection
/// still loses at most [`FETCH_RANGES_AT_ONCE`] ranges of work.
pub fn fetch_range_len(size: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    (size / (4 * FETCH_RANGES_AT_ONCE as u64)).clamp(16 * MIB, 64 * MIB) / MIB * MIB
}

#[cfg(test)]
mod tests {
    use super::fetch_range_len;

    const MIB: u64 = 1 << 20;

    #[test]
    fn fetch_ranges_grow_with_the_file_between_16_and_64_mib_in_whole_mib() {
        for (size, expected) in [
            (64 * MIB, 16 * MIB),
            (80 * MIB + 7, 16 * MIB),
            (256 * MIB, 16 * MIB),
            (400 * MIB + 5, 25 * MIB),
            (1024 * MIB, 64 * MIB),
            (500 * 1024 * MIB, 64 * MIB),
        ] {
            assert_eq!(fetch_range_len(size), expected, "a file of {size} bytes");
        }
    }
}
