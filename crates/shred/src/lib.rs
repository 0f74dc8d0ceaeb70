//! The key hierarchy, built so that deletion is final even against backups.
//!
//! ```text
//!   root of trust N   one per epoch: a root key file root-N.key (outside the database
//!     │               directory) or one AWS KMS key; see [`RootProvider`]
//!     └─ epoch key N  key store: KEY_DIR/epoch-N.key, wrapped under root N
//!          └─ model key   database row, wrapped under epoch key N (bound to model id, epoch)
//!               └─ object keys   derived per object (crypto::stream), never stored
//! ```
//!
//! Why a root per epoch: deleting a model key row is not shredding while a backup still holds
//! that row wrapped under a live key. Shredding a model deletes its row, creates epoch N+1 (a
//! new root and a new epoch key), re-wraps every surviving model key under N+1 in the same
//! database transaction, then destroys epoch N: its root (file overwritten and removed, or KMS
//! key scheduled for deletion, unusable at once) and its epoch file. A backup of the database
//! *and* the key store taken before the shred holds keys wrapped only under epoch N, whose
//! root no longer exists anywhere, so it opens nothing even with the root of trust as it is
//! after. (With one long-lived root, the backed-up epoch-N file would still open.)
//!
//! Every step is a resumable, idempotent operation for the server's shred state machine:
//!
//! 1. [`KeyHierarchy::ensure_epoch_after`]`(from)`: creates epoch `from + 1`, or returns it
//!    when an earlier run already did. The commit point is the atomic write of the epoch file;
//!    a crash before it leaves an *intent* file, and the next open discards the half-made root.
//!    It then waits for in-flight model creations ([`KeyHierarchy::model_key_lease`]) that may
//!    still be wrapping under the old epoch.
//! 2. [`KeyHierarchy::rewrap_model_key`]: pure, no IO; the caller writes the results and
//!    deletes the shredded key rows in one transaction.
//! 3. [`KeyHierarchy::destroy_epoch`]`(from)`: root first, then the epoch file (so a crash in
//!    between leaves a file whose root is gone, which the next call finishes). Destroying twice
//!    is fine; destroying the current epoch is refused.
//!
//! Opening fails closed: a key store whose current epoch's root is missing or destroyed does
//! not open (never a silently made new root); an older epoch whose root is gone is reported
//! as destroyed. Files are written whole (temp file, fsync, rename, fsync dir), mode 0600.
#![forbid(unsafe_code)]

mod files;
mod kms;
mod root;

pub use kms::{KmsConfig, KmsRoot, KmsSecret};
pub use root::{FileRoot, RootConfig, RootDestruction, RootKind, RootProvider, RootRef};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crypto::SecretKey;
use crypto::wrap::{unwrap_key, wrap_key};

