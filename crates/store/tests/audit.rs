//! The audit log in SQL: the Merkle tree is written in the entry's own transaction, group
//! commit hands out gap-free sequence numbers under concurrency, proofs served from the
//! database verify. Every test runs on SQLite and on a throwaway PostgreSQL cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use audit::leaf::{self, NO_VENDOR};
use audit::merkle::{self, Hash, leaf_hash, root_from_leaves};
use store::{Store, StoreError};
use types::VendorName;

/// A database and the URL to open it again.
async fn sqlite() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    (Store::connect(&url).await.unwrap(), url, dir)
}

async fn postgres() -> (Store, String, tempfile::TempDir) {
    let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.fresh_database().unwrap();
    (
        Store::connect(&url).await.unwrap(),
        url,
        tempfile::tempdir().unwrap(),
    )
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, u, _d) = super::sqlite().await; super::$name(s, u).await } )* }
        mod on_postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, u, _d) = super::postgres().await; super::$name(s, u).await } )* }
    };
}

suite!(
    the_tree_equals_the_log_after_every_kind_of_append,
    a_rolled_back_transaction_leaves_no_leaf,
    sixty_four_concurrent_writers_get_gap_free_durable_entries,
    group_commit_and_state_changes_interleave,
    proofs_from_the_database_verify,
    a_tree_out_of_step_with_the_log_stops_appends,
    an_older_log_gets_its_tree_when_opened,
    checkpoints_are_kept_by_size,
    tampered_negative_numbers_are_errors_not_wrapped_values,
    each_vendors_entries_carry_its_tag,
);

fn entry(action: &str) -> audit::Entry {
    audit::Entry::new("operator:test", action, "service")
}

fn vendor(name: &str) -> VendorName {
    VendorName::parse(name).unwrap()
}

/// Every stored entry, checked to sit at its own sequence number.
async fn stored_entries(store: &Store) -> Vec<Vec<u8>> {
    let size = store.audit_size().await.unwrap();
    let entries = store.audit_entries(0, size).await.unwrap();
    assert_eq!(entries.len() as u64, size, "one entry per leaf");
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (seq, bytes))| {
            assert_eq!(seq, i as u64);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["seq"], seq, "the entry carries its sequence number");
            bytes
        })
        .collect()
}

/// The leaves rebuilt from the stored entries and their stored tags.
async fn rebuilt_leaves(store: &Store) -> Vec<Hash> {
    let size = store.audit_size().await.unwrap();
    let tagged = store.audit_entries_tagged(0, size).await.unwrap();
    assert_eq!(
        tagged.iter().map(|e| e.bytes.clone()).collect::<Vec<_>>(),
        stored_entries(store).await
    );
    tagged
        .iter()
        .map(|e| leaf::entry_leaf(&e.bytes, &e.tag))
        .collect()
}

/// The tree in the database is the tree over the stored entry bytes: same leaves, same root
/// at every size.
async fn assert_tree_matches_log(store: &Store) {
    let leaves = rebuilt_leaves(store).await;
    let size = leaves.len() as u64;
    assert_eq!(
        store.audit_leaf_hashes(0, size).await.unwrap(),
        leaves,
        "stored leaf hashes are the hashes of the stored entries"
    );
    let (head_size, head_root) = store.audit_head().await.unwrap();
    assert_eq!(head_size, size);
    assert_eq!(head_root, root_from_leaves(&leaves));
    for s in 0..=size {
        assert_eq!(
            store.audit_root(s).await.unwrap(),
            root_from_leaves(&leaves[..s as usize]),
            "root at size {s}"
        );
    }
}

async fn the_tree_equals_the_log_after_every_kind_of_append(store: Store, _url: String) {
    assert_eq!(store.audit_size().await.unwrap(), 0);
    assert_eq!(store.audit_head().await.unwrap().1, merkle::empty_root());
    // State changes (AuditedTx) and stand-alone entries (group commit), mixed.
    for i in 0..20 {
        if i % 3 == 0 {
            store
                .create_vendor(
                    &format!("v{i}"),
                    &vendor(&format!("vendor{i}")),
                    entry("vendor.create"),
                )
                .await
                .unwrap();
        } else {
            store.record(entry(&format!("read-{i}"))).await.unwrap();
        }
    }
    assert_eq!(store.audit_size().await.unwrap(), 20);
    assert_tree_matches_log(&store).await;
}

