//! The Hugging Face Hub's write API as custody serves it to vendors (`huggingface_hub`'s
//! `create_repo`, `create_commit`, `upload_file`, `upload_folder`, `hf upload`): repository
//! creation, the preupload check, the Git LFS batch API with its basic and multipart
//! transfers, and the NDJSON commit. Field names follow the Hub and Git LFS (camelCase where
//! theirs are, snake_case where Git LFS's are); requests accept fields custody does not use,
//! as the Hub does.

use serde::{Deserialize, Serialize};

/// `POST /api/repos/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRepoRequest {
    /// The model's name.
    pub name: String,
    /// The namespace: the vendor.
    #[serde(default)]
    pub organization: Option<String>,
    /// `model` (or absent); custody holds no datasets or spaces.
    #[serde(default, rename = "type")]
    pub repo_type: Option<String>,
    #[serde(default)]
    pub private: Option<bool>,
    /// `private` or `public` (newer clients send this instead of `private`).
    #[serde(default)]
    pub visibility: Option<String>,
}

/// The answer to a created repository (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRepoResponse {
    /// `{endpoint}/{vendor}/{model}`: the client parses the repository id back out of it.
    pub url: String,
    /// `vendor/model`.
    pub name: String,
}

/// The answer to a repository that exists already (409): the client with `exist_ok=True`
/// reads `url` from it as from a created one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRepoConflict {
    pub error: String,
    pub url: String,
}

/// `POST /api/models/{ns}/{name}/preupload/{rev}`: the files a commit is about to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreuploadRequest {
    pub files: Vec<PreuploadFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreuploadFile {
    pub path: String,
    pub size: u64,
    /// Base64 of the first 512 bytes (unused: the size alone decides).
    #[serde(default)]
    pub sample: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreuploadResponse {
    pub files: Vec<PreuploadAnswer>,
}

/// How the client is to send one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreuploadAnswer {
    pub path: String,
    #[serde(rename = "uploadMode")]
    pub upload_mode: UploadMode,
    #[serde(rename = "shouldIgnore")]
    pub should_ignore: bool,
    /// The file `main` holds at this path (SHA-256 for an LFS file, the Git blob id for a
    /// regular one): the client leaves an identical file out of the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// Through the LFS batch API.
    Lfs,
    /// Base64 inside the commit body.
    Regular,
}

/// `POST /{ns}/{name}.git/info/lfs/objects/batch` (Git LFS batch API, `upload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsBatchRequest {
    pub operation: String,
    #[serde(default)]
    pub transfers: Vec<String>,
    pub objects: Vec<LfsObject>,
    #[serde(default)]
    pub hash_algo: Option<String>,
}

/// An object by content: SHA-256 (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsObject {
    pub oid: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsBatchResponse {
    /// `basic` or `multipart`.
    pub transfer: String,
    pub objects: Vec<LfsObjectAnswer>,
    pub hash_algo: String,
}

/// What to do with one object: no `actions` when custody holds it already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsObjectAnswer {
    pub oid: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<LfsActions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LfsError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsActions {
    pub upload: LfsAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<LfsAction>,
}

/// Where to send the bytes. For a multipart transfer `header` holds `chunk_size` and, under
/// each part's number (`"1"`, `"2"`, ...), that part's URL; `href` is then the completion URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsAction {
    pub href: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub header: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsError {
    pub code: u16,
    pub message: String,
}

/// `POST` to a verify URL: the object the client has sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsVerifyRequest {
    pub oid: String,
    pub size: u64,
}

/// `POST` to a multipart completion URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsCompleteRequest {
    pub oid: String,
    pub parts: Vec<LfsCompletedPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsCompletedPart {
    #[serde(rename = "partNumber")]
    pub part_number: u32,
    pub etag: String,
}

/// One line of `POST /api/models/{ns}/{name}/commit/{rev}` (`application/x-ndjson`): the
/// header first, then one operation a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "key", content = "value", rename_all = "camelCase")]
pub enum CommitLine {
    Header(CommitHeader),
    /// A regular file, its content inline.
    File(CommitFile),
    /// An LFS file sent before through the batch API.
    LfsFile(CommitLfsFile),
    DeletedFile(CommitDeletion),
    /// A folder and everything below it.
    DeletedFolder(CommitDeletion),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitHeader {
    pub summary: String,
    #[serde(default)]
    pub description: String,
    /// The head the client made the commit on: refused if `main` has moved.
    #[serde(
        default,
        rename = "parentCommit",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitFile {
    pub path: String,
    pub content: String,
    /// `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLfsFile {
    pub path: String,
    /// `sha256`.
    #[serde(default)]
    pub algo: Option<String>,
    pub oid: String,
    /// Absent when the client copies a file (custody then takes the stored size).
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitDeletion {
    pub path: String,
}

/// The answer to a commit (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    pub success: bool,
    #[serde(rename = "commitOid")]
    pub commit_oid: types::CommitId,
    /// `{endpoint}/{vendor}/{model}/commit/{oid}`.
    #[serde(rename = "commitUrl")]
    pub commit_url: String,
}
