//! Copies on exclusive hosts and wipe confirmations, on SQLite and on PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use store::{Confirmed, HostCopy, NewHost, NewModel, Store, StoreError};
use types::{CommitId, HostGroupName, HostName, ModelName, RepoPath, VendorName};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    let (s, _d) = sqlite().await;
    copies_and_confirmations(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    let (s, _d) = postgres().await;
    copies_and_confirmations(s).await;
}

fn entry(action: &str) -> audit::Entry {
    audit::Entry::new("host:test", action, "acme/m")
}

fn copy(host_id: &str, path: &str, bytes: u64) -> HostCopy {
    HostCopy {
        host_id: host_id.into(),
        model_id: "m1".into(),
        commit: CommitId::parse(&"ab".repeat(20)).unwrap(),
        path: RepoPath::parse(path).unwrap(),
        bytes,
        file_size: 1000,
    }
}

async fn audit_actions(store: &Store) -> Vec<String> {
    store
        .audit_entries(0, u64::MAX >> 1)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, bytes)| {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            v["action"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn copies_and_confirmations(store: Store) {
    let acme = VendorName::parse("acme").unwrap();
    store
        .create_vendor(
            "v1",
            &acme,
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
    for (id, name) in [("h1", "gpu-01"), ("h2", "gpu-02"), ("h3", "gpu-03")] {
        store
            .enroll_host(
                &NewHost {
                    id,
                    name: &HostName::parse(name).unwrap(),
                    group: &HostGroupName::parse("gpu").unwrap(),
                    cert_sha256: id,
                    not_after: 4_000_000_000,
                    enrolled_by: "operator:t",
                },
                entry("host.enroll"),
            )
            .await
            .unwrap();
    }

    common::committed_revision(&store, "m1", &CommitId::parse(&"ab".repeat(20)).unwrap()).await;

    // Ranged fetches add up, capped at the file's size; each fetch writes its entry.
    store
        .record_fetch(entry("fetch"), &copy("h1", "w.bin", 400))
        .await
        .unwrap();
    store
        .record_fetch(entry("fetch"), &copy("h1", "w.bin", 400))
        .await
        .unwrap();
    store
        .record_fetch(entry("fetch"), &copy("h1", "w.bin", 400))
        .await
        .unwrap();
    store
        .record_fetch(entry("fetch"), &copy("h2", "c.json", 10))
        .await
        .unwrap();
    let copies = store.host_copies("m1").await.unwrap();
    let summary: Vec<(String, String, u64)> = copies
        .iter()
        .map(|c| (c.host.to_string(), c.path.to_string(), c.bytes))
        .collect();
    assert_eq!(
        summary,
        [
            ("gpu-01".into(), "w.bin".into(), 1000),
            ("gpu-02".into(), "c.json".into(), 10)
        ]
    );
    assert_eq!(
        audit_actions(&store)
            .await
            .iter()
            .filter(|a| *a == "fetch")
            .count(),
        4
    );
    assert!(store.deleted_copies("h1").await.unwrap().is_empty());

    // Not deleted yet: a confirmation is refused and writes nothing.
    let err = store
        .confirm_wipe("h1", "m1", 1, |_| entry("wipe.confirm"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    store
        .start_deletion(
            "d1",
            "v1",
            Some("m1"),
            "vendor-admin:a",
            None,
            entry("delete"),
        )
        .await
        .unwrap();
    let deleted = store.deleted_copies("h1").await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].model.as_str(), "acme/m");

    // A host without a copy cannot confirm; nor can the same name enrolled again later
    // (a new enrollment): copies belong to the enrollment that received them.
    store
        .revoke_host(&HostName::parse("gpu-01").unwrap(), entry("host.revoke"))
        .await
        .unwrap();
    store
        .enroll_host(
            &NewHost {
                id: "h4",
                name: &HostName::parse("gpu-01").unwrap(),
                group: &HostGroupName::parse("gpu").unwrap(),
                cert_sha256: "h4",
                not_after: 4_000_000_000,
                enrolled_by: "operator:t",
            },
            entry("host.enroll"),
        )
        .await
        .unwrap();
    for host in ["h3", "h4", "no-such-host"] {
        let err = store
            .confirm_wipe(host, "m1", 0, |_| entry("wipe.confirm"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }
    assert!(store.deleted_copies("h4").await.unwrap().is_empty());
    let (deletion, first) = store
        .confirm_wipe("h1", "m1", 1, |_| entry("wipe.confirm"))
        .await
        .unwrap();
    assert_eq!(
        (deletion.as_str(), first),
        ("d1", Confirmed::Recorded { late: false })
    );
    let (_, again) = store
        .confirm_wipe("h1", "m1", 7, |_| entry("wipe.confirm"))
        .await
        .unwrap();
    assert_eq!(again, Confirmed::Repeated { late: false });
    let confirmations = store.wipe_confirmations("d1").await.unwrap();
    assert_eq!(confirmations.len(), 1);
    assert_eq!(
        (
            confirmations[0].host_id.as_str(),
            confirmations[0].host.as_str(),
            confirmations[0].files
        ),
        ("h1", "gpu-01", 1)
    );
    // Confirmed copies are no longer asked for; the copy records stay for the certificate.
    assert!(store.deleted_copies("h1").await.unwrap().is_empty());
    assert_eq!(store.host_copies("m1").await.unwrap().len(), 2);
    assert_eq!(
        audit_actions(&store)
            .await
            .iter()
            .filter(|a| *a == "wipe.confirm")
            .count(),
        2
    );
}