async fn a_rolled_back_transaction_leaves_no_leaf(store: Store, _url: String) {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    let before = store.audit_head().await.unwrap();
    // A refused change: the transaction is dropped after claiming a sequence number.
    let err = store
        .create_vendor("v2", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // A transaction dropped without commit.
    drop(store.begin().await.unwrap());
    assert_eq!(store.audit_head().await.unwrap(), before);
    assert!(
        store
            .audit_leaf_hashes(before.0, before.0 + 10)
            .await
            .unwrap()
            .is_empty(),
        "no leaf beyond the log"
    );
    // The next entry takes the next number, and the tree still matches.
    let seq = store.record(entry("after")).await.unwrap();
    assert_eq!(seq, before.0);
    assert_tree_matches_log(&store).await;
}

async fn sixty_four_concurrent_writers_get_gap_free_durable_entries(store: Store, url: String) {
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let seq = store
                    .record(entry("probe").with_detail(format!("{w}-{i}")))
                    .await
                    .unwrap();
                got.push((seq, format!("{w}-{i}")));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (0..(WRITERS * EACH) as u64).collect::<Vec<_>>(),
        "gap-free and unique"
    );
    // Batched: fewer transactions than entries.
    let (batches, entries) = store.audit_group_commits();
    assert_eq!(entries, (WRITERS * EACH) as u64);
    assert!(
        batches < entries,
        "{batches} transactions for {entries} entries"
    );
    // Durable: a fresh connection to the same database sees every entry where its caller was
    // told it is, and the tree over them.
    drop(store);
    let reopened = Store::connect(&url).await.unwrap();
    let entries = stored_entries(&reopened).await;
    assert_eq!(entries.len(), WRITERS * EACH);
    for (seq, detail) in &all {
        let v: serde_json::Value = serde_json::from_slice(&entries[*seq as usize]).unwrap();
        assert_eq!(v["detail"], *detail, "entry {seq}");
    }
    assert_tree_matches_log(&reopened).await;
}

async fn group_commit_and_state_changes_interleave(store: Store, _url: String) {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                if w % 4 == 0 {
                    store
                        .create_vendor(
                            &format!("v{w}-{i}"),
                            &vendor(&format!("vendor{w}x{i}")),
                            entry("vendor.create"),
                        )
                        .await
                        .unwrap();
                } else {
                    store.record(entry("read")).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.audit_size().await.unwrap(), 160);
    assert_tree_matches_log(&store).await;
    assert_eq!(store.vendors().await.unwrap().len(), 40);
}

