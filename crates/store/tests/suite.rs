//! One suite, every database: each test runs against SQLite and against a throwaway
//! PostgreSQL cluster started from the system's binaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;

use store::{
    Approved, Approver, Asking, FileRecord, FollowUp, Grantee, NewHost, NewModel, NewPending,
    NewToken, NewUpload, PendingAction, Store, StoreError, UploadFileRecord,
};
use types::{
    CommitId, GroupName, HostGroupName, HostName, ModelName, ObjectId, RepoPath, Role, Sha256Hex,
    UserName, VendorName,
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
    a_digest_left_out_is_the_stored_one,
    grants_come_and_go,
    a_requester_cannot_approve_their_own_request,
    approvals_need_distinct_people_and_expire,
    credentials_belong_to_people_and_count_where_endorsed,
    a_re_enrolled_host_is_a_new_record_the_vendor_approves_again,
    concurrent_changes_get_gap_free_sequence_numbers,
    upload_progress_survives_and_expires,
    open_uploads_are_capped_per_creator,
    a_bootstrap_token_issues_one_token_only,
    the_last_live_operator_token_stays,
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

/// Issues a token for `name`; one approval per vendor; a week to approve.
async fn issue(
    store: &Store,
    id: &str,
    role: Role,
    vendor_id: Option<&str>,
    name: &str,
) -> store::IssuedToken {
    let user = UserName::parse(name).unwrap();
    store
        .issue_token(
            &NewToken {
                id,
                secret_hash: &[7u8; 32],
                role,
                vendor_id,
                user: &user,
                expires_at: Some(4_000_000_000),
                created_by: "operator:root",
                bootstrap: false,
                consumes: None,
            },
            &format!("u-{id}"),
            604_800,
            entry("token.create"),
        )
        .await
        .unwrap()
}

async fn tokens_store_only_a_hash(store: Store) {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    issue(&store, "00aa", Role::VendorAdmin, Some("v1"), "alice").await;
    let t = store.token("00aa").await.unwrap().unwrap();
    assert_eq!(t.secret_hash, vec![7u8; 32]);
    assert_eq!(
        (t.role, t.vendor, t.user.as_str(), t.expires_at),
        (
            Role::VendorAdmin,
            Some(vendor("acme")),
            "alice",
            Some(4_000_000_000)
        )
    );
    assert!(store.token("00bb").await.unwrap().is_none());
    assert_eq!(store.token_count().await.unwrap(), 1);
}

async fn credentials_belong_to_people_and_count_where_endorsed(store: Store) {
    let model_id = model(&store).await;
    let alice = UserName::parse("alice").unwrap();
    // A person's first credential counts everywhere; the name is now theirs for good.
    let first = issue(&store, "0a01", Role::Committer, None, "alice").await;
    assert!(first.new_user && first.awaiting.is_empty());
    let t1 = store.token("0a01").await.unwrap().unwrap();
    assert!(t1.all_vendors);
    assert!(store.credential_counts("0a01", true, "v1").await.unwrap());
    store
        .grant(
            "v1",
            &model_id,
            &Grantee::User(alice.clone()),
            "vendor-admin:ada",
            None,
            &follow_up(),
            entry("grant"),
        )
        .await
        .unwrap();
    // The operator issuing another token for "alice" issues it for the same person, and it
    // counts at acme (where she has a grant) only once acme endorses it.
    let again = issue(&store, "0a02", Role::Committer, None, "alice").await;
    assert!(!again.new_user);
    assert_eq!(again.user_id, first.user_id, "one person, one id");
    assert_eq!(again.awaiting.len(), 1, "{again:?}");
    let (vendor_id, request) = &again.awaiting[0];
    assert_eq!(vendor_id, "v1");
    let t2 = store.token("0a02").await.unwrap().unwrap();
    assert!(!t2.all_vendors);
    assert!(!store.credential_counts("0a02", false, "v1").await.unwrap());
    let pending = store.pending(request).await.unwrap().unwrap();
    assert_eq!(
        pending.action,
        PendingAction::EndorseCredential {
            token_id: "0a02".into()
        }
    );
    assert_eq!(pending.subject_id.as_deref(), Some(first.user_id.as_str()));
    // Alice herself cannot endorse it (it is about her), an admin can.
    let own = store
        .approve_pending(
            request,
            &Approver {
                actor: "vendor-admin:alice",
                user_id: &first.user_id,
            },
            |_, _| entry("approve"),
        )
        .await;
    assert!(matches!(own, Err(StoreError::Refused(_))), "{own:?}");
    let ada_id = person(&store, "ada").await;
    store
        .approve_pending(
            request,
            &Approver {
                actor: "vendor-admin:ada",
                user_id: &ada_id,
            },
            |_, _| entry("approve"),
        )
        .await
        .unwrap();
    assert!(store.credential_counts("0a02", false, "v1").await.unwrap());
    // The vendor's first admin is endorsed at once; every further admin waits.
    let ada = issue(&store, "0b01", Role::VendorAdmin, Some("v1"), "ada").await;
    assert_eq!(ada.user_id, ada_id, "ada's admin token is ada's");
    assert_eq!(ada.endorsed_for, ["v1"]);
    assert!(store.credential_counts("0b01", false, "v1").await.unwrap());
    let mallory = issue(&store, "0b02", Role::VendorAdmin, Some("v1"), "mallory").await;
    assert!(mallory.endorsed_for.is_empty());
    assert_eq!(mallory.awaiting.len(), 1);
    assert!(!store.credential_counts("0b02", false, "v1").await.unwrap());
    // Rotation: the holder replaces a token, which keeps exactly its standing.
    store
        .rotate_token("0b01", "0b03", &[8u8; 32], None, entry("token.rotate"))
        .await
        .unwrap();
    assert!(
        store
            .token("0b01")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(store.credential_counts("0b03", false, "v1").await.unwrap());
    let listed = store.tokens().await.unwrap();
    let rotated = listed.iter().find(|t| t.id == "0b03").unwrap();
    assert_eq!(rotated.endorsed_by, [vendor("acme")]);
    assert_eq!(store.users().await.unwrap().len(), 3, "alice, ada, mallory");
}

/// A person (with a first credential); returns their user id.
async fn person(store: &Store, name: &str) -> String {
    issue(store, &format!("t-{name}"), Role::Committer, None, name)
        .await
        .user_id
}

fn follow_up() -> FollowUp {
    FollowUp {
        approvals_needed: 1,
        requested_by: "vendor-admin:ada".into(),
        ttl_secs: 604_800,
    }
}

async fn a_re_enrolled_host_is_a_new_record_the_vendor_approves_again(store: Store) {
    store
        .create_vendor("v1", &vendor("acme"), entry("vendor.create"))
        .await
        .unwrap();
    let name = HostName::parse("gpu-01").unwrap();
    let group = HostGroupName::parse("gpu").unwrap();
    let enroll = |id: &'static str, cert: &'static str| {
        let (store, name, group) = (store.clone(), name.clone(), group.clone());
        async move {
            store
                .enroll_host(
                    &NewHost {
                        id,
                        name: &name,
                        group: &group,
                        cert_sha256: cert,
                        not_after: 4_000_000_000,
                        enrolled_by: "operator:root",
                    },
                    entry("host.enroll"),
                )
                .await
        }
    };
    enroll("h1", "aa").await.unwrap();
    let twice = enroll("h2", "bb").await;
    assert!(
        matches!(twice, Err(StoreError::Conflict(_))),
        "a live name is unique"
    );
    store
        .approve_host("v1", "h1", "vendor-admin:ada", entry("host.approve"))
        .await
        .unwrap();
    store
        .revoke_host(&name, entry("host.revoke"))
        .await
        .unwrap();
    enroll("h2", "bb").await.unwrap();
    let hosts = store.hosts().await.unwrap();
    assert_eq!(hosts.len(), 2, "the revoked enrollment stays");
    assert_eq!(store.host_by_cert("aa").await.unwrap().unwrap().id, "h1");
    assert!(
        store
            .host_by_cert("aa")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert_eq!(store.live_host(&name).await.unwrap().unwrap().id, "h2");
    let seen = store.vendor_hosts("v1").await.unwrap();
    let approved: Vec<_> = seen
        .iter()
        .filter(|h| h.approved_by.is_some())
        .map(|h| h.host.id.as_str())
        .collect();
    assert_eq!(
        approved,
        ["h1"],
        "the new enrollment is not approved by the old one's approval"
    );
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
    let declared = files.clone().map(UploadFileRecord::from);
    store
        .create_upload(
            &NewUpload {
                id: "u1",
                manifest_digest: "d1",
                model_id: &model_id,
                created_by: "vendor-admin:a",
                message: "first",
                expires_at: i64::MAX,
                files: &declared,
                max_open_by_creator: u64::MAX,
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
            .upload_file_done("u1", idx, &model_id, f, 99, None)
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
                files: &[file("c", 3).into()],
                max_open_by_creator: u64::MAX,
            },
            entry("upload.begin"),
        )
        .await
        .unwrap();
    store
        .upload_file_done("u2", 0, &model_id, &file("c", 3), 1, None)
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

    // A derived revision (a committer's conversion) is newer, yet `main` still names the
    // vendor's: it is reachable by its commit id only.
    store
        .create_upload_from(
            &NewUpload {
                id: "u3",
                manifest_digest: "d3",
                model_id: &model_id,
                created_by: "committer:alice",
                message: "quantized",
                expires_at: i64::MAX,
                files: &[file("q", 4).into()],
                max_open_by_creator: u64::MAX,
            },
            Some(&commit),
            entry("upload.begin"),
        )
        .await
        .unwrap();
    store
        .upload_file_done("u3", 0, &model_id, &file("q", 4), 1, Some("ab"))
        .await
        .unwrap();
    let derived = CommitId::from_bytes(&[0xcd; 20]);
    let session = store.upload("u3").await.unwrap().unwrap();
    store
        .commit_upload(&session, &derived, entry("upload.commit"))
        .await
        .unwrap();
    assert_eq!(store.revisions(&model_id).await.unwrap().len(), 2);
    assert_eq!(
        store
            .object_git_blob_id(&file("q", 4).object_id)
            .await
            .unwrap()
            .as_deref(),
        Some("ab")
    );
    let by_commit = store.revision(&model_id, &derived).await.unwrap().unwrap();
    assert_eq!(by_commit.derived_from, Some(commit.clone()));
    assert_eq!(
        store
            .latest_revision(&model_id)
            .await
            .unwrap()
            .unwrap()
            .commit,
        commit,
        "a derived revision became main"
    );
}

/// A file listed without a digest has none until it is stored; then the server's digest is
/// kept, and the session remembers that the client still has to confirm it.
async fn a_digest_left_out_is_the_stored_one(store: Store) {
    let model_id = model(&store).await;
    let stored = file("w.bin", 8);
    let listed = UploadFileRecord {
        sha256: None,
        declared: false,
        ..UploadFileRecord::from(stored.clone())
    };
    store
        .create_upload(
            &NewUpload {
                id: "u9",
                manifest_digest: "d9",
                model_id: &model_id,
                created_by: "vendor-admin:a",
                message: "",
                expires_at: i64::MAX,
                files: &[listed.clone(), file("config.json", 1).into()],
                max_open_by_creator: u64::MAX,
            },
            entry("upload.begin"),
        )
        .await
        .unwrap();
    let session = store.upload("u9").await.unwrap().unwrap();
    assert_eq!(session.files[0].file, listed);
    assert_eq!(session.files[0].file.record(), None);
    assert!(session.files[1].file.declared);

    // Nonce claims: the first holds, the same digest again is fine, another is refused, and a
    // file started over (new header, new nonces) has none.
    assert!(store.claim_sealed_part("u9", 0, 1, "aa").await.unwrap());
    assert!(store.claim_sealed_part("u9", 0, 1, "aa").await.unwrap());
    assert!(store.claim_sealed_part("u9", 0, 2, "cc").await.unwrap());
    assert!(!store.claim_sealed_part("u9", 0, 1, "bb").await.unwrap());
    assert!(store.claim_sealed_part("u9", 1, 1, "bb").await.unwrap());
    store.start_file_upload("u9", 0, None, None).await.unwrap();
    assert!(store.claim_sealed_part("u9", 0, 1, "bb").await.unwrap());
    assert!(!store.claim_sealed_part("u9", 1, 1, "aa").await.unwrap());

    store
        .upload_file_done("u9", 0, &model_id, &stored, 99, None)
        .await
        .unwrap();
    let session = store.upload("u9").await.unwrap().unwrap();
    assert!(session.files[0].done && !session.files[0].file.declared);
    assert_eq!(session.files[0].file.record(), Some(stored));

    // Refused at its commit: the session ends now, with its audit entry.
    store
        .expire_upload("u9", entry("upload.refuse"))
        .await
        .unwrap();
    let now = store.clock().now();
    let expired = store.expired_uploads(now + 1).await.unwrap();
    assert!(expired.iter().any(|s| s.id == "u9"));
    assert_eq!(audit_actions(&store).await.last().unwrap(), "upload.refuse");
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
                .access_facts(
                    &model_id,
                    &vendor_id,
                    &Asking {
                        user: &user,
                        token_id: "t",
                        all_vendors: true,
                        host_id: None,
                    },
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(facts(&alice).await.direct_grant, None);
    let to_alice = Grantee::User(alice.clone());
    store
        .grant(
            "v1",
            &model_id,
            &to_alice,
            "admin",
            None,
            &follow_up(),
            entry("grant"),
        )
        .await
        .unwrap();
    // Granting again replaces the grant (now with an expiry), never duplicates it.
    store
        .grant(
            "v1",
            &model_id,
            &to_alice,
            "admin",
            Some(4_000_000_000),
            &follow_up(),
            entry("grant"),
        )
        .await
        .unwrap();
    assert_eq!(facts(&alice).await.direct_grant, Some(Some(4_000_000_000)));
    // A group grant reaches members only.
    store
        .grant(
            "v1",
            &model_id,
            &Grantee::Group(team.clone()),
            "admin",
            None,
            &follow_up(),
            entry("grant"),
        )
        .await
        .unwrap();
    assert!(facts(&bob).await.group_grants.is_empty());
    // Groups belong to a vendor: another vendor's "team" is not this one.
    store
        .create_vendor("v2", &vendor("globex"), entry("vendor.create"))
        .await
        .unwrap();
    store
        .add_group_member("v2", &team, &bob, "admin", &follow_up(), entry("group.add"))
        .await
        .unwrap();
    assert!(facts(&bob).await.group_grants.is_empty());
    store
        .add_group_member("v1", &team, &bob, "admin", &follow_up(), entry("group.add"))
        .await
        .unwrap();
    assert_eq!(facts(&bob).await.group_grants, vec![(team.clone(), None)]);
    assert_eq!(
        store.groups_of("v1", &bob).await.unwrap(),
        std::slice::from_ref(&team)
    );
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

async fn file_request(
    store: &Store,
    id: &str,
    vendor_id: &str,
    action: &PendingAction,
    needed: i64,
    expires_at: i64,
) {
    let ina = match store.user(&UserName::parse("ina").unwrap()).await.unwrap() {
        Some(u) => u.id,
        None => person(store, "ina").await,
    };
    store
        .create_pending(
            &NewPending {
                id,
                vendor_id,
                action,
                requested_by: "vendor-admin:ina",
                requester_id: Some(&ina),
                subject_id: None,
                approvals_needed: needed,
                expires_at,
            },
            entry("req"),
        )
        .await
        .unwrap();
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
    file_request(&store, "p1", &model.vendor_id, &action, 1, 4_000_000_000).await;
    assert_eq!(
        store
            .pending_for_vendor(&model.vendor_id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.pending("p1").await.unwrap().unwrap().action,
        action,
        "the request reads back as filed"
    );
    // The same person under another role is the same person.
    let ina = store
        .user(&UserName::parse("ina").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    let (ivo, ivy) = (person(&store, "ivo").await, person(&store, "ivy").await);
    let own = store
        .approve_pending(
            "p1",
            &Approver {
                actor: "committer:ina",
                user_id: &ina,
            },
            |_, _| entry("approve"),
        )
        .await;
    assert!(matches!(own, Err(StoreError::Refused(_))), "{own:?}");
    let asking = Asking {
        user: &alice,
        token_id: "t",
        all_vendors: true,
        host_id: None,
    };
    let facts = store
        .access_facts(&model_id, &model.vendor_id, &asking)
        .await
        .unwrap();
    assert_eq!(facts.direct_grant, None, "a pending grant gave access");
    let (_, done) = store
        .approve_pending(
            "p1",
            &Approver {
                actor: "vendor-admin:ivo",
                user_id: &ivo,
            },
            |_, _| entry("approve"),
        )
        .await
        .unwrap();
    assert_eq!(done, Approved::Done);
    let facts = store
        .access_facts(&model_id, &model.vendor_id, &asking)
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
        .approve_pending(
            "p1",
            &Approver {
                actor: "vendor-admin:ivy",
                user_id: &ivy,
            },
            |_, _| entry("approve"),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
}

async fn approvals_need_distinct_people_and_expire(store: Store) {
    let model_id = model(&store).await;
    let group = HostGroupName::parse("gpu").unwrap();
    let action = PendingAction::AllowHostGroup {
        model_id: model_id.clone(),
        group: group.clone(),
    };
    file_request(&store, "p2", "v1", &action, 2, 4_000_000_000).await;
    let (ivo_id, ivy_id) = (person(&store, "ivo").await, person(&store, "ivy").await);
    let ivo = Approver {
        actor: "vendor-admin:ivo",
        user_id: &ivo_id,
    };
    let (_, first) = store
        .approve_pending("p2", &ivo, |_, _| entry("approve"))
        .await
        .unwrap();
    assert_eq!(first, Approved::Partial { have: 1, need: 2 });
    assert!(
        store.model_host_groups(&model_id).await.unwrap().is_empty(),
        "one approval of two did it"
    );
    let again = store
        .approve_pending(
            "p2",
            &Approver {
                actor: "auditor:ivo",
                user_id: &ivo_id,
            },
            |_, _| entry("approve"),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "one person approved twice: {again:?}"
    );
    let (record, second) = store
        .approve_pending(
            "p2",
            &Approver {
                actor: "vendor-admin:ivy",
                user_id: &ivy_id,
            },
            |_, _| entry("approve"),
        )
        .await
        .unwrap();
    assert_eq!(second, Approved::Done);
    assert_eq!(record.approvers(), "vendor-admin:ivo,vendor-admin:ivy");
    assert_eq!(store.model_host_groups(&model_id).await.unwrap(), [group]);
    // An expired request can no longer be approved, and does nothing.
    let action = PendingAction::Embargo {
        model_id: model_id.clone(),
        not_before: None,
        not_after: None,
    };
    file_request(&store, "p3", "v1", &action, 1, 1).await;
    assert!(store.pending("p3").await.unwrap().unwrap().expired(2));
    let late = store
        .approve_pending("p3", &ivo, |_, _| entry("approve"))
        .await;
    assert!(
        matches!(&late, Err(StoreError::Conflict(m)) if m.contains("expired")),
        "{late:?}"
    );
    let actions = audit_actions(&store).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "approve").count(),
        2,
        "refused approvals write no entry: {actions:?}"
    );
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
    let uploads = files.clone().map(UploadFileRecord::from);
    let new = |id, digest, expires_at| NewUpload {
        id,
        manifest_digest: digest,
        model_id: "m1",
        created_by: "vendor-admin:a",
        message: "",
        expires_at,
        files: &uploads,
        max_open_by_creator: u64::MAX,
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
        .upload_file_done("u1", 1, &model_id, &file("small", 6), 1, None)
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

async fn open_uploads_are_capped_per_creator(store: Store) {
    model(&store).await;
    let files = [UploadFileRecord::from(file("w.bin", 1))];
    let far = i64::MAX / 2;
    let new = |id, created_by, expires_at| NewUpload {
        id,
        manifest_digest: id,
        model_id: "m1",
        created_by,
        message: "",
        expires_at,
        files: &files,
        max_open_by_creator: 2,
    };
    // An expired session does not count.
    store
        .create_upload(&new("old", "committer:a", 1000), entry("upload.begin"))
        .await
        .unwrap();
    for id in ["u1", "u2"] {
        store
            .create_upload(&new(id, "committer:a", far), entry("upload.begin"))
            .await
            .unwrap();
    }
    let before = audit_actions(&store).await.len();
    let refused = store
        .create_upload(&new("u3", "committer:a", far), entry("upload.begin"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::TooManyUploads { open: 2, next_expiry }) if next_expiry == far),
        "{refused:?}"
    );
    assert!(store.upload("u3").await.unwrap().is_none());
    assert_eq!(
        audit_actions(&store).await.len(),
        before,
        "a refusal writes no entry"
    );
    // Someone else is not affected.
    store
        .create_upload(&new("b1", "committer:b", far), entry("upload.begin"))
        .await
        .unwrap();
    // Many at once cannot pass the cap together.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let files = files.clone();
            tokio::spawn(async move {
                let id = format!("c{i}");
                store
                    .create_upload(
                        &NewUpload {
                            id: &id,
                            manifest_digest: &id,
                            model_id: "m1",
                            created_by: "committer:c",
                            message: "",
                            expires_at: far,
                            files: &files,
                            max_open_by_creator: 3,
                        },
                        entry("upload.begin"),
                    )
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 3);
}

async fn a_bootstrap_token_issues_one_token_only(store: Store) {
    let boot = UserName::parse("bootstrap-operator").unwrap();
    store
        .issue_token(
            &NewToken {
                id: "boot",
                secret_hash: &[1u8; 32],
                role: Role::Operator,
                vendor_id: None,
                user: &boot,
                expires_at: Some(4_000_000_000),
                created_by: "system",
                bootstrap: true,
                consumes: None,
            },
            "u-boot",
            604_800,
            entry("token.create"),
        )
        .await
        .unwrap();
    assert!(store.token("boot").await.unwrap().unwrap().bootstrap);
    // Several at once: exactly one is issued, and the bootstrap token is revoked with it.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("op{i}");
                let user = UserName::parse(&format!("ops-{i}")).unwrap();
                store
                    .issue_token(
                        &NewToken {
                            id: &id,
                            secret_hash: &[2u8; 32],
                            role: Role::Operator,
                            vendor_id: None,
                            user: &user,
                            expires_at: None,
                            created_by: "operator:bootstrap-operator",
                            bootstrap: false,
                            consumes: Some("boot"),
                        },
                        &format!("u-{id}"),
                        604_800,
                        entry("token.create"),
                    )
                    .await
            })
        })
        .collect();
    let mut issued = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => issued += 1,
            Err(StoreError::Refused(m)) => assert!(m.contains("used already"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(issued, 1);
    let boot = store.token("boot").await.unwrap().unwrap();
    assert!(boot.revoked_at.is_some());
    // An ordinary token cannot be consumed as if it were a bootstrap token.
    let refused = store
        .issue_token(
            &NewToken {
                id: "x",
                secret_hash: &[3u8; 32],
                role: Role::Operator,
                vendor_id: None,
                user: &UserName::parse("x").unwrap(),
                expires_at: None,
                created_by: "operator:ops-0",
                bootstrap: false,
                consumes: Some("op0"),
            },
            "u-x",
            604_800,
            entry("token.create"),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Refused(_))));
}

/// Revoking operator tokens all at once, each the next one's: at least one live operator
/// token is always left, and a refusal writes no entry.
async fn the_last_live_operator_token_stays(store: Store) {
    let ids: Vec<String> = (0..5).map(|i| format!("0{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        issue(&store, id, Role::Operator, None, &format!("ops-{i}")).await;
    }
    // Expired and bootstrap tokens do not count as someone who can act.
    let boot = UserName::parse("bootstrap-operator").unwrap();
    store
        .issue_token(
            &NewToken {
                id: "b0",
                secret_hash: &[1u8; 32],
                role: Role::Operator,
                vendor_id: None,
                user: &boot,
                expires_at: Some(4_000_000_000),
                created_by: "system",
                bootstrap: true,
                consumes: None,
            },
            "u-b0",
            604_800,
            entry("token.create"),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.revoke_token(&id, entry("token.revoke")).await })
        })
        .collect();
    let mut revoked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => revoked += 1,
            Err(StoreError::LastOperator) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(revoked, 4);
    let mut live = 0;
    for id in &ids {
        live += usize::from(store.token(id).await.unwrap().unwrap().revoked_at.is_none());
    }
    assert_eq!(live, 1);
    let revokes = audit_actions(&store)
        .await
        .iter()
        .filter(|a| *a == "token.revoke")
        .count();
    assert_eq!(revokes, 4, "a refused revoke wrote an entry");
}
