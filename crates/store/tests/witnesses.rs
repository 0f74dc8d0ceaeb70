//! Witnesses' cosignatures and progress in SQL, on SQLite and on a throwaway PostgreSQL
//! cluster: the first line kept for a size stays, progress moves with each cosignature, an
//! error is kept until the next success.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use store::Store;

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

async fn cosignatures_and_progress_are_kept(store: Store) {
    assert_eq!(store.witness_progress("w1").await.unwrap(), None);
    store.set_witness_error("w1", "unreachable").await.unwrap();
    let p = store.witness_progress("w1").await.unwrap().unwrap();
    assert_eq!(
        (p.cosigned_size, p.last_error.as_deref()),
        (0, Some("unreachable"))
    );

    store.save_cosignature(5, "w1", "line-a\n").await.unwrap();
    store.save_cosignature(5, "w2", "line-b\n").await.unwrap();
    // A second line for the same size and witness does not replace the first.
    store.save_cosignature(5, "w1", "other\n").await.unwrap();
    store.save_cosignature(9, "w1", "line-c\n").await.unwrap();
    let p = store.witness_progress("w1").await.unwrap().unwrap();
    assert_eq!((p.cosigned_size, p.last_error), (9, None));
    assert_eq!(
        store.cosignatures(5).await.unwrap(),
        vec![
            ("w1".to_owned(), "line-a\n".to_owned()),
            ("w2".to_owned(), "line-b\n".to_owned())
        ]
    );
    assert_eq!(
        store.cosignatures_between(6, 100).await.unwrap(),
        vec![(9, "line-c\n".to_owned())]
    );
    // An error keeps the size cosigned.
    store
        .set_witness_error("w1", "refused (409)")
        .await
        .unwrap();
    let p = store.witness_progress("w1").await.unwrap().unwrap();
    assert_eq!(
        (p.cosigned_size, p.last_error.as_deref()),
        (9, Some("refused (409)"))
    );
}

#[tokio::test]
async fn on_sqlite() {
    let (store, _dir) = sqlite().await;
    cosignatures_and_progress_are_kept(store).await;
}

#[tokio::test]
async fn on_postgres() {
    let (store, _dir) = postgres().await;
    cosignatures_and_progress_are_kept(store).await;
}
