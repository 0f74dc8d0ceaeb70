//! The log key and the checkpointer: signs C2SP checkpoints of the audit log, periodically
//! when the log has grown and on demand, and never one inconsistent with what it signed before.
//!
//! The log key (Ed25519) is part of the service identity (`service_identity.rs`): made once,
//! never in the database, the same on every instance. Its key name is the log's origin, fixed
//! with the key.
//!
//! Before signing size n with root r, the checkpointer checks r against the last checkpoint
//! signed, from two places: the database's checkpoint table and a copy kept outside the
//! database and outside the data directory ([`Anchor`]): beside the root key files when the
//! root of trust is a directory, in the bucket (the blob store) when it is KMS. The copy
//! matters: a database (or a whole data directory) restored from an older backup brings its
//! own older checkpoint table along, and would otherwise look consistent. Every instance reads
//! and writes the same copy, and one signs at a time (a database lock), so the copy only ever
//! grows. For each one (size m, root r_m): m <= n, and the database's consistency proof from m
//! to n must verify against r_m and r (RFC 9162). It also rebuilds the leaf hash of every
//! entry added since m from the entry's bytes and compares it with the stored leaf, so it
//! never signs a leaf whose entry was edited before signing. Any failure refuses, logs at
//! error level, and is shown by the API until a later attempt succeeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::merkle::{self, Hash};
use crypto::sign::SigningKey;
use store::Store;
use zeroize::Zeroizing;

use crate::state::App;

