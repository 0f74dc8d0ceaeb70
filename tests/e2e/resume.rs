//! Interrupted transfers continue where they stopped; abandoned uploads leave nothing behind.

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn an_interrupted_upload_resumes_without_resending_stored_parts() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    let size = 256u64 << 20;
    write_data(&src.path().join("shard.safetensors"), size, 11);
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let dir = src.path().to_str().unwrap();

    // Kill the client once the server has stored a few parts.
    let uploads = world.server.data_dir().join("blobs/uploads");
    let mut child = world
        .server
        .spawn_custody(&world.admin, &["upload", dir, "acme/resumed"]);
    wait_for(120, "stored parts", || {
        list_files(&uploads)
            .iter()
            .filter(|p| !p.ends_with(".tmp"))
            .count()
            >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, info) = world
        .server
        .api(&world.admin, "GET", "/v1/models/acme/resumed", None);
    assert_eq!(
        info["revisions"],
        json!([]),
        "an interrupted upload made a revision"
    );

    let out = world
        .server
        .ok(&world.admin, &["upload", dir, "acme/resumed", "--json"]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let sent = report["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size,
        "the second run re-sent everything ({sent} bytes)"
    );
    assert!(sent > 0);

    world
        .server
        .ok(&world.admin, &["grant", "acme/resumed", "--to", "alice"]);
    world
        .server
        .ok(&world.admin, &["host", "allow", "acme/resumed", "gpu"]);
    let fetched = tempfile::tempdir().unwrap();
    world.server.ok(
        &world.alice,
        &[
            "fetch",
            "acme/resumed",
            "--out",
            fetched.path().to_str().unwrap(),
        ],
    );
    assert_same_file(
        &src.path().join("shard.safetensors"),
        &fetched.path().join("shard.safetensors"),
    );
    assert!(
        list_files(&uploads).is_empty(),
        "parts left behind after commit"
    );
}

#[test]
fn an_interrupted_fetch_resumes_and_verifies_the_whole_file() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    let size = (200u64 << 20) + 12345;
    write_data(&src.path().join("big.bin"), size, 12);
    world.upload(src.path(), "acme/refetch");
    world
        .server
        .ok(&world.admin, &["grant", "acme/refetch", "--to", "alice"]);

    let out = tempfile::tempdir().unwrap();
    let target = out.path().to_str().unwrap();
    let state = out.path().join("big.bin.custody-partial.state");
    let mut child = world
        .server
        .spawn_custody(&world.alice, &["fetch", "acme/refetch", "--out", target]);
    wait_for(120, "a finished range", || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["done"].as_array().is_some_and(|d| d.len() >= 2))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.path().join("big.bin").exists(),
        "an unfinished file was put in place"
    );

    let report = world.server.ok(
        &world.alice,
        &["fetch", "acme/refetch", "--out", target, "--json"],
    );
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    let received = report["bytes_received"].as_u64().unwrap();
    assert!(received < size, "the second run fetched everything again");
    assert_same_file(&src.path().join("big.bin"), &out.path().join("big.bin"));
    assert_eq!(
        list_files(out.path()),
        ["big.bin"],
        "partial or state files left behind"
    );
}

#[test]
fn abandoned_uploads_expire_and_their_parts_are_removed() {
    let data = tempfile::tempdir().unwrap();
    let world = World::on(TestServer::start_with(data, &["--upload-ttl-secs", "2"]));
    let s = &world.server;
    let small = b"finished file".to_vec();
    let big = vec![7u8; 10 << 20];
    let digest = |b: &[u8]| hex::encode(crypto::hash::sha256(b));
    let body = json!({ "files": [
        { "path": "small", "size": small.len(), "sha256": digest(&small) },
        { "path": "big", "size": big.len(), "sha256": digest(&big) },
    ]});
    let (status, session) = s.api(
        &world.admin,
        "POST",
        "/v1/models/acme/abandoned/uploads",
        Some(body),
    );
    assert_eq!(status, 201, "{session}");
    let id = session["upload_id"].as_str().unwrap().to_owned();
    let (status, _) = s.put_bytes(&world.admin, &format!("/v1/uploads/{id}/files/0"), small);
    assert_eq!(status, 200);

    // Send the first part of the big file, then cut the connection.
    let url = format!("{}/v1/uploads/{id}/files/1?offset=0", s.url);
    let (ca, token) = (s.ca.clone(), world.admin.clone());
    let first_part = big[..8 << 20].to_vec();
    runtime().block_on(async move {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(first_part), Err(std::io::Error::other("cable cut"))];
        let result = https_client(&ca)
            .put(url)
            .bearer_auth(token)
            .header("content-length", (10u64 << 20).to_string())
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await;
        assert!(result.is_err() || !result.unwrap().status().is_success());
    });
    let blobs = s.data_dir().join("blobs");
    // Whether the cut request's part landed depends on when the client gave up; the finished
    // file's object is certain, and after expiry nothing at all may remain.
    assert!(
        !list_files(&blobs.join("objects")).is_empty(),
        "the finished file is stored"
    );

    // The sweeper runs every second with a 2 s lifetime.
    wait_for(60, "expiry", || {
        s.log().contains("expired an abandoned upload")
    });
    assert_eq!(
        list_files(&blobs),
        Vec::<String>::new(),
        "ciphertext left behind"
    );
    let (status, err) = s.api(
        &world.admin,
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        None,
    );
    assert_eq!(status, 404, "{err}");
}
