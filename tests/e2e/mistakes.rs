//! Names that name nothing are refused, with the closest known name: a grant to a typo, a
//! group nobody is in or a host group no host is in would be stored and do nothing while the
//! vendor believes it decided something (issue 19). Each refusal changes nothing.

use serde_json::Value;

use crate::support::*;

fn access(world: &World) -> Value {
    let text = world
        .server
        .ok(&world.admin, &["--json", "access", "acme/m"]);
    serde_json::from_str(&text).unwrap()
}

fn refused(world: &World, args: &[&str], expected: &str) {
    let run = world.server.custody(&world.admin, args);
    assert!(!run.success, "custody {args:?} was accepted");
    assert!(
        run.stderr.contains(expected),
        "custody {args:?}: expected {expected:?} in\n{}",
        run.stderr
    );
}

#[test]
fn unknown_users_groups_and_host_groups_are_refused_with_the_closest_name() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    world.server.token("committer", None, "bob");
    let before = access(&world);

    refused(
        &world,
        &["grant", "acme/m", "--to", "alcie"],
        "no user named alcie; did you mean alice?",
    );
    // A name far from every user gets no guess.
    refused(
        &world,
        &["grant", "acme/m", "--to", "zed"],
        "no user named zed (",
    );
    refused(
        &world,
        &["grant", "acme/m", "--group", "no-such-group"],
        "no group of acme named no-such-group (a group exists once it has a member",
    );
    refused(
        &world,
        &["host", "allow", "acme/m", "gpuu"],
        "no host group named gpuu; did you mean gpu?",
    );
    refused(
        &world,
        &["group", "add", "acme/team", "bbo"],
        "no user named bbo; did you mean bob?",
    );
    assert_eq!(
        access(&world),
        before,
        "a refused name changed the model's access"
    );

    // A script reads the refusal's code, status and message as fields.
    let run = world.server.custody(
        &world.admin,
        &["--json", "grant", "acme/m", "--to", "alcie"],
    );
    assert!(!run.success);
    let report: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(report["code"], "not_found", "{report}");
    assert_eq!(report["status"], 404, "{report}");
    assert_eq!(
        report["message"],
        "no user named alcie; did you mean alice? (the operator creates users with `custody token create`)"
    );

    // Once the group has a member, a typo of it is caught with the right name offered, and
    // the right names work.
    world
        .server
        .ok(&world.admin, &["group", "add", "acme/team", "bob"]);
    refused(
        &world,
        &["grant", "acme/m", "--group", "tema"],
        "no group of acme named tema; did you mean team?",
    );
    world
        .server
        .ok(&world.admin, &["grant", "acme/m", "--group", "team"]);
    world
        .server
        .ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let after = access(&world);
    let grants: Vec<String> = after["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(grants.len(), 2, "{after}");
    assert!(
        grants
            .iter()
            .all(|g| !g.contains("alcie") && !g.contains("tema")),
        "{grants:?}"
    );
}
