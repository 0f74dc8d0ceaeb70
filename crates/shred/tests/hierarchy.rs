//! The key hierarchy on both roots of trust: root key files, and AWS KMS served by moto.
//!
//! Every test runs twice (`file_*` and `kms_*`). Crashes are simulated by a provider that
//! fails at a chosen call (the hierarchy stops where a crash would have stopped it) or by
//! leaving the files a crash leaves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use crypto::SecretKey;
use shred::{
    FileRoot, KeyError, KeyHierarchy, KmsConfig, KmsRoot, KmsSecret, RootDestruction, RootKind,
    RootProvider, RootRef, WrappedModelKey,
};
use testkit::MotoServer;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Kms,
}

/// A key store directory and a root of trust, as a server would have them.
struct Setup {
    kind: Kind,
    _tmp: tempfile::TempDir,
    keys: PathBuf,
    roots: PathBuf,
}

fn kms_config() -> KmsConfig {
    let moto = MotoServer::shared().unwrap();
    let mut config = KmsConfig::new("us-east-1");
    config.endpoint_url = Some(moto.url().to_owned());
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some(KmsSecret::new("test"));
    config
}

impl Setup {
    fn new(kind: Kind) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("data/keys");
        let roots = tmp.path().join("root");
        Setup {
            kind,
            _tmp: tmp,
            keys,
            roots,
        }
    }

    async fn provider(&self) -> Arc<dyn RootProvider> {
        match self.kind {
            Kind::File => Arc::new(FileRoot::open(&self.roots).unwrap()),
            Kind::Kms => Arc::new(KmsRoot::connect(&kms_config()).await.unwrap()),
        }
    }

    async fn open(&self) -> Result<KeyHierarchy, KeyError> {
        KeyHierarchy::open_or_init(&self.keys, self.provider().await).await
    }

    /// A copy of the key store (and, for files, of the root directory): a backup.
    fn backup(&self) -> Setup {
        let copy = Setup::new(self.kind);
        copy_dir(&self.keys, &copy.keys);
        if self.roots.exists() {
            copy_dir(&self.roots, &copy.roots);
        }
        copy
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn same(a: &SecretKey, b: &SecretKey) -> bool {
    a.expose_secret() == b.expose_secret()
}

/// Where [`Failing`] stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailAt {
    /// After the intent file, before any root exists.
    CreateRoot,
    /// After the root was made, before its name is returned (so it is never recorded).
    AfterCreateRoot,
    /// After the root was made and recorded, before the epoch key is wrapped.
    Wrap,
}

/// Delegates to a real provider, failing once at `at`.
struct Failing {
    inner: Arc<dyn RootProvider>,
    at: FailAt,
    armed: AtomicBool,
}

