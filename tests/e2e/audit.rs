//! The tamper-evident audit log end to end: a real server signs checkpoints, the CLI exports a
//! bundle and verifies it offline; edits, truncation and a restored database are caught.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// `custody audit verify DIR --log-key KEY [extra]` with `--json`, offline (no server
/// settings at all): exit code and the JSON report.
pub(crate) fn verify(dir: &Path, key: &str, extra: &[&str]) -> (i32, Value) {
    let output = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(dir)
        .args(["--log-key", key, "--json"])
        .args(extra)
        .env_remove("CUSTODY_SERVER")
        .env_remove("CUSTODY_TOKEN")
        .env_remove("CUSTODY_CA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "verify printed no JSON: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), report)
}

pub(crate) fn log_key(server: &TestServer) -> String {
    let key = server
        .ok(&server.operator, &["audit", "key"])
        .trim()
        .to_owned();
    assert!(key.contains('+'), "not a verifier key: {key}");
    key
}

/// Exports the whole log (or from `since`) into a fresh directory.
pub(crate) fn export(server: &TestServer, since: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let mut args = vec!["audit", "export", "--out", out.to_str().unwrap()];
    if let Some(s) = since {
        args.extend(["--since", s.to_str().unwrap()]);
    }
    server.ok(&server.operator, &args);
    (tmp, out)
}

/// Every exported entry, parsed.
pub(crate) fn entries(bundle: &Path) -> Vec<Value> {
    std::fs::read_to_string(bundle.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Saves the latest signed checkpoint (signing one now) to `path`.
fn save_checkpoint(server: &TestServer, path: &Path) -> u64 {
    let note = server.ok(&server.operator, &["audit", "checkpoint", "--sign"]);
    std::fs::write(path, &note).unwrap();
    note.lines().nth(1).unwrap().parse().unwrap()
}

fn db_path(server: &TestServer) -> PathBuf {
    server.data_dir().join("db/custody.sqlite")
}

/// Runs SQL on the server's SQLite database directly, as someone with database access.
fn sql(db: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}", db.display());
    runtime().block_on(async {
        use sqlx::Executor;
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for s in statements {
            pool.execute(*s).await.unwrap();
        }
        pool.close().await;
    });
}

/// Replaces the bytes of entry `seq` in the database with `edit(bytes)`.
fn edit_entry(db: &Path, seq: i64, edit: impl FnOnce(String) -> String) {
    let url = format!("sqlite://{}", db.display());
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let bytes: Vec<u8> = sqlx::query_scalar("SELECT entry FROM audit_log WHERE seq = ?")
            .bind(seq)
            .fetch_one(&pool)
            .await
            .unwrap();
        let edited = edit(String::from_utf8(bytes).unwrap());
        sqlx::query("UPDATE audit_log SET entry = ? WHERE seq = ?")
            .bind(edited.into_bytes())
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
}

fn find<'a>(entries: &'a [Value], action: &str, outcome: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action && e["outcome"] == outcome)
        .collect()
}

