//! What instances coordinate through the database: leases with fencing tokens, exclusive
//! sections, the pinned identity. On SQLite and on a throwaway PostgreSQL cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::Duration;

use store::{DeletionState, PinMismatch, PinnedIdentity, Store, StoreError};

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    (Store::connect(&url).await.unwrap(), dir)
}

async fn postgres() -> (Store, tempfile::TempDir) {
    let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.fresh_database().unwrap();
    (
        Store::connect(&url).await.unwrap(),
        tempfile::tempdir().unwrap(),
    )
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, _d) = super::sqlite().await; super::$name(s).await } )* }
        mod on_postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, _d) = super::postgres().await; super::$name(s).await } )* }
    };
}

/// Tests that also touch the database behind the store's back, as an attacker (or an older
/// version of custody) would: they get the database's URL.
macro_rules! raw_suite {
    ($($name:ident),* $(,)?) => {
        mod raw_on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("db.sqlite").display());
            super::$name(url, super::Dialect::Sqlite).await
        } )* }
        mod raw_on_postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
            super::$name(cluster.fresh_database().unwrap(), super::Dialect::Postgres).await
        } )* }
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

raw_suite!(
    deletion_work_records_of_older_versions_are_migrated_to_version_1,
    an_unknown_deletion_state_is_refused_and_never_read_as_another,
);

suite!(
    a_lease_has_one_holder_until_it_expires,
    a_write_fenced_by_a_lost_lease_is_refused,
    the_identity_is_pinned_once_and_compared_after,
);

