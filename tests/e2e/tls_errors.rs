//! A TLS failure says what is wrong and what to set, instead of reading like a stopped server
//! (issue 19): the server's certificate not the one in CUSTODY_CA, and this host's client
//! certificate refused.

use crate::support::*;

#[test]
fn tls_failures_name_their_cause_and_what_to_set() {
    let world = World::new();
    let other = TestServer::start();
    let s = &world.server;

    // The CA of another server: the certificate is not trusted.
    let mut run = std::process::Command::new(BIN);
    run.args(["ls"])
        .env("CUSTODY_SERVER", &s.url)
        .env("CUSTODY_TOKEN", &world.alice)
        .env("CUSTODY_CA", &other.ca)
        .env_remove("CUSTODY_HOST_CERT")
        .env_remove("CUSTODY_HOST_KEY");
    let wrong_ca = Run::from(run.output().unwrap());
    assert!(!wrong_ca.success);
    assert!(
        wrong_ca.stderr.contains("was reached but not trusted")
            && wrong_ca
                .stderr
                .contains("set CUSTODY_CA to this server's certificate"),
        "{}",
        wrong_ca.stderr
    );

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
