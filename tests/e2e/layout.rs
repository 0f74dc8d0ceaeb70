//! Where the embedded default keeps its keys (issue 11, item 3), and what the server refuses:
//! the root of trust beside the data directory, never inside it; one server per SQLite
//! database; a failed background job stops the server.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn model(world: &World, name: &str, seed: u64) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"x\":2}").unwrap();
    write_data(&src.path().join("model.safetensors"), (2 << 20) + 9, seed);
    world.upload(src.path(), name);
    world
        .server
        .ok(&world.admin, &["grant", name, "--to", "alice"]);
    src
}

fn fetch(world: &World, model: &str) -> Run {
    let out = tempfile::tempdir().unwrap();
    world.server.custody(
        &world.alice,
        &[
            "fetch",
            model,
            "--out",
            out.path().join("m").to_str().unwrap(),
        ],
    )
}

fn delete(world: &World, model: &str) -> String {
    let out = world
        .server
        .ok(&world.admin, &["--json", "delete", "--yes", model]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let id = v["deletion"].as_str().unwrap().to_owned();
    wait_for(120, "the deletion to be certified", || {
        let (_, body) = world
            .server
            .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
        body["state"] == "certified"
    });
    id
}

fn residual_risk(world: &World, id: &str) -> String {
    let (_, body) = world
        .server
        .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
    body["certificate"]["certificate"]["deletion"]["residual_risk"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs `custody server` to completion (it must refuse to start); returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started where it must refuse to");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listening on"),
        "it listened before refusing: {stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The backup attack of issue 11 on the embedded default, as an operator would back up: a
/// tar of the data directory taken before a shred, restored after it, opens nothing.
#[test]
fn a_tar_of_the_data_directory_from_before_a_shred_opens_nothing() {
    let world = World::new();
    let data_dir = world.server.data_dir();
    let parent = data_dir.parent().unwrap().to_owned();
    let root_dir = parent.join("custody.root");
    // The root of trust is beside the data directory, and the server says where.
    assert!(
        world
            .server
            .stdout
            .iter()
            .any(|l| l.contains("root of trust") && l.contains("custody.root")),
        "{:?}",
        world.server.stdout
    );
    assert!(!list_files(&root_dir).is_empty());
    let in_data = list_files(&data_dir);
    assert!(
        in_data
            .iter()
            .all(|f| !f.contains("root-") && !f.contains("checkpoint")),
        "root keys or the checkpoint copy inside the data directory: {in_data:?}"
    );
    let gone = model(&world, "acme/gone", 21);
    let kept = model(&world, "acme/kept", 22);
    assert!(fetch(&world, "acme/gone").success);

    // The operator's backup: the data directory, with tar, while the server runs.
    let backup = tempfile::tempdir().unwrap();
    let tarball = backup.path().join("custody-data.tar.gz");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&parent)
        .arg("custody")
        .status()
        .unwrap();
    assert!(tar.success());

    let id = delete(&world, "acme/gone");
    assert!(!fetch(&world, "acme/gone").success);
    // The certificate states the layout it was made under.
    let risk = residual_risk(&world, &id);
    assert!(
        risk.contains(&root_dir.canonicalize().unwrap().display().to_string())
            && risk.contains("outside the data directory")
            && risk.contains("cannot be decrypted"),
        "{risk}"
    );

    // Restore the backup over the data directory and start the server on it.
    let World { server, .. } = world;
    let data = server.stop();
    std::fs::remove_dir_all(data.path().join("custody")).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(data.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let stderr = refused_start(&["--data-dir", data.path().join("custody").to_str().unwrap()]);
    assert!(
        stderr.contains("root of trust") && stderr.contains("missing or destroyed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restored from before a deletion"),
        "{stderr}"
    );
    drop((gone, kept));
}

/// A root directory inside the data directory is refused; allowed explicitly, the server
/// warns at every start, and certificates say what a backup of the data directory can do.
#[test]
fn a_root_inside_the_data_directory_is_refused_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("custody");
    let config = |allow: bool| {
        let path = data.path().join(format!("custody-{allow}.toml"));
        std::fs::write(
            &path,
            format!(
                "data_dir = {dir:?}\nallow_root_in_data_dir = {allow}\n[root]\nkind = \"file\"\n\
                 dir = {:?}\n",
                dir.join("root")
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let stderr = refused_start(&["--config", &config(false)]);
    assert!(
        stderr.contains("inside the data directory") && stderr.contains("allow_root_in_data_dir"),
        "{stderr}"
    );
    assert!(
        !dir.join("root").exists() || list_files(&dir.join("root")).is_empty(),
        "a refused start made roots"
    );

    let allowed = config(true);
    let server = TestServer::start_with(data, &["--config", &allowed]);
    let warned = |s: &TestServer| {
        s.stdout
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("inside the data directory"))
    };
    assert!(warned(&server), "{:?}", server.stdout);
    let world = World::on(server);
    model(&world, "acme/inside", 23);
    let id = delete(&world, "acme/inside");
    let risk = residual_risk(&world, &id);
    assert!(
        risk.contains("inside") && risk.contains("CAN decrypt"),
        "{risk}"
    );
    // And at every start.
    let World { server, .. } = world;
    let operator = server.operator.clone();
    let data = server.stop();
    let mut server = TestServer::start_with(data, &["--config", &allowed]);
    server.operator = operator;
    assert!(warned(&server), "{:?}", server.stdout);
}

/// An installation made before the root moved out of the data directory is refused with the
/// command that fixes it, and starts once the roots are moved.
#[test]
fn roots_left_in_the_old_place_are_refused_with_a_way_out() {
    let server = TestServer::start();
    let data = server.stop();
    let dir = data.path().join("custody");
    let new_root = data.path().join("custody.root");
    // The old layout: the roots in DATA/root.
    std::fs::rename(&new_root, dir.join("root")).unwrap();
    let stderr = refused_start(&["--data-dir", dir.to_str().unwrap()]);
    assert!(
        stderr.contains("mv ") && stderr.contains("custody.root"),
        "{stderr}"
    );
    std::fs::rename(dir.join("root"), &new_root).unwrap();
    drop(TestServer::start_with(data, &[]));
}

/// SQLite serves one instance: a second server on the same database refuses to start.
#[test]
fn a_second_server_on_one_sqlite_database_is_refused() {
    let first = TestServer::start();
    let stderr = refused_start(&["--data-dir", first.data_dir().to_str().unwrap()]);
    assert!(
        stderr.contains("already running") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    // The first one is untouched.
    first.ok(&first.operator, &["vendor", "ls"]);
}

/// A background job that fails stops the server with a non-zero exit, logged at error level.
#[test]
fn a_failing_background_job_stops_the_server() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let mut child = Command::new(BIN)
        .arg("server")
        .arg("--data-dir")
        .arg(data.path().join("custody"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("CUSTODY_FAILPOINT_BACKGROUND", "checkpoints")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server ran on without its checkpointer"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("background job checkpoints panicked"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("ERROR"), "{line}");
}
