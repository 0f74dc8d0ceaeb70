//! Seeing what you did and what you have (issue 19): a vendor's deletions as a list, and a
//! committer's own grants in `custody whoami`.

use serde_json::Value;

use crate::support::*;

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn small_model(world: &World, model: &str) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), model.as_bytes()).unwrap();
    world.upload(src.path(), model);
}

fn is_rfc3339(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[test]
fn deletions_lists_a_vendors_deletions_for_those_who_follow_them() {
    let world = World::new();
    let s = &world.server;
    small_model(&world, "acme/keep");
    small_model(&world, "acme/gone");
    s.ok(&world.admin, &["grant", "acme/keep", "--to", "alice"]);
    s.create_vendor("other");
    let other_admin = s.token("vendor-admin", Some("other"), "other-admin");

    let none = s.ok(&world.admin, &["deletions", "acme"]);
    assert_eq!(none.trim(), "no deletions of acme");

    let started = json(&s.ok(&world.admin, &["--json", "delete", "acme/gone", "--yes"]));
    let id = started["deletion"].as_str().unwrap().to_owned();
    let cert = tempfile::tempdir().unwrap();
    let cert = cert.path().join("cert.json");
    s.ok(
        &world.admin,
        &[
            "deletion",
            &id,
            "--wait",
            "--certificate-out",
            cert.to_str().unwrap(),
        ],
    );

    // A person reads one line per deletion, times in RFC 3339.
    let text = s.ok(&world.admin, &["deletions", "acme"]);
    let line = text
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("  acme/gone  certified  requested "),
        "{line}"
    );
    let requested = line
        .split("requested ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(is_rfc3339(requested), "{line}");
    let certified = line.rsplit("  certified ").next().unwrap().trim();
    assert!(is_rfc3339(certified), "{line}");
    assert!(line.contains("by vendor-admin:acme-admin"), "{line}");

    // A script reads the same as JSON; the operator and an auditor see it too.
    let auditor = s.admitted_token("auditor", "acme", "audrey", &world.admin);
    for who in [&s.operator, &auditor] {
        let list = json(&s.ok(who, &["--json", "deletions", "acme"]));
        let deletions = list["deletions"].as_array().unwrap();
        assert_eq!(deletions.len(), 1, "{list}");
        assert_eq!(deletions[0]["deletion"], id.as_str());
        assert_eq!(deletions[0]["model"], "acme/gone");
        assert_eq!(deletions[0]["state"], "certified");
        assert!(
            deletions[0]["certified_at"].as_i64().unwrap()
                >= deletions[0]["requested_at"].as_i64().unwrap()
        );
    }

    // A committer is told who may; another vendor's admin learns nothing of acme.
    let run = s.custody(&world.alice, &["deletions", "acme"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(
            "only a vendor admin of acme, its auditors and the service's operator follow the \
             vendor's deletions"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&id) && run.stdout.is_empty());
    let run = s.custody(&other_admin, &["deletions", "acme"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("vendor acme not found"),
        "{}",
        run.stderr
    );
    assert!(
        s.ok(&other_admin, &["deletions", "other"])
            .contains("no deletions of other")
    );
}

#[test]
fn whoami_lists_a_committers_grants_and_how_each_was_given() {
    let world = World::new();
    let s = &world.server;
    for m in ["acme/direct", "acme/team", "acme/hidden", "acme/gone"] {
        small_model(&world, m);
    }
    let run = s.ok(&world.alice, &["whoami"]);
    assert!(
        run.contains("no grants: a vendor admin grants access (custody grant)"),
        "{run}"
    );

    s.ok(
        &world.admin,
        &[
            "grant",
            "acme/direct",
            "--to",
            "alice",
            "--expires-in",
            "30d",
        ],
    );
    s.ok(&world.admin, &["group", "add", "acme/team", "alice"]);
    s.ok(&world.admin, &["grant", "acme/team", "--group", "team"]);
    s.ok(&world.admin, &["grant", "acme/hidden", "--to", "alice"]);
    s.ok(&world.admin, &["exclude", "acme/hidden", "alice"]);
    s.ok(&world.admin, &["grant", "acme/gone", "--to", "alice"]);
    s.ok(&world.admin, &["delete", "acme/gone", "--yes"]);
    // Someone else's grant is not alice's.
    let bob = s.token("committer", None, "bob");
    s.ok(&world.admin, &["grant", "acme/team", "--to", "bob"]);

    let text = s.ok(&world.alice, &["whoami"]);
    let direct = text
        .lines()
        .find(|l| l.trim_start().starts_with("acme/direct"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(direct.contains("granted to you, until "), "{direct}");
    assert!(
        is_rfc3339(direct.split("until ").nth(1).unwrap().trim()),
        "{direct}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim() == "acme/team  through group team"),
        "{text}"
    );
    // An exclusion wins over the grant; a deleted model is no longer anyone's.
    assert!(
        !text.contains("acme/hidden") && !text.contains("acme/gone"),
        "{text}"
    );

    let me = json(&s.ok(&world.alice, &["--json", "whoami"]));
    let grants = me["grants"].as_array().unwrap();
    let models: Vec<&str> = grants
        .iter()
        .map(|g| g["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["acme/direct", "acme/team"], "{me}");
    assert!(
        grants[0]["group"].is_null() && grants[0]["expires_at"].is_i64(),
        "{me}"
    );
    assert_eq!(grants[1]["group"], "team");
    assert!(grants[1]["expires_at"].is_null());

    // Bob sees his own grant only.
    let me = json(&s.ok(&bob, &["--json", "whoami"]));
    assert_eq!(me["grants"].as_array().unwrap().len(), 1, "{me}");
}
