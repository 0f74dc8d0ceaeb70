//! Refusals in plain words (issue 19): a refused person reads who may do it and what to do
//! instead, never an internal policy action ("an auditor may not exclude here"); a missing
//! host certificate names the setting to set; an embargo names when it lifts. Scripts keep
//! the machine code. Each refusal changes nothing.

use serde_json::Value;

use crate::support::*;

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs a command that must be refused; returns its stderr.
fn refused(s: &TestServer, host: Option<&HostCert>, token: &str, args: &[&str]) -> String {
    let run = s.custody_on(host, token, args);
    assert!(
        !run.success,
        "custody {args:?} was accepted: {}",
        run.stdout
    );
    assert_eq!(run.code, Some(1), "custody {args:?}: {}", run.stderr);
    assert!(
        !run.stderr.contains(" here") && !run.stderr.contains("may not create-token"),
        "custody {args:?} names a policy action: {}",
        run.stderr
    );
    run.stderr
}

#[test]
fn refusals_say_who_may_and_what_to_do_instead() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    let auditor = s.admitted_token("auditor", "acme", "audrey", &world.admin);
    s.token("committer", None, "bob");
    let access_before = s.ok(&world.admin, &["--json", "access", "acme/m"]);
    let tokens_before = s.ok(&s.operator, &["--json", "token", "ls"]);

    // The issue's own examples: an auditor excluding, a vendor admin creating a token.
    let said = refused(s, None, &auditor, &["exclude", "acme/m", "bob"]);
    assert!(
        said.contains(
            "only a vendor admin of acme excludes people from its models or lets them back: \
             ask one of them"
        ),
        "{said}"
    );
    let said = refused(
        s,
        None,
        &world.admin,
        &["token", "create", "--role", "committer", "--name", "bob"],
    );
    assert!(
        said.contains(
            "only the service's operator issues, lists and revokes tokens: ask them; to replace \
             your own token, run `custody token rotate`"
        ),
        "{said}"
    );
    let said = refused(s, None, &world.alice, &["embargo", "acme/m", "--clear"]);
    // A committer without a grant does not even see the model.
    assert!(said.contains("model acme/m not found"), "{said}");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let said = refused(s, None, &world.alice, &["embargo", "acme/m", "--clear"]);
    assert!(
        said.contains(
            "only a vendor admin of acme sets embargoes, egress budgets, schedules and the \
             two-person rule"
        ),
        "{said}"
    );
    let said = refused(s, None, &auditor, &["delete", "acme/m", "--yes"]);
    assert!(
        said.contains(
            "only a vendor admin of acme or the service's operator may ask for a deletion"
        ),
        "{said}"
    );

    // A script reads the same words with the stable code and status.
    let run = s.custody(&auditor, &["--json", "grant", "acme/m", "--to", "bob"]);
    assert_eq!(run.code, Some(1));
    let error = json(&run.stderr);
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_eq!(error["status"], 403, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("only a vendor admin of acme grants access to its models"),
        "{error}"
    );

    // Nothing changed: the model's access and the tokens are what they were (plus alice's
    // grant, given above on purpose).
    s.ok(&world.admin, &["revoke", "acme/m", "--from", "alice"]);
    assert_eq!(
        json(&s.ok(&world.admin, &["--json", "access", "acme/m"]))["grants"],
        json(&access_before)["grants"]
    );
    assert_eq!(
        json(&s.ok(&world.admin, &["--json", "access", "acme/m"]))["embargo"],
        json(&access_before)["embargo"]
    );
    assert_eq!(s.ok(&s.operator, &["--json", "token", "ls"]), tokens_before);
    assert!(s.ok(&s.operator, &["ls", "acme"]).contains("acme/m"));
}

#[test]
fn a_fetch_without_host_certificate_names_the_setting_and_an_embargo_names_its_end() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("m");
    let dest = dest.to_str().unwrap();

    let said = refused(s, None, &world.alice, &["fetch", "acme/m", "--out", dest]);
    assert!(
        said.contains("no host certificate was presented")
            && said.contains("set CUSTODY_HOST_CERT and CUSTODY_HOST_KEY"),
        "{said}"
    );

    let lifts = "2099-01-01T00:00:00Z";
    s.ok(&world.admin, &["embargo", "acme/m", "--not-before", lifts]);
    let said = refused(
        s,
        s.host.as_ref(),
        &world.alice,
        &["fetch", "acme/m", "--out", dest],
    );
    assert!(
        said.contains("this model is under embargo")
            && said.contains(&format!("the embargo lifts at {lifts}")),
        "{said}"
    );
    // Moving one bound keeps the other: the embargo still lifts at the same time.
    let said = s.ok(
        &world.admin,
        &["embargo", "acme/m", "--not-after", "2100-01-01T00:00:00Z"],
    );
    assert!(said.contains("2099-01-01T00:00:00Z"), "{said}");
    let view = json(&s.ok(&world.admin, &["--json", "access", "acme/m"]));
    assert_eq!(view["embargo"]["not_before"], 4070908800_i64, "{view}");
    assert_eq!(view["embargo"]["not_after"], 4102444800_i64, "{view}");
    // A window that closed says when.
    s.ok(&world.admin, &["embargo", "acme/m", "--clear"]);
    let closed = "2001-02-03T04:05:06Z";
    s.ok(&world.admin, &["embargo", "acme/m", "--not-after", closed]);
    let said = refused(
        s,
        s.host.as_ref(),
        &world.alice,
        &["fetch", "acme/m", "--out", dest],
    );
    assert!(said.contains(&format!("it closed at {closed}")), "{said}");
    // Nothing was written.
    assert!(
        list_files(out.path()).is_empty(),
        "{:?}",
        list_files(out.path())
    );
}
