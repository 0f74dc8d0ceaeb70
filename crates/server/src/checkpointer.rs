//! The log key and the checkpointer: signs C2SP checkpoints of the audit log, periodically
//! when the log has grown and on demand, and never one inconsistent with what it signed before.
//!
//! The log key (Ed25519) is created at initialisation in the key store (`audit-log.key`, mode
//! 0600, written whole), like every other key never in the database. Its key name is the log's
//! origin, fixed with the key.
//!
//! Before signing size n with root r, the checkpointer checks r against the last checkpoint it
//! signed, from two places: the database's checkpoint table and a copy kept beside the key
//! (`audit-log.checkpoint`). The copy matters: a database restored from an older backup brings
//! its own older checkpoint table along, and would otherwise look consistent. For each one
//! (size m, root r_m): m <= n, and the database's consistency proof from m to n must verify
//! against r_m and r (RFC 9162). It also rebuilds the leaf hash of every entry added since m
//! from the entry's bytes and compares it with the stored leaf, so it never signs a leaf whose
//! entry was edited before signing. Any failure refuses, logs at error level, and is shown by
//! the API until a later attempt succeeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::merkle::{self, Hash};
use crypto::sign::SigningKey;
use store::Store;
use zeroize::Zeroizing;

use crate::App;

const KEY_FILE: &str = "audit-log.key";
const LAST_FILE: &str = "audit-log.checkpoint";
/// `audit-log.key`: this magic, a version byte, the key name's length (u16 BE) and bytes, and
/// the PKCS#8 v2 document.
const KEY_MAGIC: &[u8] = b"custody-audit-log-key";
const KEY_VERSION: u8 = 1;
/// Entries read per query when re-hashing new entries before signing.
const VERIFY_PAGE: u64 = 10_000;

/// The log's signing key and name. No `Debug`: it holds a private key.
pub(crate) struct LogKey {
    key: SigningKey,
    name: String,
}

impl LogKey {
    /// Loads the log key from the key store, or creates it there on first start. `origin` is
    /// the configured origin, if any: it names a new key, and must match an existing one.
    pub(crate) fn open_or_create(key_dir: &Path, origin: Option<&str>) -> anyhow::Result<LogKey> {
        let path = key_dir.join(KEY_FILE);
        if path.exists() {
            let key = LogKey::read(&path)?;
            if let Some(origin) = origin
                && origin != key.name
            {
                bail!(
                    "the audit log key {} signs for origin {:?}, but the configuration says {origin:?}: \
                     a log's origin cannot change (auditors verify with it)",
                    path.display(),
                    key.name
                );
            }
            return Ok(key);
        }
        let name = match origin {
            Some(o) => o.to_owned(),
            None => format!("custody/audit/{}", crypto::token::random_id()?),
        };
        if !checkpoint::valid_key_name(&name) {
            bail!("invalid audit origin {name:?}: no spaces, '+' or control characters");
        }
        let (key, pkcs8) = SigningKey::generate()?;
        let name_len = u16::try_from(name.len()).context("audit origin too long")?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(64 + name.len() + pkcs8.len()));
        bytes.extend_from_slice(KEY_MAGIC);
        bytes.push(KEY_VERSION);
        bytes.extend_from_slice(&name_len.to_be_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&pkcs8);
        write_new_file(&path, &bytes)?;
        tracing::info!(origin = %name, "created the audit log key");
        Ok(LogKey { key, name })
    }

    fn read(path: &Path) -> anyhow::Result<LogKey> {
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let bad = || format!("{} is not an audit log key file (damaged?)", path.display());
        let rest = bytes
            .strip_prefix(KEY_MAGIC)
            .and_then(|r| r.split_first())
            .with_context(bad)?;
        let (&version, rest) = rest;
        if version != KEY_VERSION {
            bail!(
                "{}: unsupported audit log key version {version}",
                path.display()
            );
        }
        let (len, rest) = rest.split_at_checked(2).with_context(bad)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let (name, pkcs8) = rest.split_at_checked(len).with_context(bad)?;
        let name = std::str::from_utf8(name).ok().with_context(bad)?.to_owned();
        if !checkpoint::valid_key_name(&name) {
            bail!(bad());
        }
        let key = SigningKey::from_pkcs8(pkcs8).with_context(bad)?;
        Ok(LogKey { key, name })
    }

    pub(crate) fn verifier(&self) -> anyhow::Result<VerifierKey> {
        Ok(VerifierKey::new(&self.name, self.key.public_key())?)
    }
}