impl Failing {
    fn fire(&self, at: FailAt) -> Result<(), KeyError> {
        if self.at == at && self.armed.swap(false, Ordering::SeqCst) {
            return Err(KeyError::Provider("simulated crash".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl RootProvider for Failing {
    fn kind(&self) -> RootKind {
        self.inner.kind()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn create_root(&self, epoch: u64) -> Result<RootRef, KeyError> {
        self.fire(FailAt::CreateRoot)?;
        let root = self.inner.create_root(epoch).await?;
        self.fire(FailAt::AfterCreateRoot)?;
        Ok(root)
    }
    async fn wrap(&self, root: &RootRef, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        self.fire(FailAt::Wrap)?;
        self.inner.wrap(root, epoch, key).await
    }
    async fn unwrap(
        &self,
        root: &RootRef,
        epoch: u64,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError> {
        self.inner.unwrap(root, epoch, wrapped).await
    }
    async fn destroy_root(&self, root: &RootRef, epoch: u64) -> Result<RootDestruction, KeyError> {
        self.inner.destroy_root(root, epoch).await
    }
    async fn destroy_unrecorded(&self, epoch: u64) -> Result<(), KeyError> {
        self.inner.destroy_unrecorded(epoch).await
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[tokio::test] async fn $name() { super::$name(super::Kind::File).await })*
        }
        mod kms {
            $(#[tokio::test] async fn $name() { super::$name(super::Kind::Kms).await })*
        }
    };
}

both!(
    model_keys_round_trip_across_reopening,
    a_wrapped_key_opens_only_for_its_model_and_epoch,
    shredding_makes_a_backup_taken_before_unreadable,
    a_backup_epoch_file_put_back_resurrects_nothing,
    crash_before_any_root_leaves_the_epoch_unchanged,
    crash_after_an_unrecorded_root_discards_it,
    crash_after_the_root_was_recorded_discards_it,
    crash_after_the_epoch_file_keeps_the_epoch,
    crash_between_rotation_and_rewrap_resumes,
    crash_during_destroy_is_finished_by_destroying_again,
    a_missing_current_root_is_refused_not_replaced,
    the_current_epoch_cannot_be_destroyed,
    rotation_waits_for_model_creations_under_the_old_epoch,
);

async fn model_keys_round_trip_across_reopening(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    let (key, wrapped) = keys.new_model_key("m1").unwrap();
    assert_eq!(wrapped.epoch, 1);
    drop(keys);
    let keys = setup.open().await.unwrap();
    assert!(same(&keys.unwrap_model_key("m1", &wrapped).unwrap(), &key));
    let info = keys.epoch_info(1).unwrap();
    assert!(info.usable);
    match kind {
        Kind::File => {
            assert_eq!(info.root_kind, RootKind::File);
            assert_eq!(info.root.as_str(), "root-1.key");
            assert_eq!(names(&setup.roots), vec!["root-1.key"]);
        }
        Kind::Kms => {
            assert_eq!(info.root_kind, RootKind::Kms);
            assert!(
                info.root.as_str().starts_with("arn:aws:kms:us-east-1:"),
                "{}",
                info.root
            );
            // Nothing but the marker and the epoch file on disk: no root key file.
            assert!(!setup.roots.exists());
        }
    }
    assert_eq!(names(&setup.keys), vec!["epoch-1.key", "key-store"]);
}

async fn a_wrapped_key_opens_only_for_its_model_and_epoch(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let (_, wrapped) = keys.new_model_key("m1").unwrap();
    assert!(matches!(
        keys.unwrap_model_key("m2", &wrapped),
        Err(KeyError::Unwrap)
    ));
    let mut tampered = wrapped.clone();
    tampered.wrapped[20] ^= 1;
    assert!(keys.unwrap_model_key("m1", &tampered).is_err());
    // Claiming another epoch does not help either.
    assert_eq!(keys.ensure_epoch_after(1).await.unwrap(), 2);
    let moved = WrappedModelKey {
        epoch: 2,
        ..wrapped
    };
    assert!(matches!(
        keys.unwrap_model_key("m1", &moved),
        Err(KeyError::Unwrap)
    ));
}

/// The backup test, at the crate level: a copy of the key store and the root taken
/// before a shred does not open with the root of trust as it is after.
async fn shredding_makes_a_backup_taken_before_unreadable(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let (_, shredded) = keys.new_model_key("shredded").unwrap();
    let (survivor_key, survivor) = keys.new_model_key("survivor").unwrap();
    let before = setup.backup();
    let epoch1 = keys.epoch_info(1).unwrap();

    // The shred: rotate, re-wrap the survivor (the shredded row is deleted), destroy epoch 1.
    let from = keys.current_epoch();
    let to = keys.ensure_epoch_after(from).await.unwrap();
    assert_eq!(to, 2);
    let survivor = keys.rewrap_model_key("survivor", &survivor, to).unwrap();
    assert_eq!(survivor.epoch, 2);
    let destroyed = keys.destroy_epoch(from).await.unwrap();
    assert_eq!(destroyed.epoch, 1);
    assert_eq!(destroyed.root.as_ref(), Some(&epoch1.root));
    assert!(destroyed.epoch_file_removed);
    match (&kind, &destroyed.root_destruction) {
        (Kind::File, RootDestruction::FileRemoved) => {
            assert_eq!(names(&setup.roots), vec!["root-2.key"]);
        }
        (Kind::Kms, RootDestruction::KmsScheduled { deletion_date }) => {
            assert!(deletion_date.starts_with("20"), "{deletion_date}");
        }
        (_, other) => panic!("unexpected destruction {other:?}"),
    }
    assert_eq!(names(&setup.keys), vec!["epoch-2.key", "key-store"]);
    assert!(matches!(
        keys.unwrap_model_key("shredded", &shredded),
        Err(KeyError::EpochDestroyed(1))
    ));
    drop(keys);

    // Live: the survivor still opens after a restart.
    let live = setup.open().await.unwrap();
    assert!(same(
        &live.unwrap_model_key("survivor", &survivor).unwrap(),
        &survivor_key
    ));

    // The backup's key store with the current root of trust: refused outright.
    let err = KeyHierarchy::open(&before.keys, setup.provider().await)
        .await
        .err()
        .expect("a pre-shred key store must not open with the current root");
    assert!(
        matches!(err, KeyError::CurrentRootMissing { epoch: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("refusing"), "{err}");

    // And the root of trust itself no longer opens the backed-up epoch key.
    let epoch_file = std::fs::read(before.keys.join("epoch-1.key")).unwrap();
    let provider = setup.provider().await;
    let wrapped_epoch_key = wrapped_epoch_key(&epoch_file);
    let err = provider
        .unwrap(&epoch1.root, 1, wrapped_epoch_key)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, KeyError::RootGone { epoch: 1, .. }), "{err}");
}

/// The wrapped epoch key inside an epoch file (format in files.rs: magic, version, epoch,
/// kind, u16-prefixed root name, u16-prefixed wrapped key).
fn wrapped_epoch_key(file: &[u8]) -> &[u8] {
    let at = 13 + 1 + 8 + 1;
    let root_len = usize::from(u16::from_be_bytes([file[at], file[at + 1]]));
    let at = at + 2 + root_len;
    let len = usize::from(u16::from_be_bytes([file[at], file[at + 1]]));
    assert_eq!(file.len(), at + 2 + len);
    &file[at + 2..]
}

async fn a_backup_epoch_file_put_back_resurrects_nothing(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let (_, shredded) = keys.new_model_key("shredded").unwrap();
    let before = setup.backup();
    keys.ensure_epoch_after(1).await.unwrap();
    keys.destroy_epoch(1).await.unwrap();
    drop(keys);
    // Someone restores the old epoch file into the live key store.
    std::fs::copy(
        before.keys.join("epoch-1.key"),
        setup.keys.join("epoch-1.key"),
    )
    .unwrap();
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 2);
    assert!(!keys.epoch_info(1).unwrap().usable);
    assert!(matches!(
        keys.unwrap_model_key("shredded", &shredded),
        Err(KeyError::EpochDestroyed(1))
    ));
    // Destroying again cleans it up.
    let again = keys.destroy_epoch(1).await.unwrap();
    assert!(again.epoch_file_removed);
    assert!(!setup.keys.join("epoch-1.key").exists());
}

async fn failing_open(setup: &Setup, at: FailAt) -> (KeyHierarchy, Arc<Failing>) {
    let failing = Arc::new(Failing {
        inner: setup.provider().await,
        at,
        armed: AtomicBool::new(false),
    });
    let keys = KeyHierarchy::open_or_init(&setup.keys, failing.clone())
        .await
        .unwrap();
    failing.armed.store(true, Ordering::SeqCst);
    (keys, failing)
}

async fn crash_before_any_root_leaves_the_epoch_unchanged(kind: Kind) {
    let setup = Setup::new(kind);
    let (keys, _) = failing_open(&setup, FailAt::CreateRoot).await;
    let (key, wrapped) = keys.new_model_key("m").unwrap();
    assert!(keys.ensure_epoch_after(1).await.is_err());
    assert_eq!(keys.current_epoch(), 1);
    drop(keys);
    assert!(names(&setup.keys).contains(&"epoch-2.intent".to_owned()));
    let keys = setup.open().await.unwrap();
    assert_eq!(names(&setup.keys), vec!["epoch-1.key", "key-store"]);
    assert_eq!(keys.current_epoch(), 1);
    assert!(same(&keys.unwrap_model_key("m", &wrapped).unwrap(), &key));
    // The rotation can simply be run again.
    assert_eq!(keys.ensure_epoch_after(1).await.unwrap(), 2);
}

async fn crash_after_an_unrecorded_root_discards_it(kind: Kind) {
    let setup = Setup::new(kind);
    let (keys, _) = failing_open(&setup, FailAt::AfterCreateRoot).await;
    assert!(keys.ensure_epoch_after(1).await.is_err());
    drop(keys);
    if kind == Kind::File {
        assert_eq!(names(&setup.roots), vec!["root-1.key", "root-2.key"]);
    }
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    assert_eq!(names(&setup.keys), vec!["epoch-1.key", "key-store"]);
    if kind == Kind::File {
        // The half-made root is gone, so epoch 2 can be created afresh.
        assert_eq!(names(&setup.roots), vec!["root-1.key"]);
    }
    assert_eq!(keys.ensure_epoch_after(1).await.unwrap(), 2);
    let (key, wrapped) = keys.new_model_key("m").unwrap();
    drop(keys);
    let keys = setup.open().await.unwrap();
    assert!(same(&keys.unwrap_model_key("m", &wrapped).unwrap(), &key));
}

async fn crash_after_the_root_was_recorded_discards_it(kind: Kind) {
    let setup = Setup::new(kind);
    let (keys, _) = failing_open(&setup, FailAt::Wrap).await;
    assert!(keys.ensure_epoch_after(1).await.is_err());
    drop(keys);
    let intent = std::fs::read(setup.keys.join("epoch-2.intent")).unwrap();
    let recorded = String::from_utf8_lossy(&intent[14 + 1 + 8 + 1 + 2..]).into_owned();
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    assert_eq!(names(&setup.keys), vec!["epoch-1.key", "key-store"]);
    // The recorded root was destroyed, not left to wrap something later.
    let root = RootRef::new(&recorded).unwrap();
    let provider = setup.provider().await;
    let probe = SecretKey::generate().unwrap();
    assert!(provider.wrap(&root, 2, &probe).await.is_err());
    if kind == Kind::File {
        assert_eq!(names(&setup.roots), vec!["root-1.key"]);
    }
}

async fn crash_after_the_epoch_file_keeps_the_epoch(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    keys.ensure_epoch_after(1).await.unwrap();
    let (key, wrapped) = keys.new_model_key("m").unwrap();
    assert_eq!(wrapped.epoch, 2);
    let root = keys.epoch_info(2).unwrap().root;
    drop(keys);
    // The intent file a crash right after the epoch file's rename leaves behind (format in
    // files.rs: magic, version 1, epoch, kind, root name).
    let mut intent = b"custody-intent\x01".to_vec();
    intent.extend_from_slice(&2u64.to_be_bytes());
    intent.push(if kind == Kind::File { 1 } else { 2 });
    intent.extend_from_slice(&(root.as_str().len() as u16).to_be_bytes());
    intent.extend_from_slice(root.as_str().as_bytes());
    std::fs::write(setup.keys.join("epoch-2.intent"), intent).unwrap();
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 2);
    assert!(!setup.keys.join("epoch-2.intent").exists());
    assert!(same(&keys.unwrap_model_key("m", &wrapped).unwrap(), &key));
}

async fn crash_between_rotation_and_rewrap_resumes(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let (key, old) = keys.new_model_key("m").unwrap();
    assert_eq!(keys.ensure_epoch_after(1).await.unwrap(), 2);
    drop(keys);
    let keys = setup.open().await.unwrap();
    // Resuming the same rotation makes no new epoch.
    assert_eq!(keys.ensure_epoch_after(1).await.unwrap(), 2);
    assert_eq!(keys.epochs().len(), 2);
    let new = keys.rewrap_model_key("m", &old, 2).unwrap();
    // Re-wrapping again (the transaction was retried) is harmless.
    assert_eq!(keys.rewrap_model_key("m", &new, 2).unwrap(), new);
    keys.destroy_epoch(1).await.unwrap();
    assert!(same(&keys.unwrap_model_key("m", &new).unwrap(), &key));
    // A rotation that recorded a stale epoch is refused rather than guessed at.
    assert!(matches!(
        keys.ensure_epoch_after(0).await,
        Err(KeyError::UnexpectedEpoch {
            from: 0,
            current: 2
        })
    ));
}

async fn crash_during_destroy_is_finished_by_destroying_again(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let (_, old) = keys.new_model_key("m").unwrap();
    keys.ensure_epoch_after(1).await.unwrap();
    let epoch1 = keys.epoch_info(1).unwrap();
    drop(keys);
    // The root is destroyed, then the process dies before the epoch file goes.
    let provider = setup.provider().await;
    provider.destroy_root(&epoch1.root, 1).await.unwrap();
    let keys = setup.open().await.unwrap();
    assert!(!keys.epoch_info(1).unwrap().usable);
    assert!(matches!(
        keys.unwrap_model_key("m", &old),
        Err(KeyError::EpochDestroyed(1))
    ));
    let done = keys.destroy_epoch(1).await.unwrap();
    assert!(done.epoch_file_removed);
    assert_eq!(done.root.as_ref(), Some(&epoch1.root));
    match kind {
        Kind::File => assert_eq!(done.root_destruction, RootDestruction::AlreadyGone),
        Kind::Kms => assert!(matches!(
            done.root_destruction,
            RootDestruction::KmsScheduled { .. }
        )),
    }
    // And once more: nothing left, still fine.
    let again = keys.destroy_epoch(1).await.unwrap();
    assert!(!again.epoch_file_removed);
    assert_eq!(again.root, None);
    assert_eq!(names(&setup.keys), vec!["epoch-2.key", "key-store"]);
}

async fn a_missing_current_root_is_refused_not_replaced(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    let root = keys.epoch_info(1).unwrap().root;
    drop(keys);
    let provider = setup.provider().await;
    provider.destroy_root(&root, 1).await.unwrap();
    let err = setup.open().await.err().expect("must refuse");
    assert!(
        matches!(err, KeyError::CurrentRootMissing { epoch: 1, .. }),
        "{err}"
    );
    // Nothing new was made in its place.
    assert_eq!(names(&setup.keys), vec!["epoch-1.key", "key-store"]);
    if kind == Kind::File {
        assert!(names(&setup.roots).is_empty());
    }
    // A store that lost its epoch files does not start over either.
    std::fs::remove_file(setup.keys.join("epoch-1.key")).unwrap();
    assert!(matches!(setup.open().await, Err(KeyError::NoEpoch(_))));
}

async fn the_current_epoch_cannot_be_destroyed(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = setup.open().await.unwrap();
    assert!(matches!(
        keys.destroy_epoch(1).await,
        Err(KeyError::DestroyCurrent {
            epoch: 1,
            current: 1
        })
    ));
    assert!(matches!(
        keys.destroy_epoch(5).await,
        Err(KeyError::DestroyCurrent { .. })
    ));
    assert!(keys.epoch_info(1).unwrap().usable);
}

async fn rotation_waits_for_model_creations_under_the_old_epoch(kind: Kind) {
    let setup = Setup::new(kind);
    let keys = Arc::new(setup.open().await.unwrap());
    let lease = keys.model_key_lease().await;
    let (_, early) = lease.new_model_key("early").unwrap();
    assert_eq!(early.epoch, 1);
    let rotating = tokio::spawn({
        let keys = keys.clone();
        async move { keys.ensure_epoch_after(1).await }
    });
    // The new epoch appears, but the rotation does not return while the lease is held: the
    // caller would otherwise re-wrap before "early" is committed.
    while keys.current_epoch() != 2 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    assert!(!rotating.is_finished());
    assert_eq!(lease.new_model_key("late").unwrap().1.epoch, 2);
    drop(lease);
    assert_eq!(rotating.await.unwrap().unwrap(), 2);
}

#[tokio::test]
async fn file_root_edge_cases() {
    let setup = Setup::new(Kind::File);
    drop(setup.open().await.unwrap());
    // A damaged root file is refused, not replaced.
    std::fs::write(setup.roots.join("root-1.key"), b"garbage").unwrap();
    assert!(matches!(setup.open().await, Err(KeyError::BadKeyFile(_))));
    // Another installation's root directory does not open this key store.
    let other = Setup::new(Kind::File);
    drop(other.open().await.unwrap());
    let err = KeyHierarchy::open(&setup.keys, other.provider().await)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, KeyError::Provider(_)), "{err}");
    // A fresh key store refuses to take over a root directory that already has roots.
    let fresh = Setup::new(Kind::File);
    let err = KeyHierarchy::open_or_init(&fresh.keys, other.provider().await)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, KeyError::RootExists(_)), "{err}");
    // The layout with one long-lived root.key is refused.
    let legacy = Setup::new(Kind::File);
    std::fs::create_dir_all(&legacy.keys).unwrap();
    std::fs::write(legacy.keys.join("root.key"), b"x").unwrap();
    assert!(matches!(
        legacy.open().await,
        Err(KeyError::LegacyLayout(_))
    ));
}

