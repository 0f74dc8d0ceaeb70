//! The key hierarchy, built so that deletion is final even against backups, and shared by
//! every instance of a scaled-out service.
//!
//! ```text
//!   root of trust N   one per epoch: a root key file root-N-ATTEMPT.key (in a directory kept
//!     │               out of every backup) or one AWS KMS key; see [`RootProvider`]
//!     └─ epoch key N  the epoch ledger (the database), wrapped under root N; see [`EpochLedger`]
//!          └─ model key   database row, wrapped under epoch key N (bound to model id, epoch)
//!               └─ object keys   derived per object (crypto::stream), never stored
//! ```
//!
//! Why a root per epoch: deleting a model key row is not shredding while a backup still holds
//! that row wrapped under a live key. Shredding a model deletes its row, creates epoch N+1 (a
//! new root and a new epoch key), re-wraps every surviving model key under N+1 in the same
//! database transaction, then destroys epoch N: its root (file overwritten and removed, or KMS
//! key scheduled for deletion, unusable at once). A backup of the database taken before the
//! shred holds keys wrapped only under epoch N, whose root no longer exists anywhere, so it
//! opens nothing even with the root of trust as it is after. (With one long-lived root, the
//! backed-up epoch N key would still open.)
//!
//! Why the ledger is in the database: every instance must agree on which epoch is current, or
//! one instance would wrap new model keys under an epoch another is destroying. The ledger's
//! transactions fence that: a model key commits only while its epoch is current, epoch
//! changes by a runner that lost its lease are refused, and an epoch that still wraps a live
//! model key cannot be destroyed. Each instance caches the unwrapped epoch keys and re-reads
//! the ledger whenever its generation changed: one small read before every wrap or unwrap, so
//! an instance never uses an epoch that another instance retired, and drops its copy of a
//! destroyed epoch key at its next use of the hierarchy.
//!
//! Every step is a resumable, idempotent operation for the server's shred state machine:
//!
//! 1. [`KeyHierarchy::ensure_epoch_after`]`(from)`: creates epoch `from + 1`, or returns it
//!    when an earlier run already did. The commit point is the ledger's commit of the wrapped
//!    epoch key; an attempt that stopped before it (a crash, a lost lease) is discarded, its
//!    root destroyed, by the next rotation.
//! 2. [`KeyHierarchy::rewrap_model_key`]: no IO but a ledger read; the caller writes the
//!    results and deletes the shredded key rows in one transaction.
//! 3. [`KeyHierarchy::destroy_epoch`]`(from)`: marks the epoch destroying (every instance stops
//!    using it), destroys its root, then erases its wrapped key. A crash in between is finished
//!    by the next call. Destroying twice is fine; destroying the current epoch is refused.
//!
//! Opening fails closed: a hierarchy whose current epoch's root is missing or destroyed does
//! not open (never a silently made new root); an older epoch whose root is gone is unusable.
#![forbid(unsafe_code)]

mod files;
mod import;
mod kms;
mod ledger;
mod pkcs11;
mod root;

pub use import::{ImportOutcome, import_key_store};
pub use kms::{KmsConfig, KmsRoot, KmsSecret};
pub use ledger::{EpochLedger, EpochRecord, EpochState, Fence, LedgerState};
pub use pkcs11::{Pkcs11Config, Pkcs11Root};
pub use root::{
    FileRoot, RootConfig, RootDestruction, RootKind, RootProvider, RootRef, RootStatus,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crypto::SecretKey;
use crypto::wrap::{unwrap_key, wrap_key};

/// Magic and version of a key store epoch file (layout v2, before the epoch ledger): read only
/// to import such a key store. Frozen. Version 1 (one long-lived root key) is refused.
const EPOCH_FILE_MAGIC: &[u8; 13] = b"custody-epoch";
const EPOCH_FILE_VERSION: u8 = 2;
/// Magic and version of a layout-v2 epoch intent file. Frozen.
const INTENT_FILE_MAGIC: &[u8; 14] = b"custody-intent";
const INTENT_FILE_VERSION: u8 = 1;
/// Marks an initialised layout-v2 key store.
const STORE_MARKER: &str = "key-store";
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
    #[error(
        "the database holds no key epoch{0}: refusing to start a new key hierarchy (keys wrapped \
         under a lost one would silently stay unreadable)"
    )]
    NoEpoch(String),
    #[error(
        "the root of trust of the current epoch {epoch} ({root}) is missing or destroyed: \
         refusing to open the key hierarchy (check the [root] configuration; a new root is \
         never made in place of a lost one; a database restored from before a deletion opens \
         nothing, by design)"
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
    #[error("epoch {0} already has a record in the epoch ledger")]
    EpochTaken(u64),
    #[error(
        "the lease {0} this work ran under was taken over by another instance: its writes are \
         refused"
    )]
    Fenced(String),
    #[error("epoch ledger: {0}")]
    Ledger(String),
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

