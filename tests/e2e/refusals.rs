//! Bad input is refused with a clear error and leaves nothing behind.

use serde_json::{Value, json};

use crate::support::*;

fn manifest(paths: &[&str]) -> Value {
    let files: Vec<Value> = paths
        .iter()
        .map(|p| json!({ "path": p, "size": 1, "sha256": "0".repeat(64) }))
        .collect();
    json!({ "message": "m", "files": files })
}

/// Asserts the model has no revision (or does not exist at all).
fn assert_no_revision(world: &World, model: &str) {
    let (status, body) = world.server.api(
        &world.admin,
        "GET",
        &format!("/v1/models/acme/{model}"),
        None,
    );
    if status == 200 {
        assert_eq!(body["revisions"], json!([]), "{body}");
    } else {
        assert_eq!(status, 404, "{body}");
    }
}

#[test]
fn the_server_refuses_unsafe_manifests() {
    let world = World::new();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["../escape"], "invalid_path", "'..'"),
        (&["a/../../escape"], "invalid_path", "'..'"),
        (&["/etc/passwd"], "invalid_path", "absolute"),
        (&["a\u{0}b"], "invalid_path", "control character"),
        (&["line\nbreak"], "invalid_path", "control character"),
        (&["tab\there"], "invalid_path", "control character"),
        (&["a//b"], "invalid_path", "empty segment"),
        (&["dir\\file"], "invalid_path", "backslash"),
        (
            &["same.json", "same.json"],
            "duplicate_path",
            "more than once",
        ),
        (
            &["Same.json", "same.json"],
            "duplicate_path",
            "more than once",
        ),
        (&["a", "a/b"], "path_conflict", "both a file and a folder"),
        (&[], "empty_upload", "no files"),
    ];
    for (paths, code, fragment) in cases {
        let (status, body) = world.server.api(
            &world.admin,
            "POST",
            "/v1/models/acme/refused/uploads",
            Some(manifest(paths)),
        );
        assert_eq!(status, 400, "{paths:?}: {body}");
        assert_eq!(body["error"]["code"], *code, "{paths:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{paths:?}: {message}");
    }
    assert_no_revision(&world, "refused");
}

#[test]
fn the_server_refuses_bad_model_names() {
    let world = World::new();
    for (path, fragment) in [
        ("/v1/models/acme/bad%20name/uploads", "may only contain"),
        ("/v1/models/acme/.hidden/uploads", "may only contain"),
        ("/v1/models/acme/a..b/uploads", "contains '--' or '..'"),
        ("/v1/models/acme/a--b/uploads", "contains '--' or '..'"),
        ("/v1/models/ACME%0A/x/uploads", "may only contain"),
    ] {
        let (status, body) =
            world
                .server
                .api(&world.admin, "POST", path, Some(manifest(&["config.json"])));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_name");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(fragment),
            "{body}"
        );
    }
}

#[test]
fn the_cli_refuses_bad_names_before_sending_anything() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let dir = src.path().to_str().unwrap();
    for (name, fragment) in [
        ("acme", "VENDOR/MODEL"),
        ("acme/a/b", "VENDOR/MODEL"),
        ("acme/..x", "may only contain"),
        ("../x", "may only contain"),
        ("acme/has space", "may only contain"),
        ("acme/", "must not be empty"),
    ] {
        let run = world.server.custody(&world.admin, &["upload", dir, name]);
        assert!(!run.success, "{name}");
        assert!(run.stderr.contains(fragment), "{name}: {}", run.stderr);
    }

    // A file whose name holds a control character cannot be uploaded.
    std::fs::write(src.path().join("bad\nname"), b"x").unwrap();
    let run = world
        .server
        .custody(&world.admin, &["upload", dir, "acme/ctl"]);
    assert!(!run.success);
    assert!(run.stderr.contains("control character"), "{}", run.stderr);
    assert_no_revision(&world, "ctl");
}

#[test]
fn wrong_bytes_are_refused_and_an_unfinished_upload_makes_no_revision() {
    let world = World::new();
    let s = &world.server;
    let content = b"hello weights".to_vec();
    let sha = {
        let mut h = crypto::hash::Sha256::new();
        h.update(&content);
        hex::encode(h.finish())
    };
    let body = json!({ "files": [
        { "path": "a.bin", "size": content.len(), "sha256": sha },
        { "path": "b.bin", "size": content.len(), "sha256": sha },
    ]});
    let (status, session) = s.api(
        &world.admin,
        "POST",
        "/v1/models/acme/partial/uploads",
        Some(body),
    );
    assert_eq!(status, 201, "{session}");
    let id = session["upload_id"].as_str().unwrap();

    // Different bytes of the right length: the digest check refuses them.
    let (status, err) = s.put_bytes(
        &world.admin,
        &format!("/v1/uploads/{id}/files/0"),
        b"hello WEIGHTS".to_vec(),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("digest_mismatch")),
        "{err}"
    );
    // Too few and too many bytes.
    let (status, err) = s.put_bytes(
        &world.admin,
        &format!("/v1/uploads/{id}/files/0"),
        b"hello".to_vec(),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("size_mismatch")),
        "{err}"
    );
    let (status, err) = s.put_bytes(
        &world.admin,
        &format!("/v1/uploads/{id}/files/0"),
        [content.clone(), b"!".to_vec()].concat(),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("size_mismatch")),
        "{err}"
    );

    // One file right, the other never sent: the commit is refused.
    let (status, _) = s.put_bytes(
        &world.admin,
        &format!("/v1/uploads/{id}/files/0"),
        content.clone(),
    );
    assert_eq!(status, 200);
    let (status, err) = s.put_bytes(
        &world.admin,
        &format!("/v1/uploads/{id}/files/0"),
        content.clone(),
    );
    assert_eq!(status, 409, "a stored file is not replaced: {err}");
    let (status, err) = s.api(
        &world.admin,
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        None,
    );
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 of 2 files"),
        "{err}"
    );
    assert_no_revision(&world, "partial");

    // Another user cannot touch the session.
    let other = s.admitted_token("vendor-admin", "acme", "second-admin", &world.admin);
    let (status, _) = s.put_bytes(
        &other,
        &format!("/v1/uploads/{id}/files/1"),
        content.clone(),
    );
    assert_eq!(status, 404);

    // Refused attempts left no parts behind in storage.
    let uploads = list_files(&s.data_dir().join("blobs/uploads"));
    assert!(uploads.is_empty(), "leftover parts: {uploads:?}");
}
