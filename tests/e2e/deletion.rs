//! Deletion: a model is crypto-shredded so that nothing, backups included, opens it again;
//! the shred survives a crash at every step.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn model_with_weights(world: &World, model: &str, seed: u64) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"x\":1}").unwrap();
    write_data(&src.path().join("model.safetensors"), (3 << 20) + 5, seed);
    world.upload(src.path(), model);
    world
        .server
        .ok(&world.admin, &["grant", model, "--to", "alice"]);
    src
}

fn fetch(world: &World, model: &str) -> (Run, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("m");
    let run = world.server.custody(
        &world.alice,
        &["fetch", model, "--out", target.to_str().unwrap()],
    );
    (run, out)
}

fn deletion_state(server: &TestServer, token: &str, id: &str) -> String {
    let (status, body) = server.api(token, "GET", &format!("/v1/deletions/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap().to_owned()
}

/// The last state: the certificate is issued.
const DONE: &str = "certified";

fn wait_done(server: &TestServer, token: &str, id: &str) {
    wait_for(120, "the deletion to finish", || {
        let state = deletion_state(server, token, id);
        state == DONE || state == "certified"
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes the deletion's certificate to a file, checks that `custody verify-certificate`
/// accepts it with the service and log keys, and returns the file and a verifier.
fn verified_certificate(world: &World, id: &str) -> (std::path::PathBuf, impl Fn(&Path) -> i32) {
    let dir = tempfile::tempdir().unwrap().keep();
    let cert = dir.join("certificate.json");
    world.server.ok(
        &world.admin,
        &["deletion", id, "--certificate-out", cert.to_str().unwrap()],
    );
    let (_, key) = world
        .server
        .api(&world.admin, "GET", "/v1/service-key", None);
    let service_key = key["service_key"].as_str().unwrap().to_owned();
    // What a vendor runs to learn the key it verifies with.
    assert_eq!(
        world.server.ok(&world.admin, &["service-key"]).trim(),
        service_key
    );
    let log_key = world
        .server
        .ok(&world.server.operator, &["audit", "key"])
        .trim()
        .to_owned();
    let verify = move |file: &Path| {
        let out = std::process::Command::new(BIN)
            .args(["verify-certificate"])
            .arg(file)
            .args(["--service-key", &service_key, "--log-key", &log_key])
            .output()
            .unwrap();
        out.status.code().unwrap_or(-1)
    };
    assert_eq!(
        verify(&cert),
        0,
        "the certificate of deletion {id} does not verify"
    );
    (cert, verify)
}

fn request_deletion(world: &World, model: &str) -> String {
    let out = world
        .server
        .ok(&world.admin, &["--json", "delete", "--yes", model]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["deletion"].as_str().unwrap().to_owned()
}

#[test]
fn a_shredded_model_is_gone_for_good_even_from_backups() {
    let world = World::new();
    let gone_src = model_with_weights(&world, "acme/gone", 1);
    let kept_src = model_with_weights(&world, "acme/kept", 2);
    let (run, _) = fetch(&world, "acme/gone");
    assert!(run.success, "{}", run.stderr);

    // The backup: the whole data directory (database, blobs, key store; the root key files
    // live beside it), taken from a stopped server so the database copy is consistent.
    let World {
        server,
        admin,
        alice,
    } = world;
    let host = server.host.clone();
    let operator = server.operator.clone();
    let live_root = server.data_dir().with_file_name("custody.root");
    assert!(!list_files(&live_root).is_empty());
    let data = server.stop();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&data.path().join("custody"), &backup.path().join("custody"));
    let mut server = TestServer::start_with(data, &[]);
    server.host = host;
    server.operator = operator;
    let world = World {
        server,
        admin,
        alice,
    };

    let id = request_deletion(&world, "acme/gone");
    wait_done(&world.server, &world.admin, &id);

    // The model answers "deleted"; the deletion's id is the vendor's business, named to its
    // admin but not to a committer. The other model still fetches.
    let (run, out) = fetch(&world, "acme/gone");
    assert!(!run.success);
    assert!(
        run.stderr.contains("deleted") && !run.stderr.contains(&id),
        "{}",
        run.stderr
    );
    let (status, body) = world.server.api(
        &world.admin,
        "GET",
        "/v1/models/acme/gone/revisions/main/files/config.json",
        None,
    );
    assert_eq!(status, 410, "{body}");
    assert!(body.to_string().contains(&id), "{body}");
    assert!(run.stderr.contains("410"), "{}", run.stderr);
    assert!(list_files(out.path()).is_empty());
    let (run, out) = fetch(&world, "acme/kept");
    assert!(run.success, "{}", run.stderr);
    assert_same_file(
        &kept_src.path().join("model.safetensors"),
        &out.path().join("m/model.safetensors"),
    );
    // Nothing can be added to a deleted model.
    let again = world.server.custody(
        &world.admin,
        &["upload", gone_src.path().to_str().unwrap(), "acme/gone"],
    );
    assert!(
        !again.success && again.stderr.contains("deleted"),
        "{}",
        again.stderr
    );
    // Names stay visible to the vendor, not to committers.
    let listed = world.server.ok(&world.alice, &["ls"]);
    assert!(
        !listed.contains("acme/gone") && listed.contains("acme/kept"),
        "{listed}"
    );
    let listed = world.server.ok(&world.admin, &["ls", "acme"]);
    assert!(listed.contains("acme/gone"), "{listed}");
    // The certificate verifies offline with the service key and the log key, names the
    // host that held a copy (not yet wiped), and fails once edited.
    let (cert, verify) = verified_certificate(&world, &id);
    // The vendor sees the model marked, with its deletion and when it was certified, in
    // the listing, the model's own view and their JSON; the kept model carries no mark.
    let listed = world.server.ok(&world.admin, &["ls", "acme"]);
    let gone_line = listed
        .lines()
        .find(|l| l.starts_with("acme/gone "))
        .unwrap();
    assert!(
        gone_line.contains("deleted 20")
            && gone_line.contains(&format!("(deletion {id}, certified 20")),
        "{listed}"
    );
    let kept_line = listed
        .lines()
        .find(|l| l.starts_with("acme/kept "))
        .unwrap();
    assert!(!kept_line.contains("deleted"), "{listed}");
    let view = world.server.ok(&world.admin, &["ls", "acme/gone"]);
    assert!(
        view.lines()
            .next()
            .unwrap()
            .starts_with("acme/gone: deleted 20")
            && view.contains("can never be read again"),
        "{view}"
    );
    let json: Value =
        serde_json::from_str(&world.server.ok(&world.admin, &["--json", "ls", "acme"])).unwrap();
    let gone = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "acme/gone")
        .unwrap();
    assert_eq!(gone["deleted"]["deletion"], id.as_str(), "{json}");
    assert!(
        gone["deleted"]["certified_at"].as_i64().unwrap()
            >= gone["deleted"]["at"].as_i64().unwrap()
    );
    let text = std::fs::read_to_string(&cert).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let d = &v["certificate"]["deletion"];
    assert_eq!(d["certificate_id"], id.as_str());
    assert_eq!(d["models"][0]["name"], "gone");
    // A host is its enrollment: the name, and which enrollment of that name held the copy.
    let host = d["hosts"][0]["host"].as_str().unwrap();
    assert!(host.starts_with("gpu-01 (enrollment "), "{host}");
    assert_eq!(d["hosts"][0]["wipe_confirmed"], false);
    assert!(
        d["post_checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true)
    );
    let tampered = cert.with_file_name("tampered.json");
    std::fs::write(&tampered, text.replacen("\"gone\"", "\"kept\"", 1)).unwrap();
    assert_eq!(verify(&tampered), 1, "an edited certificate verified");

    // A server started on the backup, with the root of trust as it is now, opens nothing:
    // the backup's key store is wrapped under a root that no longer exists.
    let config = backup.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[root]\nkind = \"file\"\ndir = {:?}\n",
            backup.path().join("custody"),
            live_root
        ),
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .args(["server", "--metrics-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "a server opened the backup");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("root"), "{stderr}");
    // A backup of the data directory holds no root file at all (they live beside it), and
    // the live root directory holds none of the destroyed epoch's.
    let backup_roots: Vec<String> = list_files(backup.path())
        .into_iter()
        .filter(|f| f.contains("root-"))
        .collect();
    assert!(backup_roots.is_empty(), "{backup_roots:?}");
    let live_roots = list_files(&live_root);
    assert!(
        live_roots.iter().all(|r| !r.starts_with("root-1-")),
        "a destroyed root survived: {live_roots:?}"
    );
    drop(gone_src);
}

#[test]
fn a_crash_at_any_step_is_finished_at_restart() {
    crash_at_every_step(None);
}

/// The same crashes on an HSM root (SoftHSM2): the resumed shred destroys the HSM key.
#[test]
fn a_crash_at_any_step_is_finished_at_restart_on_a_pkcs11_root() {
    crash_at_every_step(Some(&testkit::SoftHsm::new().unwrap()));
}

/// At each step of a deletion the server dies; restarted, it finishes and certifies it. With
/// `hsm`, the root of trust is that PKCS#11 token.
fn crash_at_every_step(hsm: Option<&testkit::SoftHsm>) {
    let hsm_env = hsm.map(|h| h.env()).unwrap_or_default();
    let env: Vec<(&str, &str)> = hsm_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for step in [
        "keys_destroyed",
        "epoch_destroyed",
        "objects_deleted",
        "checked",
    ] {
        let data = tempfile::tempdir().unwrap();
        let mut extra = Vec::new();
        if let Some(hsm) = hsm {
            let config = data.path().join("custody.toml");
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\n{}",
                    data.path().join("custody"),
                    hsm.root_toml().unwrap()
                ),
            )
            .unwrap();
            extra = vec!["--config".to_owned(), config.to_str().unwrap().to_owned()];
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut crash_env = env.clone();
        crash_env.push(("CUSTODY_FAILPOINT_DELETION", step));
        let world = World::on(TestServer::start_env(data, &extra, &crash_env));
        model_with_weights(&world, "acme/gone", 3);
        let kept = model_with_weights(&world, "acme/kept", 4);
        let id = request_deletion(&world, "acme/gone");
        // The server exits at the failpoint.
        let World {
            mut server,
            admin,
            alice,
        } = world;
        wait_for(60, "the server to stop at the failpoint", || {
            server.try_exited()
        });
        let host = server.host.clone();
        let operator = server.operator.clone();
        let data = server.stop();
        let mut server = TestServer::start_env(data, &extra, &env);
        server.host = host;
        server.operator = operator;
        let world = World {
            server,
            admin,
            alice,
        };
        wait_done(&world.server, &world.admin, &id);
        let (cert, _) = verified_certificate(&world, &id);
        if hsm.is_some() {
            let text = std::fs::read_to_string(cert).unwrap();
            assert!(text.contains("C_DestroyObject"), "{step}: {text}");
        }
        let (run, _) = fetch(&world, "acme/gone");
        assert!(
            !run.success && run.stderr.contains("deleted"),
            "{step}: {}",
            run.stderr
        );
        let (run, out) = fetch(&world, "acme/kept");
        assert!(run.success, "{step}: {}", run.stderr);
        assert_same_file(
            &kept.path().join("model.safetensors"),
            &out.path().join("m/model.safetensors"),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test hooks (failpoints, the movable clock) exist only in test builds: the custody
/// binary built without them (`cargo build -p cli`, as the release is; tests/run builds it and
/// names it in CUSTODY_BIN_WITHOUT_TEST_HOOKS) ignores their variables. The same variables
/// make the test build crash or move its clock (the crash tests above, `advance_clock`).
#[test]
fn a_custody_binary_built_without_test_hooks_ignores_their_variables() {
    let bin = std::env::var_os("CUSTODY_BIN_WITHOUT_TEST_HOOKS").expect(
        "CUSTODY_BIN_WITHOUT_TEST_HOOKS names the custody binary built without test hooks: \
         run the tests with tests/run, which builds it",
    );
    let server = TestServer::start_binary(
        Path::new(&bin),
        tempfile::tempdir().unwrap(),
        &[],
        &[
            (
                "CUSTODY_FAILPOINT_DELETION",
                "keys_destroyed,epoch_destroyed,objects_deleted,checked,certified",
            ),
            ("CUSTODY_FAILPOINT_BACKGROUND", "checkpoints"),
        ],
    )
    .claimed();
    let world = World::on(server);
    let brief = world
        .server
        .ok(
            &world.server.operator,
            &[
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "brief",
                "--expires-in",
                "1h",
            ],
        )
        .trim()
        .to_owned();
    world.server.advance_clock(7_200);
    world.server.ok(&brief, &["vendor", "ls"]);

    model_with_weights(&world, "acme/gone", 21);
    let id = request_deletion(&world, "acme/gone");
    wait_done(&world.server, &world.admin, &id);
    let _ = verified_certificate(&world, &id);
    let World { mut server, .. } = world;
    assert!(!server.try_exited(), "the server stopped at a failpoint");
}

#[test]
fn a_vendor_deletion_waits_for_a_second_admin_and_covers_every_model() {
    let world = World::new();
    model_with_weights(&world, "acme/one", 5);
    model_with_weights(&world, "acme/two", 6);
    let second = world
        .server
        .admitted_token("vendor-admin", "acme", "acme-admin-2", &world.admin);
    world.server.ok(&world.admin, &["two-person", "acme", "on"]);
    let out = world.server.ok(
        &world.admin,
        &["--json", "delete", "--yes", "--vendor", "acme"],
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["state"], "pending-approval", "{v}");
    let id = v["deletion"].as_str().unwrap().to_owned();
    // Nothing is deleted while the request waits, and its author cannot approve it.
    let (run, _) = fetch(&world, "acme/one");
    assert!(run.success, "{}", run.stderr);
    let own = world.server.custody(&world.admin, &["approve", &id]);
    assert!(
        !own.success && own.stderr.contains("cannot approve your own"),
        "{}",
        own.stderr
    );
    // A committer may not ask for a deletion at all.
    let refused = world
        .server
        .custody(&world.alice, &["delete", "--yes", "acme/one"]);
    assert!(!refused.success, "{}", refused.stdout);
    world.server.ok(&second, &["approve", &id]);
    wait_done(&world.server, &world.admin, &id);
    for model in ["acme/one", "acme/two"] {
        let (run, _) = fetch(&world, model);
        assert!(
            !run.success && run.stderr.contains("deleted") && !run.stderr.contains(&id),
            "{model}: {}",
            run.stderr
        );
    }
    let (cert, _) = verified_certificate(&world, &id);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let d = &v["certificate"]["deletion"];
    assert_eq!(d["scope"], "vendor");
    assert_eq!(d["models"].as_array().unwrap().len(), 2);
    assert_eq!(d["approved_by"][0], "vendor-admin:acme-admin-2");
}

#[test]
fn a_model_is_shredded_by_itself_at_its_delete_after_time() {
    let world = World::new();
    model_with_weights(&world, "acme/timed", 7);
    let past = world
        .server
        .custody(&world.admin, &["delete-after", "acme/timed", "1"]);
    assert!(!past.success, "a time in the past was accepted");
    let tomorrow = (std::time::SystemTime::now() + Duration::from_secs(86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    world
        .server
        .ok(&world.admin, &["delete-after", "acme/timed", &tomorrow]);
    let (run, _) = fetch(&world, "acme/timed");
    assert!(run.success, "{}", run.stderr);
    world.server.advance_clock(3_600);
    let (run, _) = fetch(&world, "acme/timed");
    assert!(run.success, "shredded 23 hours early: {}", run.stderr);
    // A day later by the server's clock; the runner wakes at least every few seconds.
    world.server.advance_clock(86_400);
    wait_for(60, "the scheduled deletion", || {
        !fetch(&world, "acme/timed").0.success
    });
    let (run, _) = fetch(&world, "acme/timed");
    assert!(run.stderr.contains("deleted"), "{}", run.stderr);
}

#[test]
fn a_shred_on_kms_roots_and_s3_storage_schedules_the_kms_key_for_deletion() {
    // The scale-out configuration, both services on moto: ciphertext in a versioned S3
    // bucket, one AWS KMS key per epoch as the root of trust.
    let moto = testkit::MotoServer::shared().unwrap();
    let bucket = moto.fresh_bucket(true).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\
             [s3]\nendpoint_url = \"{url}\"\nregion = \"us-east-1\"\nbucket = \"{bucket}\"\n\
             force_path_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n\
             [root]\nkind = \"kms\"\nendpoint_url = \"{url}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            data = data.path().join("custody").display(),
            url = moto.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_with(data, &["--config", &config]));
    model_with_weights(&world, "acme/gone", 11);
    let kept = model_with_weights(&world, "acme/kept", 12);
    assert!(
        !world.server.data_dir().join("root").exists(),
        "a KMS root writes no root key file"
    );
    let id = request_deletion(&world, "acme/gone");
    wait_done(&world.server, &world.admin, &id);
    let (cert, _) = verified_certificate(&world, &id);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let d = &v["certificate"]["deletion"];
    assert_eq!(d["root_provider"]["kind"], "aws-kms", "{d}");
    let root = d["destroyed_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "root")
        .unwrap();
    assert!(
        root["id"].as_str().unwrap().starts_with("arn:aws:kms:"),
        "{root}"
    );
    assert!(
        root["how"]
            .as_str()
            .unwrap()
            .contains("scheduled for deletion"),
        "{root}"
    );
    assert!(d["residual_risk"].as_str().unwrap().contains("KMS"), "{d}");
    let (run, _) = fetch(&world, "acme/gone");
    assert!(
        !run.success && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );
    let (run, out) = fetch(&world, "acme/kept");
    assert!(run.success, "{}", run.stderr);
    assert_same_file(
        &kept.path().join("model.safetensors"),
        &out.path().join("m/model.safetensors"),
    );
}

/// The same shred on an HSM: a PKCS#11 root (SoftHSM2, its own token in a temp dir). The
/// epoch's key is destroyed on the token, the certificate says so and names the token, a
/// backup of the data directory taken before opens nothing, and a wrong PIN stops the start.
#[test]
fn a_shred_on_a_pkcs11_root_destroys_the_hsm_key_even_for_backups() {
    let hsm = testkit::SoftHsm::new().unwrap();
    let env: Vec<(String, String)> = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{}",
            data.path().join("custody"),
            hsm.root_toml().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_env(data, &["--config", &config], &env));
    model_with_weights(&world, "acme/gone", 21);
    let kept = model_with_weights(&world, "acme/kept", 22);
    assert!(
        !world.server.data_dir().join("root").exists()
            && !world
                .server
                .data_dir()
                .with_file_name("custody.root")
                .exists(),
        "an HSM root writes no root key file"
    );

    // The backup: the data directory of the stopped server.
    let World {
        server,
        admin,
        alice,
    } = world;
    let (host, operator) = (server.host.clone(), server.operator.clone());
    let data = server.stop();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&data.path().join("custody"), &backup.path().join("custody"));
    let mut server = TestServer::start_env(data, &["--config", &config], &env);
    server.host = host;
    server.operator = operator;
    let world = World {
        server,
        admin,
        alice,
    };

    let id = request_deletion(&world, "acme/gone");
    wait_done(&world.server, &world.admin, &id);
    let (cert, _) = verified_certificate(&world, &id);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let d = &v["certificate"]["deletion"];
    assert_eq!(d["root_provider"]["kind"], "pkcs11", "{d}");
    let description = d["root_provider"]["description"].as_str().unwrap();
    assert!(
        description.contains("PKCS#11 token \"custody-test\""),
        "{description}"
    );
    let root = d["destroyed_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "root")
        .unwrap();
    assert!(
        root["id"].as_str().unwrap().starts_with("custody-root-1-"),
        "{root}"
    );
    assert!(
        root["how"].as_str().unwrap().contains("C_DestroyObject"),
        "{root}"
    );
    let risk = d["residual_risk"].as_str().unwrap();
    assert!(
        risk.contains("the root of trust is an HSM, PKCS#11 token") && risk.contains("clone"),
        "{risk}"
    );
    let check = d["post_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "root_of_trust_reports_roots_destroyed")
        .unwrap();
    assert_eq!(check["passed"], true, "{check}");
    let (run, _) = fetch(&world, "acme/gone");
    assert!(
        !run.success && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );
    let (run, out) = fetch(&world, "acme/kept");
    assert!(run.success, "{}", run.stderr);
    assert_same_file(
        &kept.path().join("model.safetensors"),
        &out.path().join("m/model.safetensors"),
    );

    // The backup, on the same token: its epoch's HSM key is gone, so it opens nothing.
    let backup_config = backup.path().join("custody.toml");
    std::fs::write(
        &backup_config,
        format!(
            "data_dir = {:?}\n{}",
            backup.path().join("custody"),
            hsm.root_toml().unwrap()
        ),
    )
    .unwrap();
    let server = |config: &Path| {
        std::process::Command::new(BIN)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let output = server(&backup_config);
    assert!(!output.status.success(), "a server opened the backup");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("root of trust of the current epoch 1")
            && stderr.contains("custody-root-1-"),
        "{stderr}"
    );

    // A wrong PIN stops the start, says so, and never shows the PIN.
    let wrong_pin = backup.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "wrong-pin-9876\n").unwrap();
    std::fs::write(
        &backup_config,
        format!(
            "data_dir = {:?}\n{}",
            backup.path().join("custody"),
            hsm.root_toml().unwrap().replace(
                hsm.pin_file().to_str().unwrap(),
                wrong_pin.to_str().unwrap()
            )
        ),
    )
    .unwrap();
    let output = server(&backup_config);
    assert!(!output.status.success(), "a wrong PIN was accepted");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("refused the PIN"), "{text}");
    assert!(!text.contains("wrong-pin-9876"), "{text}");
}

/// Issue 19: a shred cannot be undone, so `custody delete` asks for the name to be typed on a
/// terminal, refuses without one unless `--yes` is given, and a wrong name deletes nothing.
#[test]
fn delete_asks_for_the_name_and_a_wrong_answer_deletes_nothing() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    let not_deleted = |world: &World| {
        let (_, body) = world
            .server
            .api(&world.server.operator, "GET", "/v1/models/acme/m", None);
        body["deleted"].is_null()
    };

    // A script without --yes is refused before anything reaches the server.
    let run = world.server.custody(&world.admin, &["delete", "acme/m"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("pass --yes") && run.stderr.contains("Nothing was deleted"),
        "{}",
        run.stderr
    );
    assert!(not_deleted(&world), "deleted without confirmation");

    // On a terminal (a pseudo-terminal from `script`), a wrong name deletes nothing...
    let on_terminal = |answer: &str| {
        let command = format!("{BIN} delete acme/m");
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("CUSTODY_SERVER", &world.server.url)
            .env("CUSTODY_TOKEN", &world.admin)
            .env("CUSTODY_CA", &world.server.ca)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the script command (util-linux) is needed by this test");
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("{answer}\n").as_bytes(),
        )
        .unwrap();
        Run::from(child.wait_with_output().unwrap())
    };
    let wrong = on_terminal("acme/n");
    assert!(!wrong.success, "{}", wrong.stdout);
    assert!(
        wrong.stdout.contains("Type acme/m to confirm")
            && wrong.stdout.contains("nothing was deleted"),
        "{}",
        wrong.stdout
    );
    assert!(not_deleted(&world), "a wrong name deleted the model");

    // ... and the right one deletes it.
    let right = on_terminal("acme/m");
    assert!(right.success, "{}\n{}", right.stdout, right.stderr);
    assert!(
        !not_deleted(&world),
        "the typed name did not delete the model"
    );
}

/// Issue 19: under the two-person rule, `delete --certificate-out F` cannot write F yet: it
/// says so, names the next command, writes nothing and exits 3 (neither success nor failure);
/// after the approval, the named command writes the certificate.
#[test]
fn a_deletion_waiting_for_approval_says_so_instead_of_succeeding() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/m");
    let admin2 = s.admitted_token("vendor-admin", "acme", "acme-admin-2", &world.admin);
    s.ok(&world.admin, &["two-person", "acme", "on"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.json");
    let run = s.custody(
        &world.admin,
        &[
            "delete",
            "--yes",
            "acme/m",
            "--certificate-out",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(3), "{}\n{}", run.stdout, run.stderr);
    assert!(!cert.exists(), "a certificate was written before approval");
    assert!(
        run.stdout.contains("waits for a second admin"),
        "{}",
        run.stdout
    );
    let id = run.stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        run.stderr.contains(&format!(
            "custody deletion {id} --wait --certificate-out FILE"
        )),
        "{}",
        run.stderr
    );
    s.ok(&admin2, &["approve", &id]);
    s.ok(
        &world.admin,
        &[
            "deletion",
            &id,
            "--wait",
            "--certificate-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(cert.exists());
}

// Post-checks that can fail (issue 13): each asks the authority as it is now, and a failing
// one blocks the certificate, keeps the deletion visibly retrying, and says why.

fn db_url(server: &TestServer) -> String {
    format!(
        "sqlite://{}",
        server.data_dir().join("db/custody.sqlite").display()
    )
}

/// Runs `statement` (binding `blob` when given) on the server's database, as someone with
/// access to it would.
fn sql(server: &TestServer, statement: &str, blob: Option<Vec<u8>>) {
    let url = db_url(server);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let mut query = sqlx::query(statement);
        if let Some(blob) = blob {
            query = query.bind(blob);
        }
        query.execute(&pool).await.unwrap();
        pool.close().await;
    });
}

/// Epoch 1's row in the epoch ledger: its root's name and its wrapped key.
fn epoch_one(server: &TestServer) -> (String, Option<Vec<u8>>) {
    let url = db_url(server);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let row: (String, Option<Vec<u8>>) =
            sqlx::query_as("SELECT root, wrapped_key FROM key_epochs WHERE epoch = 1")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        row
    })
}

fn status(world: &World, id: &str) -> Value {
    let (code, body) = world
        .server
        .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
    assert_eq!(code, 200, "{body}");
    body
}

/// Waits until the deletion's last error says `why`, then asserts that it is held before its
/// certificate, and returns the error.
fn blocked_by(world: &World, id: &str, why: &str) -> String {
    wait_for(90, &format!("the deletion to fail with {why:?}"), || {
        status(world, id)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(why))
    });
    let s = status(world, id);
    assert_eq!(s["state"], "objects_deleted", "{s}");
    assert!(s["attempts"].as_i64().unwrap() >= 1, "{s}");
    assert_eq!(s["certificate"], Value::Null, "{s}");
    assert!(s["retry_at"].as_i64().is_some(), "{s}");
    s["last_error"].as_str().unwrap().to_owned()
}

/// Restarts a world whose server stopped at a failpoint, with `extra` flags, doing `meanwhile`
/// while it is down.
fn restart(world: World, extra: &[&str], meanwhile: impl FnOnce(&TestServer)) -> World {
    restart_env(world, extra, &[], meanwhile)
}

/// [`restart`] with extra environment variables for the new server.
fn restart_env(
    world: World,
    extra: &[&str],
    env: &[(&str, &str)],
    meanwhile: impl FnOnce(&TestServer),
) -> World {
    let World {
        mut server,
        admin,
        alice,
    } = world;
    wait_for(60, "the server to stop at the failpoint", || {
        server.try_exited()
    });
    meanwhile(&server);
    let host = server.host.clone();
    let operator = server.operator.clone();
    let mut server = TestServer::start_env(server.stop(), extra, env);
    server.host = host;
    server.operator = operator;
    World {
        server,
        admin,
        alice,
    }
}

#[test]
fn a_root_brought_back_or_a_key_that_still_opens_blocks_the_certificate() {
    let data = tempfile::tempdir().unwrap();
    let world = World::on(TestServer::start_env(
        data,
        &[],
        &[("CUSTODY_FAILPOINT_DELETION", "objects_deleted")],
    ));
    model_with_weights(&world, "acme/gone", 21);
    let root_dir = world.server.data_dir().with_file_name("custody.root");
    let roots_before = tempfile::tempdir().unwrap();
    copy_dir(&root_dir, roots_before.path());
    let (root, wrapped) = epoch_one(&world.server);
    let wrapped = wrapped.unwrap();
    let id = request_deletion(&world, "acme/gone");
    // The server stops once the objects are deleted, before the post-checks: the destroyed
    // root's file is put back meanwhile (a copy of the root directory, restored).
    let server_root = root_dir.join(&root);
    let world = restart(world, &[], |_| {
        assert!(!server_root.exists(), "the root was not destroyed");
        std::fs::copy(roots_before.path().join(&root), &server_root).unwrap();
    });
    let error = blocked_by(&world, &id, "root_of_trust_reports_roots_destroyed");
    assert!(
        error.contains(&root) && error.contains("exists"),
        "the failure does not say which root: {error}"
    );
    assert!(
        !error.contains("retained_ciphertext_does_not_decrypt"),
        "with the ledger's key erased nothing opens: {error}"
    );
    let log = world.server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("deletion post-check failed")),
        "{log}"
    );

    // A restored backup brings the epoch's ledger row back too: the recorded wrapped key
    // opens again, and the check that tries it says so.
    sql(
        &world.server,
        "UPDATE key_epochs SET wrapped_key = ?, state = 'live', destroyed_at = NULL \
         WHERE epoch = 1",
        Some(wrapped),
    );
    let error = blocked_by(&world, &id, "retained_ciphertext_does_not_decrypt");
    assert!(
        error.contains("acme/gone still opens under epoch 1")
            && error.contains("epoch 1 is live in the ledger"),
        "{error}"
    );

    // Destroyed again, the retry passes and the certificate is issued, naming every check.
    sql(
        &world.server,
        "UPDATE key_epochs SET wrapped_key = NULL, state = 'destroyed' WHERE epoch = 1",
        None,
    );
    std::fs::remove_file(&server_root).unwrap();
    wait_done(&world.server, &world.admin, &id);
    let (cert, _) = verified_certificate(&world, &id);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let checks: Vec<(String, bool)> = v["certificate"]["deletion"]["post_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap().to_owned(), c["passed"] == true))
        .collect();
    let names: Vec<&str> = checks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "record_covers_the_deletion",
            "storage_reports_objects_gone",
            "root_of_trust_reports_roots_destroyed",
            "retained_ciphertext_does_not_decrypt"
        ]
    );
    assert!(checks.iter().all(|(_, passed)| *passed), "{checks:?}");
    assert_eq!(status(&world, &id)["last_error"], Value::Null);
}

#[test]
fn a_kms_key_whose_deletion_was_cancelled_blocks_the_certificate() {
    let moto = testkit::MotoServer::shared().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\
             [root]\nkind = \"kms\"\nendpoint_url = \"{url}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            data = data.path().join("custody").display(),
            url = moto.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_env(
        data,
        &["--config", &config],
        &[("CUSTODY_FAILPOINT_DELETION", "objects_deleted")],
    ));
    model_with_weights(&world, "acme/gone", 22);
    let (arn, _) = epoch_one(&world.server);
    let key = format!("{{\"KeyId\": \"{}\"}}", arn.rsplit('/').next().unwrap());
    let id = request_deletion(&world, "acme/gone");
    // While the server is down, someone allowed to cancels the key's scheduled deletion: KMS
    // leaves it disabled, one EnableKey away from use.
    let world = restart(world, &["--config", &config], |_| {
        moto.kms("CancelKeyDeletion", &key).unwrap();
    });
    let error = blocked_by(&world, &id, "is Disabled, not pending deletion");
    assert!(
        error.contains("root_of_trust_reports_roots_destroyed") && error.contains(&arn),
        "{error}"
    );
    moto.kms("EnableKey", &key).unwrap();
    blocked_by(&world, &id, "is Enabled, not pending deletion");
    // Scheduled for deletion again, the retry passes.
    moto.kms(
        "ScheduleKeyDeletion",
        &key.replace('}', ", \"PendingWindowInDays\": 7}"),
    )
    .unwrap();
    wait_done(&world.server, &world.admin, &id);
    let (cert, _) = verified_certificate(&world, &id);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let d = &v["certificate"]["deletion"];
    let root = d["destroyed_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "root")
        .unwrap();
    assert_eq!(root["id"], arn.as_str(), "{root}");
    assert!(
        root["how"]
            .as_str()
            .unwrap()
            .starts_with("KMS key scheduled for deletion on 20"),
        "{root}"
    );
}

/// A backup of the HSM token taken before a deletion and restored after its key was destroyed
/// brings the root back: the post-check asks the token, finds the key under the root's label,
/// and holds the certificate back until it is gone again.
#[test]
fn an_hsm_token_backup_restored_blocks_the_certificate() {
    let hsm = testkit::SoftHsm::new().unwrap();
    let hsm_env = hsm.env();
    let env: Vec<(&str, &str)> = hsm_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{}",
            data.path().join("custody"),
            hsm.root_toml().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let extra = ["--config", config.as_str()];
    let mut crash_env = env.clone();
    crash_env.push(("CUSTODY_FAILPOINT_DELETION", "objects_deleted"));
    let world = World::on(TestServer::start_env(data, &extra, &crash_env));
    model_with_weights(&world, "acme/gone", 23);
    let (label, _) = epoch_one(&world.server);
    assert!(label.starts_with("custody-root-1-"), "{label}");
    // The token's backup: one key, epoch 1's root.
    let token_backup = tempfile::tempdir().unwrap();
    copy_dir(&hsm.token_dir(), token_backup.path());
    assert_eq!(objects(token_backup.path()).len(), 1);
    let id = request_deletion(&world, "acme/gone");
    let world = restart_env(world, &extra, &env, |_| {
        copy_dir(token_backup.path(), &hsm.token_dir());
    });
    let error = blocked_by(&world, &id, "root_of_trust_reports_roots_destroyed");
    assert!(
        error.contains(&format!(
            "HSM key {label} is still on token \"custody-test\""
        )),
        "{error}"
    );

    // Destroyed again on the token (the restored key's object removed while the server is
    // down), the retry passes.
    let World {
        server,
        admin,
        alice,
    } = world;
    let (host, operator) = (server.host.clone(), server.operator.clone());
    let data = server.stop();
    for object in objects(token_backup.path()) {
        let name = object.strip_prefix(token_backup.path()).unwrap();
        std::fs::remove_file(hsm.token_dir().join(name)).unwrap();
    }
    let mut server = TestServer::start_env(data, &extra, &env);
    server.host = host;
    server.operator = operator;
    let world = World {
        server,
        admin,
        alice,
    };
    wait_done(&world.server, &world.admin, &id);
    let (cert, _) = verified_certificate(&world, &id);
    let text = std::fs::read_to_string(cert).unwrap();
    assert!(text.contains("C_DestroyObject"), "{text}");
}

/// The key objects SoftHSM2 keeps under `dir` (one file each, beside the token's own).
fn objects(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for token in std::fs::read_dir(dir).unwrap() {
        for entry in std::fs::read_dir(token.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".object") && name != "token.object" {
                found.push(path);
            }
        }
    }
    found
}

/// An attacker with write access to the database edits a deletion's work record: an unknown
/// version, or a record that leaves a model out. Neither is read as a fresh start or certified:
/// the deletion stops where it is and says why, and goes on once the record is restored.
#[test]
fn a_tampered_work_record_stops_the_deletion_and_says_why() {
    let data = tempfile::tempdir().unwrap();
    let world = World::on(TestServer::start_env(
        data,
        &[],
        &[("CUSTODY_FAILPOINT_DELETION", "objects_deleted")],
    ));
    model_with_weights(&world, "acme/gone", 23);
    let id = request_deletion(&world, "acme/gone");
    let set_work = |server: &TestServer, expression: &str| {
        sql(
            server,
            &format!("UPDATE deletions SET work = {expression} WHERE id = '{id}'"),
            None,
        );
    };
    let mut original = String::new();
    let world = restart(world, &[], |server| {
        original = work_of(server, &id);
        set_work(server, "json_set(work, '$.version', 9)");
    });
    let error = blocked_by(&world, &id, "the work record has version 9");
    assert!(!error.contains("post-check"), "{error}");

    set_work(
        &world.server,
        "json_set(work, '$.version', 1, '$.models', json('[]'), '$.objects', json('[]'))",
    );
    let error = blocked_by(&world, &id, "record_covers_the_deletion");
    assert!(
        error.contains("is under this deletion but not in its record"),
        "{error}"
    );
    let (run, _) = fetch(&world, "acme/gone");
    assert!(
        !run.success && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );

    set_work(
        &world.server,
        &format!("'{}'", original.replace('\'', "''")),
    );
    wait_done(&world.server, &world.admin, &id);
    let _ = verified_certificate(&world, &id);
}

fn work_of(server: &TestServer, id: &str) -> String {
    let url = db_url(server);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let work: String = sqlx::query_scalar("SELECT work FROM deletions WHERE id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        work
    })
}