pub(crate) const KEY_FILE: &str = "audit-log.key";
/// The copy of the last checkpoint signed, beside root key files (and, before the copy moved
/// there, in the key store).
pub(crate) const LAST_FILE: &str = "audit-log.checkpoint";
/// The copy's two slots in the blob store (opaque names, like every storage key): written in
/// turn, so one always holds the last checkpoint while the other is replaced.
const LAST_SLOTS: [&str; 2] = [
    "a0d17c4ec9f0000000000000000000a1",
    "a0d17c4ec9f0000000000000000000a2",
];
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
    /// Makes a new log key at `path` (which must not exist). `origin` names it; by default
    /// `custody/audit/<random id>`.
    pub(crate) fn create(path: &Path, origin: Option<&str>) -> anyhow::Result<LogKey> {
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
        write_new_file(path, &bytes)?;
        tracing::info!(origin = %name, "created the audit log key");
        Ok(LogKey { key, name })
    }

    /// Loads the log key at `path`. `origin`, when configured, must be the key's: a log's
    /// origin cannot change (auditors verify with it).
    pub(crate) fn load(path: &Path, origin: Option<&str>) -> anyhow::Result<LogKey> {
        let key = LogKey::read(path)?;
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
        Ok(key)
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
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

/// Where the copy of the last checkpoint signed lives: outside the database and outside the
/// data directory, shared by every instance. No `Debug`: the blob store is a trait object.
pub(crate) enum Anchor {
    /// `DIR/audit-log.checkpoint`: the root key files' directory (file roots).
    Dir(PathBuf),
    /// Two slots in the blob store (KMS roots: the bucket is the one other shared store).
    Blob(Arc<dyn blobstore::Backend>),
}

impl Anchor {
    /// A short description for the start-up log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Anchor::Dir(dir) => dir.join(LAST_FILE).display().to_string(),
            Anchor::Blob(backend) => format!("the {} blob store", backend.kind()),
        }
    }

    /// Every note kept, with its slot, unchecked.
    async fn read(&self) -> anyhow::Result<Vec<(usize, String)>> {
        match self {
            Anchor::Dir(dir) => {
                let path = dir.join(LAST_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(note) => Ok(vec![(0, note)]),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            Anchor::Blob(backend) => {
                let mut notes = Vec::new();
                for (index, slot) in LAST_SLOTS.iter().enumerate() {
                    let Some(len) = backend.size(slot).await? else {
                        continue;
                    };
                    if len > 64 << 10 {
                        bail!("the checkpoint copy {slot} in the blob store is too large");
                    }
                    let bytes = backend.read_range(slot, 0, len).await?;
                    let note = String::from_utf8(bytes.to_vec())
                        .context("the checkpoint copy in the blob store is not text")?;
                    notes.push((index, note));
                }
                Ok(notes)
            }
        }
    }

    /// Keeps `note` as the last checkpoint signed. `replace`: which blob slot to overwrite
    /// (the one not holding the newest note).
    async fn write(&self, note: &str, replace: usize) -> anyhow::Result<()> {
        match self {
            Anchor::Dir(dir) => replace_file(&dir.join(LAST_FILE), note.as_bytes()),
            Anchor::Blob(backend) => {
                let slot = LAST_SLOTS[replace % LAST_SLOTS.len()];
                // Deleting first leaves one version per slot on a versioned bucket.
                backend.delete(slot).await?;
                let upload = backend.create_upload(slot).await?;
                let part = backend
                    .upload_part(slot, &upload, 1, bytes::Bytes::from(note.to_owned()))
                    .await?;
                backend.complete_upload(slot, &upload, vec![part]).await?;
                Ok(())
            }
        }
    }
}

pub(crate) struct Checkpointer {
    key: LogKey,
    anchor: Anchor,
    pub interval: Duration,
    /// One signer at a time in this process (the database orders instances).
    signing: tokio::sync::Mutex<()>,
    /// Why the last attempt here refused to sign, until one succeeds.
    refusal: std::sync::Mutex<Option<String>>,
}

impl Checkpointer {
    /// `legacy_copy`: where earlier versions kept the copy (the key store); it moves to the
    /// anchor when it is newer than what the anchor holds.
    pub(crate) async fn open(
        key: LogKey,
        anchor: Anchor,
        legacy_copy: Option<&Path>,
        interval: Duration,
    ) -> anyhow::Result<Checkpointer> {
        let checkpointer = Checkpointer {
            key,
            anchor,
            interval,
            signing: tokio::sync::Mutex::new(()),
            refusal: std::sync::Mutex::new(None),
        };
        if let Some(path) = legacy_copy
            && path.exists()
        {
            let note = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let old = checkpointer.open_note(&note, "old key store copy")?;
            let kept = checkpointer.last_signed().await?;
            if kept.as_ref().is_none_or(|(cp, _, _)| cp.size < old.size) {
                let slot = kept.map_or(0, |(_, _, slot)| slot + 1);
                checkpointer.anchor.write(&note, slot).await?;
            }
            crate::checkpointer::remove_file(path)?;
            tracing::info!(
                from = %path.display(),
                to = %checkpointer.anchor.describe(),
                "moved the copy of the last audit checkpoint out of the key store"
            );
        }
        Ok(checkpointer)
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
    fn open_note(&self, note: &str, from: &str) -> anyhow::Result<Checkpoint> {
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

    /// The last checkpoint signed, from the copy outside the database, with the slot index it
    /// was read from.
    async fn last_signed(&self) -> anyhow::Result<Option<(Checkpoint, String, usize)>> {
        let mut newest: Option<(Checkpoint, String, usize)> = None;
        for (slot, note) in self.anchor.read().await? {
            let cp = self.open_note(&note, "copy outside the database")?;
            if newest.as_ref().is_none_or(|(n, _, _)| n.size < cp.size) {
                newest = Some((cp, note, slot));
            }
        }
        Ok(newest)
    }

    /// The size of the last checkpoint signed (0 before the first).
    pub(crate) async fn last_signed_size(&self) -> anyhow::Result<u64> {
        Ok(self.last_signed().await?.map_or(0, |(cp, _, _)| cp.size))
    }

    /// Signs a checkpoint of the log as it is now, or returns the last one when the log has not
    /// grown. Refuses (with the reason, also logged at error level) when the log is not
    /// consistent with the last checkpoint signed.
    pub(crate) async fn sign(&self, store: &Store) -> anyhow::Result<Signed> {
        let _one = self.signing.lock().await;
        // One signer across every instance: the copy outside the database only grows.
        let _section = store
            .signing_section()
            .await
            .context("waiting for the signing lock")?;
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
        let kept = self.last_signed().await?;
        let in_db = match store.latest_checkpoint().await? {
            Some(stored) => Some(self.open_note(&stored.note, "database")?),
            None => None,
        };
        // Every checkpoint signed before must be a prefix of what is signed now; before the
        // first one, the empty log is (so every entry is re-hashed once).
        let mut anchors: Vec<(Checkpoint, &str)> = Vec::new();
        if let Some((cp, _, _)) = &kept {
            anchors.push((cp.clone(), "copy outside the database"));
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
        if let Some((cp, note, _)) = &kept
            && cp.size == size
        {
            let (cp, note) = (cp.clone(), note.clone());
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
        // Outside the database first: what was signed is never forgotten by a restore. The
        // slot not holding the newest copy is replaced, so a crash leaves that one intact.
        let slot = kept.map_or(0, |(_, _, slot)| slot + 1);
        self.anchor.write(&note, slot).await?;
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
            let entries = store.audit_entries_tagged(from, to).await?;
            let leaves = store.audit_leaf_hashes(from, to).await?;
            if entries.len() != leaves.len() || entries.len() as u64 != to - from {
                bail!("audit entries {from}..{to} are incomplete");
            }
            for (entry, leaf) in entries.iter().zip(&leaves) {
                if audit::leaf::entry_leaf(&entry.bytes, &entry.tag) != *leaf {
                    bail!(
                        "audit entry {} differs from the leaf appended for it: the entry (or its \
                         vendor tag) was edited in the database",
                        entry.seq
                    );
                }
            }
            from = to;
        }
        Ok(())
    }
}

/// The checkpointer's share of the background work (under the `checkpoints` lease, so one
/// instance does it): signs a checkpoint every `interval` when the log has grown since the
/// last one. Never returns.
pub(crate) async fn work(app: Arc<App>, _fence: store::Fence) {
    let checkpointer = &app.checkpointer;
    let mut tick = tokio::time::interval(checkpointer.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed = match (
            app.store.audit_size().await,
            checkpointer.last_signed_size().await,
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
        if !app.witnesses.is_empty() {
            witness_latest(&app).await;
        }
    }
}

/// Submits the latest signed checkpoint to every witness that has not cosigned it (each
/// refusal is logged and kept by `round`); the next tick tries again.
async fn witness_latest(app: &App) {
    let latest = match app.store.latest_checkpoint().await {
        Ok(Some(latest)) => latest,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "reading the latest checkpoint for the witnesses");
            return;
        }
    };
    let checkpoint = Checkpoint {
        origin: app.checkpointer.origin().to_owned(),
        size: latest.size,
        root: latest.root,
    };
    if let Err(e) = app
        .witnesses
        .round(&app.store, &checkpoint, &latest.note)
        .await
    {
        tracing::error!(error = %format!("{e:#}"), "witnessing the latest checkpoint");
    }
}

pub(crate) fn remove_file(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    sync_dir(path)
}
