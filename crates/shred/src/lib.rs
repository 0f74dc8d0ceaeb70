//! The key hierarchy, built so that deletion can be made final.
//!
//! ```text
//!   root key            key store, outside the database (keys/root.key)
//!     └─ epoch key N    key store: keys/epoch-N.key, wrapped under the root key
//!          └─ model key database row, wrapped under epoch key N
//!               └─ object keys   derived per object (crypto::stream), never stored
//! ```
//!
//! Why epochs: deleting a model key row is not enough while a database backup still holds
//! that row wrapped under a live key. To shred a model, the deletion service deletes its key,
//! creates epoch N+1, re-wraps every surviving model key under it in one transaction, then
//! destroys epoch N in the key store. A backup taken before the shred holds model keys wrapped
//! only under epoch N, which no longer exists anywhere, so it opens nothing.
//!
//! The key store lives beside, never inside, the database, and must not be in the database's
//! backups. Files are written whole (temp file, fsync, rename) with mode 0600.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crypto::SecretKey;
use crypto::wrap::{unwrap_key, wrap_key};
use zeroize::Zeroizing;

/// Magic and version of the root key file. Frozen.
const ROOT_FILE_MAGIC: &[u8; 12] = b"custody-root";
const ROOT_FILE_VERSION: u8 = 1;
/// Magic and version of an epoch key file. Frozen.
const EPOCH_FILE_MAGIC: &[u8; 13] = b"custody-epoch";
const EPOCH_FILE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store file {0} is damaged or not a custody key file")]
    BadKeyFile(PathBuf),
    #[error("key store {0} has a root key but no epoch key")]
    NoEpoch(PathBuf),
    #[error("the key for epoch {0} has been destroyed: data wrapped under it is shredded")]
    EpochDestroyed(u64),
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

/// The root of trust and the live epoch keys, loaded from the key store directory.
pub struct KeyHierarchy {
    dir: PathBuf,
    root: Option<SecretKey>,
    epochs: BTreeMap<u64, SecretKey>,
}

impl KeyHierarchy {
    /// Opens the key store in `dir`, creating a root key and epoch 1 when it is empty.
    pub fn open_or_init(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        restrict_dir(dir).map_err(io)?;
        let root_path = dir.join("root.key");
        let fresh = !root_path.exists();
        let root = if !fresh {
            read_root(&root_path)?
        } else {
            let root = SecretKey::generate()?;
            let mut bytes = Zeroizing::new(Vec::with_capacity(ROOT_FILE_MAGIC.len() + 1 + 32));
            bytes.extend_from_slice(ROOT_FILE_MAGIC);
            bytes.push(ROOT_FILE_VERSION);
            bytes.extend_from_slice(root.expose_secret());
            write_secret_file(&root_path, &bytes)?;
            root
        };

        let mut epochs = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            epochs.insert(epoch, read_epoch(&entry.path(), &root, epoch)?);
        }
        let mut hierarchy = KeyHierarchy {
            dir: dir.to_owned(),
            root: None,
            epochs,
        };
        if hierarchy.epochs.is_empty() {
            // Only a brand-new key store starts at epoch 1. An existing one without any epoch
            // lost its keys (or had them destroyed): inventing a new epoch would silently
            // reuse a number that wraps shredded keys, so refuse instead.
            if !fresh {
                return Err(KeyError::NoEpoch(dir.to_owned()));
            }
            hierarchy.create_epoch(&root, 1)?;
        }
        hierarchy.root = Some(root);
        Ok(hierarchy)
    }

    /// The epoch new model keys are wrapped under.
    pub fn current_epoch(&self) -> u64 {
        self.epochs.keys().next_back().copied().unwrap_or(0)
    }

    /// Makes a fresh model key and its wrapped form for the database.
    pub fn new_model_key(&self, model_id: &str) -> Result<(SecretKey, WrappedModelKey), KeyError> {
        let key = SecretKey::generate()?;
        let epoch = self.current_epoch();
        let kek = self
            .epochs
            .get(&epoch)
            .ok_or(KeyError::NoEpoch(self.dir.clone()))?;
        let wrapped = wrap_key(kek, &key, &model_key_aad(model_id, epoch))?;
        Ok((key, WrappedModelKey { epoch, wrapped }))
    }

    /// Opens a model key read from the database.
    pub fn unwrap_model_key(
        &self,
        model_id: &str,
        wrapped: &WrappedModelKey,
    ) -> Result<SecretKey, KeyError> {
        let kek = self
            .epochs
            .get(&wrapped.epoch)
            .ok_or(KeyError::EpochDestroyed(wrapped.epoch))?;
        unwrap_key(
            kek,
            &wrapped.wrapped,
            &model_key_aad(model_id, wrapped.epoch),
        )
        .map_err(|_| KeyError::Unwrap)
    }

    /// Creates the next epoch; new model keys are wrapped under it from now on. The deletion
    /// service re-wraps surviving keys under it and then destroys the old epoch.
    pub fn create_next_epoch(&mut self) -> Result<u64, KeyError> {
        let next = self.current_epoch() + 1;
        let root = self
            .root
            .take()
            .ok_or(KeyError::NoEpoch(self.dir.clone()))?;
        let result = self.create_epoch(&root, next);
        self.root = Some(root);
        result.map(|()| next)
    }

    fn create_epoch(&mut self, root: &SecretKey, epoch: u64) -> Result<(), KeyError> {
        let key = SecretKey::generate()?;
        let wrapped = wrap_key(root, &key, &epoch_aad(epoch))?;
        let mut bytes = Vec::with_capacity(EPOCH_FILE_MAGIC.len() + 9 + wrapped.len());
        bytes.extend_from_slice(EPOCH_FILE_MAGIC);
        bytes.push(EPOCH_FILE_VERSION);
        bytes.extend_from_slice(&epoch.to_be_bytes());
        bytes.extend_from_slice(&wrapped);
        write_secret_file(&self.dir.join(format!("epoch-{epoch}.key")), &bytes)?;
        self.epochs.insert(epoch, key);
        Ok(())
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

fn epoch_aad(epoch: u64) -> Vec<u8> {
    let mut aad = b"custody/epoch-key/v1\0".to_vec();
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

fn read_root(path: &Path) -> Result<SecretKey, KeyError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?);
    let header = ROOT_FILE_MAGIC.len() + 1;
    let ok = bytes.len() == header + 32
        && bytes.starts_with(ROOT_FILE_MAGIC)
        && bytes[ROOT_FILE_MAGIC.len()] == ROOT_FILE_VERSION;
    let key = if ok {
        Some(SecretKey::from_slice(&bytes[header..])?)
    } else {
        None
    };
    key.ok_or_else(|| KeyError::BadKeyFile(path.to_owned()))
}