/// Magic and version of an epoch key file. Frozen. Version 1 (wrapped under one long-lived
/// root key) is refused: that layout cannot shred against backups.
const EPOCH_FILE_MAGIC: &[u8; 13] = b"custody-epoch";
const EPOCH_FILE_VERSION: u8 = 2;
/// Magic and version of an epoch intent file (an epoch being created). Frozen.
const INTENT_FILE_MAGIC: &[u8; 14] = b"custody-intent";
const INTENT_FILE_VERSION: u8 = 1;
/// Marks an initialised key store, so one that lost every epoch is not taken for a new one.
const STORE_MARKER: &str = "key-store";
const STORE_MARKER_CONTENT: &[u8] = b"custody key store v2\n";
/// The single root key of the version-1 layout.
const LEGACY_ROOT: &str = "root.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store file {0} is damaged or not a custody key file")]
    BadKeyFile(PathBuf),
    #[error(
        "key store {0} has a single long-lived root key (root.key, layout v1), which cannot \
         shred against backups; this version needs one root per epoch: start with a new key \
         store"
    )]
    LegacyLayout(PathBuf),
    #[error("key store {0} was initialised but holds no epoch key: refusing to start a new one")]
    NoEpoch(PathBuf),
    #[error(
        "the root of trust of the current epoch {epoch} ({root}) is missing or destroyed: \
         refusing to open the key store (check the [root] configuration; a new root is never \
         made in place of a lost one)"
    )]
    CurrentRootMissing { epoch: u64, root: String },
    #[error("the root of trust {root} of epoch {epoch} is missing or destroyed")]
    RootGone { epoch: u64, root: String },
    #[error(
        "root {0} already exists: refusing to overwrite it (is the root shared with another key store?)"
    )]
    RootExists(String),
    #[error("epoch {epoch} was made with root provider {found}, but {configured} is configured")]
    ProviderMismatch {
        epoch: u64,
        found: String,
        configured: String,
    },
    #[error("root provider: {0}")]
    Provider(String),
    #[error("the key for epoch {0} has been destroyed: data wrapped under it is shredded")]
    EpochDestroyed(u64),
    #[error("epoch {epoch} cannot be destroyed: it is the current epoch ({current}) or later")]
    DestroyCurrent { epoch: u64, current: u64 },
    #[error(
        "the current epoch is {current}, but a rotation from epoch {from} expects {from} or {}",
        from + 1
    )]
    UnexpectedEpoch { from: u64, current: u64 },
    #[error("a wrapped key failed to open: it was altered or belongs to another model")]
    Unwrap,
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}

/// A model key wrapped for storage in the database, with the epoch that wraps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedModelKey {
    pub epoch: u64,
    pub wrapped: Vec<u8>,
}

/// What the key store records about one epoch (no secret): for certificates and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochInfo {
    pub epoch: u64,
    pub root_kind: RootKind,
    /// The root's name: `root-N.key` or a KMS key ARN.
    pub root: RootRef,
    /// False once the root is gone (the epoch is destroyed or being destroyed).
    pub usable: bool,
}

/// The result of [`KeyHierarchy::destroy_epoch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedEpoch {
    pub epoch: u64,
    /// `None` when an earlier call had already removed the epoch file (the caller should have
    /// recorded [`KeyHierarchy::epoch_info`] before).
    pub root: Option<RootRef>,
    pub root_kind: RootKind,
    pub root_destruction: RootDestruction,
    /// The epoch file was overwritten and removed by this call (false: it was already gone).
    pub epoch_file_removed: bool,
}

struct Epoch {
    info: EpochInfo,
    /// `None` when the root is gone.
    key: Option<Arc<SecretKey>>,
}

/// The root of trust and the live epoch keys of a key store directory.
///
/// Shared by every request (`&self` everywhere); epoch creation and destruction are
/// serialised inside.
pub struct KeyHierarchy {
    dir: PathBuf,
    provider: Arc<dyn RootProvider>,
    epochs: RwLock<BTreeMap<u64, Epoch>>,
    /// Serialises epoch creation and destruction.
    ops: tokio::sync::Mutex<()>,
    /// Model creations hold it shared; a rotation takes it exclusively once, to wait for them.
    creations: Arc<tokio::sync::RwLock<()>>,
}

/// Held by a caller from [`ModelKeyLease::new_model_key`] until the wrapped key is committed
/// to the database, so that a rotation does not destroy the epoch under a row it never saw.
pub struct ModelKeyLease<'a> {
    keys: &'a KeyHierarchy,
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl ModelKeyLease<'_> {
    /// A fresh model key and its wrapped form, under the current epoch.
    pub fn new_model_key(&self, model_id: &str) -> Result<(SecretKey, WrappedModelKey), KeyError> {
        self.keys.new_model_key(model_id)
    }
}

impl KeyHierarchy {
    /// Opens the key store in `dir` with `provider` as root of trust; on an empty directory,
    /// initialises it with epoch 1.
    pub async fn open_or_init(
        dir: &Path,
        provider: Arc<dyn RootProvider>,
    ) -> Result<Self, KeyError> {
        Self::open_inner(dir, provider, true).await
    }

    /// Opens an existing key store; never initialises one.
    pub async fn open(dir: &Path, provider: Arc<dyn RootProvider>) -> Result<Self, KeyError> {
        Self::open_inner(dir, provider, false).await
    }

