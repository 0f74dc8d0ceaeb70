//! The key hierarchy on every root of trust (root key files, AWS KMS served by moto, and a
//! PKCS#11 token served by SoftHSM2), with
//! its epoch ledger in the database the server uses (the store, on SQLite; the fence against
//! concurrent model creations also on PostgreSQL).
//!
//! Every test runs three times (`file::*`, `kms::*`, `pkcs11::*`; the PKCS#11 runs each in a
//! child process with its own SoftHSM2 token, see `testkit::in_child_with_softhsm`). Crashes
//! are simulated by a provider that
//! fails at a chosen call (the hierarchy stops where a crash would have stopped it). A
//! "backup" is a copy of the database (and, for files, of the root directory) taken at that
//! moment; several "instances" are several hierarchies over one database.
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
    EpochLedger, EpochState, FileRoot, KeyError, KeyHierarchy, KmsConfig, KmsRoot, KmsSecret,
    Pkcs11Config, Pkcs11Root, RootDestruction, RootKind, RootProvider, RootRef, RootStatus,
    WrappedModelKey,
};
use store::{NewModel, Store, StoreError};
use testkit::{MotoServer, SoftHsm};
use types::{ModelName, VendorName};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Kms,
    Pkcs11,
}

/// A database and a root of trust, as a server would have them.
struct Setup {
    kind: Kind,
    tmp: tempfile::TempDir,
    store: Store,
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

/// The token of this (child) process: see `testkit::in_child_with_softhsm`.
fn softhsm() -> SoftHsm {
    SoftHsm::current().expect("a PKCS#11 test runs in its SoftHSM child process")
}

fn pkcs11_config() -> Pkcs11Config {
    let hsm = softhsm();
    Pkcs11Config {
        module: SoftHsm::module().unwrap(),
        token_label: Some(testkit::SOFTHSM_TOKEN.to_owned()),
        slot: None,
        pin_file: Some(hsm.pin_file()),
        pin_env: None,
    }
}

/// The keys on the token, as SoftHSM2 stores them (one file per object besides the token's).
fn hsm_keys(token_dir: &Path) -> usize {
    let mut count = 0;
    for token in std::fs::read_dir(token_dir).unwrap() {
        for entry in std::fs::read_dir(token.unwrap().path()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            count += usize::from(name.ends_with(".object") && name != "token.object");
        }
    }
    count
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display())
}

impl Setup {
    async fn new(kind: Kind) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::connect(&db_url(tmp.path())).await.unwrap();
        let roots = tmp.path().join("root");
        Setup {
            kind,
            tmp,
            store,
            roots,
        }
    }

    fn ledger(&self) -> Arc<dyn EpochLedger> {
        Arc::new(self.store.clone())
    }

    async fn provider(&self) -> Arc<dyn RootProvider> {
        provider(self.kind, &self.roots).await
    }

    async fn open(&self) -> Result<KeyHierarchy, KeyError> {
        KeyHierarchy::open(self.ledger(), self.provider().await, true).await
    }

    /// A copy of the database (and, for files, of the root directory): a backup.
    fn backup(&self) -> Backup {
        let copy = tempfile::tempdir().unwrap();
        for name in ["db.sqlite", "db.sqlite-wal"] {
            let from = self.tmp.path().join(name);
            if from.exists() {
                std::fs::copy(&from, copy.path().join(name)).unwrap();
            }
        }
        if self.roots.exists() {
            copy_dir(&self.roots, &copy.path().join("root"));
        }
        Backup { dir: copy }
    }
}

struct Backup {
    dir: tempfile::TempDir,
}

impl Backup {
    async fn store(&self) -> Store {
        Store::connect(&db_url(self.dir.path())).await.unwrap()
    }
}

async fn provider(kind: Kind, roots: &Path) -> Arc<dyn RootProvider> {
    match kind {
        Kind::File => Arc::new(FileRoot::open(roots).unwrap()),
        Kind::Kms => Arc::new(KmsRoot::connect(&kms_config()).await.unwrap()),
        Kind::Pkcs11 => Arc::new(Pkcs11Root::connect(&pkcs11_config()).await.unwrap()),
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

async fn states(store: &Store) -> Vec<(u64, EpochState)> {
    EpochLedger::load(store)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| (r.epoch, r.state))
        .collect()
}

/// Where [`Failing`] stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailAt {
    /// After the intent is recorded, before any root exists.
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
    async fn create_root(&self, epoch: u64, attempt: &str) -> Result<RootRef, KeyError> {
        self.fire(FailAt::CreateRoot)?;
        let root = self.inner.create_root(epoch, attempt).await?;
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
    async fn root_status(&self, root: &RootRef, epoch: u64) -> Result<RootStatus, KeyError> {
        self.inner.root_status(root, epoch).await
    }
    async fn destroy_unrecorded(&self, epoch: u64, attempt: &str) -> Result<(), KeyError> {
        self.inner.destroy_unrecorded(epoch, attempt).await
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Kind::File).await })*
        }
        mod kms {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Kind::Kms).await })*
        }
        mod pkcs11 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
                let test = concat!("pkcs11::", stringify!($name));
                if testkit::in_child_with_softhsm(test).unwrap().is_some() {
                    super::$name(super::Kind::Pkcs11).await
                }
            })*
        }
    };
}

