//! Roots of trust: one per epoch, kept where database backups do not go.
//!
//! A [`RootProvider`] makes a new root for each epoch, wraps and unwraps that epoch's key
//! under it, and destroys it when the epoch is shredded. Two providers:
//!
//! * [`FileRoot`] (the embedded default): `ROOT_DIR/root-N-ATTEMPT.key`, 32 random bytes
//!   behind a versioned header, mode 0600. Destroying overwrites the file and removes it. The
//!   attempt id in the name makes every root unique: a deletion runner that lost its lease and
//!   wakes up late can only ever touch the root it made itself, never its successor's.
//! * [`crate::KmsRoot`]: one AWS KMS key per epoch; the epoch key is sealed with KMS Encrypt.
//!   Destroying schedules the KMS key for deletion (unusable at once, gone after the waiting
//!   period).
//! * [`crate::Pkcs11Root`]: one AES key per epoch on a PKCS#11 token (an HSM); the epoch key is
//!   sealed on the token with AES-GCM. Destroying is C_DestroyObject.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use crypto::SecretKey;
use crypto::wrap::{unwrap_key, wrap_key};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{KeyError, KmsConfig, KmsRoot, Pkcs11Config, Pkcs11Root, epoch_aad, files};

/// Magic and version of a root key file. Frozen. (Version 1 was the single root of layout v1.)
const ROOT_FILE_MAGIC: &[u8; 12] = b"custody-root";
const ROOT_FILE_VERSION: u8 = 2;
const ROOT_FILE_LEN: usize = 12 + 1 + 8 + crypto::KEY_LEN;

/// Which kind of root of trust an epoch uses. Recorded in epoch files and certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootKind {
    File,
    Kms,
    Pkcs11,
}