#[test]
fn every_action_is_in_an_export_that_verifies() {
    let world = World::new();
    let server = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), br#"{"a":1}"#).unwrap();
    // Refused before the grant, then granted, fetched, revoked.
    world.upload(src.path(), "acme/m");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("m");
    let run = server.custody(
        &world.alice,
        &["fetch", "acme/m", "--out", target.to_str().unwrap()],
    );
    assert!(!run.success);
    server.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    server.ok(
        &world.alice,
        &["fetch", "acme/m", "--out", target.to_str().unwrap()],
    );
    server.ok(&world.admin, &["revoke", "acme/m", "--from", "alice"]);
    let (status, _) = server.api("0badc0de.nope", "GET", "/v1/models", None);
    assert_eq!(status, 401);

    let key = log_key(server);
    let (_tmp, bundle) = export(server, None);
    let (code, report) = verify(&bundle, &key, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["intact"], true);
    assert_eq!(report["first"], 0);
    let all = entries(&bundle);
    assert_eq!(report["entries"], all.len());
    assert_eq!(
        report["signed_size"],
        all.len(),
        "the export signed all of it"
    );
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], i, "line i is entry i");
    }

    // Who did what, and how it ended.
    let admin = "vendor-admin:acme-admin";
    let alice = "committer:alice";
    assert_eq!(
        find(&all, "vendor.create", "ok")[0]["actor"],
        "operator:root-operator"
    );
    assert!(!find(&all, "token.create", "ok").is_empty());
    let begin = find(&all, "upload.begin", "ok");
    assert_eq!(begin[0]["actor"], admin);
    let commit = find(&all, "upload.commit", "ok");
    assert_eq!(commit[0]["actor"], admin);
    assert_eq!(
        commit[0]["resource"].as_str().unwrap().split('@').next(),
        Some("acme/m")
    );
    // Alice's fetch before the grant is refused at the revision's metadata.
    let refused: Vec<&Value> = all
        .iter()
        .filter(|e| e["actor"] == alice && e["outcome"] == "denied" && e["resource"] == "acme/m")
        .collect();
    assert!(!refused.is_empty(), "the refused fetch is recorded");
    assert_eq!(refused[0]["decision"]["allowed"], false);
    let grant = find(&all, "grant", "ok");
    assert_eq!(grant[0]["actor"], admin);
    assert!(grant[0]["detail"].as_str().unwrap().contains("alice"));
    let fetched: Vec<_> = find(&all, "fetch", "ok");
    assert_eq!(fetched[0]["actor"], alice);
    assert_eq!(fetched[0]["host"], "gpu-01");
    let sha = hex_sha256(br#"{"a":1}"#);
    assert_eq!(fetched[0]["touched"][0]["sha256"], sha.as_str());
    assert_eq!(fetched[0]["touched"][0]["bytes"], 7);
    let revoke = find(&all, "revoke", "ok");
    assert_eq!(revoke[0]["actor"], admin);
    assert!(revoke[0]["detail"].as_str().unwrap().contains("alice"));
    let anonymous = find(&all, "authenticate", "denied");
    assert_eq!(anonymous[0]["actor"], "anonymous");
    // Order: refusal, grant, fetch, revoke.
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    assert!(seq(refused[0]) < seq(grant[0]));
    assert!(seq(grant[0]) < seq(fetched[0]));
    assert!(seq(fetched[0]) < seq(revoke[0]));
    // No secret in the log: the tokens' secret halves appear nowhere.
    let text = std::fs::read_to_string(bundle.join("entries.jsonl")).unwrap();
    for token in [&world.admin, &world.alice, &server.operator] {
        let secret = token.split_once('.').unwrap().1;
        assert!(!text.contains(secret));
    }

    // A later export since the checkpoint kept from this one continues it, and verifies
    // against it.
    let kept = tempfile::tempdir().unwrap();
    let prev = kept.path().join("prev.txt");
    let size = all.len();
    let note = std::fs::read(bundle.join(format!("checkpoints/{size}.txt"))).unwrap();
    std::fs::write(&prev, note).unwrap();
    server.ok(&server.operator, &["vendor", "ls"]);
    let (_tmp2, later) = export(server, Some(&prev));
    let prev_arg = prev.to_str().unwrap();
    let (code, report) = verify(&later, &key, &["--previous", prev_arg]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["first"], size);
    assert!(report["entries"].as_u64().unwrap() >= 2, "{report}");
    assert!(later.join("proofs/prefix.txt").exists());
    // The full export verifies against the kept checkpoint too.
    let (code, _) = verify(&bundle, &key, &["--previous", prev_arg]);
    assert_eq!(code, 0);
    // Another key under the same name: the first checkpoint is named as not verifying.
    let origin = key.split('+').next().unwrap();
    let (other, _) = crypto::sign::SigningKey::generate().unwrap();
    let other = audit::checkpoint::VerifierKey::new(origin, other.public_key())
        .unwrap()
        .to_string();
    let (code, report) = verify(&bundle, &other, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("checkpoints/"),
        "{report}"
    );
    let (code, report) = verify(&bundle, "custody/audit/x+00000000+AQ==", &[]);
    assert_eq!(code, 2, "a malformed key is unusable input: {report}");
    let (code, report) = verify(Path::new("/nonexistent"), &key, &[]);
    assert_eq!(code, 2, "{report}");

    // The single-entry routes agree with the bundle.
    let proof = server.ok(&server.operator, &["audit", "inclusion", "3", "--json"]);
    let proof: Value = serde_json::from_str(proof.trim()).unwrap();
    assert_eq!(proof["index"], 3);
    assert!(proof["proof"].as_array().unwrap().len() >= 2);
    let lines = server.ok(&server.operator, &["audit", "entries", "0", "2"]);
    let first_two: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(lines.lines().collect::<Vec<_>>(), first_two);
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(crypto::hash::sha256(bytes))
}

