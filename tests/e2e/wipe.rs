//! Copies on exclusive hosts and `custody wipe`; derived revisions (`upload --derived-from`).
//!
//! Models are deleted through the deletion service (`custody delete`); the tests read what
//! the server recorded with the `sqlite3` command on its database.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{HostCert, TestServer, World, https_client_on, runtime, wait_for, write_data};

/// Runs SQL on the server's SQLite database (the server keeps running: WAL and a busy
/// timeout let both write).
pub(crate) fn sql(server: &TestServer, statement: &str) -> String {
    let db = server.data_dir().join("db/custody.sqlite");
    let out = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg(&db)
        .arg(statement)
        .output()
        .expect("the sqlite3 command is needed by these tests");
    assert!(
        out.status.success(),
        "sqlite3 {statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Deletes `acme/MODEL` through the deletion service and waits for its certificate; returns
/// the deletion id.
pub(crate) fn delete_model(world: &World, model: &str) -> String {
    let out = world.server.ok(
        &world.admin,
        &["--json", "delete", "--yes", &format!("acme/{model}")],
    );
    let id = json(&out)["deletion"].as_str().unwrap().to_owned();
    wait_for(120, "the deletion's certificate", || {
        let (_, body) = world
            .server
            .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
        body["state"] == "certified"
    });
    id
}

fn model_id(server: &TestServer, model: &str) -> String {
    sql(
        server,
        &format!("SELECT id FROM models WHERE name = '{model}'"),
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A GET or POST to the wipe route with `host`'s certificate (or none), and no token.
fn host_request(server: &TestServer, host: Option<&HostCert>, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/v1/host/wipe", server.url);
    let ca = server.ca.clone();
    let host = host.cloned();
    runtime().block_on(async move {
        let client = https_client_on(&ca, host.as_ref());
        let request = match body {
            Some(b) => client.post(url).json(&b),
            None => client.get(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// A model folder with a small file and a nested one.
fn model_dir(root: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let dir = root.join(name);
    write_data(&dir.join("config.json"), 300, seed);
    write_data(&dir.join("weights/model.safetensors"), 3 << 20, seed + 1);
    dir
}

#[test]
fn fetch_records_copies_and_wipe_removes_those_of_deleted_models() {
    let world = World::new();
    let s = &world.server;
    let work = tempfile::tempdir().unwrap();
    world.upload(&model_dir(work.path(), "m", 1), "acme/m");
    world.upload(&model_dir(work.path(), "keep", 3), "acme/keep");
    for model in ["acme/m", "acme/keep"] {
        s.ok(&world.admin, &["grant", model, "--to", "alice"]);
    }
    let out_m = work.path().join("fetched-m");
    let out_keep = work.path().join("fetched-keep");
    s.ok(
        &world.alice,
        &["fetch", "acme/m", "--out", out_m.to_str().unwrap()],
    );
    s.ok(
        &world.alice,
        &["fetch", "acme/keep", "--out", out_keep.to_str().unwrap()],
    );
    // A ranged fetch of a file adds to what the host holds of it, capped at its size.
    let (status, _, _) = s.get_range(
        &world.alice,
        "/v1/models/acme/m/revisions/main/files/config.json",
        Some("bytes=0-99"),
    );
    assert_eq!(status, 206);

    // The server recorded each file the host received, with the bytes served.
    let id_m = model_id(s, "m");
    let copies = sql(
        s,
        &format!(
            "SELECT h.name, c.path, c.bytes FROM host_copies c JOIN hosts h ON h.id = c.host_id \
             WHERE c.model_id = '{id_m}' ORDER BY c.path"
        ),
    );
    assert_eq!(
        copies,
        format!(
            "gpu-01|config.json|300\ngpu-01|weights/model.safetensors|{}",
            3 << 20
        )
    );
    // A metadata read without a host records nothing.
    s.custody_on(None, &world.alice, &["ls", "acme/m"]);
    assert_eq!(sql(s, "SELECT COUNT(*) FROM host_copies"), "4");
    // The host noted where it wrote them.
    let host = s.host.clone().unwrap();
    let state = std::fs::read_to_string(host.host_state()).unwrap();
    assert!(
        state.contains("acme/m") && state.contains("weights/model.safetensors"),
        "{state}"
    );

    // Nothing is deleted yet: wipe removes nothing and confirms nothing.
    let run = json(&s.ok("no-token", &["wipe", "--json"]));
    assert_eq!(run["models"], Value::Array(vec![]), "{run}");
    assert!(out_m.join("weights/model.safetensors").exists());

    let deletion = delete_model(&world, "m");
    // An interrupted fetch left a partial file: wipe removes it too.
    let partial = out_m.join("weights/model.safetensors.custody-partial");
    std::fs::write(&partial, b"partial plaintext").unwrap();
    // The host agent's clients put the model in the Hugging Face cache.
    let hf = s.data.path().join("hf-cache/models--acme--m");
    std::fs::create_dir_all(hf.join("blobs")).unwrap();
    std::fs::write(hf.join("blobs/0123abcd"), b"cached weights").unwrap();
    let hf_keep = s.data.path().join("hf-cache/models--acme--keep/blobs");
    std::fs::create_dir_all(&hf_keep).unwrap();
    std::fs::write(hf_keep.join("89ef"), b"other model").unwrap();

    // A dry run lists and removes nothing.
    let dry = json(&s.ok("no-token", &["wipe", "--dry-run", "--json"]));
    assert_eq!(dry["models"][0]["model"], "acme/m", "{dry}");
    assert_eq!(dry["models"][0]["files"], 4, "{dry}");
    assert!(partial.exists() && hf.exists());
    assert_eq!(sql(s, "SELECT COUNT(*) FROM wipe_confirmations"), "0");

    // The wipe: the deleted model's files, partial download and cache go; the other stays.
    let done = s.ok("no-token", &["wipe"]);
    assert!(
        done.contains("acme/m: removed 4 files, wipe confirmed"),
        "{done}"
    );
    assert!(!out_m.join("config.json").exists());
    assert!(!out_m.join("weights/model.safetensors").exists());
    assert!(!partial.exists());
    assert!(!hf.exists());
    assert!(out_keep.join("weights/model.safetensors").exists());
    assert!(hf_keep.join("89ef").exists());
    let state = std::fs::read_to_string(host.host_state()).unwrap();
    assert!(
        !state.contains("\"acme/m\"") && state.contains("acme/keep"),
        "{state}"
    );

    // The server recorded the confirmation, with its audit entry.
    assert_eq!(
        sql(
            s,
            "SELECT w.deletion_id, h.name, w.files FROM wipe_confirmations w \
             JOIN hosts h ON h.id = w.host_id"
        ),
        format!("{deletion}|gpu-01|4")
    );
    assert_eq!(
        sql(
            s,
            "SELECT COUNT(*) FROM audit_log WHERE CAST(entry AS TEXT) LIKE '%wipe.confirm%' \
             AND CAST(entry AS TEXT) LIKE '%host:gpu-01%'"
        ),
        "1"
    );
    // The copy records stay for the certificate.
    assert_eq!(
        sql(
            s,
            &format!("SELECT COUNT(*) FROM host_copies WHERE model_id = '{id_m}'")
        ),
        "2"
    );
    // Confirmed: the next wipe has nothing left to do.
    let again = json(&s.ok("no-token", &["wipe", "--json"]));
    assert_eq!(again["models"], Value::Array(vec![]), "{again}");
}

#[test]
fn wipe_is_for_enrolled_hosts_and_their_own_copies() {
    let world = World::new();
    let s = &world.server;
    let work = tempfile::tempdir().unwrap();
    world.upload(&model_dir(work.path(), "m", 5), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let out = work.path().join("out");
    s.ok(
        &world.alice,
        &["fetch", "acme/m", "--out", out.to_str().unwrap()],
    );
    let deletion = delete_model(&world, "m");
    let id = model_id(s, "m");
    let gpu01 = s.host.clone().unwrap();

    // Without a host certificate: the CLI says what it needs, the server refuses (401), even
    // with a valid token.
    let run = s.custody_on(None, &world.alice, &["wipe"]);
    assert!(!run.success);
    assert!(run.stderr.contains("CUSTODY_HOST_CERT"), "{}", run.stderr);
    let (status, body) = host_request(s, None, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client certificate")
    );
    let (status, _) = s.api(&world.alice, "GET", "/v1/host/wipe", None);
    assert_eq!(
        status, 200,
        "the world's API helper presents gpu-01's certificate"
    );
    assert!(out.join("config.json").exists());

    // Another host sees none of gpu-01's copies and cannot confirm for it.
    let gpu02 = s.enroll_host("gpu-02", "gpu");
    let (status, body) = host_request(s, Some(&gpu02), None);
    assert_eq!(
        (status, body["models"].clone()),
        (200, Value::Array(vec![]))
    );
    let confirm = serde_json::json!({ "model_id": id, "files": 0 });
    let (status, body) = host_request(s, Some(&gpu02), Some(confirm.clone()));
    assert_eq!(status, 404, "{body}");
    // Nor does a model that was never deleted count, nor is the deletion's id ever shown to
    // a host (it is the vendor's business).
    let wrong = serde_json::json!({ "model_id": "0123456789abcdef", "files": 2 });
    let (status, _) = host_request(s, Some(&gpu01), Some(wrong));
    assert_eq!(status, 404);
    let (_, listing) = host_request(s, Some(&gpu01), None);
    assert!(!listing.to_string().contains(&deletion), "{listing}");
    assert_eq!(sql(s, "SELECT COUNT(*) FROM wipe_confirmations"), "0");

    // A revoked host can no longer receive bytes, but may still wipe and confirm.
    s.ok(&s.operator, &["host", "revoke", "gpu-01"]);
    let (status, body) = host_request(s, Some(&gpu01), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], true);
    assert_eq!(body["models"][0]["model"], "acme/m");
    let done = s.ok("no-token", &["wipe"]);
    assert!(done.contains("wipe confirmed"), "{done}");
    assert!(!out.join("config.json").exists());

    // The shred finished (certificate issued) before the host wiped: the confirmation is
    // late, still recorded, and the log says so.
    assert_eq!(
        sql(
            s,
            "SELECT COUNT(*) FROM audit_log WHERE CAST(entry AS TEXT) LIKE '%after the certificate was issued%'"
        ),
        "1"
    );
    // The vendor sees the wipe as it stands now; the signed certificate stays as issued.
    let now = s.ok(&world.admin, &["deletion", &deletion]);
    assert!(
        now.contains("host gpu-01 (enrollment ")
            && now.contains("acme/m, 2 file(s), wipe confirmed 20")
            && now.contains("(after the certificate was issued)"),
        "{now}"
    );
    let status = json(&s.ok(&world.admin, &["--json", "deletion", &deletion]));
    assert_eq!(status["wipes"][0]["late"], true, "{status}");
    let cert = &status["certificate"]["certificate"]["deletion"]["hosts"][0];
    assert_eq!(cert["wipe_confirmed"], false, "{status}");
}

#[test]
fn derived_revisions_need_a_grant_and_a_revision_of_the_same_model() {
    let world = World::new();
    let s = &world.server;
    let work = tempfile::tempdir().unwrap();
    let base = world.upload(&model_dir(work.path(), "m", 7), "acme/m");
    let other = world.upload(&model_dir(work.path(), "other", 9), "acme/other");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let bob = s.token("committer", None, "bob");
    let carol = s.token("committer", None, "carol");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "carol"]);
    s.ok(&world.admin, &["exclude", "acme/m", "carol"]);
    let quantized = work.path().join("q");
    write_data(&quantized.join("model-q4.gguf"), 1 << 20, 11);
    write_data(&quantized.join("eval.log"), 500, 12);
    let q = quantized.to_str().unwrap();

    // A committer with a grant uploads what they derived; it lists with its origin and
    // fetches like any revision of the model.
    let commit = s
        .ok(
            &world.alice,
            &["upload", q, "acme/m", "--derived-from", &base, "-m", "q4"],
        )
        .trim()
        .to_owned();
    assert_eq!(commit.len(), 40, "{commit}");
    let listed = json(&s.ok(&world.alice, &["ls", "acme/m", "--json"]));
    let revisions = listed["revisions"].as_array().unwrap();
    let derived = revisions
        .iter()
        .find(|r| r["commit"] == commit.as_str())
        .unwrap();
    assert_eq!(derived["derived_from"], base.as_str());
    let original = revisions
        .iter()
        .find(|r| r["commit"] == base.as_str())
        .unwrap();
    assert_eq!(original["derived_from"], Value::Null);
    let human = s.ok(&world.alice, &["ls", "acme/m"]);
    assert!(human.contains(&format!("(derived from {base})")), "{human}");
    let fetched = work.path().join("fetched-q");
    s.ok(
        &world.alice,
        &[
            "fetch",
            &format!("acme/m@{commit}"),
            "--out",
            fetched.to_str().unwrap(),
        ],
    );
    crate::support::assert_same_file(
        &quantized.join("model-q4.gguf"),
        &fetched.join("model-q4.gguf"),
    );

    // The vendor admin may too.
    s.ok(
        &world.admin,
        &[
            "upload",
            q,
            "acme/m",
            "--derived-from",
            &base,
            "-m",
            "admin",
        ],
    );

    // Refused: no grant; excluded despite a grant; a commit of another model; a plain upload
    // by a committer.
    // (Both may not even see the model: they get what a missing model gets.)
    let run = s.custody(&bob, &["upload", q, "acme/m", "--derived-from", &base]);
    assert!(
        !run.success && run.stderr.contains("model acme/m not found"),
        "{}",
        run.stderr
    );
    let run = s.custody(&carol, &["upload", q, "acme/m", "--derived-from", &base]);
    assert!(
        !run.success && run.stderr.contains("model acme/m not found"),
        "{}",
        run.stderr
    );
    let run = s.custody(
        &world.alice,
        &["upload", q, "acme/m", "--derived-from", &other],
    );
    assert!(
        !run.success && run.stderr.contains("is not a revision of acme/m"),
        "{}",
        run.stderr
    );
    let run = s.custody(&world.alice, &["upload", q, "acme/m"]);
    assert!(
        !run.success,
        "a committer may not upload an ordinary revision"
    );
    let run = s.custody(
        &world.alice,
        &["upload", q, "acme/m", "--derived-from", "not-a-commit"],
    );
    assert!(!run.success, "{}", run.stdout);

    // Exactly the two allowed derived revisions were made.
    let listed = json(&s.ok(&world.admin, &["ls", "acme/m", "--json"]));
    let derived: Vec<_> = listed["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["derived_from"] == base.as_str())
        .collect();
    assert_eq!(derived.len(), 2, "{listed}");
}
