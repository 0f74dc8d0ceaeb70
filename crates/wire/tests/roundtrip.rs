//! Every body type against its JSON as it travels: serialized to exactly these field names,
//! and read back to the same value. The JSON here is what the e2e tests, the CLI of earlier
//! versions and `huggingface_hub` read, so a change to it is a change of the wire format.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wire::{ErrorBody, ErrorCode};

/// `value` travels as `expected`, and `expected` reads back as `value`.
fn check<T>(value: T, expected: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_value(&value).unwrap(), expected);
    assert_eq!(serde_json::from_value::<T>(expected).unwrap(), value);
}

/// `body` does not read as a `T`; the error names what was wrong.
fn refused<T: DeserializeOwned>(body: Value, why: &str) {
    match serde_json::from_value::<T>(body) {
        Ok(_) => panic!("read a body that should be refused ({why})"),
        Err(e) => assert!(e.to_string().contains(why), "{e} should mention {why}"),
    }
}

fn name<T: DeserializeOwned>(s: &str) -> T {
    serde_json::from_value(json!(s)).unwrap()
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA: &str = "9be78edb5b928eba33aa88f431551348f7466ba9f5ef3daf1d552398722a5436";

#[test]
fn error_codes_have_a_frozen_string_form() {
    // Written out, not derived: renaming a code's string must fail here.
    let table = [
        (ErrorCode::Unauthenticated, "unauthenticated"),
        (ErrorCode::Forbidden, "forbidden"),
        (ErrorCode::NotFound, "not_found"),
        (ErrorCode::Deleted, "deleted"),
        (ErrorCode::Conflict, "conflict"),
        (ErrorCode::ResumeMismatch, "resume_mismatch"),
        (ErrorCode::IntegrityError, "integrity_error"),
        (ErrorCode::RangeNotSatisfiable, "range_not_satisfiable"),
        (ErrorCode::Internal, "internal"),
        (ErrorCode::InvalidRequest, "invalid_request"),
        (ErrorCode::InvalidName, "invalid_name"),
        (ErrorCode::InvalidPath, "invalid_path"),
        (ErrorCode::InvalidRevision, "invalid_revision"),
        (ErrorCode::InvalidDigest, "invalid_digest"),
        (ErrorCode::InvalidCsr, "invalid_csr"),
        (ErrorCode::InvalidWindow, "invalid_window"),
        (ErrorCode::InvalidGrantee, "invalid_grantee"),
        (ErrorCode::InvalidExpiry, "invalid_expiry"),
        (ErrorCode::InvalidTime, "invalid_time"),
        (ErrorCode::InvalidTokenId, "invalid_token_id"),
        (ErrorCode::InvalidId, "invalid_id"),
        (ErrorCode::InvalidRange, "invalid_range"),
        (ErrorCode::InvalidDerivedFrom, "invalid_derived_from"),
        (ErrorCode::InvalidMessage, "invalid_message"),
        (ErrorCode::InvalidCursor, "invalid_cursor"),
        (ErrorCode::InvalidLimit, "invalid_limit"),
        (ErrorCode::VendorRequired, "vendor_required"),
        (ErrorCode::VendorNotAllowed, "vendor_not_allowed"),
        (ErrorCode::EmptyUpload, "empty_upload"),
        (ErrorCode::TooManyFiles, "too_many_files"),
        (ErrorCode::DuplicatePath, "duplicate_path"),
        (ErrorCode::PathConflict, "path_conflict"),
        (ErrorCode::FileTooLarge, "file_too_large"),
        (ErrorCode::UploadTooLarge, "upload_too_large"),
        (ErrorCode::TooManyUploads, "too_many_uploads"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::BudgetExceeded, "budget_exceeded"),
        (ErrorCode::TooManyFetches, "too_many_fetches"),
        (ErrorCode::TooLarge, "too_large"),
        (ErrorCode::SizeMismatch, "size_mismatch"),
        (ErrorCode::DigestMismatch, "digest_mismatch"),
        (ErrorCode::UploadInterrupted, "upload_interrupted"),
    ];
    assert_eq!(table.len(), ErrorCode::ALL.len(), "a code is missing here");
    for (code, text) in table {
        assert!(ErrorCode::ALL.contains(&code), "{text}");
        assert_eq!(code.as_str(), text);
        assert_eq!(code.to_string(), text);
        assert_eq!(ErrorCode::parse(text), code);
        check(
            ErrorBody::new(code, "why"),
            json!({ "error": { "code": text, "message": "why" } }),
        );
    }
}

#[test]
fn unknown_error_codes_read_as_unknown() {
    // A newer server's code: still an error with its message, never a parse failure.
    let body: ErrorBody =
        serde_json::from_value(json!({ "error": { "code": "quota_exceeded", "message": "m" } }))
            .unwrap();
    assert_eq!(body.error.code, ErrorCode::Unknown);
    assert_eq!(body.error.message, "m");
    assert_eq!(ErrorCode::parse(""), ErrorCode::Unknown);
    assert!(!ErrorCode::ALL.contains(&ErrorCode::Unknown));
    refused::<ErrorBody>(json!({ "error": { "code": "forbidden" } }), "message");
}

#[test]
fn admin_bodies() {
    use wire::admin::*;
    check(
        CreateVendor {
            name: "acme".into(),
        },
        json!({ "name": "acme" }),
    );
    check(
        VendorCreated { name: name("acme") },
        json!({ "name": "acme" }),
    );
    check(
        VendorList {
            vendors: vec![name("acme"), name("globex")],
        },
        json!({ "vendors": ["acme", "globex"] }),
    );
    check(
        CreateToken {
            role: "vendor-admin".into(),
            vendor: Some("acme".into()),
            name: "alice".into(),
            expires_in_secs: Some(60),
        },
        json!({ "role": "vendor-admin", "vendor": "acme", "name": "alice", "expires_in_secs": 60 }),
    );
    check(
        CreateToken {
            role: "operator".into(),
            vendor: None,
            name: "op".into(),
            expires_in_secs: None,
        },
        json!({ "role": "operator", "name": "op" }),
    );
    // Secrets have no `Debug`, so no `check`.
    let created = TokenCreated {
        id: "ab12".into(),
        token: "ab12.secret".into(),
        role: types::Role::Committer,
        vendor: None,
        name: name("bob"),
        expires_at: Some(5),
        user_id: "u1".into(),
        new_user: false,
        awaiting: vec![Awaiting {
            vendor: name("acme"),
            pending: "p1".into(),
        }],
    };
    let text = json!({ "id": "ab12", "token": "ab12.secret", "role": "committer",
                       "vendor": null, "name": "bob", "expires_at": 5, "user_id": "u1",
                       "new_user": false, "awaiting": [{ "vendor": "acme", "pending": "p1" }] });
    assert_eq!(serde_json::to_value(&created).unwrap(), text);
    assert!(serde_json::from_value::<TokenCreated>(text).unwrap() == created);
    // `custody token create` prints the token: a body without one must not read.
    refused::<TokenCreated>(
        json!({ "id": "ab12", "secret": "x", "role": "committer", "vendor": null,
                "name": "bob", "expires_at": null }),
        "token",
    );
    check(
        TokenList {
            tokens: vec![TokenInfo {
                id: "ab12".into(),
                role: types::Role::Auditor,
                vendor: Some(name("acme")),
                name: name("carol"),
                created_at: 1,
                expires_at: None,
                revoked_at: Some(2),
                user_id: "u1".into(),
                created_by: "operator:op".into(),
                all_vendors: false,
                endorsed_by: vec![name("acme")],
                expired: false,
            }],
        },
        json!({ "tokens": [{ "id": "ab12", "role": "auditor", "vendor": "acme", "name": "carol",
                             "created_at": 1, "expires_at": null, "revoked_at": 2,
                             "user_id": "u1", "created_by": "operator:op",
                             "all_vendors": false, "endorsed_by": ["acme"],
                             "expired": false }] }),
    );
    check(
        TokenRevoked {
            id: "ab12".into(),
            revoked: true,
        },
        json!({ "id": "ab12", "revoked": true }),
    );
    check(RotateToken::default(), json!({}));
    check(
        WhoAmI {
            user: name("bob"),
            user_id: "u1".into(),
            role: types::Role::Committer,
            vendor: None,
            token_id: "ab12".into(),
            expires_at: None,
            all_vendors: false,
            endorsed_by: vec![name("acme")],
            awaiting: vec![Awaiting {
                vendor: name("globex"),
                pending: "p2".into(),
            }],
            host: Some(name("gpu1")),
            grants: vec![
                HeldGrant {
                    model: "acme/m".into(),
                    group: None,
                    expires_at: Some(7),
                },
                HeldGrant {
                    model: "acme/n".into(),
                    group: Some(name("team")),
                    expires_at: None,
                },
            ],
        },
        json!({ "user": "bob", "user_id": "u1", "role": "committer", "vendor": null,
                "token_id": "ab12", "expires_at": null, "all_vendors": false,
                "endorsed_by": ["acme"], "awaiting": [{ "vendor": "globex", "pending": "p2" }],
                "host": "gpu1", "grants": [
                    { "model": "acme/m", "group": null, "expires_at": 7 },
                    { "model": "acme/n", "group": "team", "expires_at": null }] }),
    );
    check(
        UserList {
            users: vec![UserInfo {
                id: "u1".into(),
                name: name("bob"),
                created_by: "operator:op".into(),
                created_at: 1,
            }],
        },
        json!({ "users": [{ "id": "u1", "name": "bob", "created_by": "operator:op",
                            "created_at": 1 }] }),
    );
}

#[test]
fn access_bodies() {
    use wire::access::*;
    check(
        EnrollHost {
            name: "gpu1".into(),
            group: "lab".into(),
            csr: "PEM".into(),
        },
        json!({ "name": "gpu1", "group": "lab", "csr": "PEM" }),
    );
    check(RenewHost { csr: "PEM".into() }, json!({ "csr": "PEM" }));
    refused::<RenewHost>(json!({ "csr": "PEM", "name": "other" }), "unknown field");
    refused::<EnrollHost>(
        json!({ "name": "gpu1", "group": "lab", "csr": "PEM", "admin": true }),
        "unknown field",
    );
    check(
        HostEnrolled {
            name: name("gpu1"),
            group: name("lab"),
            certificate: "CERT".into(),
            ca: "CA".into(),
            cert_sha256: "ff".into(),
            not_after: 9,
        },
        json!({ "name": "gpu1", "group": "lab", "certificate": "CERT", "ca": "CA",
                "cert_sha256": "ff", "not_after": 9 }),
    );
    check(
        HostList {
            hosts: vec![HostInfo {
                id: "h1".into(),
                name: name("gpu1"),
                group: name("lab"),
                cert_sha256: "ff".into(),
                not_after: 9,
                enrolled_by: "user:op".into(),
                revoked_at: None,
            }],
        },
        json!({ "hosts": [{ "id": "h1", "name": "gpu1", "group": "lab", "cert_sha256": "ff", "not_after": 9,
                            "enrolled_by": "user:op", "revoked_at": null }] }),
    );
    check(
        HostRevoked {
            name: name("gpu1"),
            revoked: true,
        },
        json!({ "name": "gpu1", "revoked": true }),
    );
    check(
        AllowHostGroup {
            group: "lab".into(),
        },
        json!({ "group": "lab" }),
    );
    check(
        HostGroupChanged {
            model: "acme/m".into(),
            host_group: name("lab"),
        },
        json!({ "model": "acme/m", "host_group": "lab" }),
    );
    check(
        ModelHostGroups {
            model: "acme/m".into(),
            host_groups: vec![name("lab")],
        },
        json!({ "model": "acme/m", "host_groups": ["lab"] }),
    );
    check(
        SetEmbargo {
            not_before: Some(1),
            not_after: None,
        },
        json!({ "not_before": 1, "not_after": null }),
    );
    // Both ends optional: an empty body clears the window.
    assert_eq!(
        serde_json::from_value::<SetEmbargo>(json!({})).unwrap(),
        SetEmbargo {
            not_before: None,
            not_after: None
        }
    );
    check(
        Embargo {
            model: "acme/m".into(),
            not_before: None,
            not_after: Some(2),
        },
        json!({ "model": "acme/m", "not_before": null, "not_after": 2 }),
    );
    check(
        Exclude {
            user: "mallory".into(),
            model: Some("m".into()),
        },
        json!({ "user": "mallory", "model": "m" }),
    );
    check(
        Exclude {
            user: "mallory".into(),
            model: None,
        },
        json!({ "user": "mallory" }),
    );
    check(
        ExclusionQuery {
            model: Some("m".into()),
        },
        json!({ "model": "m" }),
    );
    check(
        Excluded {
            excluded: name("mallory"),
            from: "acme".into(),
        },
        json!({ "excluded": "mallory", "from": "acme" }),
    );
    check(
        Unexcluded {
            unexcluded: name("mallory"),
            from: "acme/m".into(),
        },
        json!({ "unexcluded": "mallory", "from": "acme/m" }),
    );
    check(
        ExclusionList {
            vendor: name("acme"),
            exclusions: vec![Exclusion {
                user: name("mallory"),
                model: None,
                created_by: "user:alice".into(),
            }],
        },
        json!({ "vendor": "acme", "exclusions": [{ "user": "mallory", "model": null,
                                                    "created_by": "user:alice" }] }),
    );
    check(
        VendorSettings { two_person: true },
        json!({ "two_person": true }),
    );
    check(
        VendorSettingsChanged {
            vendor: name("acme"),
            two_person: false,
            pending: None,
        },
        json!({ "vendor": "acme", "two_person": false }),
    );
    check(
        VendorSettingsChanged {
            vendor: name("acme"),
            two_person: true,
            pending: Some("p1".into()),
        },
        json!({ "vendor": "acme", "two_person": true, "pending": "p1" }),
    );
    let pending = |request: PendingAction| PendingRequest {
        id: "p1".into(),
        model: Some("acme/m".into()),
        request,
        requested_by: "user:alice".into(),
        created_at: 3,
        state: "pending".into(),
        approved_by: None,
        approvals: vec![Approval {
            by: "vendor-admin:ivo".into(),
            at: 4,
        }],
        approvals_needed: 2,
        expires_at: 9,
        expired: false,
    };
    let pending_json = |request: Value| {
        json!({ "id": "p1", "model": "acme/m", "request": request, "requested_by": "user:alice",
                "created_at": 3, "state": "pending", "approved_by": null,
                "approvals": [{ "by": "vendor-admin:ivo", "at": 4 }], "approvals_needed": 2,
                "expires_at": 9, "expired": false })
    };
    for (action, kind, text) in [
        (
            PendingAction::Grant {
                to: "user:bob".into(),
                expires_at: None,
            },
            "grant",
            json!({ "kind": "grant", "to": "user:bob", "expires_at": null }),
        ),
        (PendingAction::Delete, "delete", json!({ "kind": "delete" })),
        (
            PendingAction::DisableTwoPerson,
            "disable-two-person",
            json!({ "kind": "disable-two-person" }),
        ),
        (
            PendingAction::Unexclude { user: name("bob") },
            "unexclude",
            json!({ "kind": "unexclude", "user": "bob" }),
        ),
        (
            PendingAction::Embargo {
                not_before: None,
                not_after: Some(7),
            },
            "embargo",
            json!({ "kind": "embargo", "not_before": null, "not_after": 7 }),
        ),
        (
            PendingAction::Budget { budget: None },
            "budget",
            json!({ "kind": "budget", "budget": null }),
        ),
        (
            PendingAction::AllowHostGroup { group: name("gpu") },
            "allow-host-group",
            json!({ "kind": "allow-host-group", "group": "gpu" }),
        ),
        (
            PendingAction::ApproveHost {
                host: name("gpu1"),
                host_id: "h1".into(),
            },
            "approve-host",
            json!({ "kind": "approve-host", "host": "gpu1", "host_id": "h1" }),
        ),
        (
            PendingAction::DeleteAfter { at: Some(8) },
            "delete-after",
            json!({ "kind": "delete-after", "at": 8 }),
        ),
        (
            PendingAction::AddGroupMember {
                group: name("team"),
                user: name("bob"),
            },
            "add-group-member",
            json!({ "kind": "add-group-member", "group": "team", "user": "bob" }),
        ),
        (
            PendingAction::EndorseCredential {
                token_id: "ab12".into(),
                user: name("bob"),
                role: types::Role::VendorAdmin,
            },
            "endorse-credential",
            json!({ "kind": "endorse-credential", "token_id": "ab12", "user": "bob",
                    "role": "vendor-admin" }),
        ),
    ] {
        assert_eq!(action.kind(), kind);
        check(pending(action), pending_json(text));
    }
    check(
        PendingList {
            vendor: name("acme"),
            pending: vec![pending(PendingAction::Delete)],
        },
        json!({ "vendor": "acme", "pending": [pending_json(json!({ "kind": "delete" }))] }),
    );
    refused::<PendingRequest>(pending_json(json!({ "kind": "explode" })), "explode");
    check(AddMember { user: "bob".into() }, json!({ "user": "bob" }));
    check(
        MemberAdded {
            vendor: Some(name("acme")),
            group: name("team"),
            user: name("bob"),
        },
        json!({ "vendor": "acme", "group": "team", "user": "bob" }),
    );
    check(
        MemberRemoved {
            vendor: Some(name("acme")),
            group: name("team"),
            removed: name("bob"),
        },
        json!({ "vendor": "acme", "group": "team", "removed": "bob" }),
    );
    check(
        GroupMembers {
            vendor: Some(name("acme")),
            members: vec![GroupMember {
                group: name("team"),
                user: name("bob"),
            }],
        },
        json!({ "vendor": "acme", "members": [{ "group": "team", "user": "bob" }] }),
    );
    // A change that waits reads as filed; one that applied reads as done.
    let filed = Filed {
        pending: "p1".into(),
        approvals_needed: 1,
        expires_at: 9,
        message: "waits".into(),
    };
    check(
        Outcome::<MemberAdded>::Filed(filed.clone()),
        json!({ "pending": "p1", "approvals_needed": 1, "expires_at": 9, "message": "waits" }),
    );
    check(
        Outcome::Done(HostApproval {
            vendor: name("acme"),
            host: name("gpu1"),
            host_id: "h1".into(),
            approved: true,
        }),
        json!({ "vendor": "acme", "host": "gpu1", "host_id": "h1", "approved": true }),
    );
    check(
        VendorHostList {
            vendor: name("acme"),
            hosts: vec![VendorHost {
                id: "h1".into(),
                name: name("gpu1"),
                group: name("gpu"),
                revoked_at: None,
                approved_by: None,
            }],
        },
        json!({ "vendor": "acme", "hosts": [{ "id": "h1", "name": "gpu1", "group": "gpu",
                                              "revoked_at": null, "approved_by": null }] }),
    );
}

#[test]
fn model_bodies() {
    use wire::models::*;
    check(
        ModelListQuery {
            vendor: Some("acme".into()),
        },
        json!({ "vendor": "acme" }),
    );
    check(
        ModelList {
            models: vec![
                ModelSummary {
                    id: "acme/m".into(),
                    latest: Some(name(COMMIT)),
                    deleted: None,
                },
                ModelSummary {
                    id: "acme/empty".into(),
                    latest: None,
                    deleted: None,
                },
                ModelSummary {
                    id: "acme/gone".into(),
                    latest: Some(name(COMMIT)),
                    deleted: Some(Deleted {
                        at: 5,
                        deletion: Some("d1".into()),
                        certified_at: Some(9),
                    }),
                },
            ],
        },
        json!({ "models": [{ "id": "acme/m", "latest": COMMIT },
                           { "id": "acme/empty", "latest": null },
                           { "id": "acme/gone", "latest": COMMIT,
                             "deleted": { "at": 5, "deletion": "d1", "certified_at": 9 } }] }),
    );
    let revision = Revision {
        commit: name(COMMIT),
        seq: 1,
        message: "first".into(),
        created_by: "user:alice".into(),
        created_at: 7,
        derived_from: None,
    };
    let revision_json = json!({ "commit": COMMIT, "seq": 1, "message": "first",
                                "created_by": "user:alice", "created_at": 7, "derived_from": null });
    check(
        ModelInfo {
            id: "acme/m".into(),
            revisions: vec![revision.clone()],
            deleted: None,
        },
        json!({ "id": "acme/m", "revisions": [revision_json] }),
    );
    check(
        RevisionFiles {
            id: "acme/m".into(),
            revision,
            files: vec![FileEntry {
                path: name("a/config.json"),
                size: 2,
                sha256: name(SHA),
            }],
        },
        json!({ "id": "acme/m", "commit": COMMIT, "seq": 1, "message": "first",
                "created_by": "user:alice", "created_at": 7, "derived_from": null,
                "files": [{ "path": "a/config.json", "size": 2, "sha256": SHA }] }),
    );
    // A path that would leave the output folder, or a digest that is none, does not read.
    refused::<FileEntry>(
        json!({ "path": "../etc/passwd", "size": 1, "sha256": SHA }),
        "path",
    );
    refused::<FileEntry>(
        json!({ "path": "a", "size": 1, "sha256": "not-hex" }),
        "sha256",
    );
    check(
        GrantRequest {
            user: Some("bob".into()),
            group: None,
            expires_at: Some(9),
            expires_in_secs: None,
        },
        json!({ "user": "bob", "expires_at": 9 }),
    );
    check(
        GrantRequest {
            user: Some("bob".into()),
            group: None,
            expires_at: None,
            expires_in_secs: Some(3600),
        },
        json!({ "user": "bob", "expires_in_secs": 3600 }),
    );
    check(
        GrantRequest {
            user: None,
            group: Some("team".into()),
            expires_at: None,
            expires_in_secs: None,
        },
        json!({ "group": "team" }),
    );
    check(
        GrantResponse::Granted(Granted {
            model: "acme/m".into(),
            to: "user:bob".into(),
            expires_at: None,
        }),
        json!({ "model": "acme/m", "to": "user:bob", "expires_at": null }),
    );
    check(
        GrantResponse::Pending(GrantPending {
            model: "acme/m".into(),
            pending: "p1".into(),
            message: "waits".into(),
            approvals_needed: 1,
            expires_at: 9,
        }),
        json!({ "model": "acme/m", "pending": "p1", "message": "waits",
                "approvals_needed": 1, "expires_at": 9 }),
    );
    refused::<GrantResponse>(json!({ "model": "acme/m" }), "did not match");
    check(
        GrantList {
            model: "acme/m".into(),
            users: vec![name("bob")],
            grants: vec![Grant {
                to: "user:bob".into(),
                granted_by: "user:alice".into(),
                expires_at: None,
            }],
        },
        json!({ "model": "acme/m", "users": ["bob"],
                "grants": [{ "to": "user:bob", "granted_by": "user:alice", "expires_at": null }] }),
    );
    check(RevokeQuery { group: true }, json!({ "group": true }));
    assert_eq!(
        serde_json::from_value::<RevokeQuery>(json!({})).unwrap(),
        RevokeQuery { group: false }
    );
    check(
        GrantRevoked {
            model: "acme/m".into(),
            from: "group:team".into(),
        },
        json!({ "model": "acme/m", "from": "group:team" }),
    );
}

#[test]
fn upload_bodies() {
    use wire::upload::*;
    check(
        UploadRequest {
            message: "m".into(),
            files: vec![ManifestEntry {
                path: "w.bin".into(),
                size: 3,
                sha256: Some(SHA.into()),
            }],
            derived_from: None,
        },
        json!({ "message": "m", "files": [{ "path": "w.bin", "size": 3, "sha256": SHA }] }),
    );
    // A digest left out is confirmed at commit.
    check(
        UploadRequest {
            message: "m".into(),
            files: vec![ManifestEntry {
                path: "w.bin".into(),
                size: 3,
                sha256: None,
            }],
            derived_from: None,
        },
        json!({ "message": "m", "files": [{ "path": "w.bin", "size": 3 }] }),
    );
    check(
        CommitRequest {
            sha256: [("w.bin".to_owned(), SHA.to_owned())].into(),
        },
        json!({ "sha256": { "w.bin": SHA } }),
    );
    check(CommitRequest::default(), json!({}));
    check(
        UploadRequest {
            message: String::new(),
            files: vec![],
            derived_from: Some(COMMIT.into()),
        },
        json!({ "message": "", "files": [], "derived_from": COMMIT }),
    );
    check(
        UploadSession {
            upload_id: "u1".into(),
            model: "acme/m".into(),
            files: vec![SessionFile {
                index: 0,
                path: name("w.bin"),
                size: 3,
                done: false,
                resume_offset: 0,
            }],
        },
        json!({ "upload_id": "u1", "model": "acme/m",
                "files": [{ "index": 0, "path": "w.bin", "size": 3, "done": false,
                            "resume_offset": 0 }] }),
    );
    refused::<UploadSession>(json!({ "model": "acme/m", "files": [] }), "upload_id");
    check(PutQuery { offset: 8 }, json!({ "offset": 8 }));
    check(
        Committed {
            model: "acme/m".into(),
            commit: name(COMMIT),
            files: 2,
            derived_from: Some(name(COMMIT)),
        },
        json!({ "model": "acme/m", "commit": COMMIT, "files": 2, "derived_from": COMMIT }),
    );
    check(wire::Empty {}, json!({}));
}

#[test]
fn deletion_bodies() {
    use wire::deletion::*;
    let started = DeletionStarted {
        deletion: "d1".into(),
        state: "access_revoked".into(),
        message: None,
    };
    assert!(!started.is_pending_approval());
    check(
        started,
        json!({ "deletion": "d1", "state": "access_revoked" }),
    );
    let pending = DeletionStarted {
        deletion: "d1".into(),
        state: DeletionStarted::PENDING_APPROVAL.into(),
        message: Some("waits".into()),
    };
    assert!(pending.is_pending_approval());
    check(
        pending,
        json!({ "deletion": "d1", "state": "pending-approval", "message": "waits" }),
    );
    check(
        DeletionList {
            vendor: name("acme"),
            deletions: vec![DeletionSummary {
                deletion: "d1".into(),
                model: Some("acme/m".into()),
                state: "certified".into(),
                requested_by: "vendor-admin:a".into(),
                requested_at: 5,
                certified_at: Some(9),
                last_error: None,
            }],
        },
        json!({ "vendor": "acme", "deletions": [{ "deletion": "d1", "model": "acme/m",
                "state": "certified", "requested_by": "vendor-admin:a", "requested_at": 5,
                "certified_at": 9, "last_error": null }] }),
    );
    check(
        DeletionStatus {
            deletion: "d1".into(),
            vendor: name("acme"),
            state: "certified".into(),
            requested_by: "user:alice".into(),
            approved_by: None,
            requested_at: 1,
            completed_at: Some(2),
            certificate: Some(json!({ "v": 1, "anything": ["kept", "as", "is"] })),
            attempts: 2,
            last_error: Some("storage refused".into()),
            retry_at: Some(9),
            wipes: vec![HostWipe {
                host: name("gpu-01"),
                host_id: "h1".into(),
                model: "acme/m".into(),
                files: 3,
                confirmed_at: Some(5),
                late: true,
            }],
        },
        json!({ "deletion": "d1", "vendor": "acme", "state": "certified",
                "requested_by": "user:alice", "approved_by": null, "requested_at": 1,
                "completed_at": 2, "certificate": { "v": 1, "anything": ["kept", "as", "is"] },
                "attempts": 2, "last_error": "storage refused", "retry_at": 9,
                "wipes": [{ "host": "gpu-01", "host_id": "h1", "model": "acme/m", "files": 3,
                            "confirmed_at": 5, "late": true }] }),
    );
    check(
        ServiceKey {
            service_key: "ab".into(),
        },
        json!({ "service_key": "ab" }),
    );
    check(DeleteAfter { at: None }, json!({ "at": null }));
    refused::<DeleteAfter>(json!({ "when": 5 }), "unknown field");
    check(
        DeleteAfterSet {
            model: "acme/m".into(),
            delete_after: Some(5),
        },
        json!({ "model": "acme/m", "delete_after": 5 }),
    );
}

#[test]
fn wipe_bodies() {
    use wire::wipe::*;
    check(
        WipeList {
            host: name("gpu1"),
            revoked: false,
            models: vec![DeletedModel {
                model: "acme/m".into(),
                model_id: "m1".into(),
                files: vec![DeletedFile {
                    commit: name(COMMIT),
                    path: name("w.bin"),
                    bytes: 3,
                }],
            }],
        },
        json!({ "host": "gpu1", "revoked": false,
                "models": [{ "model": "acme/m", "model_id": "m1",
                             "files": [{ "commit": COMMIT, "path": "w.bin", "bytes": 3 }] }] }),
    );
    check(
        ConfirmWipe {
            model_id: "m1".into(),
            files: 2,
            searched: vec!["the Hugging Face cache /h".into()],
        },
        json!({ "model_id": "m1", "files": 2, "searched": ["the Hugging Face cache /h"] }),
    );
    // An older client's confirmation, which did not say where it looked, still reads.
    let old: ConfirmWipe = serde_json::from_value(json!({ "model_id": "m1", "files": 2 })).unwrap();
    assert!(old.searched.is_empty());
    check(
        WipeConfirmed {
            host: name("gpu1"),
            model: "acme/m".into(),
            files: 2,
            late: true,
            repeated: false,
        },
        json!({ "host": "gpu1", "model": "acme/m", "files": 2,
                "late": true, "repeated": false }),
    );
}

#[test]
fn audit_bodies() {
    use wire::audit::*;
    check(
        AuditKey {
            origin: "o".into(),
            key: "k".into(),
        },
        json!({ "origin": "o", "key": "k" }),
    );
    check(
        LatestCheckpoint {
            size: 4,
            root: "cm9vdA==".into(),
            note: "n\n".into(),
            log_size: 6,
            refusal: None,
            witnesses: vec![],
        },
        json!({ "size": 4, "root": "cm9vdA==", "note": "n\n", "log_size": 6, "refusal": null }),
    );
    check(
        LatestCheckpoint {
            size: 4,
            root: "cm9vdA==".into(),
            note: "n\n".into(),
            log_size: 6,
            refusal: None,
            witnesses: vec![WitnessStatus {
                name: "w1".into(),
                key: "w1+00000000+BA==".into(),
                url: "http://127.0.0.1:1".into(),
                cosigned_size: 3,
                last_error: Some("refused (409)".into()),
            }],
        },
        json!({ "size": 4, "root": "cm9vdA==", "note": "n\n", "log_size": 6, "refusal": null,
                "witnesses": [{ "name": "w1", "key": "w1+00000000+BA==",
                                "url": "http://127.0.0.1:1", "cosigned_size": 3,
                                "last_error": "refused (409)" }] }),
    );
    check(
        SignedCheckpoint {
            size: 4,
            root: "r".into(),
            note: "n".into(),
            new: true,
        },
        json!({ "size": 4, "root": "r", "note": "n", "new": true }),
    );
    check(
        CheckpointList {
            checkpoints: vec![Checkpoint {
                size: 1,
                root: "r".into(),
                note: "n".into(),
            }],
        },
        json!({ "checkpoints": [{ "size": 1, "root": "r", "note": "n" }] }),
    );
    check(
        RangeQuery {
            from: Some(1),
            to: None,
        },
        json!({ "from": 1 }),
    );
    check(
        InclusionQuery {
            index: 2,
            size: Some(5),
        },
        json!({ "index": 2, "size": 5 }),
    );
    check(
        InclusionProof {
            index: 2,
            size: 5,
            leaf_hash: "l".into(),
            proof: vec!["a".into(), "b".into()],
            checkpoint: None,
        },
        json!({ "index": 2, "size": 5, "leaf_hash": "l", "proof": ["a", "b"], "checkpoint": null }),
    );
    check(ConsistencyQuery { old: 1, new: None }, json!({ "old": 1 }));
    check(
        ConsistencyProof {
            old: 1,
            new: 5,
            proof: vec!["a".into()],
        },
        json!({ "old": 1, "new": 5, "proof": ["a"] }),
    );
    check(EdgeQuery { size: 3 }, json!({ "size": 3 }));
    check(
        TreeEdge {
            size: 3,
            edge: vec!["a".into()],
        },
        json!({ "size": 3, "edge": ["a"] }),
    );
}

#[test]
fn hub_bodies_keep_the_hubs_names() {
    use wire::hub::*;
    check(
        ModelInfo {
            id: "acme/m".into(),
            model_id: "acme/m".into(),
            author: name("acme"),
            sha: name(COMMIT),
            private: true,
            gated: false,
            disabled: false,
            tags: vec![],
            siblings: vec![
                Sibling {
                    rfilename: "config.json".into(),
                    size: None,
                    blob_id: None,
                    lfs: None,
                },
                Sibling {
                    rfilename: "w.bin".into(),
                    size: Some(11),
                    blob_id: Some("b".into()),
                    lfs: Some(SiblingLfs {
                        sha256: SHA.into(),
                        size: 11,
                        pointer_size: 134,
                    }),
                },
            ],
        },
        json!({ "id": "acme/m", "modelId": "acme/m", "author": "acme", "sha": COMMIT,
                "private": true, "gated": false, "disabled": false, "tags": [],
                "siblings": [
                    { "rfilename": "config.json" },
                    { "rfilename": "w.bin", "size": 11, "blobId": "b",
                      "lfs": { "sha256": SHA, "size": 11, "pointerSize": 134 } },
                ] }),
    );
    let file = TreeEntry::File {
        oid: "b".into(),
        size: 11,
        path: "a/w.bin".into(),
        lfs: Some(TreeLfs {
            oid: SHA.into(),
            size: 11,
            pointer_size: 134,
        }),
    };
    assert_eq!(file.path(), "a/w.bin");
    check(
        file,
        json!({ "type": "file", "oid": "b", "size": 11, "path": "a/w.bin",
                "lfs": { "oid": SHA, "size": 11, "pointerSize": 134 } }),
    );
    check(
        TreeEntry::File {
            oid: "c".into(),
            size: 2,
            path: "x".into(),
            lfs: None,
        },
        json!({ "type": "file", "oid": "c", "size": 2, "path": "x" }),
    );
    check(
        TreeEntry::Directory {
            oid: "t".into(),
            size: 0,
            path: "a".into(),
        },
        json!({ "type": "directory", "oid": "t", "size": 0, "path": "a" }),
    );
    check(HubError { error: "no".into() }, json!({ "error": "no" }));
    let table = [
        (HubErrorCode::GatedRepo, "GatedRepo"),
        (HubErrorCode::RepoNotFound, "RepoNotFound"),
        (HubErrorCode::RevisionNotFound, "RevisionNotFound"),
        (HubErrorCode::EntryNotFound, "EntryNotFound"),
    ];
    assert_eq!(table.len(), HubErrorCode::ALL.len());
    for (code, text) in table {
        assert!(HubErrorCode::ALL.contains(&code));
        assert_eq!(code.as_str(), text);
    }
}

#[test]
fn budget_bodies() {
    use wire::budget::{Budget, BudgetView, ByteLimit, InFlight, SetBudget, Use};
    let budget = Budget {
        window_secs: 86_400,
        per_host: Some(ByteLimit::ModelSizeMilli(2000)),
        per_user: Some(ByteLimit::Bytes(1 << 30)),
        max_hosts: Some(3),
        per_host_concurrency: None,
    };
    let budget_json = json!({
        "window_secs": 86_400,
        "per_host": { "model_size_milli": 2000 },
        "per_user": { "bytes": 1u64 << 30 },
        "max_hosts": 3,
        "per_host_concurrency": null,
    });
    check(
        SetBudget {
            budget: Some(budget),
        },
        json!({ "budget": budget_json }),
    );
    check(SetBudget { budget: None }, json!({ "budget": null }));
    refused::<SetBudget>(
        json!({ "budget": { "window_secs": 1, "per_host": { "bytes": 1, "model_size_milli": 2 },
            "per_user": null, "max_hosts": null, "per_host_concurrency": null } }),
        "",
    );
    refused::<SetBudget>(
        json!({ "budget": { "window_secs": 1, "per_hosts": null } }),
        "unknown field `per_hosts`",
    );
    check(
        BudgetView {
            model: "acme/m".into(),
            budget: Some(budget),
            set_by: Some("vendor-admin:ada".into()),
            set_at: Some(5),
            model_size: 1000,
            hosts: vec![Use {
                name: "gpu-01".into(),
                bytes: 10,
                limit: Some(2000),
            }],
            users: vec![],
            holding_hosts: vec!["gpu-01".into()],
            in_flight: vec![InFlight {
                host: "gpu-01".into(),
                fetches: 1,
            }],
        },
        json!({
            "model": "acme/m",
            "budget": budget_json,
            "set_by": "vendor-admin:ada",
            "set_at": 5,
            "model_size": 1000,
            "hosts": [{ "name": "gpu-01", "bytes": 10, "limit": 2000 }],
            "users": [],
            "holding_hosts": ["gpu-01"],
            "in_flight": [{ "host": "gpu-01", "fetches": 1 }],
        }),
    );
}