#[test]
fn an_entry_edited_in_the_database_is_named_by_verify() {
    let world = World::new();
    let server = &world.server;
    let key = log_key(server);
    let kept = tempfile::tempdir().unwrap();
    let signed = save_checkpoint(server, &kept.path().join("cp.txt"));
    assert!(signed >= 5, "vendor, tokens, host: {signed}");
    let (_t, bundle) = export(server, None);
    assert_eq!(verify(&bundle, &key, &[]).0, 0);

    // Someone with the database rewrites who created the vendor (entry 0 or so), keeping
    // valid JSON and the right seq. The stored tree is untouched, as an attacker who does not
    // know about it would leave it.
    let db = db_path(server);
    let all = entries(&bundle);
    let victim = all
        .iter()
        .position(|e| e["action"] == "vendor.create")
        .unwrap() as i64;
    edit_entry(&db, victim, |e| {
        e.replace("root-operator", "someone-else-xyz")
    });

    let (_t2, tampered) = export(server, None);
    let (code, report) = verify(&tampered, &key, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["entry"], victim, "{report}");
    let problem = report["problem"].as_str().unwrap();
    assert!(problem.contains(&format!("entry {victim}")), "{problem}");
    assert!(problem.contains("changed"), "{problem}");
    // Without the stored leaf hashes, the checkpoint covering it still fails.
    std::fs::remove_file(tampered.join("proofs/leaves.bin")).unwrap();
    let manifest = std::fs::read_to_string(tampered.join("manifest.sha256")).unwrap();
    let manifest: String = manifest
        .lines()
        .filter(|l| !l.ends_with("proofs/leaves.bin"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tampered.join("manifest.sha256"), manifest).unwrap();
    let (code, report) = verify(&tampered, &key, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(report["checkpoint"].as_str().is_some(), "{report}");

    // An entry edited after the last checkpoint: the server refuses to sign over it.
    server.ok(&server.operator, &["vendor", "ls"]);
    let size: i64 = server
        .ok(&server.operator, &["audit", "checkpoint"])
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    edit_entry(&db, size, |e| e.replace("\"ok\"", "\"denied\""));
    let run = server.custody(&server.operator, &["audit", "checkpoint", "--sign"]);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains(&format!("audit entry {size} differs from the leaf")),
        "{}",
        run.stderr
    );
    assert!(server.log().contains("REFUSING TO SIGN"));
}

#[test]
fn a_truncated_log_fails_against_the_previous_checkpoint() {
    let world = World::new();
    let server = &world.server;
    let key = log_key(server);
    let kept = tempfile::tempdir().unwrap();
    let early = save_checkpoint(server, &kept.path().join("early.txt"));
    for i in 0..4 {
        server.token("committer", None, &format!("u{i}"));
    }
    let prev = kept.path().join("prev.txt");
    let size = save_checkpoint(server, &prev);

    // Remove the last three entries consistently everywhere in the database: entries, tree,
    // checkpoints and counters, so the database is a valid, shorter log on its own.
    let cut = size - 3;
    assert!(cut > early);
    let db = db_path(server);
    sql(
        &db,
        &[
            &format!("DELETE FROM audit_log WHERE seq >= {cut}"),
            &format!("DELETE FROM audit_checkpoints WHERE size > {cut}"),
            &format!("UPDATE audit_head SET next_seq = {cut}, tree_size = {cut} WHERE id = 1"),
            // Subtrees reaching past the cut: node (level, idx) covers [idx << level, (idx + 1) << level).
            &format!("DELETE FROM audit_tree WHERE ((idx + 1) << level) > {cut}"),
        ],
    );
    // The server will not sign the shorter log (it kept the last checkpoint beside its key),
    // but the database alone is consistent: the export verifies on its own, and only the
    // auditor's kept checkpoint shows the cut.
    let run = server.custody(&server.operator, &["audit", "checkpoint", "--sign"]);
    assert!(!run.success);
    assert!(run.stderr.contains("restored"), "{}", run.stderr);
    let (_t, bundle) = export(server, None);
    let (code, report) = verify(&bundle, &key, &[]);
    assert_eq!(code, 0, "{report}");
    let prev_arg = prev.to_str().unwrap();
    let (code, report) = verify(&bundle, &key, &["--previous", prev_arg]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("log truncated"),
        "{report}"
    );
    // Exporting since the kept checkpoint says so too.
    let run = server.custody(
        &server.operator,
        &[
            "audit",
            "export",
            "--out",
            kept.path().join("b").to_str().unwrap(),
            "--since",
            prev_arg,
        ],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
}

/// A configuration file that signs checkpoints every second.
fn fast_config(data: &tempfile::TempDir) -> PathBuf {
    let path = data.path().join("custody.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\ncheckpoint_interval_secs = 1\n",
            data.path().join("custody")
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_restored_database_makes_the_server_refuse_to_sign() {
    let data = tempfile::tempdir().unwrap();
    let config = fast_config(&data);
    let config = config.to_str().unwrap().to_owned();
    let server = TestServer::start_with(data, &["--config", &config]);
    let operator = server.operator.clone();
    server.create_vendor("acme");
    // The periodic checkpointer signs without being asked.
    wait_for(30, "a periodic checkpoint", || {
        server.custody(&operator, &["audit", "checkpoint"]).success
    });
    let key = log_key(&server);
    let kept = tempfile::tempdir().unwrap();
    let old = kept.path().join("old.txt");
    save_checkpoint(&server, &old);

    // A backup of the database, taken while the server is stopped.
    let data = server.stop();
    let db_dir = data.path().join("custody/db");
    let backup = kept.path().join("db-backup");
    copy_dir(&db_dir, &backup);

    // Life goes on: more entries, a newer checkpoint.
    let mut server = TestServer::start_with(data, &["--config", &config]);
    server.operator = operator.clone();
    server.create_vendor("beta");
    server.token("committer", None, "carol");
    let newer = kept.path().join("newer.txt");
    let newer_size = save_checkpoint(&server, &newer);

    // The database is restored from the backup.
    let data = server.stop();
    std::fs::remove_dir_all(&db_dir).unwrap();
    copy_dir(&backup, &db_dir);
    let mut server = TestServer::start_with(data, &["--config", &config]);
    server.operator = operator.clone();

    // The server refuses to sign, says why, and keeps saying it.
    let run = server.custody(&operator, &["audit", "checkpoint", "--sign"]);
    assert!(!run.success);
    assert!(run.stderr.contains("refusing to sign"), "{}", run.stderr);
    assert!(run.stderr.contains("restored"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&newer_size.to_string()),
        "{}",
        run.stderr
    );
    wait_for(30, "the periodic checkpointer's refusal in the log", || {
        server.log().matches("REFUSING TO SIGN").count() >= 2
    });
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("REFUSING TO SIGN"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    let status = server.ok(&operator, &["audit", "checkpoint", "--json"]);
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert!(
        status["refusal"].as_str().unwrap().contains("restored"),
        "{status}"
    );

    // Even once the restored log has grown past the old size, the fork is refused.
    for i in 0..(newer_size as usize + 2) {
        server.token("committer", None, &format!("u{i}"));
    }
    let run = server.custody(&operator, &["audit", "checkpoint", "--sign"]);
    assert!(!run.success);
    assert!(run.stderr.contains("not an extension"), "{}", run.stderr);

    // An auditor holding the newer checkpoint sees the rewrite in any export.
    let (_t, bundle) = export(&server, None);
    let (code, report) = verify(&bundle, &key, &["--previous", newer.to_str().unwrap()]);
    assert_eq!(code, 1, "{report}");
    let (code, report) = verify(&bundle, &key, &["--previous", old.to_str().unwrap()]);
    assert_eq!(code, 0, "the old checkpoint is still a prefix: {report}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn an_encrypted_bundle_opens_only_with_the_identity() {
    let server = TestServer::start();
    server.create_vendor("secretive");
    let key = log_key(&server);
    let (identity, recipient) = crypto::age_file::generate();
    let (other, _) = crypto::age_file::generate();
    let keys = tempfile::tempdir().unwrap();
    let id_path = keys.path().join("auditor.key");
    std::fs::write(&id_path, identity.as_bytes()).unwrap();
    let other_path = keys.path().join("other.key");
    std::fs::write(&other_path, other.as_bytes()).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    server.ok(
        &server.operator,
        &[
            "audit",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--recipient",
            &recipient,
        ],
    );
    let files = list_files(&out);
    assert!(files.iter().all(|f| f.ends_with(".age")), "{files:?}");
    assert!(files.contains(&"entries.jsonl.age".to_owned()));
    let sealed = std::fs::read(out.join("entries.jsonl.age")).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("secretive"));

    assert_eq!(verify(&out, &key, &[]).0, 2, "no identity");
    let other_arg = other_path.to_str().unwrap();
    assert_eq!(verify(&out, &key, &["--identity", other_arg]).0, 2);
    let id_arg = id_path.to_str().unwrap();
    let (code, report) = verify(&out, &key, &["--identity", id_arg]);
    assert_eq!(code, 0, "{report}");
    // A bad recipient is refused before anything is written.
    let run = server.custody(
        &server.operator,
        &[
            "audit",
            "export",
            "--out",
            tmp.path().join("x").to_str().unwrap(),
            "--recipient",
            "age1bad",
        ],
    );
    assert!(!run.success);
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn vendor_roles_cannot_read_the_log() {
    let world = World::new();
    let server = &world.server;
    let auditor = server.admitted_token("auditor", "acme", "acme-auditor", &world.admin);
    for token in [&world.admin, &auditor, &world.alice] {
        for path in [
            "/v1/audit/key",
            "/v1/audit/checkpoint",
            "/v1/audit/entries?from=0&to=5",
            "/v1/audit/leaves?from=0&to=5",
            "/v1/audit/proof/inclusion?index=0&size=1",
            "/v1/audit/proof/consistency?old=0&new=1",
            "/v1/audit/edge?size=1",
            "/v1/audit/checkpoints",
        ] {
            let (status, body) = server.api(token, "GET", path, None);
            assert_eq!(status, 403, "{path}: {body}");
        }
        let (status, _) = server.api(token, "POST", "/v1/audit/checkpoint", None);
        assert_eq!(status, 403);
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = server.custody(
        &auditor,
        &[
            "audit",
            "export",
            "--out",
            tmp.path().join("b").to_str().unwrap(),
        ],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("forbidden"), "{}", run.stderr);
    // The refusals are in the log, with who asked.
    let (_t, bundle) = export(server, None);
    let all = entries(&bundle);
    let refused: Vec<_> = find(&all, "export-audit", "denied");
    assert!(refused.iter().any(|e| e["actor"] == "auditor:acme-auditor"));
    assert!(
        refused
            .iter()
            .any(|e| e["actor"] == "vendor-admin:acme-admin")
    );
    // Bad ranges are refused with a reason, not served.
    let (status, body) = server.api(
        &server.operator,
        "GET",
        "/v1/audit/proof/inclusion?index=5&size=999999",
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.api(
        &server.operator,
        "GET",
        "/v1/audit/entries?from=999999",
        None,
    );
    assert_eq!(status, 400);
}