fn read_epoch(path: &Path, root: &SecretKey, epoch: u64) -> Result<SecretKey, KeyError> {
    let bytes = fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let header = EPOCH_FILE_MAGIC.len() + 1 + 8;
    let bad = || KeyError::BadKeyFile(path.to_owned());
    if bytes.len() <= header
        || !bytes.starts_with(EPOCH_FILE_MAGIC)
        || bytes[EPOCH_FILE_MAGIC.len()] != EPOCH_FILE_VERSION
        || bytes[EPOCH_FILE_MAGIC.len() + 1..header] != epoch.to_be_bytes()
    {
        return Err(bad());
    }
    unwrap_key(root, &bytes[header..], &epoch_aad(epoch)).map_err(|_| bad())
}

fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let _ = fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_survive_reopening_the_key_store() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyHierarchy::open_or_init(dir.path()).unwrap();
        assert_eq!(keys.current_epoch(), 1);
        let (key, wrapped) = keys.new_model_key("m1").unwrap();
        drop(keys);
        let keys = KeyHierarchy::open_or_init(dir.path()).unwrap();
        let again = keys.unwrap_model_key("m1", &wrapped).unwrap();
        assert_eq!(key.expose_secret(), again.expose_secret());
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_model() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyHierarchy::open_or_init(dir.path()).unwrap();
        let (_, wrapped) = keys.new_model_key("m1").unwrap();
        assert!(matches!(
            keys.unwrap_model_key("m2", &wrapped),
            Err(KeyError::Unwrap)
        ));
        let mut tampered = wrapped.clone();
        tampered.wrapped[20] ^= 1;
        assert!(keys.unwrap_model_key("m1", &tampered).is_err());
    }

    #[test]
    fn without_its_epoch_file_a_wrapped_key_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = KeyHierarchy::open_or_init(dir.path()).unwrap();
        let (_, old) = keys.new_model_key("m1").unwrap();
        assert_eq!(keys.create_next_epoch().unwrap(), 2);
        let (key, new) = keys.new_model_key("m2").unwrap();
        assert_eq!(new.epoch, 2);
        drop(keys);
        fs::remove_file(dir.path().join("epoch-1.key")).unwrap();
        let keys = KeyHierarchy::open_or_init(dir.path()).unwrap();
        assert!(matches!(
            keys.unwrap_model_key("m1", &old),
            Err(KeyError::EpochDestroyed(1))
        ));
        let again = keys.unwrap_model_key("m2", &new).unwrap();
        assert_eq!(again.expose_secret(), key.expose_secret());
    }

    #[test]
    fn a_key_store_that_lost_every_epoch_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(KeyHierarchy::open_or_init(dir.path()).unwrap());
        fs::remove_file(dir.path().join("epoch-1.key")).unwrap();
        assert!(matches!(
            KeyHierarchy::open_or_init(dir.path()),
            Err(KeyError::NoEpoch(_))
        ));
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        drop(KeyHierarchy::open_or_init(dir.path()).unwrap());
        fs::write(dir.path().join("root.key"), b"garbage").unwrap();
        assert!(matches!(
            KeyHierarchy::open_or_init(dir.path()),
            Err(KeyError::BadKeyFile(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(KeyHierarchy::open_or_init(dir.path()).unwrap());
        for name in ["root.key", "epoch-1.key"] {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name} is readable by others");
        }
    }
}
