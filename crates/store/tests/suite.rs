//! One suite, every database: each test runs against SQLite and against a throwaway
//! PostgreSQL cluster started from the system's binaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;

use store::{FileRecord, Grantee, NewModel, NewToken, NewUpload, PendingAction, Store, StoreError};
use types::{
    CommitId, GroupName, ModelName, ObjectId, RepoPath, Role, Sha256Hex, UserName, VendorName,
};

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

/// Generates `mod NAME { sqlite, postgres }` running the same async body on both.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, _d) = super::sqlite().await; super::$name(s).await } )* }
        mod on_postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (s, _d) = super::postgres().await; super::$name(s).await } )* }
    };
}

suite!(
    vendors_are_unique_and_a_refused_change_writes_no_entry,
    tokens_store_only_a_hash,
    a_commit_makes_one_immutable_revision,
    grants_come_and_go,
    a_requester_cannot_approve_their_own_request,
    concurrent_changes_get_gap_free_sequence_numbers,
    upload_progress_survives_and_expires,
);

fn entry(action: &str) -> audit::Entry {
    audit::Entry::new("operator:test", action, "service")
}

fn vendor(name: &str) -> VendorName {
    VendorName::parse(name).unwrap()
}

async fn audit_actions(store: &Store) -> Vec<String> {
    store
        .audit_entries(0, u64::MAX >> 1)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, bytes)| {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["seq"], seq, "stored seq and entry seq agree");
            v["action"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn vendors_are_unique_and_a_refused_change_writes_no_entry(store: Store) {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    let err = store
        .create_vendor("v2", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        audit_actions(&store).await,
        ["vendor.create"],
        "the refused create left an entry"
    );
    let names: Vec<_> = store
        .vendors()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, [vendor("acme")]);
    assert!(store.vendor(&vendor("nobody")).await.unwrap().is_none());
}

async fn tokens_store_only_a_hash(store: Store) {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    let user = UserName::parse("alice").unwrap();
    store
        .create_token(
            &NewToken {
                id: "00aa",
                secret_hash: &[7u8; 32],
                role: Role::VendorAdmin,
                vendor_id: Some("v1"),
                user: &user,
                expires_at: Some(123),
            },
            entry("token.create"),
        )
        .await
        .unwrap();
    let t = store.token("00aa").await.unwrap().unwrap();
    assert_eq!(t.secret_hash, vec![7u8; 32]);
    assert_eq!(
        (t.role, t.vendor, t.user, t.expires_at),
        (Role::VendorAdmin, Some(vendor("acme")), user, Some(123))
    );
    assert!(store.token("00bb").await.unwrap().is_none());
    assert_eq!(store.token_count().await.unwrap(), 1);
}

fn file(path: &str, n: u8) -> FileRecord {
    FileRecord {
        path: RepoPath::parse(path).unwrap(),
        object_id: ObjectId::from_bytes(&[n; 16]),
        size: n as u64 * 10,
        sha256: Sha256Hex::from_bytes(&[n; 32]),
    }
}

