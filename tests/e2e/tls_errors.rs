//! A TLS failure says what is wrong and what to set, instead of reading like a stopped server
//! (issue 19): this host's client certificate refused, against a stopped server. (A server
//! certificate that CUSTODY_CA does not name: `access.rs`.)

use crate::support::*;

#[test]
fn tls_failures_name_their_cause_and_what_to_set() {
    let world = World::new();
    let other = TestServer::start();
    let s = &world.server;

    // A host certificate from another server's CA: refused, and said so.
    let foreign = other.enroll_host("gpu-09", "gpu");
    let refused = s.custody_on(Some(&foreign), &world.alice, &["ls"]);
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("refused this host's client certificate (CUSTODY_HOST_CERT)"),
        "{}",
        refused.stderr
    );

    // The server says so too, at warn level, with the reason (issue 19: not only at debug).
    wait_for(10, "the refused handshake in the server log", || {
        s.log().contains("TLS handshake refused")
    });
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("TLS handshake refused"))
        .unwrap();
    assert!(line.contains("WARN") && line.contains("reason"), "{line}");
    assert!(!log.contains(world.alice.split_once('.').unwrap().1));

    // A client that does not trust the server's certificate: refused on the client's side,
    // logged on the server's.
    let before = s.log().matches("TLS handshake refused").count();
    let mut wrong_ca = std::process::Command::new(BIN);
    wrong_ca
        .args(["ls"])
        .env("CUSTODY_SERVER", &s.url)
        .env("CUSTODY_TOKEN", &world.alice)
        .env("CUSTODY_CA", &other.ca)
        .env_remove("CUSTODY_HOST_CERT")
        .env_remove("CUSTODY_HOST_KEY");
    assert!(!Run::from(wrong_ca.output().unwrap()).success);
    wait_for(10, "the second refused handshake in the server log", || {
        s.log().matches("TLS handshake refused").count() > before
    });

    // A stopped server still reads as one.
    let url = other.url.clone();
    drop(other);
    let mut run = std::process::Command::new(BIN);
    run.args(["ls"])
        .env("CUSTODY_SERVER", &url)
        .env("CUSTODY_TOKEN", &world.alice)
        .env("CUSTODY_CA", &s.ca)
        .env_remove("CUSTODY_HOST_CERT")
        .env_remove("CUSTODY_HOST_KEY");
    let stopped = Run::from(run.output().unwrap());
    assert!(
        stopped.stderr.contains("cannot reach the custody server"),
        "{}",
        stopped.stderr
    );
}
