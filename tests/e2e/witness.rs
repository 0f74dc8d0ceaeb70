//! Witnesses of the audit log (C2SP tlog-witness): real `custody witness` processes cosign a
//! growing log; after the operator restores an older database (and the checkpoint copy kept
//! beside the roots), the witness refuses, the server says why, and a certificate made
//! afterwards does not verify with `--min-witnesses 1`; with two witnesses and one down, a
//! quorum of 1 passes and a quorum of 2 fails, naming the missing one.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::audit::{export, log_key, verify};
use crate::support::*;

/// A `custody witness` process.
struct Witness {
    child: Child,
    url: String,
    key: String,
    _state: tempfile::TempDir,
}

impl Witness {
    fn start(log_key: &str, name: &str) -> Witness {
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["witness", "--listen", "127.0.0.1:0", "--log-key", log_key])
            .args(["--name", name])
            .arg("--state")
            .arg(state.path().join("w"))
            .env("CUSTODY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(state.path().join("witness.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut key, mut url) = (None, None);
        while url.is_none() {
            let line = lines
                .next()
                .expect("the witness ended before listening")
                .unwrap();
            if let Some(k) = line.strip_prefix("custody witness: verifier key ") {
                key = Some(k.to_owned());
            }
            if let Some(u) = line.strip_prefix("custody witness: listening on ") {
                url = Some(u.to_owned());
            }
        }
        Witness {
            child,
            url: url.unwrap(),
            key: key.expect("no verifier key printed"),
            _state: state,
        }
    }

    /// The size of the checkpoint it cosigned last, from its monitoring route.
    fn cosigned_size(&self, log_key: &str) -> u64 {
        let origin = log_key.split('+').next().unwrap();
        let path = format!(
            "/{}/checkpoint",
            hex::encode(crypto::hash::sha256(origin.as_bytes()))
        );
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        size_of(body)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._state.path().join("witness.log")).unwrap_or_default()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with the given witnesses and quorum, fast checkpoints and a short wait.
fn config(data: &tempfile::TempDir, witnesses: &[(&str, &str)], quorum: usize) -> String {
    let path = data.path().join("custody.toml");
    let mut text = format!(
        "data_dir = {:?}\ncheckpoint_interval_secs = 1\nwitness_quorum = {quorum}\nwitness_wait_secs = 3\n",
        data.path().join("custody")
    );
    for (url, key) in witnesses {
        text.push_str(&format!("\n[[witnesses]]\nurl = {url:?}\nkey = {key:?}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Starts a server once (to make its log key), stops it, and hands back the key and data.
fn log_key_of_new_server() -> (String, String, tempfile::TempDir) {
    let server = TestServer::start();
    let key = log_key(&server);
    let operator = server.operator.clone();
    (key, operator, server.stop())
}

fn restart(data: tempfile::TempDir, config: &str, operator: &str) -> TestServer {
    let mut server = TestServer::start_with(data, &["--config", config]);
    server.operator = operator.to_owned();
    server
}

fn status(server: &TestServer) -> Value {
    let out = server.ok(&server.operator, &["--json", "audit", "checkpoint"]);
    serde_json::from_str(out.trim()).unwrap()
}

/// Signs a checkpoint now (one witnessing round included); its note.
fn sign(server: &TestServer) -> String {
    server.ok(&server.operator, &["audit", "checkpoint", "--sign"])
}

fn size_of(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn verify_certificate(world: &World, id: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("certificate.json");
    world.server.ok(
        &world.admin,
        &["deletion", id, "--certificate-out", cert.to_str().unwrap()],
    );
    let service_key = world.server.ok(&world.admin, &["service-key"]);
    let log_key = log_key(&world.server);
    let out = Command::new(BIN)
        .arg("verify-certificate")
        .arg(&cert)
        .args(["--service-key", service_key.trim(), "--log-key", &log_key])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn delete_model(world: &World, model: &str) -> String {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"x\":1}").unwrap();
    world.upload(src.path(), model);
    let out = world
        .server
        .ok(&world.admin, &["--json", "delete", "--yes", model]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let id = v["deletion"].as_str().unwrap().to_owned();
    wait_for(120, "the deletion's certificate", || {
        let (code, body) =
            world
                .server
                .api(&world.admin, "GET", &format!("/v1/deletions/{id}"), None);
        code == 200 && body["state"] == "certified"
    });
    id
}

#[test]
fn a_witness_cosigns_a_growing_log_and_refuses_a_restored_one() {
    let (key, operator, data) = log_key_of_new_server();
    let witness = Witness::start(&key, "witness.test/w1");
    let config = config(&data, &[(&witness.url, &witness.key)], 1);
    let server = restart(data, &config, &operator);

    // A growing log: each new checkpoint is cosigned, from the size the witness saw last.
    server.create_vendor("beta");
    let first = sign(&server);
    assert!(first.contains("\u{2014} witness.test/w1 "), "{first}");
    server.token("committer", None, "carol");
    let second = sign(&server);
    assert!(size_of(&second) > size_of(&first));
    assert!(second.contains("\u{2014} witness.test/w1 "), "{second}");
    let s = status(&server);
    assert_eq!(s["witnesses"][0]["cosigned_size"], size_of(&second), "{s}");
    assert_eq!(s["witnesses"][0]["last_error"], Value::Null, "{s}");

    // The export carries the cosignatures; the auditor requires them.
    let (_t, bundle) = export(&server, None);
    let (code, report) = verify(&bundle, &key, &["--witness-key", &witness.key]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report["witnesses"].as_str().unwrap().contains("1 of 1"),
        "{report}"
    );
    // A witness the auditor trusts but the log never asked: not witnessed, named.
    let stranger = Witness::start(&key, "witness.test/stranger");
    let (code, report) = verify(&bundle, &key, &["--witness-key", &stranger.key]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("missing: witness.test/stranger"),
        "{report}"
    );

    // The operator's backup: the database and the checkpoint copy beside the roots.
    let anchor = server
        .data_dir()
        .with_file_name("custody.root")
        .join("audit-log.checkpoint");
    let data = server.stop();
    let kept = tempfile::tempdir().unwrap();
    let db = data.path().join("custody/db");
    copy_dir(&db, &kept.path().join("db"));
    std::fs::copy(&anchor, kept.path().join("anchor")).unwrap();

    // Life goes on, witnessed.
    let server = restart(data, &config, &operator);
    for i in 0..5 {
        server.token("committer", None, &format!("later{i}"));
    }
    let newest = sign(&server);
    assert!(newest.contains("\u{2014} witness.test/w1 "), "{newest}");
    let data = server.stop();
    let witnessed_size = witness.cosigned_size(&key);
    assert!(witnessed_size >= size_of(&newest));

    // Everything the operator holds is restored: the server signs the older history again.
    std::fs::remove_dir_all(&db).unwrap();
    copy_dir(&kept.path().join("db"), &db);
    std::fs::copy(kept.path().join("anchor"), &anchor).unwrap();
    let server = restart(data, &config, &operator);
    let rolled_back = sign(&server);
    assert!(size_of(&rolled_back) < witnessed_size, "{rolled_back}");
    assert!(!rolled_back.contains("witness.test/w1"), "{rolled_back}");

    // The witness refused with 409 and its size; the server says why, in its log and status.
    assert!(
        witness.log().contains("refused a checkpoint"),
        "{}",
        witness.log()
    );
    let s = status(&server);
    let why = s["witnesses"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("refused (409)"), "{s}");
    assert!(
        why.contains(&witnessed_size.to_string()) && why.contains("rolled back"),
        "{why}"
    );
    wait_for(30, "the refusal in the server's log", || {
        server.log().contains("WITNESS DID NOT COSIGN")
    });
    let run = server.custody(&operator, &["audit", "checkpoint"]);
    assert!(
        run.stderr
            .contains("witness witness.test/w1 did not cosign")
            && run.stderr.contains("409"),
        "{}",
        run.stderr
    );

    // A deletion certified now carries no cosignature: it does not verify with a quorum of 1,
    // and the check names the witness.
    let world = World::on(server);
    let id = delete_model(&world, "acme/after-restore");
    let (code, report) = verify_certificate(&world, &id, &[]);
    assert_eq!(
        code, 0,
        "without a witness requirement it verifies: {report}"
    );
    let (code, report) = verify_certificate(
        &world,
        &id,
        &["--witness-key", &witness.key, "--min-witnesses", "1"],
    );
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("witnesses: FAILED"), "{report}");
    assert!(report.contains("missing: witness.test/w1"), "{report}");
    assert!(
        world.server.log().contains("WITHOUT the witness quorum"),
        "the server says the certificate lacks the quorum"
    );
}

#[test]
fn with_two_witnesses_and_one_down_a_quorum_of_one_passes_and_two_fails() {
    let (key, operator, data) = log_key_of_new_server();
    let up = Witness::start(&key, "witness.test/up");
    let mut down = Witness::start(&key, "witness.test/down");
    let config = config(&data, &[(&up.url, &up.key), (&down.url, &down.key)], 1);
    // The second witness goes away before the log ever reaches it.
    let _ = down.child.kill();
    let _ = down.child.wait();
    let server = restart(data, &config, &operator);
    server.create_vendor("beta");
    let note = sign(&server);
    assert!(note.contains("\u{2014} witness.test/up "), "{note}");
    assert!(!note.contains("witness.test/down"), "{note}");
    let s = status(&server);
    let down_status = s["witnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "witness.test/down")
        .unwrap()
        .clone();
    assert!(
        down_status["last_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{s}"
    );

    let (_t, bundle) = export(&server, None);
    let both = ["--witness-key", &up.key, "--witness-key", &down.key];
    let (code, report) = verify(
        &bundle,
        &key,
        &[&both[..], &["--min-witnesses", "1"]].concat(),
    );
    assert_eq!(code, 0, "{report}");
    let (code, report) = verify(
        &bundle,
        &key,
        &[&both[..], &["--min-witnesses", "2"]].concat(),
    );
    assert_eq!(code, 1, "{report}");
    let problem = report["problem"].as_str().unwrap();
    assert!(problem.contains("1 of 2"), "{problem}");
    assert!(problem.contains("missing: witness.test/down"), "{problem}");

    // A quorum beyond the keys given is not a verification at all (exit 2).
    let (code, report) = verify(
        &bundle,
        &key,
        &["--witness-key", &up.key, "--min-witnesses", "2"],
    );
    assert_eq!(code, 2, "{report}");
    // Signing never waited on the missing witness: the log goes on.
    server.token("committer", None, "dave");
    assert!(size_of(&sign(&server)) > size_of(&note));

    // A certificate embeds the cosignatures of its checkpoint: it verifies with a quorum of 1
    // and fails a quorum of 2, naming the witness that was down.
    let world = World::on(server);
    let id = delete_model(&world, "acme/witnessed");
    let (code, report) = verify_certificate(
        &world,
        &id,
        &[&both[..], &["--min-witnesses", "1"]].concat(),
    );
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("witnesses: ok"), "{report}");
    let (code, report) = verify_certificate(
        &world,
        &id,
        &[&both[..], &["--min-witnesses", "2"]].concat(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("missing: witness.test/down"), "{report}");
}

/// A client that opens a connection and trickles half a request is cut at the witness's
/// header-read timeout (10 s), and others are served meanwhile.
#[test]
fn a_witness_cuts_a_request_held_half_sent_and_serves_others_meanwhile() {
    let (log_key, _, _data) = log_key_of_new_server();
    let witness = Witness::start(&log_key, "slow-witness");
    let addr = witness.url.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(slow, "POST /add-checkpoint HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    let started = std::time::Instant::now();
    // Meanwhile the witness answers its monitoring route (nothing cosigned yet: 404).
    let mut other = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        other,
        "GET /{}/checkpoint HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        hex::encode(crypto::hash::sha256(
            log_key.split('+').next().unwrap().as_bytes()
        ))
    )
    .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // The half-sent request is cut: the read ends (closed, or a 408), well before 30 s.
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(read.is_ok(), "the connection was not closed: {read:?}");
    assert!(
        waited >= std::time::Duration::from_secs(9) && waited < std::time::Duration::from_secs(25),
        "cut after {waited:?}"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}