/// Creates `path` with `bytes`, whole: a temporary file (0600, fsync) linked into place, so a
/// crash leaves either no file or the whole one, and an existing file is never replaced.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_synced(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| format!("creating {}", path.display()))?;
    sync_dir(path)
}

/// Replaces `path` with `bytes`, whole (temporary file, fsync, rename, fsync of the directory).
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// A checkpoint the log signed.
pub(crate) struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
    /// False when the log had not grown: the last checkpoint is returned again.
    pub new: bool,
}

pub(crate) struct Checkpointer {
    key: LogKey,
    last_path: PathBuf,
    pub interval: Duration,
    /// One signer at a time.
    signing: tokio::sync::Mutex<()>,
    /// Why the last attempt refused to sign, until one succeeds.
    refusal: std::sync::Mutex<Option<String>>,
}

impl Checkpointer {
    pub(crate) fn new(key: LogKey, key_dir: &Path, interval: Duration) -> Checkpointer {
        Checkpointer {
            key,
            last_path: key_dir.join(LAST_FILE),
            interval,
            signing: tokio::sync::Mutex::new(()),
            refusal: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn origin(&self) -> &str {
        &self.key.name
    }

    pub(crate) fn verifier(&self) -> anyhow::Result<VerifierKey> {
        self.key.verifier()
    }

    /// Why the last attempt to sign was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_refusal(&self, why: Option<String>) {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Opens a note this log signed (it must verify under the log key, for the log's origin).
    fn open(&self, note: &str, from: &str) -> anyhow::Result<Checkpoint> {
        let cp = checkpoint::open(note, &self.key.name, &self.key.key.public_key()).with_context(
            || format!("the last checkpoint kept in the {from} does not verify under the log key"),
        )?;
        if cp.origin != self.key.name {
            bail!(
                "the last checkpoint kept in the {from} is for another log ({:?})",
                cp.origin
            );
        }
        Ok(cp)
    }

    /// The last checkpoint signed, from the copy beside the key.
    fn last_signed(&self) -> anyhow::Result<Option<(Checkpoint, String)>> {
        match std::fs::read_to_string(&self.last_path) {
            Ok(note) => Ok(Some((self.open(&note, "key store")?, note))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.last_path.display())),
        }
    }

    /// The size of the last checkpoint signed (0 before the first).
    pub(crate) fn last_signed_size(&self) -> anyhow::Result<u64> {
        Ok(self.last_signed()?.map_or(0, |(cp, _)| cp.size))
    }

    /// Signs a checkpoint of the log as it is now, or returns the last one when the log has not
    /// grown. Refuses (with the reason, also logged at error level) when the log is not
    /// consistent with the last checkpoint signed.
    pub(crate) async fn sign(&self, store: &Store) -> anyhow::Result<Signed> {
        let _one = self.signing.lock().await;
        match self.try_sign(store).await {
            Ok(signed) => {
                self.set_refusal(None);
                Ok(signed)
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(
                    reason = %why,
                    "REFUSING TO SIGN an audit checkpoint: the log is not consistent with the last checkpoint signed"
                );
                self.set_refusal(Some(why));
                Err(e)
            }
        }
    }

    async fn try_sign(&self, store: &Store) -> anyhow::Result<Signed> {
        let (size, root) = store.audit_head().await?;
        let kept = self.last_signed()?;
        let in_db = match store.latest_checkpoint().await? {
            Some(stored) => Some(self.open(&stored.note, "database")?),
            None => None,
        };
        // Every checkpoint signed before must be a prefix of what is signed now; before the
        // first one, the empty log is (so every entry is re-hashed once).
        let mut anchors: Vec<(Checkpoint, &str)> = Vec::new();
        if let Some((cp, _)) = &kept {
            anchors.push((cp.clone(), "key store"));
        }
        if let Some(cp) = in_db
            && anchors.iter().all(|(a, _)| *a != cp)
        {
            anchors.push((cp, "database"));
        }
        if anchors.is_empty() {
            let empty = Checkpoint {
                origin: self.key.name.clone(),
                size: 0,
                root: merkle::empty_root(),
            };
            anchors.push((empty, "empty log"));
        }
        for (cp, kept_in) in &anchors {
            self.check_consistent(store, cp, size, &root, kept_in)
                .await?;
        }
        if let Some((cp, note)) = kept
            && cp.size == size
        {
            // Nothing new; make sure the database has it too (it may have been lost).
            store.save_checkpoint(cp.size, &cp.root, &note).await?;
            return Ok(Signed {
                checkpoint: cp,
                note,
                new: false,
            });
        }
        let cp = Checkpoint {
            origin: self.key.name.clone(),
            size,
            root,
        };
        let note = checkpoint::sign(&cp, &self.key.name, &self.key.key)?;
        // Outside the database first: what was signed is never forgotten by a restore. Servers
        // sharing a key store may sign concurrently: never replace a larger checkpoint.
        let newer_kept = self
            .last_signed()?
            .is_some_and(|(kept, _)| kept.size > size);
        if !newer_kept {
            replace_file(&self.last_path, note.as_bytes())?;
        }
        store.save_checkpoint(size, &root, &note).await?;
        tracing::info!(size, root = %hex::encode(root), "signed an audit checkpoint");
        Ok(Signed {
            checkpoint: cp,
            note,
            new: true,
        })
    }

    /// The log of `size` entries with `root` must extend `cp`, and its entries since `cp` must
    /// hash to the leaves the tree holds.
    async fn check_consistent(
        &self,
        store: &Store,
        cp: &Checkpoint,
        size: u64,
        root: &Hash,
        kept_in: &str,
    ) -> anyhow::Result<()> {
        if cp.size > size {
            bail!(
                "the log has {size} entries but the checkpoint signed last (kept in the {kept_in}) \
                 covers {}: the database was restored from an older copy or entries were removed",
                cp.size
            );
        }
        let proof = store.audit_consistency_proof(cp.size, size).await?;
        if !merkle::verify_consistency(cp.size, size, &cp.root, root, &proof) {
            bail!(
                "the log of {size} entries is not an extension of the checkpoint of size {} signed \
                 last (kept in the {kept_in}): its history was rewritten or the database was replaced",
                cp.size
            );
        }
        let mut from = cp.size;
        while from < size {
            let to = (from + VERIFY_PAGE).min(size);
            let entries = store.audit_entries(from, to).await?;
            let leaves = store.audit_leaf_hashes(from, to).await?;
            if entries.len() != leaves.len() || entries.len() as u64 != to - from {
                bail!("audit entries {from}..{to} are incomplete");
            }
            for ((seq, bytes), leaf) in entries.iter().zip(&leaves) {
                if merkle::leaf_hash(bytes) != *leaf {
                    bail!(
                        "audit entry {seq} differs from the leaf appended for it: the entry was \
                         edited in the database"
                    );
                }
            }
            from = to;
        }
        Ok(())
    }
}

/// Signs a checkpoint every `interval` when the log has grown since the last one.
pub(crate) async fn run(app: Arc<App>) {
    let checkpointer = &app.checkpointer;
    let mut tick = tokio::time::interval(checkpointer.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed = match (
            app.store.audit_size().await,
            checkpointer.last_signed_size(),
        ) {
            (Ok(size), Ok(last)) => size != last,
            (Err(e), _) => {
                tracing::error!(error = %e, "reading the audit log size");
                continue;
            }
            (_, Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "REFUSING TO SIGN an audit checkpoint");
                checkpointer.set_refusal(Some(format!("{e:#}")));
                continue;
            }
        };
        if changed {
            // `sign` logs a refusal itself.
            let _ = checkpointer.sign(&app.store).await;
        }
    }
}