    async fn open_inner(
        dir: &Path,
        provider: Arc<dyn RootProvider>,
        init: bool,
    ) -> Result<Self, KeyError> {
        files::create_private_dir(dir)?;
        if dir.join(LEGACY_ROOT).exists() {
            return Err(KeyError::LegacyLayout(dir.to_owned()));
        }
        let keys = KeyHierarchy {
            dir: dir.to_owned(),
            provider,
            epochs: RwLock::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            creations: Arc::new(tokio::sync::RwLock::new(())),
        };
        keys.recover_intents().await?;

        let mut found = BTreeMap::new();
        for (epoch, path) in files::list_numbered(dir, "epoch-", ".key")? {
            found.insert(epoch, files::read_epoch_file(&path, epoch)?);
        }
        let marker = dir.join(STORE_MARKER);
        if found.is_empty() {
            // Only a brand-new key store starts at epoch 1. One that was initialised and has
            // no epoch lost its keys: a new epoch would silently stand in for shredded ones.
            if marker.exists() || !init {
                return Err(KeyError::NoEpoch(dir.to_owned()));
            }
            files::write_secret_file(&marker, STORE_MARKER_CONTENT)?;
            {
                let _guard = keys.ops.lock().await;
                keys.create_epoch(1).await?;
            }
            return Ok(keys);
        }
        if !marker.exists() {
            files::write_secret_file(&marker, STORE_MARKER_CONTENT)?;
        }

        let current = found.keys().next_back().copied().unwrap_or(0);
        let kind = keys.provider.kind();
        let mut epochs = BTreeMap::new();
        for (epoch, file) in found {
            if file.root_kind != kind {
                return Err(KeyError::ProviderMismatch {
                    epoch,
                    found: file.root_kind.to_string(),
                    configured: kind.to_string(),
                });
            }
            let key = match keys.provider.unwrap(&file.root, epoch, &file.wrapped).await {
                Ok(key) => Some(Arc::new(key)),
                Err(KeyError::RootGone { root, .. }) if epoch == current => {
                    return Err(KeyError::CurrentRootMissing { epoch, root });
                }
                // An older epoch mid-destruction: its root is gone, the file not yet removed.
                Err(KeyError::RootGone { .. }) => None,
                Err(e) => return Err(e),
            };
            let info = EpochInfo {
                epoch,
                root_kind: kind,
                root: file.root,
                usable: key.is_some(),
            };
            epochs.insert(epoch, Epoch { info, key });
        }
        *keys.write_epochs() = epochs;
        Ok(keys)
    }

