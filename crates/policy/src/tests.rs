//! Decision tables over the real policies (embedded and on disk), load-time validation, and
//! fail-closed behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const NOW: i64 = 1_800_000_000;

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn vendor(name: &str) -> VendorName {
    VendorName::parse(name).unwrap()
}

fn who(name: &str, role: Role, scope: Option<&str>) -> Principal {
    Principal {
        user: user(name),
        role,
        vendor: scope.map(vendor),
    }
}

/// Model `acme/m`, hosts of group `gpu` allowed, alice granted directly, group `team`
/// granted, no exclusion, no embargo.
fn model() -> ModelFacts {
    ModelFacts {
        id: "acme/m".into(),
        vendor: vendor("acme"),
        readers: vec![Grant::forever(user("alice"))],
        reader_groups: vec![Grant::forever("team".into())],
        excluded: vec![],
        vendor_excluded: vec![],
        host_groups: vec!["gpu".into()],
        not_before: None,
        not_after: None,
    }
}

fn host(group: &str) -> Option<HostFacts> {
    Some(HostFacts {
        name: "gpu-01".into(),
        groups: vec![group.into()],
        revoked: false,
        vendor_approved: true,
    })
}

fn facts(principal: Principal, resource: ResourceFacts) -> Facts {
    Facts {
        principal,
        groups: vec![],
        resource,
        host: host("gpu"),
        now: NOW,
        credential_counts: true,
    }
}

struct Case {
    name: &'static str,
    facts: Facts,
    action: Action,
    allowed: bool,
    /// Fragment of the reason (denials) or the deciding policy id (allows).
    expect: &'static str,
}

fn case(
    name: &'static str,
    facts: Facts,
    action: Action,
    allowed: bool,
    expect: &'static str,
) -> Case {
    Case {
        name,
        facts,
        action,
        allowed,
        expect,
    }
}

fn engine() -> &'static PolicyEngine {
    PolicyEngine::embedded().unwrap()
}

fn with_model(p: Principal, edit: impl FnOnce(&mut Facts, &mut ModelFacts)) -> Facts {
    let mut m = model();
    let mut f = facts(p, ResourceFacts::Service);
    edit(&mut f, &mut m);
    f.resource = ResourceFacts::Model(m);
    f
}