async fn model(store: &Store) -> String {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    let name = ModelName::parse("m").unwrap();
    store
        .create_model(
            &NewModel {
                id: "m1",
                vendor_id: "v1",
                name: &name,
                key_epoch: 1,
                wrapped_key: &[1, 2, 3],
            },
            entry("model.create"),
        )
        .await
        .unwrap();
    let dup = store
        .create_model(
            &NewModel {
                id: "m2",
                vendor_id: "v1",
                name: &name,
                key_epoch: 1,
                wrapped_key: &[9],
            },
            entry("model.create"),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    "m1".into()
}

async fn a_commit_makes_one_immutable_revision(store: Store) {
    let model_id = model(&store).await;
    let files = [file("b/w.bin", 2), file("config.json", 1)];
    store
        .create_upload(
            &NewUpload {
                id: "u1",
                manifest_digest: "d1",
                model_id: &model_id,
                created_by: "vendor-admin:a",
                message: "first",
                expires_at: i64::MAX,
                files: &files,
            },
            entry("upload.begin"),
        )
        .await
        .unwrap();
    let session = store.upload("u1").await.unwrap().unwrap();
    assert_eq!(session.files.len(), 2);
    assert!(session.files.iter().all(|f| !f.done));
    assert!(
        store.latest_revision(&model_id).await.unwrap().is_none(),
        "no revision before commit"
    );

    for (idx, f) in files.iter().enumerate() {
        store
            .upload_file_done("u1", idx, &model_id, f, 99)
            .await
            .unwrap();
    }
    let session = store.upload("u1").await.unwrap().unwrap();
    assert!(session.files.iter().all(|f| f.done));
    let commit = CommitId::from_bytes(&[0xab; 20]);
    store
        .commit_upload(&session, &commit, entry("upload.commit"))
        .await
        .unwrap();

    assert!(
        store.upload("u1").await.unwrap().is_none(),
        "the session is closed"
    );
    let latest = store.latest_revision(&model_id).await.unwrap().unwrap();
    assert_eq!(
        (latest.commit.clone(), latest.seq, latest.message.as_str()),
        (commit.clone(), 1, "first")
    );
    let stored = store.revision_files(&commit).await.unwrap();
    assert_eq!(stored, vec![file("b/w.bin", 2), file("config.json", 1)]);
    let one = store
        .revision_file(&commit, &RepoPath::parse("config.json").unwrap())
        .await
        .unwrap();
    assert_eq!(one, Some(file("config.json", 1)));

    // The same commit id cannot be written twice.
    store
        .create_upload(
            &NewUpload {
                id: "u2",
                manifest_digest: "d2",
                model_id: &model_id,
                created_by: "x",
                message: "",
                expires_at: i64::MAX,
                files: &[file("c", 3)],
            },
            entry("upload.begin"),
        )
        .await
        .unwrap();
    store
        .upload_file_done("u2", 0, &model_id, &file("c", 3), 1)
        .await
        .unwrap();
    let session = store.upload("u2").await.unwrap().unwrap();
    assert!(
        store
            .commit_upload(&session, &commit, entry("upload.commit"))
            .await
            .is_err()
    );
    assert_eq!(store.revisions(&model_id).await.unwrap().len(), 1);
    assert_eq!(
        audit_actions(&store).await,
        [
            "vendor.create",
            "model.create",
            "upload.begin",
            "upload.commit",
            "upload.begin"
        ]
    );
}

async fn grants_come_and_go(store: Store) {
    let model_id = model(&store).await;
    let model = store.model_by_id(&model_id).await.unwrap().unwrap();
    let alice = UserName::parse("alice").unwrap();
    let bob = UserName::parse("bob").unwrap();
    let team = GroupName::parse("team").unwrap();
    let facts = |user: &UserName| {
        let (store, model_id, vendor_id, user) = (
            store.clone(),
            model_id.clone(),
            model.vendor_id.clone(),
            user.clone(),
        );
        async move {
            store
                .access_facts(&model_id, &vendor_id, &user)
                .await
                .unwrap()
        }
    };
    assert_eq!(facts(&alice).await.direct_grant, None);
    let to_alice = Grantee::User(alice.clone());
    store
        .grant(&model_id, &to_alice, "admin", None, entry("grant"))
        .await
        .unwrap();
    // Granting again replaces the grant (now with an expiry), never duplicates it.
    store
        .grant(
            &model_id,
            &to_alice,
            "admin",
            Some(4_000_000_000),
            entry("grant"),
        )
        .await
        .unwrap();
    assert_eq!(facts(&alice).await.direct_grant, Some(Some(4_000_000_000)));
    // A group grant reaches members only.
    store
        .grant(
            &model_id,
            &Grantee::Group(team.clone()),
            "admin",
            None,
            entry("grant"),
        )
        .await
        .unwrap();
    assert!(facts(&bob).await.group_grants.is_empty());
    store
        .add_group_member(&team, &bob, "op", entry("group.add"))
        .await
        .unwrap();
    assert_eq!(facts(&bob).await.group_grants, vec![(team.clone(), None)]);
    assert_eq!(store.grants(&model_id).await.unwrap().len(), 2);
    // Exclusions, per model and vendor-wide, are facts of their own.
    store
        .exclude(
            &model.vendor_id,
            Some(&model_id),
            &bob,
            "admin",
            entry("exclude"),
        )
        .await
        .unwrap();
    store
        .exclude(&model.vendor_id, None, &alice, "admin", entry("exclude"))
        .await
        .unwrap();
    let (fa, fb) = (facts(&alice).await, facts(&bob).await);
    assert!(fa.excluded_from_vendor && !fa.excluded_from_model);
    assert!(fb.excluded_from_model && !fb.excluded_from_vendor);
    store
        .revoke(&model_id, &to_alice, entry("revoke"))
        .await
        .unwrap();
    assert_eq!(facts(&alice).await.direct_grant, None);
    let again = store.revoke(&model_id, &to_alice, entry("revoke")).await;
    assert!(matches!(again, Err(StoreError::NotFound(_))));
    let actions = audit_actions(&store).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "revoke").count(),
        1,
        "{actions:?}"
    );
}