async fn proofs_from_the_database_verify(store: Store, _url: String) {
    for i in 0..37 {
        store.record(entry(&format!("e{i}"))).await.unwrap();
    }
    let leaves: Vec<Hash> = rebuilt_leaves(&store).await;
    // The database's proofs equal the in-memory tree's, and verify.
    let mut memory = merkle::MemoryTreeStore::new();
    let mut size = 0;
    for leaf in &leaves {
        size = merkle::append(&mut memory, size, *leaf).unwrap();
    }
    for n in [1u64, 2, 5, 8, 16, 31, 37] {
        let root = store.audit_root(n).await.unwrap();
        for i in 0..n {
            let (leaf, proof) = store.audit_inclusion_proof(i, n).await.unwrap();
            assert_eq!(leaf, leaves[i as usize]);
            assert_eq!(proof, merkle::inclusion_proof(&memory, i, n).unwrap());
            assert!(merkle::verify_inclusion(&leaf, i, n, &proof, &root));
        }
        for m in 0..=n {
            let proof = store.audit_consistency_proof(m, n).await.unwrap();
            assert_eq!(proof, merkle::consistency_proof(&memory, m, n).unwrap());
            let old = store.audit_root(m).await.unwrap();
            assert!(
                merkle::verify_consistency(m, n, &old, &root, &proof),
                "{m} -> {n}"
            );
        }
        // The edge continues the tree: edge at m plus leaves m..n gives the root at n.
        for m in [0, n / 2, n] {
            let edge = store.audit_edge(m).await.unwrap();
            let mut range = merkle::CompactRange::from_edge(m, edge).unwrap();
            for leaf in &leaves[m as usize..n as usize] {
                range.push(*leaf);
            }
            assert_eq!(range.root(), root);
        }
    }
    // Beyond the log: refused, not invented.
    assert!(matches!(
        store.audit_root(38).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.audit_inclusion_proof(37, 37).await.is_err());
    assert!(store.audit_inclusion_proof(0, 38).await.is_err());
    assert!(store.audit_consistency_proof(5, 38).await.is_err());
    assert!(store.audit_consistency_proof(6, 5).await.is_err());
}

/// Runs raw SQL on the database behind `url`, as someone with database access could.
async fn raw_sql(url: &str, sql: &str) {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    pool.execute(sql).await.unwrap();
    pool.close().await;
}

async fn a_tree_out_of_step_with_the_log_stops_appends(store: Store, url: String) {
    for _ in 0..5 {
        store.record(entry("e")).await.unwrap();
    }
    raw_sql(&url, "UPDATE audit_head SET tree_size = 4 WHERE id = 1").await;
    let err = store.record(entry("e")).await.unwrap_err();
    assert!(err.to_string().contains("tree and log disagree"), "{err}");
    let err = store
        .create_vendor("v", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tree and log disagree"), "{err}");
    // Nothing was written by the refused appends.
    assert!(store.vendor(&vendor("acme")).await.unwrap().is_none());
    assert_eq!(store.audit_entries(0, 100).await.unwrap().len(), 5);
}

async fn an_older_log_gets_its_tree_when_opened(store: Store, url: String) {
    for i in 0..13 {
        store.record(entry(&format!("e{i}"))).await.unwrap();
    }
    let root = store.audit_root(13).await.unwrap();
    drop(store);
    // As a database from before the tree existed: entries, no tree.
    raw_sql(&url, "DELETE FROM audit_tree").await;
    raw_sql(&url, "UPDATE audit_head SET tree_size = 0 WHERE id = 1").await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap(), (13, root));
    store.record(entry("after")).await.unwrap();
    assert_tree_matches_log(&store).await;

    // A log with a hole cannot be backfilled: opening says so instead of inventing a tree.
    drop(store);
    raw_sql(&url, "DELETE FROM audit_tree").await;
    raw_sql(&url, "UPDATE audit_head SET tree_size = 0 WHERE id = 1").await;
    raw_sql(&url, "DELETE FROM audit_log WHERE seq = 4").await;
    let err = Store::connect(&url).await.err().unwrap();
    assert!(
        err.to_string().contains("audit entry 4 is missing"),
        "{err}"
    );
}

async fn checkpoints_are_kept_by_size(store: Store, _url: String) {
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    let r3 = leaf_hash(b"3");
    let r7 = leaf_hash(b"7");
    store.save_checkpoint(3, &r3, "note 3\n").await.unwrap();
    store.save_checkpoint(7, &r7, "note 7\n").await.unwrap();
    // The same note again is fine; another note for the same size is not.
    store.save_checkpoint(7, &r7, "note 7\n").await.unwrap();
    assert!(matches!(
        store.save_checkpoint(7, &r3, "other\n").await,
        Err(StoreError::Conflict(_))
    ));
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(
        (latest.size, latest.root, latest.note.as_str()),
        (7, r7, "note 7\n")
    );
    let sizes: Vec<u64> = store
        .checkpoints(0, 100, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, [3, 7]);
    assert_eq!(store.checkpoints(4, 7, 10).await.unwrap().len(), 1);
    assert_eq!(store.checkpoints(0, 100, 1).await.unwrap()[0].size, 3);
    assert_eq!(store.checkpoint(3).await.unwrap().unwrap().note, "note 3\n");
    assert_eq!(store.checkpoint(4).await.unwrap(), None);
}

async fn tampered_negative_numbers_are_errors_not_wrapped_values(store: Store, url: String) {
    for _ in 0..3 {
        store.record(entry("e")).await.unwrap();
    }
    let (size, root) = store.audit_head().await.unwrap();
    store.save_checkpoint(size, &root, "note").await.unwrap();

    // A negative checkpoint size would have read as 2^64 - 1.
    raw_sql(&url, "UPDATE audit_checkpoints SET size = -1").await;
    let err = store.latest_checkpoint().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("size is -1")),
        "{err}"
    );

    // A negative tree size: the log's size is an error, not 2^64 - 5.
    raw_sql(&url, "UPDATE audit_head SET tree_size = -5 WHERE id = 1").await;
    let err = store.audit_size().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("tree_size is -5")),
        "{err}"
    );

    // A negative next sequence number: no entry gets a wrapped one.
    raw_sql(
        &url,
        "UPDATE audit_head SET tree_size = 3, next_seq = -7 WHERE id = 1",
    )
    .await;
    let err = store
        .create_vendor("v", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("-7")),
        "{err}"
    );
    assert!(store.record(entry("e")).await.is_err());
    assert!(store.vendor(&vendor("acme")).await.unwrap().is_none());
}

