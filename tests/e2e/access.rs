//! Who may do what: grants, revocation, roles and vendors.

use crate::support::*;

fn small_model(world: &World, model: &str) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"x\":1}").unwrap();
    world.upload(src.path(), model);
}

#[test]
fn fetch_follows_grant_and_revoke() {
    let world = World::new();
    small_model(&world, "acme/gated");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("f");
    let fetch = |w: &World| {
        w.server.custody(
            &w.alice,
            &["fetch", "acme/gated", "--out", target.to_str().unwrap()],
        )
    };

    // Without a grant the model is as unknown as one that does not exist.
    let refused = fetch(&world);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("model acme/gated not found"),
        "{}",
        refused.stderr
    );
    assert!(
        list_files(&target).is_empty(),
        "a refused fetch wrote files"
    );

    world
        .server
        .ok(&world.admin, &["grant", "acme/gated", "--to", "alice"]);
    assert!(fetch(&world).success);
    assert_eq!(
        std::fs::read(target.join("config.json")).unwrap(),
        b"{\"x\":1}"
    );

    world
        .server
        .ok(&world.admin, &["revoke", "acme/gated", "--from", "alice"]);
    std::fs::remove_dir_all(&target).unwrap();
    let refused = fetch(&world);
    assert!(
        !refused.success && refused.stderr.contains("not found"),
        "{}",
        refused.stderr
    );
    assert!(list_files(&target).is_empty());

    // A committer without a grant does not see the model in listings either.
    let listing = world.server.ok(&world.alice, &["ls"]);
    assert!(!listing.contains("acme/gated"), "{listing}");
}

#[test]
fn roles_are_kept_apart() {
    let world = World::new();
    let s = &world.server;
    s.create_vendor("other");
    small_model(&world, "acme/m");
    let other_admin = s.token("vendor-admin", Some("other"), "other-admin");
    let auditor = s.admitted_token("auditor", "acme", "audrey", &world.admin);
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("x"), b"x").unwrap();
    let src = src.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();

    // (who, command, expected fragment of the refusal)
    let refusals: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            &world.alice,
            vec!["grant", "acme/m", "--to", "bob"],
            "only a vendor admin of acme grants access",
        ),
        (
            &world.alice,
            vec!["upload", src, "acme/m"],
            "only a vendor admin of acme uploads a model; what you made",
        ),
        (
            &world.alice,
            vec!["vendor", "create", "x"],
            "only the service's operator creates vendors",
        ),
        (
            &world.alice,
            vec!["token", "create", "--role", "operator", "--name", "me"],
            "only the service's operator issues, lists and revokes tokens: ask them; to replace your own token, run `custody token rotate`",
        ),
        // Another vendor's admin may not even see acme: what a missing vendor gets.
        (
            &other_admin,
            vec!["upload", src, "acme/m"],
            "vendor acme not found",
        ),
        (
            &other_admin,
            vec!["grant", "acme/m", "--to", "bob"],
            "model acme/m not found",
        ),
        (
            &other_admin,
            vec!["fetch", "acme/m", "--out", out],
            "model acme/m not found",
        ),
        (
            &auditor,
            vec!["fetch", "acme/m", "--out", out],
            "never the weights",
        ),
        (
            &auditor,
            vec!["grant", "acme/m", "--to", "bob"],
            "only a vendor admin of acme grants access",
        ),
        (
            &s.operator,
            vec!["fetch", "acme/m", "--out", out],
            "never receive weights",
        ),
        (
            &world.admin,
            vec!["token", "create", "--role", "committer", "--name", "x"],
            "only the service's operator issues, lists and revokes tokens: ask them; to replace your own token, run `custody token rotate`",
        ),
        (
            "0123abcd.deadbeef",
            vec!["ls"],
            "invalid, expired or revoked token",
        ),
        ("garbage", vec!["ls"], "missing or malformed bearer token"),
    ];
    for (token, args, fragment) in refusals {
        let run = s.custody(token, &args);
        assert!(!run.success, "{args:?} should be refused");
        assert!(run.stderr.contains(fragment), "{args:?}: {}", run.stderr);
    }
    assert!(list_files(std::path::Path::new(out)).is_empty());

    // The auditor sees metadata of its vendor only.
    assert!(s.ok(&auditor, &["ls", "acme"]).contains("acme/m"));
}

#[test]
fn an_expired_token_is_refused() {
    let world = World::new();
    let run = world.server.ok(
        &world.server.operator,
        &[
            "token",
            "create",
            "--role",
            "committer",
            "--name",
            "brief",
            "--expires-in",
            "1h",
        ],
    );
    let token = run.trim();
    assert!(world.server.custody(token, &["ls"]).success);
    world.server.advance_clock(3590);
    assert!(
        world.server.custody(token, &["ls"]).success,
        "expired early"
    );
    world.server.advance_clock(20);
    let refused = world.server.custody(token, &["ls"]);
    assert!(
        !refused.success && refused.stderr.contains("expired"),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_client_trusts_only_the_configured_certificate() {
    let world = World::new();
    let other = TestServer::start();
    // Talk to `world`'s server while trusting `other`'s certificate.
    let run = std::process::Command::new(BIN)
        .args(["ls"])
        .env("CUSTODY_SERVER", &world.server.url)
        .env("CUSTODY_TOKEN", &world.alice)
        .env("CUSTODY_CA", &other.ca)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    // Said as what it is, with what to set (tests/e2e/tls_errors.rs has the other causes).
    assert!(
        stderr.contains("was reached but not trusted")
            && stderr.contains("set CUSTODY_CA to this server's certificate"),
        "{stderr}"
    );

    let plain = world.server.url.replace("https://", "http://");
    let run = std::process::Command::new(BIN)
        .args(["ls"])
        .env("CUSTODY_SERVER", plain)
        .env("CUSTODY_TOKEN", &world.alice)
        .env("CUSTODY_CA", &world.server.ca)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("https://"));
}

#[test]
fn tokens_never_reach_the_server_log() {
    let world = World::new();
    small_model(&world, "acme/logged");
    let _ = world.server.custody("0123abcd.secretsecret", &["ls"]);
    let log = world.server.log();
    assert!(
        log.contains("authorization decision"),
        "decisions are logged"
    );
    for token in [&world.admin, &world.alice, &world.server.operator] {
        let secret = token.split('.').nth(1).unwrap();
        assert!(!log.contains(secret), "a token secret reached the log");
    }
    assert!(!log.contains("secretsecret"));
}
