//! Interrupted transfers continue where they stopped; abandoned uploads leave nothing behind.

use std::io::Write;

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

/// A manifest may leave digests out (the CLI hashes while it sends): the commit must then
/// confirm each one, and a confirmation that differs from the stored bytes ends the session.
#[test]
fn a_digest_left_out_of_the_manifest_is_confirmed_at_commit() {
    let world = World::new();
    let server = &world.server;
    let admin = &world.admin;
    let begin = || {
        let (status, session) = server.api(
            admin,
            "POST",
            "/v1/models/acme/later/uploads",
            Some(json!({ "files": [{ "path": "w.bin", "size": 5 }] })),
        );
        assert!(status == 201 || status == 200, "{session}");
        session["upload_id"].as_str().unwrap().to_owned()
    };
    let right = hex::encode(crypto::hash::sha256(b"hello"));
    let id = begin();
    let (status, stored) = server.put_bytes(
        admin,
        &format!("/v1/uploads/{id}/files/0"),
        b"hello".to_vec(),
    );
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["sha256"], right,
        "the server answers with the digest it computed"
    );

    let commit = |body: Value| {
        server.api(
            admin,
            "POST",
            &format!("/v1/uploads/{id}/commit"),
            Some(body),
        )
    };
    let (status, body) = commit(json!({}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_digest")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("listed without a digest")
    );
    let (status, body) = commit(json!({ "sha256": { "w.bin": right, "other.bin": right } }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path")),
        "{body}"
    );

    let wrong = hex::encode(crypto::hash::sha256(b"hellO"));
    let (status, body) = commit(json!({ "sha256": { "w.bin": wrong } }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("digest_mismatch")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("abandoned"),
        "{body}"
    );
    // The session is over: not even the right digest commits it now, and no revision exists.
    let (status, body) = commit(json!({ "sha256": { "w.bin": right } }));
    assert_eq!(status, 409, "{body}");
    let (status, _) = server.api(admin, "GET", "/v1/models/acme/later/revisions/main", None);
    assert_eq!(status, 404);

    // The same manifest again starts a new session, which commits with the right digest.
    let again = begin();
    assert_ne!(again, id);
    let (status, _) = server.put_bytes(
        admin,
        &format!("/v1/uploads/{again}/files/0"),
        b"hello".to_vec(),
    );
    assert_eq!(status, 200);
    let (status, body) = server.api(
        admin,
        "POST",
        &format!("/v1/uploads/{again}/commit"),
        Some(json!({ "sha256": { "w.bin": right } })),
    );
    assert_eq!(status, 201, "{body}");
    let (status, files) = server.api(admin, "GET", "/v1/models/acme/later/revisions/main", None);
    assert_eq!(status, 200, "{files}");
    assert_eq!(files["files"][0]["sha256"], right);
}

/// A part the server sealed and stored but never recorded (it died in between) is sealed
/// again when the client resends it, under the same nonces: it is stored only when it holds
/// the same bytes. Other bytes drop what was stored of the file, which then starts over under
/// a new header, so no nonce ever seals two different plaintexts.
#[test]
fn a_part_sealed_before_is_stored_again_only_with_the_same_bytes() {
    let world = World::on(TestServer::start_env(
        tempfile::tempdir().unwrap(),
        &[],
        &[("CUSTODY_FAILPOINT_UPLOAD", "unrecorded")],
    ));
    let (server, admin) = (&world.server, &world.admin);
    let size = (8usize << 20) + 4096;
    let (status, session) = server.api(
        admin,
        "POST",
        "/v1/models/acme/nonces/uploads",
        Some(json!({ "files": [{ "path": "w.bin", "size": size }] })),
    );
    assert_eq!(status, 201, "{session}");
    let put = format!(
        "/v1/uploads/{}/files/0",
        session["upload_id"].as_str().unwrap()
    );
    let first: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut changed = first.clone();
    changed[100] ^= 1;

    // The failpoint: parts stored, never recorded, the body fails.
    for attempt in 0..2 {
        let (status, body) = server.put_bytes(admin, &put, first.clone());
        assert_eq!(status, 500, "attempt {attempt}: {body}");
    }
    let (status, body) = server.put_bytes(admin, &put, changed.clone());
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "resume_mismatch", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("differs from the bytes sent for it before"),
        "{message}"
    );
    // Dropped: the changed bytes now go under a new header, as far as the failpoint lets them.
    let (status, body) = server.put_bytes(admin, &put, changed);
    assert_eq!(status, 500, "{body}");
}

/// The whole-file digest of a ranged fetch is computed while the ranges arrive, from the
/// written prefix: bytes already in a resumed partial file count too, so damage there is
/// caught, and nothing is put in place.
#[test]
fn a_resumed_fetch_over_damaged_local_bytes_fails_its_digest_check() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    let size = (80u64 << 20) + 7;
    let original = src.path().join("big.bin");
    write_data(&original, size, 13);
    world.upload(src.path(), "acme/damaged");
    world
        .server
        .ok(&world.admin, &["grant", "acme/damaged", "--to", "alice"]);
    let mut bytes = std::fs::read(&original).unwrap();
    let sha256 = hex::encode(crypto::hash::sha256(&bytes));

    // A partial download whose first 16 MiB range is recorded as done, with one byte wrong.
    let out = tempfile::tempdir().unwrap();
    bytes[1000] ^= 0x40;
    let state = json!({"sha256": sha256, "size": size, "range_len": 16u64 << 20, "done": [0]});
    write_partial_download(out.path(), "big.bin", &bytes, &state);

    let target = out.path().to_str().unwrap();
    let run = world
        .server
        .custody(&world.alice, &["fetch", "acme/damaged", "--out", target]);
    assert!(!run.success, "a fetch over damaged bytes succeeded");
    assert!(
        run.stderr.contains("integrity check failed: sha256"),
        "{}",
        run.stderr
    );
    assert!(
        list_files(out.path()).is_empty(),
        "{:?}",
        list_files(out.path())
    );
    // The next run starts over and gets the file right.
    world
        .server
        .ok(&world.alice, &["fetch", "acme/damaged", "--out", target]);
    assert_same_file(&original, &out.path().join("big.bin"));

    // A state file naming ranges past the end of the file (damaged, or written by hand) is
    // not trusted for them: the fetch neither crashes nor skips a range, and the bytes are
    // right.
    let out = tempfile::tempdir().unwrap();
    bytes[1000] ^= 0x40;
    let state = json!({
        "sha256": sha256, "size": size, "range_len": 16u64 << 20, "done": [1, 5, 4_000_000_000u64]
    });
    write_partial_download(out.path(), "big.bin", &bytes, &state);
    let target = out.path().to_str().unwrap();
    world
        .server
        .ok(&world.alice, &["fetch", "acme/damaged", "--out", target]);
    assert_same_file(&original, &out.path().join("big.bin"));
}

/// Leaves in `dir` what an interrupted `custody fetch` of `name` leaves: the partial file
/// holding `bytes` and its state file, both private to this user.
fn write_partial_download(dir: &std::path::Path, name: &str, bytes: &[u8], state: &Value) {
    use std::os::unix::fs::OpenOptionsExt;
    for (file, contents) in [
        (format!("{name}.custody-partial"), bytes.to_vec()),
        (
            format!("{name}.custody-partial.state"),
            state.to_string().into_bytes(),
        ),
    ] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(file))
            .unwrap()
            .write_all(&contents)
            .unwrap();
    }
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