async fn a_requester_cannot_approve_their_own_request(store: Store) {
    let model_id = model(&store).await;
    let model = store.model_by_id(&model_id).await.unwrap().unwrap();
    let alice = UserName::parse("alice").unwrap();
    let action = PendingAction::Grant {
        model_id: model_id.clone(),
        to: Grantee::User(alice.clone()),
        expires_at: None,
    };
    store
        .create_pending(
            "p1",
            &model.vendor_id,
            &action,
            "vendor-admin:ina",
            entry("req"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_for_vendor(&model.vendor_id)
            .await
            .unwrap()
            .len(),
        1
    );
    let own = store
        .approve_pending("p1", "vendor-admin:ina", entry("approve"))
        .await;
    assert!(matches!(own, Err(StoreError::Conflict(_))), "{own:?}");
    let facts = store
        .access_facts(&model_id, &model.vendor_id, &alice)
        .await
        .unwrap();
    assert_eq!(facts.direct_grant, None, "a pending grant gave access");
    store
        .approve_pending("p1", "vendor-admin:ivo", entry("approve"))
        .await
        .unwrap();
    let facts = store
        .access_facts(&model_id, &model.vendor_id, &alice)
        .await
        .unwrap();
    assert_eq!(facts.direct_grant, Some(None));
    assert!(
        store
            .pending_for_vendor(&model.vendor_id)
            .await
            .unwrap()
            .is_empty()
    );
    let twice = store
        .approve_pending("p1", "vendor-admin:ivo", entry("approve"))
        .await;
    assert!(matches!(twice, Err(StoreError::NotFound(_))));
}

async fn concurrent_changes_get_gap_free_sequence_numbers(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record(entry(&format!("probe-{i}"))).await.unwrap()
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap()));
    }
    assert_eq!(seqs, (0..40).collect::<BTreeSet<u64>>());
    assert_eq!(audit_actions(&store).await.len(), 40);
}

async fn upload_progress_survives_and_expires(store: Store) {
    let model_id = model(&store).await;
    let files = [file("big.bin", 5), file("small", 6)];
    let new = |id, digest, expires_at| NewUpload {
        id,
        manifest_digest: digest,
        model_id: "m1",
        created_by: "vendor-admin:a",
        message: "",
        expires_at,
        files: &files,
    };
    store
        .create_upload(&new("u1", "same", 1000), entry("upload.begin"))
        .await
        .unwrap();
    store
        .create_upload(&new("u2", "other", 1000), entry("upload.begin"))
        .await
        .unwrap();
    let found = store
        .find_upload(&model_id, "vendor-admin:a", "same", 10)
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.id), Some("u1".to_owned()));
    assert!(
        store
            .find_upload(&model_id, "vendor-admin:b", "same", 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_upload(&model_id, "vendor-admin:a", "same", 1000)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );

    store
        .start_file_upload("u1", 0, Some(&[1; 40]), Some("backend-1"))
        .await
        .unwrap();
    let part = |n| store::StoredPart {
        part_number: n,
        etag: format!("e{n}"),
        size: 8,
    };
    store.record_part("u1", 0, &part(2), 0, None).await.unwrap();
    store
        .record_part("u1", 0, &part(1), 2, Some(&[7; 41]))
        .await
        .unwrap();
    let f = &store.upload("u1").await.unwrap().unwrap().files[0];
    assert_eq!(
        (
            f.parts_done,
            f.header.as_deref(),
            f.backend_upload_id.as_deref()
        ),
        (2, Some(&[1u8; 40][..]), Some("backend-1"))
    );
    assert_eq!(f.hash_state.as_deref(), Some(&[7u8; 41][..]));
    assert_eq!(
        store.stored_parts("u1", 0).await.unwrap(),
        vec![part(1), part(2)]
    );

    // A refused attempt forgets parts and header alike.
    store.start_file_upload("u1", 0, None, None).await.unwrap();
    let f = &store.upload("u1").await.unwrap().unwrap().files[0];
    assert_eq!(
        (f.parts_done, f.header.clone(), f.hash_state.clone()),
        (0, None, None)
    );
    assert!(store.stored_parts("u1", 0).await.unwrap().is_empty());

    // Expiry: both sessions are due at 1000; dropping one leaves no rows and one entry.
    store
        .upload_file_done("u1", 1, &model_id, &file("small", 6), 1)
        .await
        .unwrap();
    let expired = store.expired_uploads(1000).await.unwrap();
    assert_eq!(expired.len(), 2);
    assert!(store.expired_uploads(999).await.unwrap().is_empty());
    let u1 = expired.into_iter().find(|s| s.id == "u1").unwrap();
    store
        .drop_upload(&u1, entry("upload.expire"))
        .await
        .unwrap();
    assert!(store.upload("u1").await.unwrap().is_none());
    assert_eq!(
        audit_actions(&store).await.last().map(String::as_str),
        Some("upload.expire")
    );
}
