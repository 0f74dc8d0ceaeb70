//! `custody verify-certificate`, run as the real binary on the certificate crate's test vectors:
//! offline, no server. Exit codes: 0 valid, 1 invalid, 2 unusable input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certificate/tests/vectors")
}

fn key(name: &str) -> String {
    std::fs::read_to_string(vectors().join(name))
        .unwrap()
        .trim()
        .to_owned()
}

fn custody(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(args)
        // No server settings are needed, and none may be used.
        .env_remove("CUSTODY_SERVER")
        .env_remove("CUSTODY_TOKEN")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn verify_file(file: &Path, extra: &[&str]) -> Output {
    let service = key("service.vkey");
    let mut args = vec![
        "verify-certificate",
        file.to_str().unwrap(),
        "--service-key",
        &service,
    ];
    args.extend_from_slice(extra);
    custody(&args)
}

#[test]
fn a_valid_certificate_exits_0() {
    let log = key("log.vkey");
    let out = verify_file(&vectors().join("certificate.json"), &["--log-key", &log]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.starts_with("certificate dc-20260301-0001: VALID\n"),
        "{text}"
    );
    for check in [
        "format: ok",
        "signature: ok",
        "checkpoint-signature: ok",
        "inclusion: ok",
        "entry: ok",
    ] {
        assert!(text.contains(check), "{check} missing in {text}");
    }
    assert!(
        text.contains("deleted acme/llama-next: 2 revision(s), 3 object(s)"),
        "{text}"
    );
    assert!(
        text.contains("host gpu-02.committer.example: 1 file(s), wipe NOT confirmed"),
        "{text}"
    );

    // Keys may also be given as files; without the log key the checkpoint is not checked.
    let service_file = vectors().join("service.vkey");
    let out = custody(&[
        "verify-certificate",
        vectors().join("certificate.json").to_str().unwrap(),
        "--service-key",
        service_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("checkpoint-signature: skipped"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("note: without --log-key"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_output_for_scripts() {
    let log = key("log.vkey");
    let out = verify_file(
        &vectors().join("certificate.json"),
        &["--log-key", &log, "--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["verdict"], "valid");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["checks"].as_array().unwrap().len(), 6);
}

#[test]
fn a_tampered_certificate_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(vectors().join("certificate.json")).unwrap();
    // One object's size, and one host's confirmation, quietly changed.
    for (from, to) in [
        ("\"size\": 1024,", "\"size\": 1025,"),
        ("\"wipe_confirmed\": false", "\"wipe_confirmed\": true"),
    ] {
        assert!(original.contains(from));
        let path = dir.path().join("tampered.json");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        let out = verify_file(&path, &["--log-key", &key("log.vkey")]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let text = stdout(&out);
        assert!(text.contains(": INVALID"), "{text}");
        assert!(text.contains("signature: FAILED"), "{text}");
        assert!(
            !text.contains("deleted acme"),
            "no summary of a false certificate: {text}"
        );
    }
    // The right certificate under someone else's key is invalid.
    let out = custody(&[
        "verify-certificate",
        vectors().join("certificate.json").to_str().unwrap(),
        "--service-key",
        &format!("{}=", "A".repeat(43)),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // A malformed key (wrong key id) is unusable input, not a verdict.
    let malformed = "custody.example/deletion+00000000+AQ".to_owned() + &"A".repeat(43);
    let out = custody(&[
        "verify-certificate",
        vectors().join("certificate.json").to_str().unwrap(),
        "--service-key",
        &malformed,
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unusable_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"certificate\": 1}").unwrap();
    let out = verify_file(&garbage, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("UNUSABLE"), "{}", stdout(&out));
    let out = verify_file(&dir.path().join("missing.json"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot verify"));
    let out = verify_file(
        &vectors().join("certificate.json"),
        &["--log-key", "not-a-key"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = verify_file(&dir.path().join("missing.json"), &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["verdict"], "unusable");
}
