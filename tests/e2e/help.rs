//! What `--help` and the offline commands tell a person (issue 19): every argument described
//! (the cli crate's own test walks them all; here the ones the issue named), client settings
//! only on commands that talk to a server, a readable `policy validate`, and a warning when a
//! host is enrolled under another name than its signing request carries.

use std::process::Command;

use crate::support::*;

fn custody(args: &[&str]) -> Run {
    Run::from(
        Command::new(BIN)
            .args(args)
            .env_remove("CUSTODY_SERVER")
            .env_remove("CUSTODY_TOKEN")
            .env_remove("CUSTODY_CA")
            .output()
            .unwrap(),
    )
}

fn help(args: &[&str]) -> String {
    let run = custody(args);
    assert!(run.success, "{args:?}: {}", run.stderr);
    run.stdout
}

#[test]
fn help_describes_the_arguments_the_issue_named() {
    for (args, expected) in [
        (
            vec!["fetch", "--help"],
            "--out <OUT>                Folder to write the revision's files into",
        ),
        (vec!["fetch", "--help"], "--delete-extra"),
        (vec!["revoke", "--help"], "The user whose direct grant ends"),
        (
            vec!["revoke", "--help"],
            "The vendor's group whose grant ends",
        ),
        (
            vec!["delete", "--help"],
            "Every model of this vendor instead of one model",
        ),
        (vec!["upload", "--help"], "-m, --message <MESSAGE>"),
        (vec!["upload", "--help"], "A note on the revision"),
        (
            vec!["token", "create", "--help"],
            "[possible values: operator, vendor-admin, committer, auditor]",
        ),
    ] {
        let text = help(&args);
        assert!(
            text.contains(expected),
            "{args:?} lacks {expected:?}:\n{text}"
        );
    }
    // A role that does not exist is refused before anything is sent, naming the choices.
    let run = custody(&["token", "create", "--role", "root", "--name", "x"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("possible values: operator, vendor-admin"),
        "{}",
        run.stderr
    );
}

#[test]
fn client_settings_show_only_where_a_server_is_asked() {
    for args in [
        vec!["server", "--help"],
        vec!["policy", "validate", "--help"],
        vec!["verify-certificate", "--help"],
        vec!["help", "verify-certificate"],
        vec!["audit", "verify", "--help"],
        vec!["host", "csr", "--help"],
        vec!["init", "--help"],
        vec!["recover-operator", "--help"],
    ] {
        let text = help(&args);
        for flag in [
            "--server",
            "--token",
            "--ca ",
            "--host-cert",
            "--host-state",
        ] {
            assert!(!text.contains(flag), "{args:?} shows {flag}:\n{text}");
        }
    }
    for args in [vec!["fetch", "--help"], vec!["audit", "export", "--help"]] {
        let text = help(&args);
        assert!(
            text.contains("--server <SERVER>") && text.contains("--token <TOKEN>"),
            "{args:?}:\n{text}"
        );
    }
}

#[test]
fn policy_validate_prints_a_readable_summary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let text = help(&["policy", "validate", root.to_str().unwrap()]);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(": valid (schema.cedarschema and forbids.cedar, permits.cedar): ")
            && first.ends_with(" policies"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "  operator-never-reads-weights"),
        "{text}"
    );
    assert!(!text.contains("Summary {") && !text.contains('"'), "{text}");
}

#[test]
fn enrolling_under_another_name_than_the_request_warns() {
    let server = TestServer::start();
    let dir = server.data.path().join("hosts/gpu-01");
    let out = dir.to_str().unwrap();
    let run = custody(&["host", "csr", "--name", "gpu-01", "--out", out]);
    assert!(run.success, "{}", run.stderr);
    let csr = dir.join("host.csr");
    let cert = dir.join("host.crt");
    let run = server.custody(
        &server.operator,
        &[
            "host",
            "enroll",
            csr.to_str().unwrap(),
            "--name",
            "gpu-02",
            "--group",
            "gpu",
            "--out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "warning: the signing request was made for host gpu-01, but it is being enrolled \
             as gpu-02"
        ),
        "{}",
        run.stderr
    );
    // The same name: no warning.
    let other = server.data.path().join("hosts/gpu-03");
    custody(&[
        "host",
        "csr",
        "--name",
        "gpu-03",
        "--out",
        other.to_str().unwrap(),
    ]);
    let run = server.custody(
        &server.operator,
        &[
            "host",
            "enroll",
            other.join("host.csr").to_str().unwrap(),
            "--name",
            "gpu-03",
            "--group",
            "gpu",
            "--out",
            other.join("host.crt").to_str().unwrap(),
        ],
    );
    assert!(
        run.success && !run.stderr.contains("warning"),
        "{}",
        run.stderr
    );
}
