//! What instances coordinate through the database: leases with fencing tokens, exclusive
//! sections, the pinned identity. On SQLite and on a throwaway PostgreSQL cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::Duration;

use store::{PinMismatch, PinnedIdentity, Store, StoreError};

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
            "access_revoked",
            "keys_destroyed",
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
            "access_revoked",
            "keys_destroyed",
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
