//! A vendor uploads a release; a granted committer fetches it back byte for byte.

use serde_json::Value;

use crate::support::*;

/// A model folder in Hugging Face layout with nested paths, an empty file and a shard over
/// 64 MiB (several parts, many segments, a partial last segment).
fn model_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("config.json"),
        br#"{"architectures":["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    write_data(&root.join("tokenizer/tokenizer.json"), 4321, 1);
    write_data(&root.join("nested/deeper/weights.bin"), (1 << 20) * 2, 2);
    write_data(
        &root.join("model-00001-of-00001.safetensors"),
        65 * (1 << 20) + 123,
        3,
    );
    dir
}

#[test]
fn upload_then_fetch_returns_identical_files() {
    let world = World::new();
    let src = model_folder();
    let commit = world.upload(src.path(), "acme/llama-9");
    world
        .server
        .ok(&world.admin, &["grant", "acme/llama-9", "--to", "alice"]);

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("m");
    let stdout = world.server.ok(
        &world.alice,
        &[
            "fetch",
            "acme/llama-9",
            "--out",
            target.to_str().unwrap(),
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["commit"], commit.as_str());

    let expected = list_files(src.path());
    assert_eq!(
        list_files(&target),
        expected,
        "fetched a different set of files"
    );
    for file in &expected {
        assert_same_file(&src.path().join(file), &target.join(file));
    }

    // The same revision by its commit id, into another folder.
    let again = out.path().join("by-commit");
    world.server.ok(
        &world.alice,
        &[
            "fetch",
            &format!("acme/llama-9@{commit}"),
            "--out",
            again.to_str().unwrap(),
        ],
    );
    assert_same_file(
        &src.path().join("model-00001-of-00001.safetensors"),
        &again.join("model-00001-of-00001.safetensors"),
    );
}

#[test]
fn listing_shows_models_and_revisions() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let first = world.upload(src.path(), "acme/m1");
    std::fs::write(src.path().join("config.json"), b"{\"v\":2}").unwrap();
    let second = world.upload(src.path(), "acme/m1");
    assert_ne!(first, second, "a new upload must be a new revision");

    let models = world.server.ok(&world.admin, &["ls", "acme"]);
    assert!(
        models.contains("acme/m1") && models.contains(&second),
        "{models}"
    );
    let revisions = world.server.ok(&world.admin, &["ls", "acme/m1"]);
    let order: Vec<&str> = revisions.lines().map(|l| &l[..40]).collect();
    assert_eq!(order, [second.as_str(), first.as_str()], "newest first");

    // `main` is the newest revision; the older one stays fetchable and unchanged.
    world
        .server
        .ok(&world.admin, &["grant", "acme/m1", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    let old = out.path().join("old");
    world.server.ok(
        &world.alice,
        &[
            "fetch",
            &format!("acme/m1@{first}"),
            "--out",
            old.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(old.join("config.json")).unwrap(), b"{}");
    let new = out.path().join("new");
    world.server.ok(
        &world.alice,
        &["fetch", "acme/m1", "--out", new.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(new.join("config.json")).unwrap(),
        b"{\"v\":2}"
    );
}

#[test]
fn a_restarted_server_keeps_its_data_and_keys() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("w.bin"), 3 << 20, 9);
    world.upload(src.path(), "acme/keep");
    world
        .server
        .ok(&world.admin, &["grant", "acme/keep", "--to", "alice"]);
    let World { server, alice, .. } = world;
    let host = server.host.clone();
    let data = server.stop();

    let mut server = TestServer::start_with(data, &[]);
    server.host = host;
    assert!(
        server.operator.is_empty(),
        "the bootstrap token must be shown only once"
    );
    let out = tempfile::tempdir().unwrap();
    server.ok(
        &alice,
        &["fetch", "acme/keep", "--out", out.path().to_str().unwrap()],
    );
    assert_same_file(&src.path().join("w.bin"), &out.path().join("w.bin"));
}

#[test]
fn server_prints_its_fingerprint_and_plaintext_never_reaches_its_disk() {
    let world = World::new();
    let line = world
        .server
        .stdout
        .iter()
        .find(|l| l.contains("fingerprint"))
        .cloned()
        .unwrap();
    assert!(line.contains("SHA256:"), "{line}");

    let src = tempfile::tempdir().unwrap();
    let marker = b"PLAINTEXT-MARKER-7f3a9c";
    let mut content = marker.repeat(1000);
    content.extend_from_slice(b"config");
    std::fs::write(src.path().join("secret-name-config.json"), &content).unwrap();
    world.upload(src.path(), "acme/secret-model");

    // No stored byte, and no file name under the data directory, gives the content or the
    // names away.
    for path in list_files(&world.server.data_dir()) {
        assert!(
            !path.contains("secret"),
            "a vendor, model or file name leaked into a path: {path}"
        );
        let bytes = std::fs::read(world.server.data_dir().join(&path)).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext found in {path}"
        );
    }
}