#[tokio::test]
async fn switching_the_root_provider_is_refused() {
    let setup = Setup::new(Kind::File);
    drop(setup.open().await.unwrap());
    let kms: Arc<dyn RootProvider> = Arc::new(KmsRoot::connect(&kms_config()).await.unwrap());
    let err = KeyHierarchy::open(&setup.keys, kms).await.err().unwrap();
    assert!(
        matches!(err, KeyError::ProviderMismatch { epoch: 1, .. }),
        "{err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn key_and_root_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(Kind::File);
    drop(setup.open().await.unwrap());
    for path in [
        setup.keys.join("epoch-1.key"),
        setup.roots.join("root-1.key"),
        setup.keys.clone(),
        setup.roots.clone(),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
    }
}

/// A KMS key scheduled for deletion no longer opens anything, and KMS says when it goes.
#[tokio::test]
async fn a_kms_root_scheduled_for_deletion_cannot_decrypt() {
    let provider = KmsRoot::connect(&kms_config()).await.unwrap();
    let root = provider.create_root(1).await.unwrap();
    let key = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(&root, 1, &key).await.unwrap();
    assert!(same(
        &provider.unwrap(&root, 1, &wrapped).await.unwrap(),
        &key
    ));
    // Bound to its epoch by the encryption context.
    assert!(matches!(
        provider.unwrap(&root, 2, &wrapped).await,
        Err(KeyError::Provider(_))
    ));
    let destruction = provider.destroy_root(&root, 1).await.unwrap();
    let RootDestruction::KmsScheduled { deletion_date } = &destruction else {
        panic!("{destruction:?}")
    };
    // At least the 7-day minimum from now.
    let date = humantime_parse(deletion_date);
    let min = std::time::SystemTime::now() + std::time::Duration::from_secs(6 * 86400 + 23 * 3600);
    assert!(date > min, "{deletion_date}");
    assert!(matches!(
        provider.unwrap(&root, 1, &wrapped).await,
        Err(KeyError::RootGone { epoch: 1, .. })
    ));
    // Scheduling again is idempotent and reports the same date.
    assert_eq!(provider.destroy_root(&root, 1).await.unwrap(), destruction);
}

fn humantime_parse(s: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(s).unwrap()
}