async fn a_lease_has_one_holder_until_it_expires(store: Store) {
    let a = store
        .acquire_lease("jobs", "a", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .acquire_lease("jobs", "b", 60_000)
            .await
            .unwrap()
            .is_none()
    );
    // Renewing keeps it; a stranger cannot renew it.
    assert!(store.renew_lease(&a, "a", 60_000).await.unwrap());
    assert!(!store.renew_lease(&a, "b", 60_000).await.unwrap());
    let state = store.leases().await.unwrap();
    let jobs = state.iter().find(|l| l.name == "jobs").unwrap();
    assert_eq!(jobs.holder, "a");
    assert!(jobs.expires_in_ms > 50_000, "{jobs:?}");
    // Expired (the database's clock decides), it goes to the next taker, with a new token.
    assert!(store.renew_lease(&a, "a", 300).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = store
        .acquire_lease("jobs", "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    assert!(
        !store.renew_lease(&a, "a", 60_000).await.unwrap(),
        "a lost it"
    );
    // Given up, it is free at once.
    store.release_lease(&b, "b").await.unwrap();
    let c = store
        .acquire_lease("jobs", "c", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(c.token > b.token);
    // Leases are independent of each other.
    assert!(
        store
            .acquire_lease("other", "a", 60_000)
            .await
            .unwrap()
            .is_some()
    );
}

async fn a_write_fenced_by_a_lost_lease_is_refused(store: Store) {
    store
        .create_vendor(
            "v1",
            &types::VendorName::parse("acme").unwrap(),
            audit::Entry::new("t", "vendor.create", "acme"),
        )
        .await
        .unwrap();
    let deletion = store
        .start_deletion(
            "d1",
            "v1",
            None,
            "t",
            None,
            audit::Entry::new("t", "deletion.request", "acme"),
        )
        .await
        .unwrap();
    let old = store
        .acquire_lease("deletions", "a", -1)
        .await
        .unwrap()
        .unwrap();
    let new = store
        .acquire_lease("deletions", "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    let size = store.audit_size().await.unwrap();
    let err = store
        .advance_deletion(
            &deletion.id,
            DeletionState::AccessRevoked,
            DeletionState::KeysDestroyed,
            "{}",
            audit::Entry::new("system", "deletion.keys", "acme"),
            Some(&old),
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(matches!(
        store
            .deletion_failed(&deletion.id, "x", 0, Some(&old))
            .await,
        Err(StoreError::Fenced(_))
    ));
    // Nothing changed, not even the log.
    assert_eq!(store.audit_size().await.unwrap(), size);
    assert_eq!(store.deletion("d1").await.unwrap().unwrap(), deletion);
    // The holder's write goes through; its failure is recorded and cleared by the next step.
    assert_eq!(
        store
            .deletion_failed("d1", "storage said no", 99, Some(&new))
            .await
            .unwrap(),
        1
    );
    let d = store.deletion("d1").await.unwrap().unwrap();
    assert_eq!(
        (d.attempts, d.last_error.as_deref(), d.retry_at),
        (1, Some("storage said no"), Some(99))
    );
    store
        .advance_deletion(
            "d1",
            DeletionState::AccessRevoked,
            DeletionState::KeysDestroyed,
            "{}",
            audit::Entry::new("system", "deletion.keys", "acme"),
            Some(&new),
        )
        .await
        .unwrap();
    let d = store.deletion("d1").await.unwrap().unwrap();
    assert_eq!((d.attempts, d.last_error, d.retry_at), (0, None, None));
}

fn pin(kind: &str, fingerprint: &str) -> PinnedIdentity {
    PinnedIdentity {
        kind: kind.into(),
        fingerprint: fingerprint.into(),
    }
}

async fn the_identity_is_pinned_once_and_compared_after(store: Store) {
    assert!(!store.is_in_use().await.unwrap());
    let mine = [pin("audit-log-key", "k1"), pin("host-ca", "c1")];
    assert!(store.pin_identity(&mine).await.unwrap().is_empty());
    assert!(store.is_in_use().await.unwrap());
    assert!(store.pin_identity(&mine).await.unwrap().is_empty());
    let other = [pin("audit-log-key", "k2"), pin("host-ca", "c1")];
    let mismatches = store.pin_identity(&other).await.unwrap();
    assert_eq!(
        mismatches,
        vec![PinMismatch::Differs {
            kind: "audit-log-key".into(),
            pinned: "k1".into(),
            found: "k2".into()
        }]
    );
    assert!(mismatches[0].describe().contains("audit-log-key"));
    // A kind pinned later (an upgrade adds one) is pinned on first sight; nothing else moves.
    assert!(
        store
            .pin_identity(&[pin("audit-log-key", "k1"), pin("service-signing-key", "s1")])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.pinned_identity().await.unwrap().len(), 3);
}

/// On PostgreSQL, an exclusive section excludes another instance's (another connection's)
/// until it ends; a dropped section is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_sections_exclude_each_other_on_postgresql() {
    let cluster = testkit::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    let one = Store::connect(&url).await.unwrap();
    let two = Store::connect(&url).await.unwrap();
    let held = one.initialisation_section().await.unwrap();
    let waiting = tokio::spawn(async move { two.initialisation_section().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "two instances initialised at once");
    // Another section is independent.
    drop(one.signing_section().await.unwrap());
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the section was not released")
        .unwrap()
        .unwrap();
}

async fn raw_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url).await.unwrap()
}

fn migrations_dir(dialect: Dialect) -> std::path::PathBuf {
    let name = match dialect {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(name)
}

/// Migration 0011 turns the work records that earlier versions left (no version, the root's
/// destruction as a sentence) into version 1, so a deletion in flight during an upgrade goes
/// on, with its KMS deletion date kept.
async fn deletion_work_records_of_older_versions_are_migrated_to_version_1(
    url: String,
    dialect: Dialect,
) {
    let pool = raw_pool(&url).await;
    let mut before = sqlx::migrate::Migrator::new(migrations_dir(dialect))
        .await
        .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 11)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    sqlx::query("INSERT INTO vendors (id, name, created_at) VALUES ('v1', 'acme', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let old = [
        ("fresh", "access_revoked", "{}".to_owned()),
        (
            "file",
            "objects_deleted",
            r#"{"models":[],"objects":[],"upload_objects":[],"from_epoch":1,"to_epoch":2,"root_kind":"file","root":"root-1-0123abcd.key","root_destruction":"root key file overwritten and removed","post_checks":[]}"#.to_owned(),
        ),
        (
            "kms",
            "checked",
            r#"{"models":[],"objects":[],"upload_objects":[],"from_epoch":3,"to_epoch":4,"root_kind":"aws-kms","root":"arn:aws:kms:us-east-1:1:key/k","root_destruction":"KMS key scheduled for deletion on 2026-12-09T10:00:00Z; disabled for use meanwhile","post_checks":[{"name":"c","passed":true,"detail":"d"}]}"#.to_owned(),
        ),
    ];
    for (id, state, work) in &old {
        sqlx::query(
            "INSERT INTO deletions (id, vendor_id, state, requested_by, requested_at, work) \
             VALUES ($1, 'v1', $2, 't', 0, $3)",
        )
        .bind(*id)
        .bind(*state)
        .bind(work.as_str())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::connect(&url).await.unwrap();
    let work = |id: &'static str| {
        let store = store.clone();
        async move {
            let d = store.deletion(id).await.unwrap().unwrap();
            serde_json::from_str::<serde_json::Value>(&d.work).unwrap()
        }
    };
    assert_eq!(work("fresh").await, serde_json::json!({"version": 1}));
    let file = work("file").await;
    assert_eq!(file["version"], 1, "{file}");
    assert_eq!(file.get("root_destruction"), None, "{file}");
    assert_eq!(
        file["root_destroyed"],
        serde_json::json!({"kind": "file", "id": "root-1-0123abcd.key", "epoch": 1, "deletion_date": null})
    );
    let kms = work("kms").await;
    assert_eq!(
        kms["root_destroyed"],
        serde_json::json!({"kind": "aws-kms", "id": "arn:aws:kms:us-east-1:1:key/k", "epoch": 3, "deletion_date": "2026-12-09T10:00:00Z"})
    );
    assert_eq!(kms["post_checks"][0]["passed"], true, "{kms}");
    assert_eq!(
        store.deletion("kms").await.unwrap().unwrap().state,
        DeletionState::Checked
    );
}

/// The state column admits only the state machine's states; a database edited past the
/// constraint (SQLite told to ignore it, the constraint dropped on PostgreSQL) is read as
/// corrupt, never as some state, and never silently skipped: the runner still lists it.
async fn an_unknown_deletion_state_is_refused_and_never_read_as_another(
    url: String,
    dialect: Dialect,
) {
    let store = Store::connect(&url).await.unwrap();
    store
        .create_vendor(
            "v1",
            &types::VendorName::parse("acme").unwrap(),
            audit::Entry::new("t", "vendor.create", "acme"),
        )
        .await
        .unwrap();
    let d = store
        .start_deletion(
            "d1",
            "v1",
            None,
            "t",
            None,
            audit::Entry::new("t", "deletion.request", "acme"),
        )
        .await
        .unwrap();
    assert_eq!(d.state, DeletionState::AccessRevoked);
    assert_eq!(d.work, store::UNPREPARED_WORK);
    for state in DeletionState::ALL {
        assert_eq!(DeletionState::parse(state.as_str()), Some(state));
    }
    assert_eq!(DeletionState::parse("paused"), None);
    assert_eq!(DeletionState::parse("Certified"), None);

    let pool = raw_pool(&url).await;
    let mut conn = pool.acquire().await.unwrap();
    let tamper = "UPDATE deletions SET state = 'paused' WHERE id = 'd1'";
    let refused = sqlx::query(tamper).execute(&mut *conn).await;
    assert!(refused.is_err(), "the database took an unknown state");
    assert_eq!(store.deletion("d1").await.unwrap().unwrap(), d);

    let bypass = match dialect {
        Dialect::Sqlite => "PRAGMA ignore_check_constraints = ON",
        Dialect::Postgres => "ALTER TABLE deletions DROP CONSTRAINT deletions_state_known",
    };
    sqlx::query(bypass).execute(&mut *conn).await.unwrap();
    sqlx::query(tamper).execute(&mut *conn).await.unwrap();
    let err = store.deletion("d1").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(why) if why.contains("paused")),
        "{err}"
    );
    // Listed still, so that the runner reports it as this deletion's error.
    assert_eq!(store.unfinished_deletions().await.unwrap(), ["d1"]);
}
