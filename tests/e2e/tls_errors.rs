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
