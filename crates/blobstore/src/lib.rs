//! Encrypted objects over a storage backend.
//!
//! Two layers. A [`Backend`] stores opaque byte objects under opaque keys and knows nothing of
//! encryption; its shape is S3's (multipart uploads of numbered parts, ranged reads, delete of
//! every version) so that the filesystem backend and an S3 backend are interchangeable and one
//! test suite runs against both. Above it, [`PartSealer`] and [`BlobStore::open_range`]
//! speak the streaming AEAD of `crypto::stream`: plaintext goes in one part and comes out one
//! 1 MiB segment at a time, so memory stays bounded whatever the file size, and plaintext never
//! reaches a backend.
//!
//! A storage key is the object id alone: random, it says nothing about vendor, model or file.
#![forbid(unsafe_code)]

mod backend;
mod fs;
mod object;
mod parts;
mod s3;

pub use backend::{Backend, PartReceipt};
pub use fs::FsBackend;
pub use object::{BlobStore, read_buffer_bytes};
pub use parts::{
    MAX_OBJECT_WITH_SMALLEST_PARTS, MAX_PARTS, MIN_SEGMENTS_PER_PART, PartBuffer, PartLayout,
    PartSealer,
};
pub use s3::{S3Backend, S3Config, S3Secret};

/// Errors of the blob store. `Integrity` is the one a user must never see as success.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(
        "stored object failed its integrity check: it was modified, truncated or swapped with another object"
    )]
    Integrity,
    #[error("stored object {0} not found")]
    NotFound(String),
    #[error("upload {0} not found")]
    UploadNotFound(String),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("received {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("requested range {start}-{end} is outside the object of {len} bytes")]
    BadRange { start: u64, end: u64, len: u64 },
    #[error("encryption: {0}")]
    Crypto(crypto::CryptoError),
}

impl From<crypto::CryptoError> for BlobError {
    fn from(e: crypto::CryptoError) -> Self {
        match e {
            crypto::CryptoError::Integrity => BlobError::Integrity,
            other => BlobError::Crypto(other),
        }
    }
}
