//! End-to-end tests: the real `custody` binary, a real server over HTTPS, real files.
//!
//! One test binary (built as the `e2e` test of the cli crate so Cargo hands it the path of
//! the `custody` executable). Each test starts its own server on a free port in a fresh data
//! directory and talks to it as users would: through the CLI, and through raw HTTPS where a
//! test needs to send what the CLI never would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

mod access;
mod audit;
mod authz;
mod bootstrap;
mod budgets;
mod cluster;
mod deletion;
mod deletion_failures;
mod deploy;
mod fetch_again;
mod help;
mod host_renewal;
mod hub;
mod hub_upload;
mod layout;
mod limits;
mod mistakes;
mod my_view;
mod openapi;
mod operations;
mod operator_recovery;
mod plain_words;
mod ranges;
mod refusals;
mod resume;
mod roundtrip;
mod scale;
mod shutdown;
mod tamper;
mod tls_errors;
mod trust;
mod vendor_audit;
mod wipe;
mod witness;
