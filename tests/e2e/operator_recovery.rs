//! Nobody is locked out of the service (issue 19): the last live operator token cannot be
//! revoked, and when every operator token is gone anyway (lost, expired), a command run on
//! the server machine with its data directory makes a new single-use bootstrap token, in a
//! private file, recorded in the audit log.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::*;

fn tokens(server: &TestServer, token: &str) -> Vec<Value> {
    let out = server.ok(token, &["--json", "token", "ls"]);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    list["tokens"].as_array().unwrap().clone()
}

fn id_of(token: &str) -> &str {
    token.split_once('.').unwrap().0
}

/// `custody recover-operator` with `args`, as root on the server machine would run it.
fn recover(args: &[&str]) -> Run {
    Run::from(
        std::process::Command::new(BIN)
            .arg("recover-operator")
            .args(args)
            .env_remove("CUSTODY_DATABASE_URL")
            .output()
            .unwrap(),
    )
}

#[test]
fn the_last_operator_token_cannot_be_revoked() {
    let server = TestServer::start();
    let operator = server.operator.clone();
    let before = tokens(&server, &operator);

    let run = server.custody(&operator, &["token", "revoke", id_of(&operator)]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "this is the last live operator token: revoking it would leave nobody able to run \
             the service"
        ) && run.stderr.contains("custody recover-operator"),
        "{}",
        run.stderr
    );
    let json = server.custody(&operator, &["--json", "token", "revoke", id_of(&operator)]);
    let error: Value = serde_json::from_str(json.stderr.trim()).unwrap();
    assert_eq!(error["code"], "conflict", "{error}");
    assert_eq!(error["status"], 409, "{error}");
    // Nothing changed: the token still works and nothing is revoked.
    assert_eq!(tokens(&server, &operator), before);

    // With a second operator, either may go, but not both.
    let second = server.token("operator", None, "ops-2");
    server.ok(&second, &["token", "revoke", id_of(&operator)]);
    let run = server.custody(&second, &["token", "revoke", id_of(&second)]);
    assert!(!run.success, "the last operator token was revoked");
    assert!(
        run.stderr.contains("last live operator token"),
        "{}",
        run.stderr
    );
    server.ok(&second, &["vendor", "create", "acme"]);
    // Other tokens are revoked as before.
    let committer = server
        .ok(
            &second,
            &["token", "create", "--role", "committer", "--name", "alice"],
        )
        .trim()
        .to_owned();
    server.ok(&second, &["token", "revoke", id_of(&committer)]);
}

#[test]
fn recover_operator_makes_a_private_single_use_token_and_is_audited() {
    let mut server = TestServer::start();
    let data_dir = server.data_dir();
    let data = data_dir.to_str().unwrap();

    // A wrong directory is refused and no database is made there.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = recover(&["--data-dir", elsewhere.path().to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("no database at"), "{}", run.stderr);
    assert!(list_files(elsewhere.path()).is_empty());

    // Every operator token gone: the one left expires.
    let short = server
        .ok(
            &server.operator,
            &[
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "short",
                "--expires-in",
                "2s",
            ],
        )
        .trim()
        .to_owned();
    server.ok(&short, &["token", "revoke", id_of(&server.operator)]);
    server.advance_clock(5);
    let run = server.custody(&short, &["vendor", "ls"]);
    assert!(!run.success, "the expired token still works");

    // Recovery, while the server runs.
    let run = recover(&["--data-dir", data]);
    assert!(run.success, "{}", run.stderr);
    let path = data_dir.join("bootstrap-token");
    assert!(
        run.stdout.contains(&format!(
            "operator bootstrap token written to {}",
            path.display()
        )) || run.stdout.contains(&path.display().to_string()),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("single use"), "{}", run.stdout);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is mode {mode:o}");
    let bootstrap = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(
        !run.stdout.contains(bootstrap.split_once('.').unwrap().1),
        "the secret was printed"
    );
    // A second run does not overwrite the file.
    let again = recover(&["--data-dir", data]);
    assert!(!again.success);
    assert!(
        again.stderr.contains("is already there"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), bootstrap);

    // It only makes a named operator token, once.
    let run = server.custody(&bootstrap, &["vendor", "create", "acme"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("only creates named operator tokens"),
        "{}",
        run.stderr
    );
    let operator = server
        .ok(
            &bootstrap,
            &["token", "create", "--role", "operator", "--name", "ops-new"],
        )
        .trim()
        .to_owned();
    assert!(!path.exists(), "the spent token's file stays");
    let run = server.custody(
        &bootstrap,
        &["token", "create", "--role", "operator", "--name", "ops-3"],
    );
    assert!(!run.success, "the recovery token was used twice");
    server.ok(&operator, &["vendor", "create", "acme"]);

    // The audit log says who recovered, and when.
    server.operator = operator;
    let (_tmp, bundle) = crate::audit::export(&server, None);
    let all = crate::audit::entries(&bundle);
    let recovered: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "operator.recover")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let detail = recovered[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(id_of(&bootstrap)) && detail.contains("custody recover-operator"),
        "{detail}"
    );
    assert!(
        recovered[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("local:"),
        "{:?}",
        recovered[0]
    );
}