impl RootKind {
    #[cfg(test)]
    pub(crate) fn code(self) -> u8 {
        match self {
            RootKind::File => 1,
            RootKind::Kms => 2,
            // Never in a layout-v2 file (they predate PKCS#11 roots); from_code refuses it.
            RootKind::Pkcs11 => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<RootKind> {
        match code {
            1 => Some(RootKind::File),
            2 => Some(RootKind::Kms),
            _ => None,
        }
    }

    /// `file`, `aws-kms` or `pkcs11`.
    pub fn as_str(self) -> &'static str {
        match self {
            RootKind::File => "file",
            RootKind::Kms => "aws-kms",
            RootKind::Pkcs11 => "pkcs11",
        }
    }
}

impl fmt::Display for RootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of one epoch's root (not secret): `root-N-ATTEMPT.key`, a KMS key ARN, or an HSM
/// key's label `custody-root-N-ATTEMPT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootRef(String);

impl RootRef {
    /// Non-empty, at most 2048 bytes, printable ASCII without spaces.
    pub fn new(name: &str) -> Option<RootRef> {
        let ok =
            !name.is_empty() && name.len() <= 2048 && name.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| RootRef(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RootRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What destroying a root did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootDestruction {
    /// The root key file was overwritten and removed.
    FileRemoved,
    /// The KMS key is scheduled for deletion on this date (RFC 3339) and unusable until then.
    KmsScheduled { deletion_date: String },
    /// The HSM key was destroyed on the token (C_DestroyObject).
    HsmKeyDestroyed,
    /// Nothing was left to destroy (an earlier call did it, or the root never existed).
    AlreadyGone,
}

impl RootDestruction {
    /// A short, stable description for certificates and logs.
    pub fn describe(&self) -> String {
        match self {
            RootDestruction::FileRemoved => "root key file overwritten and removed".to_owned(),
            RootDestruction::KmsScheduled { deletion_date } => format!(
                "KMS key scheduled for deletion on {deletion_date}; disabled for use meanwhile"
            ),
            RootDestruction::HsmKeyDestroyed => {
                "HSM key destroyed on the token (C_DestroyObject)".to_owned()
            }
            RootDestruction::AlreadyGone => "already destroyed".to_owned(),
        }
    }
}

/// What the root of trust says about a root, asked directly (never a cached answer): the
/// evidence behind a deletion's post-check that the roots it destroyed are really gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootStatus {
    /// Missing (no such file, or KMS does not know the key) or scheduled for deletion, with
    /// the date KMS reports.
    Gone { deletion_date: Option<String> },
    /// Still there, and why that matters: a file that exists, a KMS key enabled or disabled
    /// (a disabled key, its deletion cancelled, can be enabled again).
    Present(String),
}

/// A root of trust that makes, uses and destroys one root per epoch.
///
/// Contract: [`RootProvider::unwrap`] answers [`KeyError::RootGone`] only when the root is
/// definitely missing or destroyed (never for a transient failure); `destroy_*` are
/// idempotent.
#[async_trait]
pub trait RootProvider: Send + Sync {
    fn kind(&self) -> RootKind;
    /// Where the roots live, without secrets: for logs and certificates.
    fn describe(&self) -> String;
    /// Makes a fresh root for `epoch` by creation attempt `attempt` (lowercase hex); never
    /// reuses or overwrites one.
    async fn create_root(&self, epoch: u64, attempt: &str) -> Result<RootRef, KeyError>;
    /// Wraps `epoch`'s key under `root`.
    async fn wrap(&self, root: &RootRef, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError>;
    /// Opens what [`RootProvider::wrap`] made.
    async fn unwrap(
        &self,
        root: &RootRef,
        epoch: u64,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError>;
    /// Destroys `root`.
    async fn destroy_root(&self, root: &RootRef, epoch: u64) -> Result<RootDestruction, KeyError>;
    /// Whether `root` is really gone, asked of the root of trust itself. An answer that cannot
    /// be had is an error, never "gone".
    async fn root_status(&self, root: &RootRef, epoch: u64) -> Result<RootStatus, KeyError>;
    /// Destroys whatever root attempt `attempt` of `epoch` may have made when its name was
    /// never recorded (a crash during creation). Files: the root file by its name. KMS:
    /// nothing can be found; such a key never wrapped anything.
    async fn destroy_unrecorded(&self, epoch: u64, attempt: &str) -> Result<(), KeyError>;
}

/// Root key files in one directory, one per epoch.
pub struct FileRoot {
    dir: PathBuf,
}

impl FileRoot {
    /// Uses (and creates, mode 0700) `dir`. Keep it out of database backups.
    pub fn open(dir: &Path) -> Result<FileRoot, KeyError> {
        files::create_private_dir(dir)?;
        Ok(FileRoot {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn name(epoch: u64, attempt: &str) -> Result<String, KeyError> {
        if !valid_attempt(attempt) {
            return Err(KeyError::Provider(format!(
                "invalid creation attempt id {attempt:?}"
            )));
        }
        Ok(format!("root-{epoch}-{attempt}.key"))
    }

    /// The path of `root`, which must be the file name of one of `epoch`'s roots:
    /// `root-N-ATTEMPT.key`, or `root-N.key` as key stores before the epoch ledger named them.
    fn path(&self, root: &RootRef, epoch: u64) -> Result<PathBuf, KeyError> {
        let name = root.as_str();
        let ours = name == format!("root-{epoch}.key")
            || name
                .strip_prefix(&format!("root-{epoch}-"))
                .and_then(|rest| rest.strip_suffix(".key"))
                .is_some_and(valid_attempt);
        if !ours {
            return Err(KeyError::Provider(format!(
                "root name {root} does not belong to epoch {epoch}"
            )));
        }
        Ok(self.dir.join(name))
    }

    fn read(&self, root: &RootRef, epoch: u64) -> Result<SecretKey, KeyError> {
        let path = self.path(root, epoch)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::RootGone {
                    epoch,
                    root: path.display().to_string(),
                });
            }
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let header = ROOT_FILE_MAGIC.len() + 1 + 8;
        let ok = bytes.len() == ROOT_FILE_LEN
            && bytes.starts_with(ROOT_FILE_MAGIC)
            && bytes[ROOT_FILE_MAGIC.len()] == ROOT_FILE_VERSION
            && bytes[ROOT_FILE_MAGIC.len() + 1..header] == epoch.to_be_bytes();
        if !ok {
            return Err(KeyError::BadKeyFile(path));
        }
        Ok(SecretKey::from_slice(&bytes[header..])?)
    }
}

#[async_trait]
impl RootProvider for FileRoot {
    fn kind(&self) -> RootKind {
        RootKind::File
    }

    fn describe(&self) -> String {
        format!("root key files in {}", self.dir.display())
    }

    async fn create_root(&self, epoch: u64, attempt: &str) -> Result<RootRef, KeyError> {
        let name = Self::name(epoch, attempt)?;
        let path = self.dir.join(&name);
        if path.exists() {
            return Err(KeyError::RootExists(path.display().to_string()));
        }
        let key = SecretKey::generate()?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(ROOT_FILE_LEN));
        bytes.extend_from_slice(ROOT_FILE_MAGIC);
        bytes.push(ROOT_FILE_VERSION);
        bytes.extend_from_slice(&epoch.to_be_bytes());
        bytes.extend_from_slice(key.expose_secret());
        files::create_secret_file(&path, &bytes).map_err(|e| match e {
            KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                KeyError::RootExists(path.display().to_string())
            }
            other => other,
        })?;
        RootRef::new(&name).ok_or_else(|| KeyError::Provider("invalid root name".into()))
    }

    async fn wrap(&self, root: &RootRef, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        let root_key = self.read(root, epoch)?;
        Ok(wrap_key(&root_key, key, &epoch_aad(epoch))?)
    }

    async fn unwrap(
        &self,
        root: &RootRef,
        epoch: u64,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError> {
        let root_key = self.read(root, epoch)?;
        // A root that exists but does not open the epoch key is not "gone": it is the wrong
        // root (another installation's directory) or damage. Either way, refuse.
        unwrap_key(&root_key, wrapped, &epoch_aad(epoch)).map_err(|_| {
            KeyError::Provider(format!(
                "root {} does not open epoch {epoch}'s key: wrong root directory or damage",
                self.dir.join(root.as_str()).display()
            ))
        })
    }

    async fn destroy_root(&self, root: &RootRef, epoch: u64) -> Result<RootDestruction, KeyError> {
        let path = self.path(root, epoch)?;
        Ok(if files::overwrite_and_remove(&path)? {
            RootDestruction::FileRemoved
        } else {
            RootDestruction::AlreadyGone
        })
    }

    async fn root_status(&self, root: &RootRef, epoch: u64) -> Result<RootStatus, KeyError> {
        let path = self.path(root, epoch)?;
        // Not following links: a link left in the root's place is not "gone".
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(RootStatus::Present(format!(
                "root key file {} exists",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RootStatus::Gone {
                deletion_date: None,
            }),
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    async fn destroy_unrecorded(&self, epoch: u64, attempt: &str) -> Result<(), KeyError> {
        files::overwrite_and_remove(&self.dir.join(Self::name(epoch, attempt)?))?;
        Ok(())
    }
}

/// An attempt id: 8 to 64 lowercase hex characters (it becomes part of a file name).
pub(crate) fn valid_attempt(attempt: &str) -> bool {
    (8..=64).contains(&attempt.len())
        && attempt
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The server configuration's `[root]` table.
///
/// ```toml
/// [root]
/// kind = "file"
/// dir = "/srv/custody-root"   # default: DATA.root beside the data directory; never in backups
/// ```
///
/// ```toml
/// [root]
/// kind = "kms"
/// region = "eu-west-1"
/// # endpoint_url, access_key_id, secret_access_key, pending_window_days (7 to 30)
/// ```
///
/// ```toml
/// [root]
/// kind = "pkcs11"
/// module = "/usr/lib/softhsm/libsofthsm2.so"
/// token_label = "custody"        # or slot = N
/// pin_file = "/etc/custody/pin"  # or pin_env = "CUSTODY_HSM_PIN"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RootConfig {
    File {
        #[serde(default)]
        dir: Option<PathBuf>,
    },
    Kms(KmsConfig),
    Pkcs11(Pkcs11Config),
}

impl RootConfig {
    /// Builds the provider; `default_dir` is used for a file root without `dir`. A KMS root
    /// makes no call here; its first use (opening the key store at start, which unwraps the
    /// current epoch key) is what stops a start with bad credentials or endpoint. A PKCS#11
    /// root logs in to its token here: a wrong PIN stops the start.
    pub async fn provider(&self, default_dir: &Path) -> Result<Arc<dyn RootProvider>, KeyError> {
        Ok(match self {
            RootConfig::File { dir } => {
                Arc::new(FileRoot::open(dir.as_deref().unwrap_or(default_dir))?)
            }
            RootConfig::Kms(config) => Arc::new(KmsRoot::connect(config).await?),
            RootConfig::Pkcs11(config) => Arc::new(Pkcs11Root::connect(config).await?),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn root_refs_are_checked() {
        assert!(RootRef::new("root-1.key").is_some());
        assert!(RootRef::new("").is_none());
        assert!(RootRef::new("a b").is_none());
        assert!(RootRef::new("a\nb").is_none());
        assert!(RootRef::new(&"x".repeat(2049)).is_none());
    }

    #[tokio::test]
    async fn a_file_root_refuses_names_of_other_epochs_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = FileRoot::open(dir.path()).unwrap();
        let r1 = root.create_root(1, "0123abcd").await.unwrap();
        assert_eq!(r1.as_str(), "root-1-0123abcd.key");
        let key = SecretKey::generate().unwrap();
        assert!(root.wrap(&r1, 2, &key).await.is_err());
        for sneaky in [
            "../root-1.key",
            "root-1-../x.key",
            "root-1-0123ABCD.key",
            "root-1-.key",
        ] {
            let sneaky = RootRef::new(sneaky).unwrap();
            assert!(root.wrap(&sneaky, 1, &key).await.is_err(), "{sneaky}");
        }
        assert!(root.create_root(1, "../../x").await.is_err());
        // Creating the same attempt's root twice is refused, never overwritten.
        assert!(matches!(
            root.create_root(1, "0123abcd").await,
            Err(KeyError::RootExists(_))
        ));
    }

    #[test]
    fn root_config_parses_both_kinds_and_refuses_unknown_fields() {
        let file: RootConfig = toml::from_str("kind = \"file\"\ndir = \"/srv/root\"").unwrap();
        assert!(matches!(file, RootConfig::File { dir: Some(d) } if d == Path::new("/srv/root")));
        let file: RootConfig = toml::from_str("kind = \"file\"").unwrap();
        assert!(matches!(file, RootConfig::File { dir: None }));
        let kms: RootConfig = toml::from_str(
            "kind = \"kms\"\nregion = \"eu-west-1\"\naccess_key_id = \"AKIAX\"\n\
             secret_access_key = \"very-secret-value\"",
        )
        .unwrap();
        let shown = format!("{kms:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("AKIAX"), "{shown}");
        assert!(toml::from_str::<RootConfig>("kind = \"file\"\npath = \"/x\"").is_err());
        assert!(
            toml::from_str::<RootConfig>("kind = \"kms\"\nregion = \"r\"\nendpoint = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<RootConfig>("kind = \"hsm\"").is_err());
        let hsm: RootConfig = toml::from_str(
            "kind = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
             token_label = \"custody\"\npin_file = \"/etc/custody/pin\"",
        )
        .unwrap();
        assert!(
            matches!(&hsm, RootConfig::Pkcs11(c) if c.token_label.as_deref() == Some("custody"))
        );
        assert!(
            toml::from_str::<RootConfig>("kind = \"pkcs11\"\nmodule = \"/m.so\"\npin = \"1234\"")
                .is_err(),
            "a PIN in the configuration itself is refused"
        );
    }
}
