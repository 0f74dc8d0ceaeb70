//! Plain records read from and written to the database.

use types::{CommitId, ModelName, ObjectId, RepoPath, Sha256Hex, VendorName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRecord {
    pub id: String,
    pub name: VendorName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub id: String,
    pub vendor_id: String,
    pub vendor: VendorName,
    pub name: ModelName,
    /// The epoch key that wraps `wrapped_key`.
    pub key_epoch: u64,
    /// Empty once the model is shredded.
    pub wrapped_key: Vec<u8>,
    /// Set when a deletion starts: from then on the model answers "deleted".
    pub deleted_at: Option<i64>,
    pub deletion_id: Option<String>,
    /// The server shreds the model by itself at this time (Unix seconds).
    pub delete_after: Option<i64>,
}

pub struct NewModel<'a> {
    pub id: &'a str,
    pub vendor_id: &'a str,
    pub name: &'a ModelName,
    pub key_epoch: u64,
    pub wrapped_key: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRecord {
    pub commit: CommitId,
    pub model_id: String,
    pub seq: u64,
    pub message: String,
    pub created_by: String,
    pub created_at: i64,
    /// The revision of the same model this one was made from (a derived artifact: converted
    /// or quantized weights, test logs), if any.
    pub derived_from: Option<CommitId>,
}

/// One file of a revision (or of an upload in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub path: RepoPath,
    pub object_id: ObjectId,
    pub size: u64,
    pub sha256: Sha256Hex,
}

pub struct NewUpload<'a> {
    pub id: &'a str,
    /// Identifies the manifest, so running the same upload again finds this session.
    pub manifest_digest: &'a str,
    pub model_id: &'a str,
    pub created_by: &'a str,
    pub message: &'a str,
    pub expires_at: i64,
    pub files: &'a [UploadFileRecord],
    /// Refuse if the creator already has this many sessions open (not expired).
    pub max_open_by_creator: u64,
}

/// A file of an upload session, as its manifest listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFileRecord {
    pub path: RepoPath,
    pub object_id: ObjectId,
    pub size: u64,
    /// The digest the manifest declared; for a file listed without one (`declared` false),
    /// the digest the server computed when it stored the file, `None` before.
    pub sha256: Option<Sha256Hex>,
    /// Whether the manifest declared the digest. Otherwise the client confirms it at commit.
    pub declared: bool,
}

impl From<FileRecord> for UploadFileRecord {
    /// A file whose digest the manifest declared.
    fn from(file: FileRecord) -> Self {
        UploadFileRecord {
            path: file.path,
            object_id: file.object_id,
            size: file.size,
            sha256: Some(file.sha256),
            declared: true,
        }
    }
}

impl UploadFileRecord {
    /// The file as a revision will hold it, once its digest is known.
    pub fn record(&self) -> Option<FileRecord> {
        Some(FileRecord {
            path: self.path.clone(),
            object_id: self.object_id.clone(),
            size: self.size,
            sha256: self.sha256.clone()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    pub file: UploadFileRecord,
    pub done: bool,
    /// The stored object's header (salt and nonce prefix), fixed once the first part is sent.
    pub header: Option<Vec<u8>>,
    pub backend_upload_id: Option<String>,
    /// Leading parts durably stored.
    pub parts_done: u32,
    /// SHA-256 state of the plaintext of those parts.
    pub hash_state: Option<Vec<u8>>,
}

/// A part stored at the backend, as recorded for completing the upload later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: String,
    pub model_id: String,
    pub created_by: String,
    pub message: String,
    pub expires_at: i64,
    /// Set for an upload of a derived revision (see [`RevisionRecord::derived_from`]).
    pub derived_from: Option<CommitId>,
    pub files: Vec<UploadFile>,
}