    fn read_epochs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Epoch>> {
        // A panic while holding the lock cannot leave the map half-updated (each update is
        // one insert or remove), so a poisoned lock is still consistent.
        self.epochs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_epochs(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Epoch>> {
        self.epochs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root of trust, for certificates: kind and a secret-free description.
    pub fn root_provider(&self) -> (RootKind, String) {
        (self.provider.kind(), self.provider.describe())
    }

    /// The epoch new model keys are wrapped under.
    pub fn current_epoch(&self) -> u64 {
        self.read_epochs().keys().next_back().copied().unwrap_or(0)
    }

    /// Every epoch the key store still holds a file for, oldest first.
    pub fn epochs(&self) -> Vec<EpochInfo> {
        self.read_epochs()
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    /// What the key store records about `epoch`, if it still holds its file.
    pub fn epoch_info(&self, epoch: u64) -> Option<EpochInfo> {
        self.read_epochs().get(&epoch).map(|e| e.info.clone())
    }

    fn epoch_key(&self, epoch: u64) -> Result<Arc<SecretKey>, KeyError> {
        self.read_epochs()
            .get(&epoch)
            .and_then(|e| e.key.clone())
            .ok_or(KeyError::EpochDestroyed(epoch))
    }

    /// Makes a fresh model key and its wrapped form for the database. Callers that create a
    /// model while the server runs hold a [`KeyHierarchy::model_key_lease`] until the row is
    /// committed.
    pub fn new_model_key(&self, model_id: &str) -> Result<(SecretKey, WrappedModelKey), KeyError> {
        let key = SecretKey::generate()?;
        let epoch = self.current_epoch();
        let kek = self.epoch_key(epoch)?;
        let wrapped = wrap_key(&kek, &key, &model_key_aad(model_id, epoch))?;
        Ok((key, WrappedModelKey { epoch, wrapped }))
    }

    /// A lease for creating model keys: a rotation waits for every lease taken before it
    /// switched epochs, so a row wrapped under the old epoch is committed before the caller
    /// re-wraps (and is then re-wrapped with the others).
    pub async fn model_key_lease(&self) -> ModelKeyLease<'_> {
        ModelKeyLease {
            keys: self,
            _guard: self.creations.clone().read_owned().await,
        }
    }

    /// Opens a model key read from the database.
    pub fn unwrap_model_key(
        &self,
        model_id: &str,
        wrapped: &WrappedModelKey,
    ) -> Result<SecretKey, KeyError> {
        let kek = self.epoch_key(wrapped.epoch)?;
        unwrap_key(
            &kek,
            &wrapped.wrapped,
            &model_key_aad(model_id, wrapped.epoch),
        )
        .map_err(|_| KeyError::Unwrap)
    }

    /// Re-wraps a model key under epoch `to` (normally the current one). Pure: the caller
    /// stores the result. A key already under `to` is returned as it is.
    pub fn rewrap_model_key(
        &self,
        model_id: &str,
        wrapped: &WrappedModelKey,
        to: u64,
    ) -> Result<WrappedModelKey, KeyError> {
        if wrapped.epoch == to {
            // Still check that it opens: a damaged row must not be carried forward silently.
            self.unwrap_model_key(model_id, wrapped)?;
            return Ok(wrapped.clone());
        }
        let key = self.unwrap_model_key(model_id, wrapped)?;
        let kek = self.epoch_key(to)?;
        let rewrapped = wrap_key(&kek, &key, &model_key_aad(model_id, to))?;
        Ok(WrappedModelKey {
            epoch: to,
            wrapped: rewrapped,
        })
    }

    /// Shredding step "rotate": makes sure epoch `from + 1` exists and is current, creating
    /// it (new root, new epoch key) unless an earlier run already did; returns `from + 1`.
    ///
    /// The caller records `from` (the current epoch when its rotation starts) before calling,
    /// and runs one rotation at a time, so that an epoch found here was made by the same
    /// rotation: the key being shredded is never wrapped under it. Before returning, waits
    /// for model creations that were still wrapping under `from`.
    pub async fn ensure_epoch_after(&self, from: u64) -> Result<u64, KeyError> {
        let target = from + 1;
        {
            let _guard = self.ops.lock().await;
            let current = self.current_epoch();
            if current == from {
                self.create_epoch(target).await?;
            } else if current != target {
                return Err(KeyError::UnexpectedEpoch { from, current });
            }
        }
        // New creations now use `target`; wait for those that may have used `from`.
        drop(self.creations.write().await);
        Ok(target)
    }

    /// Creates epoch `epoch` (caller holds `ops`). Commit point: the epoch file's rename.
    async fn create_epoch(&self, epoch: u64) -> Result<(), KeyError> {
        let kind = self.provider.kind();
        let intent = self.dir.join(format!("epoch-{epoch}.intent"));
        files::write_secret_file(&intent, &files::intent_bytes(epoch, kind, None))?;
        let root = self.provider.create_root(epoch).await?;
        // Record the root's name before anything is wrapped under it, so a crash from here
        // on lets the next open destroy it.
        files::write_secret_file(&intent, &files::intent_bytes(epoch, kind, Some(&root)))?;
        let key = SecretKey::generate()?;
        let wrapped = self.provider.wrap(&root, epoch, &key).await?;
        files::write_secret_file(
            &self.dir.join(format!("epoch-{epoch}.key")),
            &files::epoch_bytes(epoch, kind, &root, &wrapped),
        )?;
        self.write_epochs().insert(
            epoch,
            Epoch {
                info: EpochInfo {
                    epoch,
                    root_kind: kind,
                    root,
                    usable: true,
                },
                key: Some(Arc::new(key)),
            },
        );
        files::remove_file(&intent)?;
        tracing::info!(epoch, root = %kind, "key epoch created");
        Ok(())
    }

    /// Finishes or discards epochs whose creation was interrupted.
    async fn recover_intents(&self) -> Result<(), KeyError> {
        for (epoch, path) in files::list_numbered(&self.dir, "epoch-", ".intent")? {
            let (kind, root) = files::read_intent_file(&path, epoch)?;
            if self.dir.join(format!("epoch-{epoch}.key")).exists() {
                // Committed; only the clean-up was missed.
                files::remove_file(&path)?;
                continue;
            }
            if kind != self.provider.kind() {
                return Err(KeyError::ProviderMismatch {
                    epoch,
                    found: kind.to_string(),
                    configured: self.provider.kind().to_string(),
                });
            }
            // Nothing was ever wrapped under a root whose epoch file was not written.
            match &root {
                Some(root) => {
                    self.provider.destroy_root(root, epoch).await?;
                }
                None => self.provider.destroy_unrecorded(epoch).await?,
            }
            files::remove_file(&path)?;
            tracing::warn!(epoch, "discarded a half-created key epoch");
        }
        Ok(())
    }

    /// Shredding step "destroy": destroys epoch `epoch`'s root, then overwrites and removes
    /// its epoch file. Idempotent. Refuses the current epoch (and any later one).
    pub async fn destroy_epoch(&self, epoch: u64) -> Result<DestroyedEpoch, KeyError> {
        let _guard = self.ops.lock().await;
        let current = self.current_epoch();
        if epoch >= current {
            return Err(KeyError::DestroyCurrent { epoch, current });
        }
        let kind = self.provider.kind();
        let path = self.dir.join(format!("epoch-{epoch}.key"));
        let root = if path.exists() {
            let file = files::read_epoch_file(&path, epoch)?;
            if file.root_kind != kind {
                return Err(KeyError::ProviderMismatch {
                    epoch,
                    found: file.root_kind.to_string(),
                    configured: kind.to_string(),
                });
            }
            Some(file.root)
        } else {
            None
        };
        // Root first: if we crash after it, the epoch file left behind opens nothing.
        let root_destruction = match &root {
            Some(root) => self.provider.destroy_root(root, epoch).await?,
            None => {
                self.provider.destroy_unrecorded(epoch).await?;
                RootDestruction::AlreadyGone
            }
        };
        if let Some(e) = self.write_epochs().get_mut(&epoch) {
            e.key = None;
            e.info.usable = false;
        }
        let epoch_file_removed = files::overwrite_and_remove(&path)?;
        self.write_epochs().remove(&epoch);
        tracing::info!(epoch, root = %kind, "key epoch destroyed");
        Ok(DestroyedEpoch {
            epoch,
            root,
            root_kind: kind,
            root_destruction,
            epoch_file_removed,
        })
    }
}

/// Associated data of a wrapped model key: binds it to its model and epoch, so a row copied
/// onto another model does not open.
fn model_key_aad(model_id: &str, epoch: u64) -> Vec<u8> {
    let mut aad = b"custody/model-key/v1\0".to_vec();
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(model_id.as_bytes());
    aad
}

/// Associated data of an epoch key wrapped under a root key file.
pub(crate) fn epoch_aad(epoch: u64) -> Vec<u8> {
    let mut aad = b"custody/epoch-key/v2\0".to_vec();
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn model_key_aad_binds_model_and_epoch() {
        assert_ne!(model_key_aad("m", 1), model_key_aad("m", 2));
        assert_ne!(model_key_aad("m1", 1), model_key_aad("m2", 1));
        assert_ne!(epoch_aad(1), epoch_aad(2));
    }
}
