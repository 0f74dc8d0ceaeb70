use async_trait::async_trait;
use bytes::Bytes;

use crate::BlobError;

/// Proof that a part was stored, to be handed back when the upload completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

/// Opaque object storage with S3's shape.
///
/// Contract, checked by the shared backend test suite:
/// - an object becomes visible only when `complete_upload` returns, all at once;
/// - parts are numbered from 1, may arrive in any order, and a re-sent part replaces the old;
/// - `read_range` returns exactly `len` bytes or fails;
/// - `list_parts` reports the parts an unfinished upload holds, so a new process can resume it;
/// - `delete` removes every stored version of the key and aborts its unfinished uploads, and is
///   idempotent (crypto-shredding relies on it to leave no ciphertext behind);
/// - `abort_upload` removes every part of an unfinished upload.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and certificates, such as `filesystem`.
    fn kind(&self) -> &'static str;
    async fn create_upload(&self, key: &str) -> Result<String, BlobError>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, BlobError>;
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartReceipt>,
    ) -> Result<(), BlobError>;
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), BlobError>;
    /// Parts stored so far, sorted by part number. `UploadNotFound` if the upload is gone.
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, BlobError>;
    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BlobError>;
    /// The stored length, or `None` when there is no such object.
    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError>;
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Whether the storage answers now (the server's readiness check): the directory tree is
    /// there, the bucket answers. Reads nothing, writes nothing.
    async fn probe(&self) -> Result<(), BlobError>;
}

/// Keys (and the filesystem backend's upload ids) are lowercase hex made by custody; every
/// backend refuses anything else before it can become a path or an object name.
pub(crate) fn check_opaque(name: &str) -> Result<(), BlobError> {
    let ok = (8..=128).contains(&name.len())
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(BlobError::Backend(format!(
            "refusing storage name {:?}: not an opaque hex id",
            name.chars().take(80).collect::<String>()
        )))
    }
}
