//! Large files stream through bounded memory; the server runs on PostgreSQL too.

use crate::support::*;

/// Peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    kib * 1024
}

#[test]
fn a_two_gib_file_moves_with_bounded_server_memory() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    let size = 2u64 << 30;
    write_data(&src.path().join("model.safetensors"), size, 42);
    world.upload(src.path(), "acme/huge");
    eprintln!(
        "server peak resident memory after the upload: {} MiB",
        peak_rss_bytes(world.server.pid()) >> 20
    );
    world
        .server
        .ok(&world.admin, &["grant", "acme/huge", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    world.server.ok(
        &world.alice,
        &["fetch", "acme/huge", "--out", out.path().to_str().unwrap()],
    );
    assert_same_file(
        &src.path().join("model.safetensors"),
        &out.path().join("model.safetensors"),
    );
    let peak = peak_rss_bytes(world.server.pid());
    eprintln!("server peak resident memory: {} MiB", peak >> 20);
    assert!(
        peak < 128 << 20,
        "server peak resident memory {} MiB while moving 2 GiB",
        peak >> 20
    );
}

#[test]
fn the_server_runs_on_postgresql() {
    let cluster = testkit::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    let data = tempfile::tempdir().unwrap();
    let world = World::on(TestServer::start_with(data, &["--database-url", &url]));
    let (server, admin, alice) = (&world.server, &world.admin, &world.alice);
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("nested/w.bin"), (1 << 20) + 3, 8);
    std::fs::write(src.path().join("empty"), b"").unwrap();
    world.upload(src.path(), "acme/pg");
    server.ok(admin, &["grant", "acme/pg", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    server.ok(
        alice,
        &["fetch", "acme/pg", "--out", out.path().to_str().unwrap()],
    );
    for f in ["nested/w.bin", "empty"] {
        assert_same_file(&src.path().join(f), &out.path().join(f));
    }
    assert!(
        !server.data_dir().join("db").exists(),
        "with PostgreSQL no SQLite database is created"
    );
}

#[test]
fn the_server_keeps_ciphertext_in_an_s3_bucket() {
    let moto = testkit::MotoServer::shared().unwrap();
    let bucket = moto.fresh_bucket(true).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[s3]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{bucket}\"\n\
             force_path_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nprefix = \"objects/\"\n",
            data.path().join("custody").display(),
            moto.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_with(data, &["--config", &config]));
    let src = tempfile::tempdir().unwrap();
    // Three parts, the last one short.
    write_data(&src.path().join("w.safetensors"), (17 << 20) + 5, 31);
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/in-s3");
    world
        .server
        .ok(&world.admin, &["grant", "acme/in-s3", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    world.server.ok(
        &world.alice,
        &["fetch", "acme/in-s3", "--out", out.path().to_str().unwrap()],
    );
    for f in ["w.safetensors", "config.json"] {
        assert_same_file(&src.path().join(f), &out.path().join(f));
    }
    assert!(
        !world.server.data_dir().join("blobs").exists(),
        "with S3 configured nothing goes to the local blob directory"
    );
}