both!(
    model_keys_round_trip_across_reopening,
    a_wrapped_key_opens_only_for_its_model_and_epoch,
    shredding_makes_a_backup_taken_before_unreadable,
    crash_before_any_root_leaves_the_epoch_unchanged,
    crash_after_an_unrecorded_root_discards_it,
    crash_after_the_root_was_recorded_discards_it,
    crash_between_rotation_and_rewrap_resumes,
    crash_during_destroy_is_finished_by_destroying_again,
    a_missing_current_root_is_refused_not_replaced,
    the_current_epoch_cannot_be_destroyed,
    another_instance_follows_a_rotation_at_its_next_use,
    a_runner_that_lost_its_lease_changes_nothing,
    a_root_brought_back_and_a_key_that_still_opens_are_seen,
);

async fn model_keys_round_trip_across_reopening(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    let (key, wrapped) = keys.new_model_key("m1").await.unwrap();
    assert_eq!(wrapped.epoch, 1);
    drop(keys);
    let keys = setup.open().await.unwrap();
    assert!(same(
        &keys.unwrap_model_key("m1", &wrapped).await.unwrap(),
        &key
    ));
    let info = keys.epoch_info(1).unwrap();
    assert!(info.usable);
    match kind {
        Kind::File => {
            assert_eq!(info.root_kind, RootKind::File);
            let root = info.root.as_str();
            assert!(
                root.starts_with("root-1-") && root.ends_with(".key"),
                "{root}"
            );
            assert_eq!(names(&setup.roots), vec![root.to_owned()]);
        }
        Kind::Kms => {
            assert_eq!(info.root_kind, RootKind::Kms);
            assert!(
                info.root.as_str().starts_with("arn:aws:kms:us-east-1:"),
                "{}",
                info.root
            );
            // No root key file anywhere.
            assert!(!setup.roots.exists());
        }
        Kind::Pkcs11 => {
            assert_eq!(info.root_kind, RootKind::Pkcs11);
            assert!(
                info.root.as_str().starts_with("custody-root-1-"),
                "{}",
                info.root
            );
            assert!(!setup.roots.exists());
            assert_eq!(hsm_keys(&softhsm().token_dir()), 1);
        }
    }
    assert_eq!(states(&setup.store).await, vec![(1, EpochState::Live)]);
    // The ledger holds the epoch key wrapped under its root, never in the clear.
    let record = &EpochLedger::load(&setup.store).await.unwrap().records[0];
    assert!(record.wrapped.as_ref().unwrap().len() > crypto::KEY_LEN);
}

async fn a_wrapped_key_opens_only_for_its_model_and_epoch(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let (_, wrapped) = keys.new_model_key("m1").await.unwrap();
    assert!(matches!(
        keys.unwrap_model_key("m2", &wrapped).await,
        Err(KeyError::Unwrap)
    ));
    let mut tampered = wrapped.clone();
    tampered.wrapped[20] ^= 1;
    assert!(keys.unwrap_model_key("m1", &tampered).await.is_err());
    // Claiming another epoch does not help either.
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    let moved = WrappedModelKey {
        epoch: 2,
        ..wrapped
    };
    assert!(matches!(
        keys.unwrap_model_key("m1", &moved).await,
        Err(KeyError::Unwrap)
    ));
}

