//! The deletion service: carrying out a crypto-shred and certifying it.
//!
//! Design note:
//!
//! * One of custody's four parts (beside the blob store, the policy engine and the audit
//!   log). It owns the shred state machine ([`machine`](Service::work)), the post-checks that
//!   can block a certificate, and the issuing of the certificate (`certify.rs`). The
//!   certificate's *format* and offline verification are the pure `certificate` crate.
//! * It knows nothing of HTTP. Requests arrive in the database (the server's handlers start a
//!   deletion in the same transaction as its audit entry and call [`Service::wake`]); the
//!   service only reads and writes the store, the key hierarchy and the blob store.
//! * What it needs from the audit log's notary (signing a checkpoint that covers the
//!   deletion's entry, and gathering witness cosignatures, which travel over HTTPS) comes
//!   through the [`Notary`] trait, which the server implements.
//! * It runs as a singleton across instances under a database lease held by the server's
//!   background layer; every write takes the lease's [`Fence`], so a runner that lost the
//!   lease changes nothing.
//! * Time comes from the store's [`store::Clock`], so tests move it rather than sleep.
#![forbid(unsafe_code)]

mod certify;
mod machine;
mod work;

use std::sync::Arc;
use std::time::Duration;

use blobstore::BlobStore;
use certificate::RootPlacement;
use crypto::sign::SigningKey;
use futures::future::BoxFuture;
use shred::KeyHierarchy;
use store::{Fence, Store};

pub use work::WorkError;

/// Why a deletion step failed (recorded in the deletion and retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] shred::KeyError),
    #[error("storage: {0}")]
    Blob(#[from] blobstore::BlobError),
    #[error("{0}")]
    Work(#[from] WorkError),
    #[error("{0}")]
    Other(String),
}

/// A checkpoint of the audit log, signed with the log key.
pub struct SignedCheckpoint {
    pub checkpoint: audit::checkpoint::Checkpoint,
    /// The signed note (C2SP signed-note text).
    pub note: String,
}

/// The witnesses' answer to one round over a checkpoint.
pub struct Cosigned {
    /// The note with every cosignature kept so far.
    pub note: String,
    /// Whether the configured quorum is met.
    pub quorum_met: bool,
    /// The quorum, described for the deletion's status and the audit entry.
    pub quorum: String,
}

/// The audit log's notary, as the deletion service needs it. The server implements it with
/// its checkpointer and its witnesses' client.
pub trait Notary: Send + Sync {
    /// Signs a checkpoint of the log as it stands now.
    fn sign(&self) -> BoxFuture<'_, Result<SignedCheckpoint, String>>;
    /// How long a certificate may wait for the witnesses' quorum; `None` without witnesses.
    fn witness_wait(&self) -> Option<Duration>;
    /// One round of asking the witnesses to cosign `signed`.
    fn cosign<'a>(
        &'a self,
        signed: &'a SignedCheckpoint,
    ) -> BoxFuture<'a, Result<Cosigned, String>>;
}

/// How often a certificate waiting for the witnesses' quorum asks again.
pub const QUORUM_POLL: Duration = Duration::from_millis(500);

/// The deletion service, shared by the server's handlers (to wake it) and its background
/// layer (to run it).
pub struct Service {
    store: Store,
    keys: Arc<KeyHierarchy>,
    blobs: BlobStore,
    /// Where the root of trust is, as certificates state it.
    placement: RootPlacement,
    /// The service's name in certificates (its first hostname).
    name: String,
    /// Signs deletion certificates (the service key). No `Debug`.
    signer: SigningKey,
    notary: Arc<dyn Notary>,
    /// Wakes the runner when a deletion is requested or approved on this instance.
    wake: tokio::sync::Notify,
}

impl Service {
    pub fn new(
        store: Store,
        keys: Arc<KeyHierarchy>,
        blobs: BlobStore,
        placement: RootPlacement,
        name: String,
        signer: SigningKey,
        notary: Arc<dyn Notary>,
    ) -> Service {
        Service {
            store,
            keys,
            blobs,
            placement,
            name,
            signer,
            notary,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Tells this instance's runner that a deletion was requested or approved here (requests
    /// on other instances are found within a few seconds anyway).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The service key's public half, hex, as `custody verify-certificate --service-key`
    /// reads it.
    pub fn service_key_hex(&self) -> String {
        hex::encode(self.signer.public_key().as_bytes())
    }

    /// The runner and `delete_after` scheduler, while the caller holds the `deletions`
    /// lease (`fence`). Never returns.
    pub async fn work(self: Arc<Self>, fence: Fence) {
        machine::work(&self, &fence).await;
    }
}