fn cases() -> Vec<Case> {
    use Action::*;
    use Role::*;
    let alice = || who("alice", Committer, None);
    let bob = || who("bob", Committer, None); // no direct grant
    let admin = || who("ada", VendorAdmin, Some("acme"));
    let other_admin = || who("olga", VendorAdmin, Some("other"));
    let auditor = || who("audrey", Auditor, Some("acme"));
    let operator = || who("root", Operator, None);
    let m = |p: Principal| with_model(p, |_, _| {});
    let service = |p: Principal| facts(p, ResourceFacts::Service);
    let acme = |p: Principal| {
        facts(
            p,
            ResourceFacts::Vendor(VendorFacts {
                name: vendor("acme"),
                excluded: vec![],
                readers: vec![user("alice")],
            }),
        )
    };
    let in_team = |p: Principal| with_model(p, |f, _| f.groups = vec!["team".into()]);

    vec![
        // Deletion: the vendor's admins and the operator may ask; nobody else.
        case(
            "operator requests a model's deletion",
            m(operator()),
            RequestDeletion,
            true,
            "operator-requests-deletion",
        ),
        case(
            "operator requests a vendor's deletion",
            acme(operator()),
            RequestDeletion,
            true,
            "operator-requests-deletion",
        ),
        case(
            "committer may not request deletion",
            m(alice()),
            RequestDeletion,
            false,
            "may not request-deletion",
        ),
        case(
            "auditor may not request deletion",
            m(auditor()),
            RequestDeletion,
            false,
            "may not request-deletion",
        ),
        // Settings and groups (the actions added with hosts and the two-person rule).
        case(
            "vendor admin configures own model",
            m(admin()),
            Configure,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin configures own vendor",
            acme(admin()),
            Configure,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "other vendor's admin may not configure",
            m(other_admin()),
            Configure,
            false,
            "own vendor",
        ),
        case(
            "committer may not configure",
            m(alice()),
            Configure,
            false,
            "may not configure",
        ),
        // Groups belong to a vendor: its admins manage them, the operator does not.
        case(
            "vendor admin manages own vendor's groups",
            acme(admin()),
            ManageGroups,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "operator may not manage a vendor's groups",
            acme(operator()),
            ManageGroups,
            false,
            "may not manage-groups",
        ),
        case(
            "other vendor's admin may not manage groups",
            acme(other_admin()),
            ManageGroups,
            false,
            "own vendor",
        ),
        // Host approvals are the vendor's; enrollment is the operator's.
        case(
            "vendor admin approves hosts for own vendor",
            acme(admin()),
            ManageHosts,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "operator may not approve hosts for a vendor",
            acme(operator()),
            ManageHosts,
            false,
            "may not manage-hosts",
        ),
        case(
            "operator enrolls hosts",
            service(operator()),
            ManageHosts,
            true,
            "operator-manages-service",
        ),
        case(
            "a host the vendor did not approve receives no bytes",
            with_model(alice(), |f, _| {
                if let Some(h) = f.host.as_mut() {
                    h.vendor_approved = false;
                }
            }),
            Fetch,
            false,
            "not approved by the model's vendor",
        ),
        case(
            "nor does the vendor admin on it",
            with_model(admin(), |f, _| {
                if let Some(h) = f.host.as_mut() {
                    h.vendor_approved = false;
                }
            }),
            Fetch,
            false,
            "not approved by the model's vendor",
        ),
        // A credential the vendor did not endorse counts for nothing of the vendor's.
        case(
            "an unendorsed credential of a granted committer may not fetch",
            with_model(alice(), |f, _| f.credential_counts = false),
            Fetch,
            false,
            "needs the vendor's approval",
        ),
        case(
            "nor list the model",
            with_model(alice(), |f, _| f.credential_counts = false),
            ReadMetadata,
            false,
            "needs the vendor's approval",
        ),
        case(
            "an unendorsed admin credential may not grant",
            with_model(admin(), |f, _| f.credential_counts = false),
            Grant,
            false,
            "needs the vendor's approval",
        ),
        case(
            "nor approve",
            {
                let mut f = acme(admin());
                f.credential_counts = false;
                f
            },
            Approve,
            false,
            "needs the vendor's approval",
        ),
        // Deletions and certificates: the vendor's admins and auditors, and the operator.
        case(
            "vendor admin reads own deletions",
            acme(admin()),
            ReadDeletions,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "auditor reads own vendor's deletions",
            acme(auditor()),
            ReadDeletions,
            true,
            "auditor-reads-own-vendor",
        ),
        case(
            "operator reads deletions",
            acme(operator()),
            ReadDeletions,
            true,
            "operator-reads-vendor-records",
        ),
        case(
            "vendor admin reads a model's access",
            m(admin()),
            ReadAccess,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "auditor reads a model's access",
            m(auditor()),
            ReadAccess,
            true,
            "auditor-reads-own-vendor",
        ),
        case(
            "operator reads a model's access",
            m(operator()),
            ReadAccess,
            true,
            "operator-reads-vendor-records",
        ),
        case(
            "granted committer may not read who else is granted",
            m(alice()),
            ReadAccess,
            false,
            "may not read-access",
        ),
        case(
            "other vendor's admin may not read a model's access",
            m(other_admin()),
            ReadAccess,
            false,
            "own vendor",
        ),
        case(
            "committer may not read deletions",
            acme(alice()),
            ReadDeletions,
            false,
            "may not read-deletions",
        ),
        case(
            "other vendor's admin may not read deletions",
            acme(other_admin()),
            ReadDeletions,
            false,
            "own vendor",
        ),
        case(
            "vendor admin approves on own vendor",
            acme(admin()),
            Approve,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        // Committers and grants.
        case(
            "granted committer fetches",
            m(alice()),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "granted committer lists",
            m(alice()),
            ReadMetadata,
            true,
            "committer-reads-granted-model",
        ),
        case(
            "ungranted committer may not fetch",
            m(bob()),
            Fetch,
            false,
            "no grant",
        ),
        case(
            "ungranted committer may not list",
            m(bob()),
            ReadMetadata,
            false,
            "no grant",
        ),
        case(
            "group grant lets a member fetch",
            in_team(bob()),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "group grant lets a member list",
            in_team(bob()),
            ReadMetadata,
            true,
            "committer-reads-granted-model",
        ),
        case(
            "committer cannot grant",
            m(alice()),
            Grant,
            false,
            "may not grant",
        ),
        case(
            "committer cannot revoke",
            m(alice()),
            Revoke,
            false,
            "may not revoke",
        ),
        case(
            "committer cannot exclude",
            m(alice()),
            Exclude,
            false,
            "may not exclude",
        ),
        case(
            "committer cannot upload",
            acme(alice()),
            Upload,
            false,
            "may not upload",
        ),
        case(
            "committer cannot create vendors",
            service(alice()),
            CreateVendor,
            false,
            "may not create-vendor",
        ),
        case(
            "committer cannot create tokens",
            service(alice()),
            CreateToken,
            false,
            "may not create-token",
        ),
        case(
            "committer lists a vendor where they hold a grant",
            acme(alice()),
            ReadMetadata,
            true,
            "committer-lists-vendors",
        ),
        case(
            "committer without a grant at a vendor does not see it",
            acme(bob()),
            ReadMetadata,
            false,
            "may not read-metadata",
        ),
        // Expiry.
        case(
            "expired direct grant gives nothing",
            with_model(alice(), |_, m| {
                m.readers = vec![crate::Grant::until(user("alice"), NOW)]
            }),
            Fetch,
            false,
            "no grant",
        ),
        case(
            "unexpired direct grant counts",
            with_model(alice(), |_, m| {
                m.readers = vec![crate::Grant::until(user("alice"), NOW + 1)]
            }),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "expired group grant gives nothing",
            with_model(bob(), |f, m| {
                f.groups = vec!["team".into()];
                m.reader_groups = vec![crate::Grant::until("team".into(), NOW - 5)];
            }),
            ReadMetadata,
            false,
            "no grant",
        ),
        // Exclusions win over grants.
        case(
            "excluded member of a granted group refused",
            with_model(bob(), |f, m| {
                f.groups = vec!["team".into()];
                m.excluded = vec![user("bob")];
            }),
            Fetch,
            false,
            "excluded from this model",
        ),
        case(
            "excluded direct reader refused listing",
            with_model(alice(), |_, m| m.excluded = vec![user("alice")]),
            ReadMetadata,
            false,
            "excluded",
        ),
        case(
            "excluded at vendor level refused",
            with_model(alice(), |_, m| m.vendor_excluded = vec![user("alice")]),
            Fetch,
            false,
            "excluded",
        ),
        case(
            "excluding someone else changes nothing",
            with_model(alice(), |_, m| m.excluded = vec![user("bob")]),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "vendor-level exclusion hides the vendor",
            facts(
                alice(),
                ResourceFacts::Vendor(VendorFacts {
                    name: vendor("acme"),
                    excluded: vec![user("alice")],
                    readers: vec![user("alice")],
                }),
            ),
            ReadMetadata,
            false,
            "excluded",
        ),
        case(
            "excluded vendor admin cannot fetch",
            with_model(admin(), |_, m| m.excluded = vec![user("ada")]),
            Fetch,
            false,
            "excluded",
        ),
        // Hosts.
        case(
            "fetch without host refused",
            with_model(alice(), |f, _| f.host = None),
            Fetch,
            false,
            "requires an exclusive host",
        ),
        case(
            "listing needs no host",
            with_model(alice(), |f, _| f.host = None),
            ReadMetadata,
            true,
            "committer-reads-granted-model",
        ),
        case(
            "host of a group not allowed for the model refused",
            with_model(alice(), |f, _| f.host = host("cpu")),
            Fetch,
            false,
            "not in a host group allowed",
        ),
        case(
            "revoked host refused",
            with_model(alice(), |f, _| f.host.as_mut().unwrap().revoked = true),
            Fetch,
            false,
            "revoked",
        ),
        case(
            "model with no host groups cannot be fetched",
            with_model(alice(), |_, m| m.host_groups.clear()),
            Fetch,
            false,
            "not in a host group allowed",
        ),
        case(
            "vendor admin fetch needs a host too",
            with_model(admin(), |f, _| f.host = None),
            Fetch,
            false,
            "requires an exclusive host",
        ),
        // Embargo.
        case(
            "before not_before refused",
            with_model(alice(), |_, m| m.not_before = Some(NOW + 1)),
            Fetch,
            false,
            "embargo",
        ),
        case(
            "at not_before allowed",
            with_model(alice(), |_, m| m.not_before = Some(NOW)),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "at not_after refused",
            with_model(alice(), |_, m| m.not_after = Some(NOW)),
            Fetch,
            false,
            "window",
        ),
        case(
            "inside the window allowed",
            with_model(alice(), |_, m| {
                m.not_before = Some(NOW - 10);
                m.not_after = Some(NOW + 10);
            }),
            Fetch,
            true,
            "committer-fetches-granted-model",
        ),
        case(
            "embargo does not hide metadata",
            with_model(alice(), |_, m| m.not_before = Some(NOW + 1)),
            ReadMetadata,
            true,
            "committer-reads-granted-model",
        ),
        // Auditors.
        case(
            "auditor cannot fetch",
            m(auditor()),
            Fetch,
            false,
            "never the weights",
        ),
        case(
            "auditor reads its vendor's model",
            m(auditor()),
            ReadMetadata,
            true,
            "auditor-reads-own-vendor",
        ),
        case(
            "auditor exports its vendor's audit",
            acme(auditor()),
            ExportAudit,
            true,
            "auditor-reads-own-vendor",
        ),
        case(
            "auditor cannot grant",
            m(auditor()),
            Grant,
            false,
            "may not grant",
        ),
        case(
            "auditor of another vendor reads nothing",
            m(who("otto", Auditor, Some("other"))),
            ReadMetadata,
            false,
            "own vendor",
        ),
        // Vendor admins.
        case(
            "vendor admin uploads to own vendor",
            acme(admin()),
            Upload,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin grants on own model",
            m(admin()),
            Grant,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin revokes on own model",
            m(admin()),
            Revoke,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin excludes on own model",
            m(admin()),
            Exclude,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin requests deletion",
            m(admin()),
            RequestDeletion,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "vendor admin fetches own model on a host",
            m(admin()),
            Fetch,
            true,
            "vendor-admin-fetches-own-vendor",
        ),
        case(
            "vendor admin of another vendor cannot upload",
            acme(other_admin()),
            Upload,
            false,
            "own vendor",
        ),
        case(
            "vendor admin of another vendor cannot grant",
            m(other_admin()),
            Grant,
            false,
            "own vendor",
        ),
        case(
            "vendor admin of another vendor cannot fetch",
            m(other_admin()),
            Fetch,
            false,
            "own vendor",
        ),
        case(
            "vendor admin of another vendor cannot list",
            m(other_admin()),
            ReadMetadata,
            false,
            "own vendor",
        ),
        case(
            "vendor admin of another vendor cannot exclude",
            m(other_admin()),
            Exclude,
            false,
            "own vendor",
        ),
        case(
            "vendor admin without a vendor does nothing",
            m(who("vera", VendorAdmin, None)),
            Grant,
            false,
            "own vendor",
        ),
        case(
            "vendor admin cannot create tokens",
            service(admin()),
            CreateToken,
            false,
            "may not create-token",
        ),
        case(
            "vendor admin cannot create vendors",
            service(admin()),
            CreateVendor,
            false,
            "may not create-vendor",
        ),
        // Operators.
        case(
            "operator never fetches",
            m(operator()),
            Fetch,
            false,
            "never receive weights",
        ),
        case(
            "operator never fetches even when granted and on a host",
            with_model(operator(), |_, m| {
                m.readers = vec![crate::Grant::forever(user("root"))]
            }),
            Fetch,
            false,
            "never receive weights",
        ),
        case(
            "operator creates vendors",
            service(operator()),
            CreateVendor,
            true,
            "operator-manages-service",
        ),
        case(
            "operator creates tokens",
            service(operator()),
            CreateToken,
            true,
            "operator-manages-service",
        ),
        case(
            "operator manages hosts",
            service(operator()),
            ManageHosts,
            true,
            "operator-manages-service",
        ),
        case(
            "operator lists vendors",
            service(operator()),
            ListVendors,
            true,
            "operator-reads-metadata",
        ),
        case(
            "operator cannot grant",
            m(operator()),
            Grant,
            false,
            "may not grant",
        ),
        case(
            "operator cannot upload",
            acme(operator()),
            Upload,
            false,
            "may not upload",
        ),
        // Derived revisions (converted or quantized weights, test logs): a committer holding
        // a grant, or a vendor admin; exclusions win; no host needed (nothing is read).
        case(
            "granted committer uploads a derived revision",
            m(alice()),
            UploadDerived,
            true,
            "committer-uploads-derived-for-granted-model",
        ),
        case(
            "group grant lets a member upload a derived revision",
            in_team(bob()),
            UploadDerived,
            true,
            "committer-uploads-derived-for-granted-model",
        ),
        case(
            "derived upload needs no host",
            with_model(alice(), |f, _| f.host = None),
            UploadDerived,
            true,
            "committer-uploads-derived-for-granted-model",
        ),
        case(
            "ungranted committer may not upload a derived revision",
            m(bob()),
            UploadDerived,
            false,
            "no grant",
        ),
        case(
            "excluded member of a granted group may not upload a derived revision",
            with_model(bob(), |f, m| {
                f.groups = vec!["team".into()];
                m.excluded = vec![user("bob")];
            }),
            UploadDerived,
            false,
            "excluded from this model",
        ),
        case(
            "committer excluded at vendor level may not upload a derived revision",
            with_model(alice(), |_, m| m.vendor_excluded = vec![user("alice")]),
            UploadDerived,
            false,
            "excluded",
        ),
        case(
            "vendor admin uploads a derived revision of own model",
            m(admin()),
            UploadDerived,
            true,
            "vendor-admin-manages-own-vendor",
        ),
        case(
            "other vendor's admin may not upload a derived revision",
            m(other_admin()),
            UploadDerived,
            false,
            "own vendor",
        ),
        case(
            "auditor may not upload a derived revision",
            m(auditor()),
            UploadDerived,
            false,
            "may not upload-derived",
        ),
        case(
            "operator may not upload a derived revision",
            m(operator()),
            UploadDerived,
            false,
            "may not upload-derived",
        ),
        // Actions that do not apply to a resource type are refused, not errors... see below.
        case(
            "approve is for vendor admins",
            m(alice()),
            Approve,
            false,
            "may not approve",
        ),
    ]
}

#[test]
fn decision_table() {
    let engine = engine();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let d = engine.decide(&c.facts, c.action);
        let ok = d.allowed == c.allowed
            && d.errors.is_empty()
            && if c.allowed {
                d.policies.iter().any(|p| p == c.expect) && d.reason.is_empty()
            } else {
                d.reason.contains(c.expect)
            };
        if !ok {
            failures.push(format!("{}: {d:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn decisions_name_their_policies() {
    let f = with_model(who("bob", Role::Committer, None), |f, m| {
        f.groups = vec!["team".into()];
        m.excluded = vec![user("bob")];
        f.host = None;
    });
    let d = engine().decide(&f, Action::Fetch);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["excluded-from-model", "fetch-requires-host"]);
    assert_eq!(d.policy, "excluded-from-model");
    assert!(
        d.reason.contains("excluded") && d.reason.contains("host"),
        "{}",
        d.reason
    );

    let d = engine().decide(
        &facts(who("x", Role::Committer, None), ResourceFacts::Service),
        Action::Approve,
    );
    // `approve` does not apply to the Service: the request fails schema checks: refused.
    assert!(!d.allowed);
    assert_eq!(d.policy, "engine-error");
    assert!(!d.errors.is_empty());

    let d = engine().decide(
        &facts(who("x", Role::Committer, None), ResourceFacts::Service),
        Action::CreateVendor,
    );
    assert_eq!(
        (d.allowed, d.policy, d.policies.len()),
        (false, "default-deny", 0)
    );
}

#[test]
fn embedded_policies_are_the_directory() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let summary = validate(dir).unwrap();
    let names: Vec<&str> = EMBEDDED_POLICIES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        summary.files, names,
        "embed every policies/*.cedar file in lib.rs"
    );
    assert_eq!(summary.policies, engine().policy_ids());
    let loaded = PolicyEngine::load(dir).unwrap();
    assert_eq!(loaded.policy_ids(), engine().policy_ids());
    assert!(summary.policies.len() >= 15);
}

fn with_extra_policy(extra: &str) -> Result<PolicyEngine, PolicyError> {
    let mut files: Vec<(&str, &str)> = EMBEDDED_POLICIES.to_vec();
    files.push(("extra.cedar", extra));
    PolicyEngine::from_files(EMBEDDED_SCHEMA, &files)
}

#[test]
fn unguarded_forbid_is_rejected_with_the_validator_message() {
    // The fail-open pitfall: without `context has host` this errors when no host is given,
    // and an erroring forbid is skipped.
    let err = with_extra_policy(
        r#"@id("host-required-unguarded") @reason("needs a host")
        forbid (principal, action == Action::"fetch", resource is Model)
        unless { context.host in resource.host_groups };"#,
    )
    .unwrap_err();
    let PolicyError::Validation(messages) = &err else {
        panic!("{err:?}");
    };
    let text = messages.join("\n");
    assert!(text.contains("host-required-unguarded"), "{text}");
    assert!(text.contains("host"), "{text}");

    // An optional model attribute without `has`.
    let err = with_extra_policy(
        r#"@id("embargo-unguarded") @reason("embargo")
        forbid (principal, action == Action::"fetch", resource is Model)
        when { context.now < resource.not_before };"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("embargo-unguarded"), "{err}");
    assert!(err.to_string().contains("not_before"), "{err}");
}

#[test]
fn load_rejects_malformed_policy_sets() {
    let cases: &[(&str, &str)] = &[
        ("permit (principal, action, resource);", "no @id"),
        (
            r#"@id("operator-never-reads-weights") permit (principal, action, resource);"#,
            "used twice",
        ),
        (
            r#"@id("f") forbid (principal, action, resource);"#,
            "no @reason",
        ),
        (
            r#"@id("t") permit (principal == ?principal, action, resource);"#,
            "templates are not used",
        ),
        (
            r#"@id("typo") permit (principal, action, resource) when { principal.rol == "x" };"#,
            "typo",
        ),
        (
            r#"@id("bad-action") permit (principal, action == Action::"dance", resource);"#,
            "dance",
        ),
        (
            r#"@id("syntax") permit (principal, action resource);"#,
            "extra.cedar",
        ),
    ];
    for (src, fragment) in cases {
        let err = with_extra_policy(src).unwrap_err();
        assert!(err.to_string().contains(fragment), "{src}: {err}");
    }
    assert!(matches!(
        PolicyEngine::from_sources(
            "entity User = { role: Strin };",
            "@id(\"a\") permit(principal, action, resource);"
        ),
        Err(PolicyError::Schema(_))
    ));
    let missing = validate("/nonexistent/policies").unwrap_err();
    assert!(
        matches!(missing, PolicyError::MissingSchema(_)),
        "{missing}"
    );
}

#[test]
fn evaluation_errors_deny() {
    // Passes strict validation, but overflows at run time for a huge `now`: Cedar then skips
    // the forbid and answers Allow with an error. The engine must refuse.
    let schema = r#"
        entity User; entity Doc;
        action read appliesTo { principal: [User], resource: [Doc], context: { now: Long } };
    "#;
    let policies = r#"
        @id("everyone-reads") permit (principal, action, resource);
        @id("overflowing-forbid") @reason("closed")
        forbid (principal, action, resource) when { context.now + 1 < 0 };
    "#;
    let engine = PolicyEngine::from_sources(schema, policies).unwrap();
    // The same schema does not match the custody facts; drive Cedar directly.
    use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request, RestrictedExpression};
    use std::str::FromStr;
    let req = |now: i64| {
        Request::new(
            EntityUid::from_str(r#"User::"u""#).unwrap(),
            EntityUid::from_str(r#"Action::"read""#).unwrap(),
            EntityUid::from_str(r#"Doc::"d""#).unwrap(),
            Context::from_pairs([("now".to_owned(), RestrictedExpression::new_long(now))]).unwrap(),
            Some(&engine.schema),
        )
        .unwrap()
    };
    let prepared = |now| Prepared {
        request: req(now),
        entities: Entities::empty(),
        role: Role::Committer,
        action: Action::ReadMetadata,
    };
    let raw = Authorizer::new().is_authorized(&req(i64::MAX), &engine.policies, &Entities::empty());
    assert_eq!(
        raw.decision(),
        cedar_policy::Decision::Allow,
        "Cedar fails open here"
    );

    let d = engine.decide_prepared(&prepared(i64::MAX));
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy, "engine-error");
    assert!(
        d.errors.iter().any(|e| e.contains("overflowing-forbid")),
        "{d:?}"
    );

    let d = engine.decide_prepared(&prepared(5));
    assert!(d.allowed && d.errors.is_empty(), "{d:?}");
    assert_eq!(d.policies, ["everyone-reads"]);
}

#[test]
fn facts_that_do_not_fit_the_schema_deny() {
    // Principal and model are fine, but a facts-building failure (here: an action that does
    // not apply to the resource type) must come back as a refusal with the error.
    let f = facts(who("alice", Role::Committer, None), ResourceFacts::Service);
    let d = engine().decide(&f, Action::Fetch);
    assert!(!d.allowed && !d.errors.is_empty(), "{d:?}");
}

/// The former rule table, through the compatibility adapter, with the messages the
/// end-to-end tests expect.
#[test]
fn engine_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
    assert_send_sync::<Decision>();
}

#[test]
fn per_action_policy_sets_decide_as_the_whole_set() {
    // Each request is decided against only the policies whose action scope can match its
    // action. For every case and every action, that must be the same decision (allowed,
    // deciding policies, reason, errors) as deciding against every policy.
    let engine = engine();
    let mut compared = 0;
    for c in cases() {
        for action in Action::ALL {
            let Ok(prepared) = engine.prepare(&c.facts, action) else {
                continue;
            };
            let narrow = engine.decide_prepared(&prepared);
            let whole = engine.decide_prepared_all_policies(&prepared);
            assert_eq!(narrow, whole, "{} as {}", c.name, action.as_str());
            compared += 1;
        }
    }
    assert!(compared >= 200, "only {compared} comparisons");
}

#[test]
fn action_groups_keep_policies_scoped_to_the_group() {
    // With an action hierarchy in the schema, `action in Action::"group"` applies to the
    // group's members: such a policy must stay in every member's set.
    let schema = r#"
        entity User; entity Doc;
        action readers;
        action read in [Action::"readers"] appliesTo { principal: [User], resource: [Doc] };
    "#;
    let policies = r#"
        @id("readers-read") permit (principal, action in Action::"readers", resource);
    "#;
    let engine = PolicyEngine::from_sources(schema, policies).unwrap();
    use cedar_policy::{Context, Entities, EntityUid, Request};
    use std::str::FromStr;
    let request = Request::new(
        EntityUid::from_str(r#"User::"u""#).unwrap(),
        EntityUid::from_str(r#"Action::"read""#).unwrap(),
        EntityUid::from_str(r#"Doc::"d""#).unwrap(),
        Context::empty(),
        Some(&engine.schema),
    )
    .unwrap();
    let entities = Entities::empty()
        .add_entities(engine.schema.action_entities().unwrap(), None)
        .unwrap();
    for action in Action::ALL {
        let d = engine.decide_prepared(&Prepared {
            request: request.clone(),
            entities: entities.clone(),
            role: Role::Committer,
            action,
        });
        assert!(d.allowed, "{}: {d:?}", action.as_str());
    }
}