/// What the hierarchy knows about one epoch (no secret): for certificates and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochInfo {
    pub epoch: u64,
    pub root_kind: RootKind,
    /// The root's name: `root-N-ATTEMPT.key` or a KMS key ARN.
    pub root: RootRef,
    /// False once the root is gone (the epoch is destroyed or being destroyed).
    pub usable: bool,
}

/// The result of [`KeyHierarchy::destroy_epoch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedEpoch {
    pub epoch: u64,
    /// `None` when the ledger has no record of the epoch's root (it never committed one).
    pub root: Option<RootRef>,
    pub root_kind: RootKind,
    pub root_destruction: RootDestruction,
    /// The wrapped epoch key was erased from the ledger by this call (false: it already was).
    pub wrapped_key_erased: bool,
}

struct Epoch {
    info: EpochInfo,
    wrapped: Vec<u8>,
    /// `None` when the root is gone.
    key: Option<Arc<SecretKey>>,
}

#[derive(Default)]
struct Loaded {
    generation: u64,
    current: u64,
    /// Live epochs only: a destroying or destroyed epoch is never used again.
    epochs: BTreeMap<u64, Epoch>,
}

/// The root of trust and the live epoch keys, as recorded by an [`EpochLedger`].
///
/// Shared by every request (`&self` everywhere). Before every use it reads the ledger's
/// generation and reloads when another instance (or this one) changed the ledger.
pub struct KeyHierarchy {
    ledger: Arc<dyn EpochLedger>,
    provider: Arc<dyn RootProvider>,
    loaded: RwLock<Loaded>,
    /// One reload at a time; the others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
}

impl KeyHierarchy {
    /// Opens the hierarchy recorded in `ledger`; when the ledger holds no epoch and `init` is
    /// true, creates epoch 1 (the caller decides that a new hierarchy is safe: no model key
    /// exists that a lost one could have wrapped).
    pub async fn open(
        ledger: Arc<dyn EpochLedger>,
        provider: Arc<dyn RootProvider>,
        init: bool,
    ) -> Result<Self, KeyError> {
        let keys = KeyHierarchy {
            ledger,
            provider,
            loaded: RwLock::new(Loaded::default()),
            reloading: tokio::sync::Mutex::new(()),
        };
        let state = keys.ledger.load().await?;
        if state.current == 0 {
            if !init {
                return Err(KeyError::NoEpoch(String::new()));
            }
            // A crashed first start may have left an attempt behind.
            keys.discard_attempts(&state, None).await?;
            keys.create_epoch(1, None).await?;
        }
        keys.reload(true).await?;
        Ok(keys)
    }

