//! A host renews its certificate before it expires (issue 19): authenticated by the current
//! certificate, it gets a new key and certificate for the same enrollment, so the vendors'
//! approvals stay; the old certificate stops counting; a revoked host cannot renew; and the
//! renewal is in the audit log.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn a_host_renews_its_certificate_and_keeps_its_approvals() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let host = s.host.clone().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let old = HostCert {
        name: host.name.clone(),
        cert: saved.path().join("old.crt"),
        key: saved.path().join("old.key"),
    };
    std::fs::copy(&host.cert, &old.cert).unwrap();
    std::fs::copy(&host.key, &old.key).unwrap();
    let old_key = std::fs::read(&host.key).unwrap();

    // Without the host's certificate there is nothing to renew with.
    let run = s.custody_on(None, "no-token", &["host", "renew"]);
    assert!(!run.success);
    assert!(run.stderr.contains("CUSTODY_HOST_CERT"), "{}", run.stderr);

    let run = s.custody_on(Some(&host), "no-token", &["host", "renew"]);
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("renewed host gpu-01: new certificate valid until ")
            && run.stdout.contains("restart the agent"),
        "{}",
        run.stdout
    );
    assert_ne!(
        std::fs::read(&host.cert).unwrap(),
        std::fs::read(&old.cert).unwrap()
    );
    assert_ne!(
        std::fs::read(&host.key).unwrap(),
        old_key,
        "the key was not replaced"
    );
    let mode = std::fs::metadata(&host.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir = host.key.parent().unwrap();
    assert!(
        list_files(dir).iter().all(|f| !f.ends_with(".new")),
        "{:?}",
        list_files(dir)
    );

    // The same enrollment: acme's approval holds for the new certificate.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("new");
    s.ok(
        &world.alice,
        &["fetch", "acme/m", "--out", dest.to_str().unwrap()],
    );
    // The old certificate no longer counts.
    let dest = out.path().join("old");
    let run = s.custody_on(
        Some(&old),
        &world.alice,
        &["fetch", "acme/m", "--out", dest.to_str().unwrap()],
    );
    assert!(
        !run.success,
        "the replaced certificate still receives weights"
    );
    assert!(list_files(&dest).is_empty());
    let listed = s.ok(&s.operator, &["host", "ls"]);
    assert_eq!(listed.matches("gpu-01").count(), 1, "{listed}");

    let (_tmp, bundle) = crate::audit::export(s, None);
    let renewals: Vec<_> = crate::audit::entries(&bundle)
        .into_iter()
        .filter(|e| e["action"] == "host.renew")
        .collect();
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    assert_eq!(renewals[0]["actor"], "host:gpu-01");
    assert!(
        renewals[0]["detail"]
            .as_str()
            .unwrap()
            .contains("replaced by"),
        "{:?}",
        renewals[0]
    );

    // A revoked host cannot renew its way back; its files stay as they were.
    s.ok(&s.operator, &["host", "revoke", "gpu-01"]);
    let before = std::fs::read(&host.cert).unwrap();
    let run = s.custody_on(Some(&host), "no-token", &["host", "renew"]);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("host gpu-01 has been revoked: it may not renew its certificate"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&host.cert).unwrap(), before);
    assert!(list_files(dir).iter().all(|f| !f.ends_with(".new")));
}
