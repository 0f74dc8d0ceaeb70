//! Deletions fail independently (issue 11, item 9): storage that refuses to delete one model's
//! objects (S3 Object Lock legal holds, on moto) holds back neither that deletion's own key
//! destruction nor another deletion; the failure is retried with backoff and reported.

use serde_json::Value;

use crate::support::*;

#[test]
fn a_deletion_that_storage_refuses_holds_back_no_other() {
    let moto = testkit::MotoServer::shared().unwrap();
    let bucket = format!("lock-{}", std::process::id());
    moto.create_locked_bucket(&bucket).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[s3]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
             bucket = \"{bucket}\"\nforce_path_style = true\naccess_key_id = \"test\"\n\
             secret_access_key = \"test\"\n",
            data.path().join("custody").display(),
            moto.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_with(data, &["--config", &config]));
    let upload = |name: &str, seed: u64| {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.json"), b"{}").unwrap();
        write_data(&src.path().join("w.safetensors"), (1 << 20) + 1, seed);
        world.upload(src.path(), name);
        world
            .server
            .ok(&world.admin, &["grant", name, "--to", "alice"]);
        src
    };
    let _stuck_src = upload("acme/stuck", 41);
    // Every version stored so far is the stuck model's: hold them all.
    let held = moto.object_versions(&bucket).unwrap();
    assert!(!held.is_empty());
    for (key, version) in &held {
        moto.set_legal_hold(&bucket, key, version, true).unwrap();
    }
    let _free_src = upload("acme/free", 42);

    let request = |model: &str| {
        let out = world
            .server
            .ok(&world.admin, &["--json", "delete", "--yes", model]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        v["deletion"].as_str().unwrap().to_owned()
    };
    let status = |id: &str| {
        let (code, body) =
            world
                .server
                .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
        assert_eq!(code, 200, "{body}");
        body
    };
    let stuck = request("acme/stuck");
    // The stuck deletion destroys its keys, then fails at the objects, and says why.
    wait_for(60, "the stuck deletion to report its failure", || {
        status(&stuck)["attempts"].as_i64().unwrap_or(0) >= 1
    });
    let s = status(&stuck);
    assert_eq!(s["state"], "epoch_destroyed", "{s}");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("AccessDenied") || error.contains("Access Denied"),
        "{s}"
    );
    assert!(s["retry_at"].as_i64().is_some(), "{s}");
    let (run_stuck, _) = {
        let out = tempfile::tempdir().unwrap();
        let run = world.server.custody(
            &world.alice,
            &[
                "fetch",
                "acme/stuck",
                "--out",
                out.path().join("m").to_str().unwrap(),
            ],
        );
        (run, out)
    };
    assert!(!run_stuck.success && run_stuck.stderr.contains("deleted"));
    let log = world.server.log();
    let line = log
        .lines()
        .find(|l| l.contains("deletion step failed") && l.contains(&stuck))
        .unwrap_or_else(|| panic!("no error logged for {stuck}"));
    assert!(line.contains("ERROR"), "{line}");

    // A second deletion goes all the way meanwhile: keys destroyed, certificate issued.
    let free = request("acme/free");
    wait_for(120, "the second deletion to be certified", || {
        status(&free)["state"] == "certified"
    });
    let s = status(&stuck);
    assert_ne!(
        s["state"], "certified",
        "the held objects were deleted? {s}"
    );
    assert!(s["attempts"].as_i64().unwrap() >= 1, "{s}");

    // Retried with backoff, it finishes once storage lets go.
    for (key, version) in &held {
        moto.set_legal_hold(&bucket, key, version, false).unwrap();
    }
    wait_for(
        120,
        "the stuck deletion to finish after the hold is lifted",
        || status(&stuck)["state"] == "certified",
    );
    let s = status(&stuck);
    assert_eq!(s["last_error"], Value::Null, "{s}");
    assert!(moto.object_versions(&bucket).unwrap().is_empty());
}