/// A deletion state that the database's CHECK constraint should have refused (SQLite told to
/// ignore it, by someone with the database file) is never read as some state or skipped: that
/// deletion fails, loudly and alone, and another deletion is certified meanwhile.
#[test]
fn a_state_the_database_should_have_refused_stops_only_its_deletion() {
    let data = tempfile::tempdir().unwrap();
    let world = World::on(TestServer::start_env(
        data,
        &[],
        &[("CUSTODY_FAILPOINT_DELETION", "objects_deleted")],
    ));
    model_with_weights(&world, "acme/gone", 24);
    model_with_weights(&world, "acme/next", 25);
    let id = request_deletion(&world, "acme/gone");
    let world = restart(world, &[], |server| {
        let url = db_url(server);
        runtime().block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let tamper = format!("UPDATE deletions SET state = 'paused' WHERE id = '{id}'");
            assert!(
                sqlx::query(&tamper).execute(&mut conn).await.is_err(),
                "the CHECK constraint let an unknown state in"
            );
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(&tamper).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        });
    });
    let next = request_deletion(&world, "acme/next");
    wait_done(&world.server, &world.admin, &next);
    wait_for(30, "the corrupt deletion's error in the log", || {
        world
            .server
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("deletion step failed") && l.contains(&id))
    });
    let log = world.server.log();
    let line = log
        .lines()
        .find(|l| l.contains("deletion step failed") && l.contains(&id))
        .unwrap();
    assert!(line.contains("paused"), "{line}");
    let (code, body) = world
        .server
        .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
    assert_eq!(code, 500, "a corrupt deletion answered {body}");
}
