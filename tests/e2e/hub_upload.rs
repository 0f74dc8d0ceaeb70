//! Vendors pushing with the real `huggingface_hub` client (from the test venv) straight to the
//! server: `HF_ENDPOINT` is custody, `HF_TOKEN` a vendor admin's token, the server's CA in
//! `SSL_CERT_FILE`, and `HF_HUB_DISABLE_XET=1`.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::hub::{
    Agent, Hf, assert_same_tree, client_error, grant, ok_path, script, venv, write_model,
};
use crate::support::*;

/// A vendor's (or anyone's) Hugging Face set-up pointed straight at the server.
fn pusher(server: &TestServer, token: &str) -> Hf {
    let mut hf = Hf::new(&server.url, token);
    hf.ca = Some(server.ca.clone());
    hf
}

/// Runs `hub_client.py` with `HF_HUB_DISABLE_XET=1` (or without, when `xet`).
fn push(hf: &Hf, xet: bool, args: &[&str]) -> Value {
    let mut command = hf.command(&venv().join("bin/python"));
    if !xet {
        command.env("HF_HUB_DISABLE_XET", "1");
    }
    let out = command.arg(script()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "hub_client.py {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn commit_of(v: &Value) -> String {
    let commit = v["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("the client failed: {v:#}"))
        .to_owned();
    assert_eq!(commit.len(), 40, "{v:#}");
    commit
}

/// `main` as the native API names it.
fn head(world: &World, model: &str) -> Option<String> {
    let (status, info) =
        world
            .server
            .api(&world.admin, "GET", &format!("/v1/models/{model}"), None);
    assert_eq!(status, 200, "{info}");
    info["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["derived_from"].is_null())
        .max_by_key(|r| r["seq"].as_u64())
        .map(|r| r["commit"].as_str().unwrap().to_owned())
}

/// The vendor's audit events with this action.
fn events(world: &World, action: &str) -> Vec<Value> {
    let (status, activity) = world.server.api(
        &world.admin,
        "GET",
        "/v1/vendors/acme/activity?limit=1000",
        None,
    );
    assert_eq!(status, 200, "{activity}");
    activity["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// `custody fetch` of `model` by alice on the world's host.
fn fetch(world: &World, model: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("m");
    world.server.ok(
        &world.alice,
        &["fetch", model, "--out", target.to_str().unwrap()],
    );
    std::fs::rename(&target, out.path().join("fetched")).unwrap();
    out
}

#[test]
fn upload_folder_makes_revisions_that_fetch_and_snapshot_download_return_byte_identical() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    let created = push(&hf, false, &["create", "acme/llama-9"]);
    assert_eq!(created["repo_id"], "acme/llama-9", "{created:#}");
    // Running the script again (exist_ok=True) is fine; strict creation says it exists.
    assert_eq!(
        push(&hf, false, &["create", "acme/llama-9"])["repo_id"],
        "acme/llama-9"
    );
    let again = push(&hf, false, &["create", "acme/llama-9", "strict"]);
    assert!(
        client_error(&again, "HfHubHTTPError").contains("already exists"),
        "{again:#}"
    );

    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), (65 << 20) + 3);
    let marker = b"HUB-PLAINTEXT-MARKER-51c2";
    std::fs::write(src.path().join("extra/marker.txt"), marker.repeat(500)).unwrap();
    let first = commit_of(&push(
        &hf,
        false,
        &[
            "upload_folder",
            "acme/llama-9",
            src.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(
        head(&world, "acme/llama-9").as_deref(),
        Some(first.as_str())
    );

    // Committers fetch it like any model: `custody fetch`, and the Hugging Face client through
    // the agent, byte for byte.
    world
        .server
        .ok(&world.admin, &["host", "allow", "acme/llama-9", "gpu"]);
    grant(&world, "acme/llama-9", "alice");
    let fetched = fetch(&world, "acme/llama-9");
    assert_same_tree(&fetched.path().join("fetched"), src.path());
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let committer = Hf::new(&agent.url, &world.alice);
    let snapshot = ok_path(&committer.py(&["snapshot", "acme/llama-9"]));
    assert!(
        snapshot.ends_with(format!("snapshots/{first}")),
        "{}",
        snapshot.display()
    );
    assert_same_tree(&snapshot, src.path());

    // A second upload: a new revision, `main` moves, the client sees it.
    std::fs::write(src.path().join("config.json"), br#"{"hidden":16}"#).unwrap();
    std::fs::write(src.path().join("extra/new.txt"), b"added later\n").unwrap();
    let second = commit_of(&push(
        &hf,
        false,
        &[
            "upload_folder",
            "acme/llama-9",
            src.path().to_str().unwrap(),
            "second",
        ],
    ));
    assert_ne!(second, first);
    assert_eq!(
        head(&world, "acme/llama-9").as_deref(),
        Some(second.as_str())
    );
    let snapshot = ok_path(&committer.py(&["snapshot", "acme/llama-9"]));
    assert!(
        snapshot.ends_with(format!("snapshots/{second}")),
        "{}",
        snapshot.display()
    );
    assert_same_tree(&snapshot, src.path());
    // The first revision is still there, unchanged.
    let (status, old) = world.server.api(
        &world.admin,
        "GET",
        &format!("/v1/models/acme/llama-9/revisions/{first}"),
        None,
    );
    assert_eq!(status, 200, "{old}");
    assert!(!old.to_string().contains("new.txt"), "{old}");

    // In the log, as `custody upload` leaves it: the model's creation, and each commit with
    // its files.
    assert_eq!(events(&world, "model.create").len(), 1);
    let commits = events(&world, "upload.commit");
    let ok: Vec<&Value> = commits.iter().filter(|e| e["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 2, "{commits:#?}");
    assert!(ok[0]["resource"].as_str().unwrap().ends_with(&first));
    assert_eq!(ok[0]["files"], 7);
    assert_eq!(ok[1]["files"], 8);

    // No plaintext under the data directory: not the shard, not a small file.
    let shard = std::fs::read(src.path().join("model-00001-of-00002.safetensors")).unwrap();
    let probe = &shard[(40 << 20)..(40 << 20) + 64];
    for path in list_files(&world.server.data_dir()) {
        let bytes = std::fs::read(world.server.data_dir().join(&path)).unwrap();
        for needle in [&marker[..], probe] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext found in {path}"
            );
        }
    }
}

#[test]
fn create_commit_upload_file_and_hf_upload_change_main_and_a_stale_parent_is_refused() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    push(&hf, false, &["create", "acme/m"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("old")).unwrap();
    std::fs::write(dir.path().join("old/a.txt"), b"a").unwrap();
    std::fs::write(dir.path().join("old/b.txt"), b"b").unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"keep").unwrap();
    write_data(&dir.path().join("big.bin"), (12 << 20) + 5, 9);
    // `hf upload`, the command vendors run by hand.
    let cli = hf.command(&venv().join("bin/hf"));
    let out = Run::from(
        {
            let mut c = cli;
            c.env("HF_HUB_DISABLE_XET", "1").args([
                "upload",
                "acme/m",
                dir.path().to_str().unwrap(),
            ]);
            c
        }
        .output()
        .unwrap(),
    );
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let first = head(&world, "acme/m").unwrap();

    // One commit of several operations: add (inline and LFS), delete a file and a folder.
    let local = dir.path().join("weights.bin");
    write_data(&local, (11 << 20) + 1, 4);
    let second = commit_of(&push(
        &hf,
        false,
        &[
            "commit",
            "acme/m",
            "text:notes/readme.txt:hello",
            &format!("add:weights.bin:{}", local.display()),
            "delete:keep.txt",
            "deletefolder:old",
            &format!("parent:{first}"),
        ],
    ));
    let (_, revision) = world.server.api(
        &world.admin,
        "GET",
        &format!("/v1/models/acme/m/revisions/{second}"),
        None,
    );
    let mut paths: Vec<String> = revision["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["big.bin", "notes/readme.txt", "weights.bin"],
        "{revision:#}"
    );

    // `upload_file` adds one file and keeps the rest.
    let third = commit_of(&push(
        &hf,
        false,
        &[
            "upload_file",
            "acme/m",
            local.to_str().unwrap(),
            "copy/weights.bin",
        ],
    ));
    assert_eq!(head(&world, "acme/m").as_deref(), Some(third.as_str()));

    // A commit made on an old head is refused, and `main` stays.
    let stale = push(
        &hf,
        false,
        &[
            "commit",
            "acme/m",
            "text:x.txt:x",
            &format!("parent:{second}"),
        ],
    );
    let message = client_error(&stale, "HfHubHTTPError");
    assert!(message.contains("main is at"), "{message}");
    assert_eq!(head(&world, "acme/m").as_deref(), Some(third.as_str()));
    // Deleting what is not there is the Hub's "entry not found".
    let missing = push(&hf, false, &["commit", "acme/m", "delete:nothing.txt"]);
    client_error(&missing, "RemoteEntryNotFoundError");
    // Both refusals are in the log.
    let refused = events(&world, "upload.commit")
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .count();
    assert_eq!(refused, 2);
    // Paths are checked as `custody upload` checks them.
    let bad = push(
        &hf,
        false,
        &["commit", "acme/m", "text:A/x.txt:1", "text:a/X.txt:2"],
    );
    assert!(
        client_error(&bad, "BadRequestError").contains("more than once"),
        "{bad:#}"
    );
}

#[test]
fn committers_auditors_and_other_vendors_cannot_create_or_upload() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    push(&hf, false, &["create", "acme/m"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let first = commit_of(&push(
        &hf,
        false,
        &["upload_folder", "acme/m", src.path().to_str().unwrap()],
    ));
    let auditor = world
        .server
        .admitted_token("auditor", "acme", "acme-auditor", &world.admin);
    world.server.create_vendor("globex");
    let globex = world
        .server
        .token("vendor-admin", Some("globex"), "globex-admin");
    std::fs::write(src.path().join("config.json"), b"{\"evil\":1}").unwrap();

    // A committer of acme (one with a grant) is told why; one without sees no such
    // repository, as for every model it may not see.
    let outsider = world.server.token("committer", None, "bob");
    let upload = push(
        &pusher(&world.server, &outsider),
        false,
        &["upload_folder", "acme/m", src.path().to_str().unwrap()],
    );
    client_error(&upload, "RepositoryNotFoundError");
    grant(&world, "acme/m", "alice");
    for (who, token, refusal) in [
        (
            "committer",
            &world.alice,
            "only a vendor admin of acme uploads",
        ),
        ("auditor", &auditor, "only a vendor admin of acme uploads"),
    ] {
        let hf = pusher(&world.server, token);
        let create = push(&hf, false, &["create", "acme/other"]);
        let message = client_error(&create, "HfHubHTTPError");
        assert!(
            message.contains("403 Forbidden") && message.contains(refusal),
            "{who}: {message}"
        );
        let upload = push(
            &hf,
            false,
            &["upload_folder", "acme/m", src.path().to_str().unwrap()],
        );
        let message = client_error(&upload, "HfHubHTTPError");
        assert!(message.contains(refusal), "{who}: {message}");
    }
    // Another vendor's admin finds no such repository to write to.
    let hf = pusher(&world.server, &globex);
    let create = push(&hf, false, &["create", "acme/other"]);
    client_error(&create, "RepositoryNotFoundError");
    let upload = push(
        &hf,
        false,
        &["upload_folder", "acme/m", src.path().to_str().unwrap()],
    );
    client_error(&upload, "RepositoryNotFoundError");
    // Its own namespace works.
    push(&hf, false, &["create", "globex/mine"]);

    assert_eq!(head(&world, "acme/m").as_deref(), Some(first.as_str()));
    let models = world.server.ok(&world.admin, &["ls", "acme"]);
    assert!(!models.contains("other"), "{models}");
    // The refusals are in the log.
    assert!(
        events(&world, "upload")
            .iter()
            .filter(|e| e["outcome"] == "denied")
            .count()
            >= 4
    );
}

#[test]
fn upload_urls_work_only_with_their_key_and_for_the_right_upload() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    push(&hf, false, &["create", "acme/m"]);
    let payload = vec![7u8; (9 << 20) + 3];
    let oid = hex::encode({
        let mut h = crypto::hash::Sha256::new();
        h.update(&payload);
        h.finish()
    });
    let batch = serde_json::json!({
        "operation": "upload",
        "transfers": ["basic", "multipart"],
        "objects": [{"oid": oid, "size": payload.len()}],
        "hash_algo": "sha256",
    });
    let (status, answer) = world.server.api(
        &world.admin,
        "POST",
        "/acme/m.git/info/lfs/objects/batch",
        Some(batch.clone()),
    );
    assert_eq!(status, 200, "{answer}");
    let upload = &answer["objects"][0]["actions"]["upload"];
    let part1 = upload["header"]["1"].as_str().unwrap().to_owned();
    assert_eq!(upload["header"]["chunk_size"], (8 << 20).to_string());
    let client = https_client(&world.server.ca);
    let rt = runtime();
    let put = |url: &str, body: Vec<u8>| {
        rt.block_on(async {
            client
                .put(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // A key changed by one character, or the URL of another upload: nothing is stored.
    let key_at = part1.rfind("/api/lfs-upload/").unwrap() + "/api/lfs-upload/".len() + 33;
    let mut forged = part1.clone();
    let c = if &forged[key_at..key_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    forged.replace_range(key_at..key_at + 1, c);
    assert_eq!(put(&forged, payload[..8 << 20].to_vec()), 404);
    // A new batch hands out a new key: the old URLs stop working.
    let (_, again) = world.server.api(
        &world.admin,
        "POST",
        "/acme/m.git/info/lfs/objects/batch",
        Some(batch),
    );
    let new_part1 = again["objects"][0]["actions"]["upload"]["header"]["1"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_part1, part1);
    assert_eq!(put(&part1, payload[..8 << 20].to_vec()), 404);
    // Once the token that asked for them is revoked, the URLs store nothing either.
    assert_eq!(put(&new_part1, payload[..8 << 20].to_vec()), 200);
    let (_, tokens) = world
        .server
        .api(&world.server.operator, "GET", "/v1/tokens", None);
    let admin_id = world.admin.split('.').next().unwrap();
    assert!(tokens.to_string().contains(admin_id));
    world
        .server
        .ok(&world.server.operator, &["token", "revoke", admin_id]);
    let part2 = new_part1.replace("/parts/1", "/parts/2");
    assert_eq!(put(&part2, payload[8 << 20..].to_vec()), 401);
    // The refused guesses are in the log.
    let entries = rt.block_on(async {
        client
            .get(format!("{}/v1/audit/entries", world.server.url))
            .bearer_auth(&world.server.operator)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        entries.contains("invalid or expired upload URL"),
        "{entries}"
    );
}

#[test]
fn an_upload_killed_mid_file_completes_when_run_again() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    push(&hf, false, &["create", "acme/m"]);
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), (65 << 20) + 3);
    let blobs = world.server.data_dir().join("blobs");

    // Killed once the server holds part of the shard.
    let mut child: Child = {
        let mut c = hf.command(&venv().join("bin/python"));
        c.env("HF_HUB_DISABLE_XET", "1")
            .arg(script())
            .args(["upload_folder", "acme/m", src.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().unwrap()
    };
    let before = list_files(&blobs).len();
    wait_for(120, "the first stored part", || {
        list_files(&blobs).len() > before
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        head(&world, "acme/m"),
        None,
        "the upload finished before it was killed"
    );

    let commit = commit_of(&push(
        &hf,
        false,
        &["upload_folder", "acme/m", src.path().to_str().unwrap()],
    ));
    assert_eq!(head(&world, "acme/m").as_deref(), Some(commit.as_str()));
    world
        .server
        .ok(&world.admin, &["host", "allow", "acme/m", "gpu"]);
    grant(&world, "acme/m", "alice");
    let fetched = fetch(&world, "acme/m");
    assert_same_tree(&fetched.path().join("fetched"), src.path());
}

#[test]
fn without_disable_xet_the_client_says_to_set_it() {
    let world = World::new();
    let hf = pusher(&world.server, &world.admin);
    push(&hf, true, &["create", "acme/m"]);
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), (11 << 20) + 1);
    let refused = push(
        &hf,
        true,
        &["upload_folder", "acme/m", src.path().to_str().unwrap()],
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("HF_HUB_DISABLE_XET=1")),
        "{refused:#}"
    );
    assert_eq!(head(&world, "acme/m"), None);
    assert_eq!(events(&world, "upload.xet").len(), 1);
}
