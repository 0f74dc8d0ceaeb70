//! Egress budgets counted atomically by several servers on one database: two `Store`s (two
//! connection pools, as two instances have) race on one host's budget, on SQLite and on
//! PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use store::{Budget, ByteLimit, EgressRequest, Exceeded, HostCopy, NewHost, NewModel, Store};
use types::{CommitId, HostGroupName, HostName, ModelName, RepoPath, VendorName};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    two_instances_share_one_budget(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.fresh_database().unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    two_instances_share_one_budget(a, b).await;
}

fn entry(action: &str) -> audit::Entry {
    audit::Entry::new("committer:alice", action, "acme/m")
}

fn copy(bytes: u64) -> HostCopy {
    HostCopy {
        host_id: "h1".into(),
        model_id: "m1".into(),
        commit: CommitId::parse(&"ab".repeat(20)).unwrap(),
        path: RepoPath::parse("w.bin").unwrap(),
        bytes,
        file_size: 1 << 20,
    }
}

async fn setup(store: &Store) {
    store
        .create_vendor(
            "v1",
            &VendorName::parse("acme").unwrap(),
            audit::Entry::new("operator:t", "vendor.create", "acme"),
        )
        .await
        .unwrap();
    store
        .create_model(
            &NewModel {
                id: "m1",
                vendor_id: "v1",
                name: &ModelName::parse("m").unwrap(),
                key_epoch: 1,
                wrapped_key: b"k",
            },
            audit::Entry::new("vendor-admin:a", "model.create", "acme/m"),
        )
        .await
        .unwrap();
    store
        .enroll_host(
            &NewHost {
                id: "h1",
                name: &HostName::parse("gpu-01").unwrap(),
                group: &HostGroupName::parse("gpu").unwrap(),
                cert_sha256: "h1",
                not_after: 4_000_000_000,
                enrolled_by: "operator:t",
            },
            entry("host.enroll"),
        )
        .await
        .unwrap();
    common::committed_revision(store, "m1", &CommitId::parse(&"ab".repeat(20)).unwrap()).await;
}

/// Fires `n` fetches of `bytes` each, alternating between the two stores, all at once;
/// returns how many were admitted and the leases they got.
async fn race(a: &Store, b: &Store, n: usize, bytes: u64) -> (usize, Vec<String>, Vec<Exceeded>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let lease_id = format!("lease-{i}-{}", crypto::token::random_id().unwrap());
                store
                    .record_fetch_within_budget(
                        entry("fetch"),
                        &copy(bytes),
                        &EgressRequest {
                            user_id: "u-alice",
                            lease_id: &lease_id,
                            lease_secs: 60,
                        },
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut admitted, mut leases, mut refused) = (0, Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                admitted += 1;
                leases.extend(a.lease);
            }
            Err(e) => refused.push(e),
        }
    }
    (admitted, leases, refused)
}

async fn two_instances_share_one_budget(a: Store, b: Store) {
    setup(&a).await;
    let budget = Budget {
        window_secs: 3600,
        per_host: Some(ByteLimit::Bytes(200)),
        per_user: None,
        max_hosts: None,
        per_host_concurrency: None,
    };
    a.set_budget("m1", Some(&budget), "vendor-admin:a", entry("budget.set"))
        .await
        .unwrap();

    // 48 fetches of 10 bytes against 200: exactly 20 get through, whichever instance asks.
    let (admitted, leases, refused) = race(&a, &b, 48, 10).await;
    assert_eq!(admitted, 20);
    assert!(leases.is_empty(), "no concurrency limit, no leases");
    assert_eq!(refused.len(), 28);
    for r in &refused {
        assert!(
            matches!(
                r,
                Exceeded::PerHost {
                    limit: 200,
                    used: 200,
                    asked: 10,
                    retry_at: Some(_),
                    ..
                }
            ),
            "{r:?}"
        );
    }
    let use_now = b.budget_use("m1", &budget).await.unwrap();
    assert_eq!(use_now.hosts, vec![("gpu-01".to_owned(), 200)]);
    // Only admitted fetches wrote entries and copies.
    let fetches = a
        .audit_entries(0, u64::MAX >> 1)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, bytes)| audit::Entry::parse(bytes).unwrap().action == "fetch")
        .count();
    assert_eq!(fetches, 20);

    // Concurrency: 2 slots, 10 racing fetches, bytes unlimited.
    let budget = Budget {
        window_secs: 3600,
        per_host: None,
        per_user: None,
        max_hosts: None,
        per_host_concurrency: Some(2),
    };
    b.set_budget("m1", Some(&budget), "vendor-admin:a", entry("budget.set"))
        .await
        .unwrap();
    let (admitted, leases, refused) = race(&a, &b, 10, 10).await;
    assert_eq!((admitted, leases.len(), refused.len()), (2, 2, 8));
    assert!(matches!(refused[0], Exceeded::Concurrency { limit: 2, .. }));
    // A slot given back on one instance is free on the other.
    a.release_fetch_lease(&leases[0]).await.unwrap();
    let (admitted, _, _) = race(&b, &b, 3, 10).await;
    assert_eq!(admitted, 1);
}