/// The backup test, at the crate level: a copy of the database (and of the root
/// directory) taken before a shred opens nothing with the root of trust as it is after.
async fn shredding_makes_a_backup_taken_before_unreadable(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let (_, shredded) = keys.new_model_key("shredded").await.unwrap();
    let (survivor_key, survivor) = keys.new_model_key("survivor").await.unwrap();
    let before = setup.backup();
    let epoch1 = keys.epoch_info(1).unwrap();

    // The shred: rotate, re-wrap the survivor (the shredded row is deleted), destroy epoch 1.
    let from = keys.current_epoch();
    let to = keys.ensure_epoch_after(from, None).await.unwrap();
    assert_eq!(to, 2);
    let survivor = keys.rewrap_model_key("survivor", &survivor, to).unwrap();
    assert_eq!(survivor.epoch, 2);
    let destroyed = keys.destroy_epoch(from, None).await.unwrap();
    assert_eq!(destroyed.epoch, 1);
    assert_eq!(destroyed.root.as_ref(), Some(&epoch1.root));
    assert!(destroyed.wrapped_key_erased);
    let epoch2 = keys.epoch_info(2).unwrap();
    match (&kind, &destroyed.root_destruction) {
        (Kind::File, RootDestruction::FileRemoved) => {
            assert_eq!(names(&setup.roots), vec![epoch2.root.to_string()]);
        }
        (Kind::Kms, RootDestruction::KmsScheduled { deletion_date }) => {
            assert!(deletion_date.starts_with("20"), "{deletion_date}");
        }
        (Kind::Pkcs11, RootDestruction::HsmKeyDestroyed) => {
            assert_eq!(
                hsm_keys(&softhsm().token_dir()),
                1,
                "only epoch 2's key is left"
            );
        }
        (_, other) => panic!("unexpected destruction {other:?}"),
    }
    assert_eq!(
        states(&setup.store).await,
        vec![(1, EpochState::Destroyed), (2, EpochState::Live)]
    );
    let record = &EpochLedger::load(&setup.store).await.unwrap().records[0];
    assert_eq!(
        record.wrapped, None,
        "the destroyed epoch's wrapped key is erased"
    );
    assert!(matches!(
        keys.unwrap_model_key("shredded", &shredded).await,
        Err(KeyError::EpochDestroyed(1))
    ));
    drop(keys);

    // Live: the survivor still opens after a restart.
    let live = setup.open().await.unwrap();
    assert!(same(
        &live.unwrap_model_key("survivor", &survivor).await.unwrap(),
        &survivor_key
    ));

    // The backup's database with the current root of trust: refused outright.
    let old = before.store().await;
    let err = KeyHierarchy::open(Arc::new(old.clone()), setup.provider().await, true)
        .await
        .err()
        .expect("a pre-shred database must not open with the current root");
    assert!(
        matches!(err, KeyError::CurrentRootMissing { epoch: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("refusing"), "{err}");

    // And the root of trust itself no longer opens the backed-up epoch key.
    let old_record = &EpochLedger::load(&old).await.unwrap().records[0];
    let err = setup
        .provider()
        .await
        .unwrap(&epoch1.root, 1, old_record.wrapped.as_ref().unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, KeyError::RootGone { epoch: 1, .. }), "{err}");
    // With the backup's own copy of the root directory it would open: that is why root files
    // stay out of every backup, and why the default keeps them outside the data directory.
    if kind == Kind::File {
        let backup_roots = provider(Kind::File, &before.dir.path().join("root")).await;
        assert!(
            KeyHierarchy::open(Arc::new(old), backup_roots, false)
                .await
                .is_ok()
        );
    }
}

async fn failing_open(setup: &Setup, at: FailAt) -> (KeyHierarchy, Arc<Failing>) {
    let failing = Arc::new(Failing {
        inner: setup.provider().await,
        at,
        armed: AtomicBool::new(false),
    });
    let keys = KeyHierarchy::open(setup.ledger(), failing.clone(), true)
        .await
        .unwrap();
    failing.armed.store(true, Ordering::SeqCst);
    (keys, failing)
}

async fn crash_before_any_root_leaves_the_epoch_unchanged(kind: Kind) {
    let setup = Setup::new(kind).await;
    let (keys, _) = failing_open(&setup, FailAt::CreateRoot).await;
    let (key, wrapped) = keys.new_model_key("m").await.unwrap();
    assert!(keys.ensure_epoch_after(1, None).await.is_err());
    assert_eq!(keys.current_epoch(), 1);
    drop(keys);
    assert_eq!(
        states(&setup.store).await,
        vec![(1, EpochState::Live), (2, EpochState::Creating)]
    );
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    assert!(same(
        &keys.unwrap_model_key("m", &wrapped).await.unwrap(),
        &key
    ));
    // The rotation can simply be run again; the abandoned attempt is discarded.
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    assert_eq!(
        states(&setup.store).await,
        vec![(1, EpochState::Live), (2, EpochState::Live)]
    );
}

async fn crash_after_an_unrecorded_root_discards_it(kind: Kind) {
    let setup = Setup::new(kind).await;
    let (keys, _) = failing_open(&setup, FailAt::AfterCreateRoot).await;
    assert!(keys.ensure_epoch_after(1, None).await.is_err());
    drop(keys);
    let first_root = EpochLedger::load(&setup.store).await.unwrap().records[0]
        .root
        .clone()
        .unwrap();
    match kind {
        Kind::File => assert_eq!(names(&setup.roots).len(), 2, "the half-made root exists"),
        Kind::Pkcs11 => assert_eq!(hsm_keys(&softhsm().token_dir()), 2, "the half-made key"),
        Kind::Kms => {}
    }
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    if kind == Kind::File {
        // The half-made root is gone (found by its attempt's name), the new one is there.
        let new_root = keys.epoch_info(2).unwrap().root;
        assert_eq!(names(&setup.roots), {
            let mut v = vec![first_root.to_string(), new_root.to_string()];
            v.sort();
            v
        });
    }
    if kind == Kind::Pkcs11 {
        // Found by its attempt's label and destroyed: the first root and the new one are left.
        assert_eq!(hsm_keys(&softhsm().token_dir()), 2);
    }
    let (key, wrapped) = keys.new_model_key("m").await.unwrap();
    drop(keys);
    let keys = setup.open().await.unwrap();
    assert!(same(
        &keys.unwrap_model_key("m", &wrapped).await.unwrap(),
        &key
    ));
}

async fn crash_after_the_root_was_recorded_discards_it(kind: Kind) {
    let setup = Setup::new(kind).await;
    let (keys, _) = failing_open(&setup, FailAt::Wrap).await;
    assert!(keys.ensure_epoch_after(1, None).await.is_err());
    drop(keys);
    let recorded = EpochLedger::load(&setup.store).await.unwrap().records[1]
        .root
        .clone()
        .expect("the root is recorded before anything is wrapped under it");
    let keys = setup.open().await.unwrap();
    assert_eq!(keys.current_epoch(), 1);
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    assert_ne!(keys.epoch_info(2).unwrap().root, recorded);
    // The recorded root was destroyed, not left to wrap something later.
    let probe = SecretKey::generate().unwrap();
    assert!(
        setup
            .provider()
            .await
            .wrap(&recorded, 2, &probe)
            .await
            .is_err()
    );
}

async fn crash_between_rotation_and_rewrap_resumes(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let (key, old) = keys.new_model_key("m").await.unwrap();
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    drop(keys);
    let keys = setup.open().await.unwrap();
    // Resuming the same rotation makes no new epoch.
    assert_eq!(keys.ensure_epoch_after(1, None).await.unwrap(), 2);
    assert_eq!(keys.epochs().len(), 2);
    let new = keys.rewrap_model_key("m", &old, 2).unwrap();
    // Re-wrapping again (the transaction was retried) is harmless.
    assert_eq!(keys.rewrap_model_key("m", &new, 2).unwrap(), new);
    keys.destroy_epoch(1, None).await.unwrap();
    assert!(same(&keys.unwrap_model_key("m", &new).await.unwrap(), &key));
    // A rotation that recorded a stale epoch is refused rather than guessed at.
    assert!(matches!(
        keys.ensure_epoch_after(0, None).await,
        Err(KeyError::UnexpectedEpoch {
            from: 0,
            current: 2
        })
    ));
}

async fn crash_during_destroy_is_finished_by_destroying_again(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let (_, old) = keys.new_model_key("m").await.unwrap();
    keys.ensure_epoch_after(1, None).await.unwrap();
    let epoch1 = keys.epoch_info(1).unwrap();
    // The epoch was marked destroying and its root destroyed, then the process died before
    // the ledger recorded it destroyed.
    setup.ledger().begin_destroy(1, None).await.unwrap();
    setup
        .provider()
        .await
        .destroy_root(&epoch1.root, 1)
        .await
        .unwrap();
    drop(keys);
    let keys = setup.open().await.unwrap();
    assert!(
        keys.epoch_info(1).is_none(),
        "a destroying epoch is never used"
    );
    assert!(matches!(
        keys.unwrap_model_key("m", &old).await,
        Err(KeyError::EpochDestroyed(1))
    ));
    let done = keys.destroy_epoch(1, None).await.unwrap();
    assert!(done.wrapped_key_erased);
    assert_eq!(done.root.as_ref(), Some(&epoch1.root));
    match kind {
        Kind::File | Kind::Pkcs11 => {
            assert_eq!(done.root_destruction, RootDestruction::AlreadyGone);
        }
        Kind::Kms => assert!(matches!(
            done.root_destruction,
            RootDestruction::KmsScheduled { .. }
        )),
    }
    // And once more: nothing left, still fine.
    let again = keys.destroy_epoch(1, None).await.unwrap();
    assert!(!again.wrapped_key_erased);
    assert_eq!(again.root_destruction, RootDestruction::AlreadyGone);
    assert_eq!(
        states(&setup.store).await,
        vec![(1, EpochState::Destroyed), (2, EpochState::Live)]
    );
}

async fn a_missing_current_root_is_refused_not_replaced(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let root = keys.epoch_info(1).unwrap().root;
    drop(keys);
    setup.provider().await.destroy_root(&root, 1).await.unwrap();
    let err = setup.open().await.err().expect("must refuse");
    assert!(
        matches!(err, KeyError::CurrentRootMissing { epoch: 1, .. }),
        "{err}"
    );
    // Nothing new was made in its place.
    assert_eq!(states(&setup.store).await, vec![(1, EpochState::Live)]);
    match kind {
        Kind::File => assert!(names(&setup.roots).is_empty()),
        Kind::Pkcs11 => assert_eq!(hsm_keys(&softhsm().token_dir()), 0),
        Kind::Kms => {}
    }
    // A ledger without epochs is not started over unless the caller says it is new.
    let empty = Setup::new(kind).await;
    assert!(matches!(
        KeyHierarchy::open(empty.ledger(), empty.provider().await, false).await,
        Err(KeyError::NoEpoch(_))
    ));
}

async fn the_current_epoch_cannot_be_destroyed(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    assert!(matches!(
        keys.destroy_epoch(1, None).await,
        Err(KeyError::DestroyCurrent {
            epoch: 1,
            current: 1
        })
    ));
    assert!(matches!(
        keys.destroy_epoch(5, None).await,
        Err(KeyError::DestroyCurrent { .. })
    ));
    assert!(keys.epoch_info(1).unwrap().usable);
    // Nor can an older epoch while the key of a model that is not being deleted is still
    // wrapped under it: the database refuses.
    let (_, wrapped) = keys.new_model_key("m1").await.unwrap();
    create_model(&setup.store, "m1", &wrapped).await.unwrap();
    keys.ensure_epoch_after(1, None).await.unwrap();
    let err = keys.destroy_epoch(1, None).await.err().unwrap();
    assert!(err.to_string().contains("still wraps"), "{err}");
    assert!(keys.epoch_info(1).unwrap().usable);
}

async fn create_model(
    store: &Store,
    id: &str,
    wrapped: &WrappedModelKey,
) -> Result<(), StoreError> {
    let vendor = VendorName::parse("acme").unwrap();
    if store.vendor(&vendor).await.unwrap().is_none() {
        store
            .create_vendor(
                "v1",
                &vendor,
                audit::Entry::new("test", "vendor.create", "acme"),
            )
            .await
            .unwrap();
    }
    store
        .create_model(
            &NewModel {
                id,
                vendor_id: "v1",
                name: &ModelName::parse(id).unwrap(),
                key_epoch: wrapped.epoch,
                wrapped_key: &wrapped.wrapped,
            },
            audit::Entry::new("test", "model.create", id)
                .with_detail(format!("key epoch {}", wrapped.epoch)),
        )
        .await
}

/// Two instances on one database: a rotation on A is followed by B at its next use of the
/// hierarchy, and B drops a destroyed epoch's key.
async fn another_instance_follows_a_rotation_at_its_next_use(kind: Kind) {
    let setup = Setup::new(kind).await;
    let a = setup.open().await.unwrap();
    let b = KeyHierarchy::open(setup.ledger(), setup.provider().await, false)
        .await
        .unwrap();
    let (key, on_b) = b.new_model_key("m").await.unwrap();
    assert_eq!(on_b.epoch, 1);
    a.ensure_epoch_after(1, None).await.unwrap();
    // B's cached state is stale until it uses the hierarchy; then it wraps under epoch 2.
    assert_eq!(b.current_epoch(), 1);
    assert_eq!(b.new_model_key("n").await.unwrap().1.epoch, 2);
    let moved = a.rewrap_model_key("m", &on_b, 2).unwrap();
    a.destroy_epoch(1, None).await.unwrap();
    assert!(matches!(
        b.unwrap_model_key("m", &on_b).await,
        Err(KeyError::EpochDestroyed(1))
    ));
    assert!(
        b.epoch_info(1).is_none(),
        "B dropped the destroyed epoch's key"
    );
    assert!(same(&b.unwrap_model_key("m", &moved).await.unwrap(), &key));
}

/// The deletion runner's lease is taken over while it rotates: none of its ledger writes
/// commit afterwards; the new holder's do.
async fn a_runner_that_lost_its_lease_changes_nothing(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    // Runner A holds the lease for a moment only (it expires at once), then B takes it.
    let a = setup
        .store
        .acquire_lease("deletions", "a", -1)
        .await
        .unwrap()
        .unwrap();
    let b = setup
        .store
        .acquire_lease("deletions", "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    assert!(
        setup
            .store
            .acquire_lease("deletions", "c", 60_000)
            .await
            .unwrap()
            .is_none()
    );
    let err = keys.ensure_epoch_after(1, Some(&a)).await.err().unwrap();
    assert!(matches!(err, KeyError::Fenced(_)), "{err}");
    assert_eq!(states(&setup.store).await, vec![(1, EpochState::Live)]);
    assert!(!setup.store.renew_lease(&a, "a", 60_000).await.unwrap());
    assert_eq!(keys.ensure_epoch_after(1, Some(&b)).await.unwrap(), 2);
    let err = keys.destroy_epoch(1, Some(&a)).await.err().unwrap();
    assert!(matches!(err, KeyError::Fenced(_)), "{err}");
    assert!(keys.epoch_info(1).unwrap().usable);
    keys.destroy_epoch(1, Some(&b)).await.unwrap();
}

/// The fence against concurrent model creations: while rotations commit, writers keep
/// creating models; no model key is ever committed under an epoch after a rotation away from
/// it committed (audit sequence numbers order commits).
async fn model_keys_never_commit_under_a_retired_epoch(store: Store) {
    let provider: Arc<dyn RootProvider> =
        Arc::new(FileRoot::open(&tempfile::tempdir().unwrap().keep()).unwrap());
    let keys = Arc::new(
        KeyHierarchy::open(Arc::new(store.clone()), provider, true)
            .await
            .unwrap(),
    );
    store
        .create_vendor(
            "v1",
            &VendorName::parse("acme").unwrap(),
            audit::Entry::new("t", "vendor.create", "acme"),
        )
        .await
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (keys, store) = (keys.clone(), store.clone());
            tokio::spawn(async move {
                for i in 0..30 {
                    let id = format!("m{w}x{i}");
                    loop {
                        let (_, wrapped) = keys.new_model_key(&id).await.unwrap();
                        match create_model(&store, &id, &wrapped).await {
                            Ok(()) => break,
                            Err(StoreError::StaleEpoch { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for from in 1..=5 {
        keys.ensure_epoch_after(from, None).await.unwrap();
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut current = 0;
    let mut created = 0;
    for (_, bytes) in store.audit_entries(0, u64::MAX >> 1).await.unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let detail = v["detail"].as_str().unwrap_or_default();
        match v["action"].as_str().unwrap() {
            "key.epoch.commit" => {
                current = detail.split_whitespace().nth(2).unwrap().parse().unwrap();
            }
            "model.create" => {
                let epoch: u64 = detail.rsplit(' ').next().unwrap().parse().unwrap();
                assert_eq!(
                    epoch, current,
                    "a model key committed under epoch {epoch} while {current} was current"
                );
                created += 1;
            }
            _ => {}
        }
    }
    assert_eq!(created, 120);
    assert_eq!(current, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_keys_never_commit_under_a_retired_epoch_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    model_keys_never_commit_under_a_retired_epoch(
        Store::connect(&db_url(dir.path())).await.unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_keys_never_commit_under_a_retired_epoch_on_postgresql() {
    let cluster = testkit::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    model_keys_never_commit_under_a_retired_epoch(Store::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn file_root_edge_cases() {
    let setup = Setup::new(Kind::File).await;
    let root = setup.open().await.unwrap().epoch_info(1).unwrap().root;
    // A damaged root file is refused, not replaced.
    std::fs::write(setup.roots.join(root.as_str()), b"garbage").unwrap();
    assert!(matches!(setup.open().await, Err(KeyError::BadKeyFile(_))));
    // Another installation's root directory does not open this hierarchy.
    let other = Setup::new(Kind::File).await;
    drop(other.open().await.unwrap());
    let err = KeyHierarchy::open(setup.ledger(), other.provider().await, false)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            KeyError::CurrentRootMissing { .. } | KeyError::Provider(_)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn switching_the_root_provider_is_refused() {
    let setup = Setup::new(Kind::File).await;
    drop(setup.open().await.unwrap());
    let kms: Arc<dyn RootProvider> = Arc::new(KmsRoot::connect(&kms_config()).await.unwrap());
    let err = KeyHierarchy::open(setup.ledger(), kms, false)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, KeyError::ProviderMismatch { epoch: 1, .. }),
        "{err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn root_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(Kind::File).await;
    let root = setup.open().await.unwrap().epoch_info(1).unwrap().root;
    for path in [setup.roots.join(root.as_str()), setup.roots.clone()] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
    }
}

/// A KMS key scheduled for deletion no longer opens anything, and KMS says when it goes.
#[tokio::test]
async fn a_kms_root_scheduled_for_deletion_cannot_decrypt() {
    let provider = KmsRoot::connect(&kms_config()).await.unwrap();
    let root = provider.create_root(1, "0badc0de").await.unwrap();
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
    let date = humantime::parse_rfc3339_weak(deletion_date).unwrap();
    let min = std::time::SystemTime::now() + std::time::Duration::from_secs(6 * 86400 + 23 * 3600);
    assert!(date > min, "{deletion_date}");
    assert!(matches!(
        provider.unwrap(&root, 1, &wrapped).await,
        Err(KeyError::RootGone { epoch: 1, .. })
    ));
    // Scheduling again is idempotent and reports the same date.
    assert_eq!(provider.destroy_root(&root, 1).await.unwrap(), destruction);
}

/// The evidence a deletion's post-checks rest on, asked of the root of trust and the ledger as
/// they are now: a destroyed root reports gone, and one brought back (a root file put back, a
/// KMS key whose deletion was cancelled and that was enabled again) does not; a recorded
/// wrapped key opens under its epoch until that epoch is destroyed, and again once a backup
/// restores both the epoch's ledger row and its root.
async fn a_root_brought_back_and_a_key_that_still_opens_are_seen(kind: Kind) {
    let setup = Setup::new(kind).await;
    let keys = setup.open().await.unwrap();
    let (_, shredded) = keys.new_model_key("shredded").await.unwrap();
    let before = setup.backup();
    let root = keys.epoch_info(1).unwrap().root;
    let ledger_row = EpochLedger::load(&setup.store).await.unwrap().records[0].clone();
    let recorded = vec![("shredded".to_owned(), shredded.wrapped.clone())];
    let opens_under = |epochs: &[u64]| {
        epochs
            .iter()
            .map(|e| ("shredded".to_owned(), *e))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys.epochs_that_open(&recorded).await.unwrap(),
        opens_under(&[1])
    );
    assert!(matches!(
        keys.root_status(&root, 1).await.unwrap(),
        RootStatus::Present(_)
    ));
    // Rotated, not yet destroyed: the old epoch still opens it (what the check must catch).
    keys.ensure_epoch_after(1, None).await.unwrap();
    assert_eq!(
        keys.epochs_that_open(&recorded).await.unwrap(),
        opens_under(&[1])
    );
    // Another model's name does not make it open anywhere.
    let renamed = vec![("other".to_owned(), shredded.wrapped.clone())];
    assert!(keys.epochs_that_open(&renamed).await.unwrap().is_empty());

    keys.destroy_epoch(1, None).await.unwrap();
    assert!(keys.epochs_that_open(&recorded).await.unwrap().is_empty());
    match (kind, keys.root_status(&root, 1).await.unwrap()) {
        (Kind::File | Kind::Pkcs11, RootStatus::Gone { deletion_date }) => {
            assert_eq!(deletion_date, None);
        }
        (Kind::Kms, RootStatus::Gone { deletion_date }) => {
            assert!(deletion_date.unwrap().starts_with("20"));
        }
        (_, other) => panic!("a destroyed root reported {other:?}"),
    }

    // The root comes back.
    match kind {
        Kind::File => {
            std::fs::copy(
                before.dir.path().join("root").join(root.as_str()),
                setup.roots.join(root.as_str()),
            )
            .unwrap();
            let status = keys.root_status(&root, 1).await.unwrap();
            assert!(
                matches!(&status, RootStatus::Present(why) if why.contains("exists")),
                "{status:?}"
            );
        }
        Kind::Kms => {
            let moto = MotoServer::shared().unwrap();
            let key_id = root.as_str().rsplit('/').next().unwrap();
            let body = format!("{{\"KeyId\": \"{key_id}\"}}");
            moto.kms("CancelKeyDeletion", &body).unwrap();
            let status = keys.root_status(&root, 1).await.unwrap();
            assert!(
                matches!(&status, RootStatus::Present(why) if why.contains("Disabled")),
                "a cancelled deletion counts as gone: {status:?}"
            );
            moto.kms("EnableKey", &body).unwrap();
            let status = keys.root_status(&root, 1).await.unwrap();
            assert!(
                matches!(&status, RootStatus::Present(why) if why.contains("Enabled")),
                "{status:?}"
            );
        }
        Kind::Pkcs11 => {
            // SoftHSM2 keeps each process's view of its token, so a token backup restored
            // under a running process is not seen by it (a real HSM restore is not either,
            // until a new session): the_hsm_key_never_leaves_the_token shows that a key under
            // the root's label is reported present.
            drop(before);
            return;
        }
    }
    // With the root alone back, the ledger no longer holds the epoch key: nothing opens.
    assert!(keys.epochs_that_open(&recorded).await.unwrap().is_empty());
    // A backup restores the ledger row too: the recorded key opens again, and is reported.
    let pool = sqlx::SqlitePool::connect(&db_url(setup.tmp.path()))
        .await
        .unwrap();
    sqlx::query("UPDATE key_epochs SET wrapped_key = ?, state = 'live' WHERE epoch = 1")
        .bind(ledger_row.wrapped.clone().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys.epochs_that_open(&recorded).await.unwrap(),
        opens_under(&[1])
    );
}

/// Runs `body` in this test's SoftHSM child process (see `testkit::in_child_with_softhsm`).
macro_rules! with_softhsm {
    ($test:literal, $body:block) => {
        if testkit::in_child_with_softhsm($test).unwrap().is_some() $body
    };
}

/// A wrong PIN, an unknown token, a missing PIN stop the provider before any use, with a
/// message that says what to fix and never shows the PIN.
#[tokio::test]
async fn a_pkcs11_root_refuses_a_wrong_pin_at_start() {
    with_softhsm!("a_pkcs11_root_refuses_a_wrong_pin_at_start", {
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("pin");
        std::fs::write(&wrong, "not-the-pin-1234\n").unwrap();
        let config = Pkcs11Config {
            pin_file: Some(wrong),
            ..pkcs11_config()
        };
        let err = Pkcs11Root::connect(&config)
            .await
            .err()
            .expect("a wrong PIN");
        let text = err.to_string();
        assert!(text.contains("refused the PIN"), "{text}");
        assert!(text.contains(testkit::SOFTHSM_TOKEN), "{text}");
        assert!(!text.contains("not-the-pin"), "{text}");

        let config = Pkcs11Config {
            token_label: Some("no-such-token".into()),
            ..pkcs11_config()
        };
        let err = Pkcs11Root::connect(&config).await.err().unwrap();
        assert!(err.to_string().contains("no-such-token"), "{err}");
        let config = Pkcs11Config {
            pin_file: None,
            ..pkcs11_config()
        };
        let err = Pkcs11Root::connect(&config).await.err().unwrap();
        assert!(err.to_string().contains("pin_file"), "{err}");
        let config = Pkcs11Config {
            module: "/nonexistent/libpkcs11.so".into(),
            ..pkcs11_config()
        };
        let err = Pkcs11Root::connect(&config).await.err().unwrap();
        assert!(err.to_string().contains("cannot load"), "{err}");
        // The right PIN still works: the failures did not lock the token.
        assert!(Pkcs11Root::connect(&pkcs11_config()).await.is_ok());
    });
}

/// A destroyed HSM key opens nothing; a wrapped epoch key is bound to its epoch and refused
/// when altered.
#[tokio::test]
async fn a_destroyed_hsm_key_cannot_unwrap() {
    with_softhsm!("a_destroyed_hsm_key_cannot_unwrap", {
        let provider = Pkcs11Root::connect(&pkcs11_config()).await.unwrap();
        let root = provider.create_root(1, "0badc0de").await.unwrap();
        let key = SecretKey::generate().unwrap();
        let wrapped = provider.wrap(&root, 1, &key).await.unwrap();
        assert!(
            !wrapped
                .windows(16)
                .any(|w| key.expose_secret().windows(16).any(|k| k == w))
        );
        assert!(same(
            &provider.unwrap(&root, 1, &wrapped).await.unwrap(),
            &key
        ));
        // Another epoch's name for the same root is refused before the token is asked.
        assert!(provider.unwrap(&root, 2, &wrapped).await.is_err());
        let mut tampered = wrapped.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let err = provider.unwrap(&root, 1, &tampered).await.err().unwrap();
        assert!(matches!(err, KeyError::Provider(_)), "{err}");
        // Wrapped twice, two different blobs (a fresh IV each time).
        assert_ne!(provider.wrap(&root, 1, &key).await.unwrap(), wrapped);
        assert!(matches!(
            provider.root_status(&root, 1).await.unwrap(),
            RootStatus::Present(_)
        ));

        assert_eq!(
            provider.destroy_root(&root, 1).await.unwrap(),
            RootDestruction::HsmKeyDestroyed
        );
        let err = provider.unwrap(&root, 1, &wrapped).await.err().unwrap();
        assert!(matches!(err, KeyError::RootGone { epoch: 1, .. }), "{err}");
        assert!(matches!(
            provider.wrap(&root, 1, &key).await,
            Err(KeyError::RootGone { .. })
        ));
        assert_eq!(
            provider.root_status(&root, 1).await.unwrap(),
            RootStatus::Gone {
                deletion_date: None
            }
        );
        // Idempotent; and a fresh login (a restarted server) does not find it either.
        assert_eq!(
            provider.destroy_root(&root, 1).await.unwrap(),
            RootDestruction::AlreadyGone
        );
        let again = Pkcs11Root::connect(&pkcs11_config()).await.unwrap();
        assert!(matches!(
            again.unwrap(&root, 1, &wrapped).await,
            Err(KeyError::RootGone { .. })
        ));
    });
}

/// What an HSM root adds over a key file, tried as an attacker holding the PIN would: the key's
/// value cannot be read, copied to a new object (which would survive the shred), or wrapped
/// out under another key; a second key planted under the root's label is not used.
#[tokio::test]
async fn the_hsm_key_never_leaves_the_token() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    with_softhsm!("the_hsm_key_never_leaves_the_token", {
        let provider = Pkcs11Root::connect(&pkcs11_config()).await.unwrap();
        let root = provider.create_root(1, "0badc0de").await.unwrap();
        let key = SecretKey::generate().unwrap();
        let wrapped = provider.wrap(&root, 1, &key).await.unwrap();

        // The attacker's own session on the same token, logged in with the PIN.
        let ctx = Pkcs11::new(SoftHsm::module().unwrap()).unwrap();
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("{e}"),
        }
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == testkit::SOFTHSM_TOKEN)
            .unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        match session.login(UserType::User, Some(&AuthPin::from(testkit::SOFTHSM_PIN))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("{e}"),
        }
        let label = Attribute::Label(root.as_str().as_bytes().to_vec());
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), label.clone()])
            .unwrap();
        assert_eq!(found.len(), 1);
        let handle = found[0];

        let value = session
            .get_attributes(handle, &[AttributeType::Value])
            .unwrap();
        assert!(
            !value.iter().any(|a| matches!(a, Attribute::Value(_))),
            "the key's value was readable: {}",
            value.len()
        );
        let copy = session.copy_object(handle, &[Attribute::Label(b"stolen".to_vec())]);
        assert!(copy.is_err(), "the root key could be copied");
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                ],
            )
            .unwrap();
        assert!(
            session
                .wrap_key(&Mechanism::AesKeyWrapPad, kek, handle)
                .is_err(),
            "the root key could be wrapped out of the token"
        );

        // A key planted under the root's label: the provider refuses to pick one.
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    label,
                ],
            )
            .unwrap();
        let err = provider.unwrap(&root, 1, &wrapped).await.err().unwrap();
        assert!(err.to_string().contains("refusing to guess"), "{err}");
        assert!(matches!(
            provider.root_status(&root, 1).await.unwrap(),
            RootStatus::Present(_)
        ));
        // Logged out (the login is the whole process's): a session without it sees no private
        // key, and the provider must not take that for "gone". It logs in again and looks.
        session.logout().unwrap();
        assert!(
            session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            provider.root_status(&root, 1).await.unwrap(),
            RootStatus::Present(_)
        ));
        // Destroying the root destroys every key under its label.
        provider.destroy_root(&root, 1).await.unwrap();
        assert!(matches!(
            provider.root_status(&root, 1).await.unwrap(),
            RootStatus::Gone { .. }
        ));
    });
}
