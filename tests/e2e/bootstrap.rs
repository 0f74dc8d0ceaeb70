//! The operator bootstrap token (SECURITY.md): written to a file only its owner can read,
//! never printed or logged; single use (it only creates a named operator token, which revokes
//! it); and it expires.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

fn secret_of(token: &str) -> &str {
    token.split_once('.').unwrap().1
}

/// What the server wrote to stdout and to its log so far.
fn printed(server: &TestServer) -> String {
    let log = std::fs::read_to_string(server.data.path().join("server.log")).unwrap();
    format!("{}\n{log}", server.stdout.join("\n"))
}

#[test]
fn the_bootstrap_token_is_a_private_file_that_makes_one_operator_token() {
    let mut server = TestServer::start_unclaimed(tempfile::tempdir().unwrap(), &[], &[]);
    let path = server
        .bootstrap_token_file()
        .expect("the first start names the bootstrap token's file");
    assert_eq!(path, server.data_dir().join("bootstrap-token"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the bootstrap token file is mode {mode:o}");
    let bootstrap = server.bootstrap_token().unwrap();
    assert!(bootstrap.contains('.'), "not a token: {bootstrap}");
    assert!(
        !printed(&server).contains(secret_of(&bootstrap)),
        "the bootstrap token was printed or logged"
    );
    let line = server
        .stdout
        .iter()
        .find(|l| l.contains("bootstrap token written to"))
        .unwrap();
    assert!(
        line.contains("single use") && line.contains("expires at"),
        "{line}"
    );

    // It does nothing but make an operator token.
    for args in [
        vec!["vendor", "create", "acme"],
        vec!["vendor", "ls"],
        vec!["audit", "key"],
        vec!["token", "rotate"],
        vec!["token", "create", "--role", "committer", "--name", "eve"],
    ] {
        let run = server.custody(&bootstrap, &args);
        assert!(!run.success, "{args:?} with the bootstrap token succeeded");
        assert!(
            run.stderr.contains("only creates named operator tokens"),
            "{args:?}: {}",
            run.stderr
        );
    }

    let operator = server
        .ok(
            &bootstrap,
            &["token", "create", "--role", "operator", "--name", "ops"],
        )
        .trim()
        .to_owned();
    assert!(
        !path.exists(),
        "the spent token's file is removed by the server"
    );
    // A second use is refused: the first one revoked it.
    let again = server.custody(
        &bootstrap,
        &["token", "create", "--role", "operator", "--name", "ops2"],
    );
    assert!(!again.success, "the bootstrap token was used twice");
    assert!(
        again.stderr.contains("invalid, expired or revoked token"),
        "{}",
        again.stderr
    );
    // The operator token it made is a full operator's.
    server.ok(&operator, &["vendor", "create", "acme"]);
    let users = server.ok(&operator, &["--json", "token", "ls"]);
    assert!(users.contains("\"ops\""), "{users}");
    assert!(!users.contains("ops2"), "{users}");

    server.operator = operator;
    // Recorded: its creation, the refusals, and the one token it made.
    let (_tmp, bundle) = crate::audit::export(&server, None);
    let all = crate::audit::entries(&bundle);
    let refused = all
        .iter()
        .filter(|e| e["action"] == "bootstrap-token.use" && e["outcome"] == "denied")
        .count();
    assert_eq!(refused, 5, "the refused uses are recorded");
    assert!(all.iter().any(|e| e["action"] == "token.create"
        && e["actor"] == "operator:bootstrap-operator"
        && e["detail"].as_str().unwrap().contains("for ops")));
    assert!(
        !printed(&server).contains(secret_of(&bootstrap)),
        "the bootstrap token was logged"
    );
}

#[test]
fn an_unused_bootstrap_token_expires() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nbootstrap_token_ttl_secs = 1\n",
            data.path().join("custody")
        ),
    )
    .unwrap();
    let server = TestServer::start_unclaimed(data, &["--config", config.to_str().unwrap()], &[]);
    let bootstrap = server.bootstrap_token().unwrap();
    server.advance_clock(5);
    let run = server.custody(
        &bootstrap,
        &["token", "create", "--role", "operator", "--name", "late"],
    );
    assert!(!run.success, "an expired bootstrap token made a token");
    assert!(
        run.stderr.contains("invalid, expired or revoked token"),
        "{}",
        run.stderr
    );
}