/// A vendor's entries carry its tag (HMAC under its key, at their index) and its id; the
/// service's own carry none; the vendor's creation publishes the key's fingerprint; and a
/// vendor from before tags gets a key, published in an entry of its own, when the store opens.
async fn each_vendors_entries_carry_its_tag(store: Store, url: String) {
    let acme = store
        .create_vendor("v-acme", &vendor("acme"), entry_on("vendor.create", "acme"))
        .await
        .unwrap();
    store
        .record(entry_on("fetch", "acme/llama-9@abc"))
        .await
        .unwrap();
    store.record(entry("token.create")).await.unwrap();
    let key = store.vendor_audit_key(&acme.id).await.unwrap();
    assert_eq!(key.published_at, 0);
    let size = store.audit_size().await.unwrap();
    let tagged = store.audit_entries_tagged(0, size).await.unwrap();
    let created = String::from_utf8(tagged[0].bytes.clone()).unwrap();
    assert!(
        created.contains(&leaf::key_announcement(&key.key)),
        "{created}"
    );
    for e in &tagged[..2] {
        assert_eq!(e.tag, leaf::vendor_tag(&key.key, e.seq));
        assert_eq!(e.vendor_id.as_deref(), Some("v-acme"));
    }
    assert_eq!(tagged[2].tag, NO_VENDOR);
    assert_eq!(tagged[2].vendor_id, None);
    assert_eq!(
        store.vendor_entries(&acme.id, 0, 10).await.unwrap(),
        tagged[..2].to_vec()
    );
    assert_tree_matches_log(&store).await;

    // A vendor from before tags: no key until the store opens again.
    drop(store);
    raw_sql(
        &url,
        "UPDATE vendors SET audit_tag_key = NULL, audit_tag_key_entry = NULL",
    )
    .await;
    let store = Store::connect(&url).await.unwrap();
    let again = store.vendor_audit_key(&acme.id).await.unwrap();
    assert_ne!(again.key.expose_bytes(), key.key.expose_bytes());
    assert_eq!(again.published_at, size);
    let published = store.audit_entries_tagged(size, size + 1).await.unwrap();
    let text = String::from_utf8(published[0].bytes.clone()).unwrap();
    assert!(text.contains(r#""action":"vendor.audit-key""#), "{text}");
    assert!(text.contains(&leaf::key_announcement(&again.key)), "{text}");
    assert_eq!(published[0].tag, leaf::vendor_tag(&again.key, size));
    // Opening again gives no second key.
    drop(store);
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.audit_size().await.unwrap(), size + 1);
    assert_tree_matches_log(&store).await;
}

fn entry_on(action: &str, resource: &str) -> audit::Entry {
    audit::Entry::new("operator:test", action, resource)
}