    fn read_loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // A panic while holding the lock cannot leave the state half-updated (it is replaced
        // whole), so a poisoned lock is still consistent.
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the ledger's generation and reloads when it changed.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let generation = self.ledger.generation().await?;
        if generation == self.read_loaded().generation {
            return Ok(());
        }
        self.reload(false).await
    }

    /// Loads the ledger and unwraps every live epoch key not already held. `opening`: the
    /// current epoch's root must open (at start); later, a current root that vanished is the
    /// same refusal.
    async fn reload(&self, opening: bool) -> Result<(), KeyError> {
        let _one = self.reloading.lock().await;
        let state = self.ledger.load().await?;
        if !opening && state.generation == self.read_loaded().generation {
            return Ok(());
        }
        let kind = self.provider.kind();
        let mut epochs = BTreeMap::new();
        for record in &state.records {
            if record.state != EpochState::Live {
                continue;
            }
            let (Some(root), Some(wrapped)) = (&record.root, &record.wrapped) else {
                return Err(KeyError::Ledger(format!(
                    "live epoch {} has no root or key",
                    record.epoch
                )));
            };
            if record.root_kind != kind {
                return Err(KeyError::ProviderMismatch {
                    epoch: record.epoch,
                    found: record.root_kind.to_string(),
                    configured: kind.to_string(),
                });
            }
            let held = self
                .read_loaded()
                .epochs
                .get(&record.epoch)
                .filter(|e| e.info.root == *root && e.wrapped == *wrapped)
                .map(|e| e.key.clone());
            let key = match held {
                Some(key) => key,
                None => match self.provider.unwrap(root, record.epoch, wrapped).await {
                    Ok(key) => Some(Arc::new(key)),
                    Err(KeyError::RootGone { root, .. }) if record.epoch == state.current => {
                        return Err(KeyError::CurrentRootMissing {
                            epoch: record.epoch,
                            root,
                        });
                    }
                    // An older epoch whose root is gone: mid-destruction, or restored from a
                    // backup. Unusable either way.
                    Err(KeyError::RootGone { .. }) => None,
                    Err(e) => return Err(e),
                },
            };
            let info = EpochInfo {
                epoch: record.epoch,
                root_kind: record.root_kind,
                root: root.clone(),
                usable: key.is_some(),
            };
            epochs.insert(
                record.epoch,
                Epoch {
                    info,
                    wrapped: wrapped.clone(),
                    key,
                },
            );
        }
        if state.current != 0 && !epochs.contains_key(&state.current) {
            return Err(KeyError::Ledger(format!(
                "the current epoch {} is not live",
                state.current
            )));
        }
        // Replaced whole: keys of epochs no longer live are dropped (and zeroized) here.
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded {
            generation: state.generation,
            current: state.current,
            epochs,
        };
        Ok(())
    }

    /// The root of trust, for certificates: kind and a secret-free description.
    pub fn root_provider(&self) -> (RootKind, String) {
        (self.provider.kind(), self.provider.describe())
    }

    /// The epoch new model keys are wrapped under, as of the last refresh.
    pub fn current_epoch(&self) -> u64 {
        self.read_loaded().current
    }

    /// Every live epoch as of the last refresh, oldest first.
    pub fn epochs(&self) -> Vec<EpochInfo> {
        self.read_loaded()
            .epochs
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    /// What the hierarchy knows about `epoch`, if it is live (as of the last refresh).
    pub fn epoch_info(&self, epoch: u64) -> Option<EpochInfo> {
        self.read_loaded()
            .epochs
            .get(&epoch)
            .map(|e| e.info.clone())
    }

    fn epoch_key(&self, epoch: u64) -> Result<Arc<SecretKey>, KeyError> {
        self.read_loaded()
            .epochs
            .get(&epoch)
            .and_then(|e| e.key.clone())
            .ok_or(KeyError::EpochDestroyed(epoch))
    }

    /// Makes a fresh model key and its wrapped form under the current epoch. The database
    /// commits the row only while that epoch is still current; when it refuses, refresh and
    /// make another.
    pub async fn new_model_key(
        &self,
        model_id: &str,
    ) -> Result<(SecretKey, WrappedModelKey), KeyError> {
        self.refresh().await?;
        let key = SecretKey::generate()?;
        let epoch = self.current_epoch();
        let kek = self.epoch_key(epoch)?;
        let wrapped = wrap_key(&kek, &key, &model_key_aad(model_id, epoch))?;
        Ok((key, WrappedModelKey { epoch, wrapped }))
    }

    /// Opens a model key read from the database.
    pub async fn unwrap_model_key(
        &self,
        model_id: &str,
        wrapped: &WrappedModelKey,
    ) -> Result<SecretKey, KeyError> {
        self.refresh().await?;
        self.unwrap_loaded(model_id, wrapped)
    }

    fn unwrap_loaded(
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

    /// Re-wraps a model key under epoch `to` (normally the current one), with the epochs as
    /// of the last refresh (a rotation re-wraps every key: it refreshes once, not per key).
    /// The caller stores the result. A key already under `to` is returned as it is.
    pub fn rewrap_model_key(
        &self,
        model_id: &str,
        wrapped: &WrappedModelKey,
        to: u64,
    ) -> Result<WrappedModelKey, KeyError> {
        if wrapped.epoch == to {
            // Still check that it opens: a damaged row must not be carried forward silently.
            self.unwrap_loaded(model_id, wrapped)?;
            return Ok(wrapped.clone());
        }
        let key = self.unwrap_loaded(model_id, wrapped)?;
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
    /// and runs rotations under one lease (`fence`), so that an epoch found here was made by
    /// the same rotation: the key being shredded is never wrapped under it. Attempts that
    /// never committed (a crash, a lost lease) are discarded first, their roots destroyed.
    /// Once the ledger commits the new epoch, no model key can be committed under `from`.
    pub async fn ensure_epoch_after(
        &self,
        from: u64,
        fence: Option<&Fence>,
    ) -> Result<u64, KeyError> {
        let target = from + 1;
        let state = self.ledger.load().await?;
        if state.current == target {
            self.refresh().await?;
            return Ok(target);
        }
        if state.current != from {
            return Err(KeyError::UnexpectedEpoch {
                from,
                current: state.current,
            });
        }
        self.discard_attempts(&state, fence).await?;
        self.create_epoch(target, fence).await?;
        self.refresh().await?;
        Ok(target)
    }

    /// Destroys the roots of attempts that never committed and forgets them.
    async fn discard_attempts(
        &self,
        state: &LedgerState,
        fence: Option<&Fence>,
    ) -> Result<(), KeyError> {
        for record in &state.records {
            if record.state != EpochState::Creating {
                continue;
            }
            // Nothing was ever wrapped under a root whose epoch did not commit. Each attempt
            // has its own root, so this destroys that attempt's root and no other.
            match &record.root {
                Some(root) => {
                    self.provider.destroy_root(root, record.epoch).await?;
                }
                None => {
                    self.provider
                        .destroy_unrecorded(record.epoch, &record.attempt)
                        .await?
                }
            }
            self.ledger
                .discard_epoch(record.epoch, &record.attempt, fence)
                .await?;
            tracing::warn!(epoch = record.epoch, "discarded a half-created key epoch");
        }
        Ok(())
    }

    /// Creates epoch `epoch`. Commit point: the ledger's commit of its wrapped key.
    async fn create_epoch(&self, epoch: u64, fence: Option<&Fence>) -> Result<(), KeyError> {
        let kind = self.provider.kind();
        let attempt = hex_id()?;
        self.ledger
            .begin_epoch(epoch, kind, &attempt, fence)
            .await?;
        let root = self.provider.create_root(epoch, &attempt).await?;
        // Recorded before anything is wrapped under it, so a later rotation can destroy it.
        self.ledger
            .record_root(epoch, &attempt, &root, fence)
            .await?;
        let key = SecretKey::generate()?;
        let wrapped = self.provider.wrap(&root, epoch, &key).await?;
        self.ledger
            .commit_epoch(epoch, &attempt, &wrapped, fence)
            .await?;
        tracing::info!(epoch, root = %kind, "key epoch created");
        Ok(())
    }

    /// Shredding step "destroy": marks epoch `epoch` destroying (no instance uses it from
    /// then on), destroys its root, then erases its wrapped key. Idempotent. Refuses the
    /// current epoch (and any later one); the ledger also refuses an epoch that still wraps a
    /// live model key.
    pub async fn destroy_epoch(
        &self,
        epoch: u64,
        fence: Option<&Fence>,
    ) -> Result<DestroyedEpoch, KeyError> {
        let state = self.ledger.load().await?;
        if epoch >= state.current {
            return Err(KeyError::DestroyCurrent {
                epoch,
                current: state.current,
            });
        }
        let kind = self.provider.kind();
        let record = state.records.iter().find(|r| r.epoch == epoch);
        let Some(record) = record else {
            return Ok(DestroyedEpoch {
                epoch,
                root: None,
                root_kind: kind,
                root_destruction: RootDestruction::AlreadyGone,
                wrapped_key_erased: false,
            });
        };
        if record.root_kind != kind {
            return Err(KeyError::ProviderMismatch {
                epoch,
                found: record.root_kind.to_string(),
                configured: kind.to_string(),
            });
        }
        let root_destruction = match record.state {
            EpochState::Destroyed => RootDestruction::AlreadyGone,
            EpochState::Creating => {
                return Err(KeyError::Ledger(format!(
                    "epoch {epoch} is older than the current epoch but was never committed"
                )));
            }
            EpochState::Live | EpochState::Destroying => {
                if record.state == EpochState::Live {
                    self.ledger.begin_destroy(epoch, fence).await?;
                }
                let root = record.root.as_ref().ok_or_else(|| {
                    KeyError::Ledger(format!("epoch {epoch} has no recorded root"))
                })?;
                // Root first: once it is gone, the wrapped key left in the ledger (or in any
                // backup) opens nothing.
                let destruction = self.provider.destroy_root(root, epoch).await?;
                self.ledger.finish_destroy(epoch, fence).await?;
                destruction
            }
        };
        self.refresh().await?;
        tracing::info!(epoch, root = %kind, "key epoch destroyed");
        Ok(DestroyedEpoch {
            epoch,
            root: record.root.clone(),
            root_kind: kind,
            root_destruction,
            wrapped_key_erased: record.state != EpochState::Destroyed,
        })
    }
}

/// Evidence for a deletion's post-checks, asked of the ledger and the root of trust as they
/// are now (never of this instance's cache).
impl KeyHierarchy {
    /// Every epoch the ledger records, oldest first.
    pub async fn ledger_records(&self) -> Result<Vec<EpochRecord>, KeyError> {
        Ok(self.ledger.load().await?.records)
    }

    /// Whether `root` (of `epoch`) is really gone, as the root of trust reports it.
    pub async fn root_status(&self, root: &RootRef, epoch: u64) -> Result<RootStatus, KeyError> {
        self.provider.root_status(root, epoch).await
    }

    /// Tries each recorded wrapped model key (`(model id, wrapped bytes)`) under every epoch
    /// whose wrapped key the ledger still holds, in any state, opening each epoch key through
    /// the root of trust; returns `(model id, epoch)` for every key that opens. An epoch whose
    /// root is gone is skipped (nothing opens it); any other failure is an error, never
    /// "does not open".
    pub async fn epochs_that_open(
        &self,
        recorded: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, u64)>, KeyError> {
        let mut opens = Vec::new();
        for record in self.ledger.load().await?.records {
            let (Some(root), Some(wrapped)) = (&record.root, &record.wrapped) else {
                continue;
            };
            if record.root_kind != self.provider.kind() {
                return Err(KeyError::ProviderMismatch {
                    epoch: record.epoch,
                    found: record.root_kind.to_string(),
                    configured: self.provider.kind().to_string(),
                });
            }
            let epoch_key = match self.provider.unwrap(root, record.epoch, wrapped).await {
                Ok(key) => key,
                Err(KeyError::RootGone { .. }) => continue,
                Err(e) => return Err(e),
            };
            for (model_id, key) in recorded {
                let aad = model_key_aad(model_id, record.epoch);
                if unwrap_key(&epoch_key, key, &aad).is_ok() {
                    opens.push((model_id.clone(), record.epoch));
                }
            }
        }
        Ok(opens)
    }
}

/// A random attempt id: 16 bytes, lowercase hex.
fn hex_id() -> Result<String, KeyError> {
    let bytes: [u8; 16] = crypto::random_bytes()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

    #[test]
    fn attempt_ids_are_valid_file_name_parts() {
        let id = hex_id().unwrap();
        assert!(root::valid_attempt(&id), "{id}");
        assert_ne!(id, hex_id().unwrap());
    }
}
