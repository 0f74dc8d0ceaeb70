//! Graceful shutdown: SIGTERM (as systemd sends it) stops new connections at once, lets
//! transfers in flight finish up to the deadline, and the server exits 0.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::support::*;

/// A world on a server whose `shutdown_grace_secs` is `grace`, with `acme/big` (one file of
/// `size` bytes) readable by alice on the enrolled host; returns the world and the file's URL.
fn world_with_file(grace: u64, size: u64) -> (World, tempfile::TempDir, String) {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\nshutdown_grace_secs = {grace}\n",
            data.path().join("custody")
        ),
    )
    .unwrap();
    let world = World::on(TestServer::start_with(
        data,
        &["--config", config.to_str().unwrap()],
    ));
    let (src, url) = world.upload_one_file_for_alice("acme/big", size, 11);
    (world, src, url)
}

fn refuses_connections(addr: &str) -> bool {
    matches!(
        std::net::TcpStream::connect(addr),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn sigterm_lets_a_running_download_finish_refuses_new_connections_and_exits_0() {
    let size = 96u64 << 20;
    let (mut world, src, url) = world_with_file(30, size);
    let host = world.server.host.clone().unwrap();
    let addr = world.server.addr();
    let ca = world.server.ca.clone();
    let alice = world.alice.clone();
    let rt = runtime();
    let response = rt.block_on(async {
        https_client_on(&ca, Some(&host))
            .get(&url)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::with_capacity(usize::try_from(size).unwrap());
    rt.block_on(async {
        while received.len() < 1 << 20 {
            received.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    });

    world.server.terminate();
    // New connections are refused while the download is still running.
    wait_for(10, "the listener to close", || refuses_connections(&addr));
    assert!(
        world.server.wait_exit(0).is_none(),
        "the server left before the download ended"
    );

    // The download completes, byte for byte, at a reader's pace.
    rt.block_on(async {
        while let Some(chunk) = body.next().await {
            received.extend_from_slice(&chunk.unwrap());
            if received.len() % (16 << 20) < 65536 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    assert_eq!(received.len() as u64, size);
    let expected = std::fs::read(src.path().join("w.bin")).unwrap();
    assert!(received == expected, "the download's bytes differ");

    let status = world
        .server
        .wait_exit(30)
        .expect("the server did not exit after the download");
    assert_eq!(status.code(), Some(0), "{status}");
    let log = world.server.log();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_download_past_the_deadline_is_cut_and_the_server_still_exits_0() {
    let size = 64u64 << 20;
    let (mut world, _src, url) = world_with_file(2, size);
    let host = world.server.host.clone().unwrap();
    let ca = world.server.ca.clone();
    let alice = world.alice.clone();
    let rt = runtime();
    let response = rt.block_on(async {
        https_client_on(&ca, Some(&host))
            .get(&url)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
    });
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    rt.block_on(async {
        while received < 1 << 20 {
            received += body.next().await.unwrap().unwrap().len() as u64;
        }
    });
    world.server.terminate();
    let stopped = Instant::now();
    // A reader that stalls past the deadline.
    std::thread::sleep(Duration::from_secs(4));
    let status = world
        .server
        .wait_exit(10)
        .expect("the server did not exit at its deadline");
    assert!(stopped.elapsed() < Duration::from_secs(12));
    assert_eq!(status.code(), Some(0), "{status}");
    let ended = rt.block_on(async {
        loop {
            match body.next().await {
                Some(Ok(chunk)) => received += chunk.len() as u64,
                Some(Err(_)) => break "error",
                None => break "end",
            }
        }
    });
    assert!(received < size, "all {size} bytes arrived ({ended})");
    assert!(world.server.log().contains("shutdown deadline reached"));
}

#[test]
fn a_cli_fetch_running_at_sigterm_completes() {
    let size = 160u64 << 20;
    let (mut world, src, _url) = world_with_file(60, size);
    let out = tempfile::tempdir().unwrap();
    let mut fetch = world.server.spawn_custody(
        &world.alice,
        &["fetch", "acme/big", "--out", out.path().to_str().unwrap()],
    );
    // Once its parallel ranged requests are under way (one range is done), stop the server.
    let target = out.path().join("w.bin");
    let state = out.path().join("w.bin.custody-partial.state");
    wait_for(60, "the fetch to finish its first range", || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["done"].as_array().is_some_and(|d| !d.is_empty()))
    });
    world.server.terminate();
    let status = fetch.wait().unwrap();
    assert!(
        status.success(),
        "the fetch failed when the server was asked to stop"
    );
    assert_same_file(&src.path().join("w.bin"), &target);
    let server = world.server.wait_exit(30).expect("the server did not exit");
    assert_eq!(server.code(), Some(0));
}
