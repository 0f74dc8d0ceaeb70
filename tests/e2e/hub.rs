//! The Hugging Face Hub's read API, driven by the real `huggingface_hub` client and its `hf`
//! command (installed into the test venv by `tests/run`), through the host agent, as a
//! committer uses it: `HF_ENDPOINT` points at the agent, `HF_TOKEN` is the custody token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

// ----- harness -------------------------------------------------------------------------------

/// `$CUSTODY_TEST_VENV`, else `.venv` at the workspace root (as testkit finds moto).
pub(crate) fn venv() -> PathBuf {
    let dir = match std::env::var_os("CUSTODY_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    };
    assert!(
        dir.join("bin/hf").is_file(),
        "huggingface_hub is not installed in {}: run tests/run (it installs it)",
        dir.display()
    );
    dir
}

pub(crate) fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/hub/hub_client.py")
}

/// A running `custody agent`.
pub(crate) struct Agent {
    child: Child,
    pub(crate) url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent for `server`, presenting `host`'s certificate if given.
    pub(crate) fn start(server: &TestServer, host: Option<&HostCert>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let mut command = Command::new(BIN);
        command
            .args(["agent", "--listen", "127.0.0.1:0"])
            .env("CUSTODY_SERVER", &server.url)
            .env("CUSTODY_CA", &server.ca)
            .env_remove("CUSTODY_TOKEN")
            .env_remove("CUSTODY_HOST_CERT")
            .env_remove("CUSTODY_HOST_KEY")
            .env("CUSTODY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        if let Some(h) = host {
            command.args([
                "--host-cert",
                h.cert.to_str().unwrap(),
                "--host-key",
                h.key.to_str().unwrap(),
            ]);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line
                .strip_prefix("custody: agent listening on ")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("unexpected agent output: {line}"))
                .to_owned(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the agent did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Agent {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// `(method, path)` of every request the agent forwarded, in order.
    fn requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" forwarded "))
            .filter_map(|l| {
                let field = |name: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .map(str::to_owned)
                };
                Some((field("method=")?, field("path=")?))
            })
            .collect()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A committer's Hugging Face setup: an endpoint, a token and an empty cache.
pub(crate) struct Hf {
    pub(crate) endpoint: String,
    pub(crate) token: String,
    pub(crate) home: tempfile::TempDir,
    /// A CA file for an `https://` endpoint (Python's `SSL_CERT_FILE`).
    pub(crate) ca: Option<PathBuf>,
}

impl Hf {
    pub(crate) fn new(endpoint: &str, token: &str) -> Hf {
        Hf {
            endpoint: endpoint.to_owned(),
            token: token.to_owned(),
            home: tempfile::tempdir().unwrap(),
            ca: None,
        }
    }

    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("HF_ENDPOINT", &self.endpoint)
            .env("HF_TOKEN", &self.token)
            .env("HF_HOME", self.home.path())
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env("HF_HUB_DISABLE_UPDATE_CHECK", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        for var in [
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HF_HUB_DISABLE_XET",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            c.env_remove(var);
        }
        if let Some(ca) = &self.ca {
            c.env("SSL_CERT_FILE", ca);
        }
        c
    }

    /// Runs `tests/hub/hub_client.py` and returns what it printed.
    pub(crate) fn py(&self, args: &[&str]) -> Value {
        let out = self
            .command(&venv().join("bin/python"))
            .arg(script())
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "hub_client.py {args:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Runs the `hf` command.
    pub(crate) fn hf(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(&venv().join("bin/hf"))
                .args(args)
                .output()
                .unwrap(),
        )
    }
}

/// The path a successful client call returned; panics with the client's error otherwise.
pub(crate) fn ok_path(v: &Value) -> PathBuf {
    PathBuf::from(
        v["path"]
            .as_str()
            .unwrap_or_else(|| panic!("the client failed: {v:#}")),
    )
}

/// Asserts the client raised `class` (or a subclass) and returns its message.
pub(crate) fn client_error(v: &Value, class: &str) -> String {
    let classes: Vec<&str> = v["classes"]
        .as_array()
        .unwrap_or_else(|| panic!("expected {class}, the client succeeded: {v:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(classes.contains(&class), "expected {class}, got {v:#}");
    v["message"].as_str().unwrap().to_owned()
}

/// The client's message without the request id it quotes from `x-request-id` (each request has
/// its own; README, "Operating custody").
pub(crate) fn without_request_id(message: &str) -> String {
    match message.split_once("(Request ID: ") {
        Some((before, rest)) => {
            let (id, after) = rest.split_once(')').unwrap();
            assert!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{message}"
            );
            format!("{before}(Request ID: …){after}")
        }
        None => message.to_owned(),
    }
}

pub(crate) fn grant(world: &World, model: &str, user: &str) {
    world
        .server
        .ok(&world.admin, &["grant", model, "--to", user]);
}

/// A model in Hugging Face layout: small files (nested too), and a large shard.
pub(crate) fn write_model(dir: &Path, shard_len: u64) {
    std::fs::write(
        dir.join("config.json"),
        br#"{"architectures":["Tiny"],"hidden":8}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    std::fs::write(
        dir.join("tokenizer/tokenizer.json"),
        br#"{"model":{"vocab":{"a":0}}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("extra/deeper")).unwrap();
    std::fs::write(dir.join("extra/deeper/notes.txt"), b"nested\n").unwrap();
    write_data(&dir.join("model-00001-of-00002.safetensors"), shard_len, 1);
    write_data(
        &dir.join("model-00002-of-00002.safetensors"),
        (1 << 20) + 7,
        2,
    );
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
}

pub(crate) fn sha256_file(path: &Path) -> String {
    let mut h = crypto::hash::Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finish())
}

fn git_blob_id(path: &Path) -> String {
    hex::encode(crypto::hash::git_object_id(
        "blob",
        &std::fs::read(path).unwrap(),
    ))
}

/// Files of `dir` without the client's own metadata folder (`.cache/huggingface`).
fn model_files(dir: &Path) -> Vec<String> {
    list_files(dir)
        .into_iter()
        .filter(|p| !p.starts_with(".cache/"))
        .collect()
}

pub(crate) fn assert_same_tree(got: &Path, want: &Path) {
    assert_eq!(model_files(got), model_files(want));
    for f in model_files(want) {
        assert_same_file(&got.join(&f), &want.join(&f));
    }
}

// ----- the client through the agent ----------------------------------------------------------

#[test]
fn snapshot_download_through_the_agent_is_byte_identical_and_verifies() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), (65 << 20) + 3);
    let commit = world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let hf = Hf::new(&agent.url, &world.alice);

    let snapshot = ok_path(&hf.py(&["snapshot", "acme/m"]));
    assert!(
        snapshot.ends_with(format!("snapshots/{commit}")),
        "filed under the revision's sha: {}",
        snapshot.display()
    );
    assert_same_tree(&snapshot, src.path());

    // `hf cache verify` checks every file against the listing's hashes (SHA-256 for the large
    // shard, Git blob ids for the small files).
    let verify = hf.hf(&[
        "cache",
        "verify",
        "acme/m",
        "--fail-on-missing-files",
        "--fail-on-extra-files",
    ]);
    assert!(verify.success, "{}\n{}", verify.stdout, verify.stderr);
    assert!(
        verify.stdout.contains("Verified 6 file(s)")
            && verify.stdout.contains("All checksums match"),
        "{}",
        verify.stdout
    );

    // The `hf` command into a folder, and verification of that folder.
    let local = tempfile::tempdir().unwrap();
    let download = hf.hf(&[
        "download",
        "acme/m",
        "--local-dir",
        local.path().to_str().unwrap(),
    ]);
    assert!(download.success, "{}\n{}", download.stdout, download.stderr);
    assert_same_tree(local.path(), src.path());
    let verify_local = |hf: &Hf| {
        hf.hf(&[
            "cache",
            "verify",
            "acme/m",
            "--local-dir",
            local.path().to_str().unwrap(),
        ])
    };
    let ok = verify_local(&hf);
    assert!(ok.success, "{}\n{}", ok.stdout, ok.stderr);

    // Verification is real: one changed byte in a small file, then in the shard, fails it.
    let config = local.path().join("config.json");
    let original = std::fs::read(&config).unwrap();
    std::fs::write(&config, original.to_ascii_uppercase()).unwrap();
    let bad = verify_local(&hf);
    assert!(
        !bad.success && bad.stdout.contains("config.json"),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("git-sha1"), "{}", bad.stdout);
    std::fs::write(&config, &original).unwrap();
    let shard = local.path().join("model-00001-of-00002.safetensors");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.write_all(b"\xff\xfe").unwrap();
    drop(f);
    let bad = verify_local(&hf);
    assert!(
        !bad.success && bad.stdout.contains("sha256"),
        "{}",
        bad.stdout
    );
}

#[test]
fn a_second_download_is_served_from_the_cache() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 3 << 20);
    world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let hf = Hf::new(&agent.url, &world.alice);
    let file = "/acme/m/resolve/main/tokenizer%2Ftokenizer.json";
    let file_plain = "/acme/m/resolve/main/tokenizer/tokenizer.json";
    let gets = |a: &Agent| a.count("GET", file) + a.count("GET", file_plain);
    let heads = |a: &Agent| a.count("HEAD", file) + a.count("HEAD", file_plain);

    let first = ok_path(&hf.py(&["download", "acme/m", "tokenizer/tokenizer.json"]));
    assert_same_file(&first, &src.path().join("tokenizer/tokenizer.json"));
    assert_eq!(
        (heads(&agent), gets(&agent)),
        (1, 1),
        "{:?}",
        agent.requests()
    );

    // The second call asks whether `main` moved (HEAD) but fetches no bytes.
    let second = ok_path(&hf.py(&["download", "acme/m", "tokenizer/tokenizer.json"]));
    assert_eq!(second, first);
    assert_same_file(&second, &src.path().join("tokenizer/tokenizer.json"));
    assert_eq!(
        (heads(&agent), gets(&agent)),
        (2, 1),
        "{:?}",
        agent.requests()
    );

    // Every decision is in the audit log, the allowed HEADs included (they serve no bytes).
    let log = world
        .server
        .ok(&world.server.operator, &["audit", "entries", "0", "100000"]);
    let heads_logged = log
        .lines()
        .filter(|l| {
            l.contains("\"action\":\"fetch.head\"") && l.contains("tokenizer/tokenizer.json")
        })
        .count();
    assert_eq!(heads_logged, 2, "{log}");

    // The token passed through the agent on every request, and reached neither log.
    let secret = world.alice.split_once('.').unwrap().1;
    let agent_log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(agent_log.contains(" forwarded ") && !agent_log.contains(secret));
    assert!(!world.server.log().contains(secret));
}

#[test]
fn refused_committers_get_gated_repo_errors_with_the_reason() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    world.upload(src.path(), "acme/m");
    let agent = Agent::start(&world.server, world.server.host.as_ref());

    // No grant: the model is as unknown to alice as one that does not exist.
    let hf = Hf::new(&agent.url, &world.alice);
    for (call, missing) in [
        (
            vec!["download", "acme/m", "config.json"],
            vec!["download", "acme/nosuch", "config.json"],
        ),
        (vec!["snapshot", "acme/m"], vec!["snapshot", "acme/nosuch"]),
        (vec!["info", "acme/m"], vec!["info", "acme/nosuch"]),
    ] {
        let hidden = client_error(&hf.py(&call), "RepositoryNotFoundError");
        let unknown = client_error(&hf.py(&missing), "RepositoryNotFoundError");
        // The client quotes the response's x-request-id, which the operator finds in the log.
        assert!(hidden.contains("(Request ID: "), "{hidden}");
        assert_eq!(
            without_request_id(&hidden).replace("acme/m", "X"),
            without_request_id(&unknown).replace("acme/nosuch", "X"),
            "{call:?}"
        );
    }

    // Granted, under an embargo: she may see the model, so the refusal says why.
    grant(&world, "acme/m", "alice");
    assert!(hf.py(&["download", "acme/m", "config.json"])["path"].is_string());
    let year_ahead = (std::time::SystemTime::now() + Duration::from_secs(365 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    world.server.ok(
        &world.admin,
        &["embargo", "acme/m", "--not-before", &year_ahead],
    );
    let fresh = Hf::new(&agent.url, &world.alice);
    let message = client_error(
        &fresh.py(&["download", "acme/m", "config.json"]),
        "GatedRepoError",
    );
    assert!(message.contains("embargo"), "{message}");
    assert!(
        list_files(fresh.home.path())
            .iter()
            .all(|p| !p.contains("blobs/")),
        "a refused download left bytes in the cache"
    );
    // Excluded: the exclusion wins, and the model is hidden again.
    world
        .server
        .ok(&world.admin, &["exclude", "acme/m", "alice"]);
    client_error(
        &fresh.py(&["download", "acme/m", "config.json"]),
        "RepositoryNotFoundError",
    );
}

/// The `hf` command prints its own fixed text for a gated or missing repository ("Access
/// denied. Model 'acme/m' requires approval."); custody's reason reaches it as a server
/// warning it prints (issue 19), and the refused download leaves no weights behind.
#[test]
fn the_hf_command_prints_custodys_reason_for_a_refusal() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    world.server.ok(
        &world.admin,
        &["embargo", "acme/m", "--not-before", "2099-01-01T00:00:00Z"],
    );
    let hf = Hf::new(&agent.url, &world.alice);
    let dest = tempfile::tempdir().unwrap();
    let local = dest.path().join("m");
    let run = hf.hf(&["download", "acme/m", "--local-dir", local.to_str().unwrap()]);
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "custody: this model is under embargo: its weights may not be fetched yet; \
             the embargo lifts at 2099-01-01T00:00:00Z"
        ),
        "{}",
        run.stderr
    );
    assert!(
        list_files(&local).iter().all(|p| p.starts_with(".cache")),
        "{:?}",
        list_files(&local)
    );

    // Straight at the server, without the agent: the reason names the host settings.
    let mut direct = Hf::new(&world.server.url, &world.alice);
    direct.ca = Some(world.server.ca.clone());
    world
        .server
        .ok(&world.admin, &["embargo", "acme/m", "--clear"]);
    let run = direct.hf(&["download", "acme/m", "config.json"]);
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("custody: fetching weights requires an exclusive host")
            && run.stderr.contains("CUSTODY_HOST_CERT"),
        "{}",
        run.stderr
    );

    // A deleted model: the client says "not found", custody says it was deleted.
    world
        .server
        .ok(&world.admin, &["delete", "acme/m", "--yes"]);
    let run = hf.hf(&["download", "acme/m", "config.json"]);
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("custody: acme/m has been deleted; its weights can never be read again"),
        "{}",
        run.stderr
    );
    // A file the client probes for and does not find is no refusal: no warning.
    let (status, headers) = raw(
        &world.server,
        &format!("{}/api/models/acme/nosuch", world.server.url),
        Some(&world.alice),
    );
    assert_eq!(status, 404);
    assert!(headers.get("x-hf-warning").is_none(), "{headers:?}");
}

#[test]
fn missing_files_unknown_models_and_bad_tokens_raise_the_hub_errors() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    let commit = world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let hf = Hf::new(&agent.url, &world.alice);

    // A missing file (as vLLM probes optional ones) is EntryNotFound, cached as absent for
    // the revision.
    client_error(
        &hf.py(&["download", "acme/m", "tokenizer.model"]),
        "EntryNotFoundError",
    );
    assert!(
        hf.home
            .path()
            .join(format!(
                "hub/models--acme--m/.no_exist/{commit}/tokenizer.model"
            ))
            .exists(),
        "{:?}",
        list_files(hf.home.path())
    );

    for call in [
        vec!["download", "acme/ghost", "config.json"],
        vec!["snapshot", "acme/ghost"],
        vec!["info", "nobody/ghost"],
    ] {
        let v = hf.py(&call);
        client_error(&v, "RepositoryNotFoundError");
        assert!(
            !v["classes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "GatedRepoError"),
            "{v:#}"
        );
    }

    client_error(
        &hf.py(&["download", "acme/m", "config.json", "v1.0"]),
        "RevisionNotFoundError",
    );
    client_error(
        &hf.py(&["download", "acme/m", "config.json", &"ab".repeat(20)]),
        "RevisionNotFoundError",
    );

    // A bad token is a 401 that names the problem; the agent adds no credentials of its own.
    let bad = Hf::new(&agent.url, "0123abcd.not-a-secret");
    let v = bad.py(&["download", "acme/m", "config.json"]);
    assert_eq!(v["status"], 401, "{v:#}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("invalid, expired or revoked token"),
        "{v:#}"
    );
    let (status, _) = raw(
        &world.server,
        &format!("{}/api/models/acme/m", agent.url),
        None,
    );
    assert_eq!(status, 401);
}

/// A TCP proxy in front of the agent that cuts the first connection once it has relayed
/// `cut_after` response bytes, and records the `Range` headers clients send.
struct CuttingProxy {
    port: u16,
    cuts: Arc<Mutex<u32>>,
    ranges: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(target: &str, cut_after: u64) -> CuttingProxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(Mutex::new(0u32));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (cuts.clone(), ranges.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let upstream = TcpStream::connect(&target).unwrap();
                let (c, r) = (c.clone(), r.clone());
                // Client to agent, line by line (the client's requests here have no body),
                // noting Range headers and naming the agent in `Host`, as a reverse proxy
                // does: the agent answers only requests addressed to itself.
                let (mut from, mut to) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let agent_host = target.clone();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 16 << 10];
                    'relay: while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                            let raw: Vec<u8> = pending.drain(..=end).collect();
                            let line = String::from_utf8_lossy(&raw).trim().to_ascii_lowercase();
                            // Noted before it is passed on, so it is on record before any answer.
                            if line.starts_with("range:") {
                                r.lock().unwrap().push(line.clone());
                            }
                            let out = if line.starts_with("host:") {
                                format!("Host: {agent_host}\r\n").into_bytes()
                            } else {
                                raw
                            };
                            if to.write_all(&out).is_err() {
                                break 'relay;
                            }
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
                // Agent to client: pass through; cut the first connection that goes far enough.
                let (mut from, mut to) = (upstream, client);
                std::thread::spawn(move || {
                    let mut relayed = 0u64;
                    let mut buf = [0u8; 64 << 10];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        relayed += n as u64;
                        let mut cuts = c.lock().unwrap();
                        if *cuts == 0 && relayed >= cut_after {
                            *cuts += 1;
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        });
        CuttingProxy {
            port,
            cuts,
            ranges,
            stop,
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_connection_cut_mid_file_resumes_with_a_range_request() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 24 << 20);
    world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    // The client writes in 10 MiB chunks and resumes from what it wrote: cut past the first.
    let proxy = CuttingProxy::start(&agent.url, 15 << 20);
    let hf = Hf::new(&format!("http://127.0.0.1:{}", proxy.port), &world.alice);

    let name = "model-00001-of-00002.safetensors";
    let got = ok_path(&hf.py(&["download", "acme/m", name]));
    assert_eq!(
        *proxy.cuts.lock().unwrap(),
        1,
        "the proxy never cut the transfer"
    );
    assert_same_file(&got, &src.path().join(name));
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        log.contains("status=206"),
        "no partial answer was forwarded:\n{log}"
    );
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|r| r
            .strip_prefix("range: bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)),
        "the client did not resume with a range: {ranges:?}\nagent log:\n{log}"
    );
}

// ----- without the agent ---------------------------------------------------------------------

#[test]
fn without_the_agent_listing_works_but_bytes_are_refused() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    let commit = world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");

    // The real client straight at the server: it trusts the server's certificate but has no
    // host certificate to present.
    let mut hf = Hf::new(&world.server.url, &world.alice);
    hf.ca = Some(world.server.ca.clone());
    let info = hf.py(&["info", "acme/m"]);
    assert_eq!(info["sha"], commit.as_str(), "{info:#}");
    let files = hf.py(&["files", "acme/m"]);
    assert_eq!(files["files"].as_array().unwrap().len(), 6, "{files:#}");

    let message = client_error(
        &hf.py(&["download", "acme/m", "config.json"]),
        "GatedRepoError",
    );
    assert!(
        message.contains("fetching weights requires an exclusive host"),
        "{message}"
    );
    let (status, headers) = raw(
        &world.server,
        &format!("{}/acme/m/resolve/main/config.json", world.server.url),
        Some(&world.alice),
    );
    assert_eq!(status, 403);
    assert_eq!(headers["x-error-code"], "GatedRepo");
}

// ----- the protocol, request by request ------------------------------------------------------

/// GET `url` with an optional token (no host certificate); status and headers.
fn raw(server: &TestServer, url: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap) {
    let (status, headers, _) = request(server, "GET", url, token, None);
    (status, headers)
}

fn request(
    server: &TestServer,
    method: &str,
    url: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let (ca, url) = (server.ca.clone(), url.to_owned());
    let (token, range) = (token.map(str::to_owned), range.map(str::to_owned));
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    runtime().block_on(async move {
        let mut r = https_client(&ca).request(method, url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(range) = range {
            r = r.header("range", range);
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        (status, headers, body)
    })
}

fn no_xet(headers: &reqwest::header::HeaderMap, body: &[u8]) {
    for (name, value) in headers {
        assert!(!name.as_str().starts_with("x-xet"), "{name}");
        assert!(
            !value.to_str().unwrap_or("").contains("xet"),
            "{name}: {value:?}"
        );
    }
    assert!(
        !String::from_utf8_lossy(body).contains("xetHash"),
        "a tree entry names a Xet hash"
    );
}

#[test]
fn revisions_heads_ranges_and_tree_pages_follow_the_hub() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 10 << 20); // exactly the LFS threshold: a large file
    write_data(&src.path().join("almost-large.bin"), (10 << 20) - 1, 3); // a small one
    let first = world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let a = |path: &str| format!("{}{path}", agent.url);
    let alice = Some(world.alice.as_str());
    let get = |path: &str| request(&world.server, "GET", &a(path), alice, None);
    let head = |path: &str| request(&world.server, "HEAD", &a(path), alice, None);
    let json = |path: &str| -> Value {
        let (status, headers, body) = get(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        no_xet(&headers, &body);
        serde_json::from_slice(&body).unwrap()
    };

    // A second revision changes config.json; `main` moves, the first stays reachable.
    let old_config = std::fs::read(src.path().join("config.json")).unwrap();
    std::fs::write(src.path().join("config.json"), br#"{"hidden":16}"#).unwrap();
    let second = world
        .server
        .ok(
            &world.admin,
            &["upload", src.path().to_str().unwrap(), "acme/m"],
        )
        .trim()
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(json("/api/models/acme/m")["sha"], second.as_str());
    assert_eq!(
        json("/api/models/acme/m/revision/main")["sha"],
        second.as_str()
    );
    let info = json(&format!("/api/models/acme/m/revision/{first}"));
    assert_eq!(info["sha"], first.as_str());
    assert_eq!(info["id"], "acme/m");
    assert_eq!(info["siblings"].as_array().unwrap().len(), 7);

    // HEAD: the commit, the ETag (Git blob id below the threshold, SHA-256 from it on) and
    // the size; no bytes.
    let check_head = |rev: &str, file: &str, commit: &str, etag: &str, size: u64| {
        let (status, headers, body) = head(&format!("/acme/m/resolve/{rev}/{file}"));
        assert_eq!(status, 200, "{file}");
        assert!(body.is_empty());
        assert_eq!(headers["x-repo-commit"], commit, "{file}");
        assert_eq!(headers["etag"], format!("\"{etag}\"").as_str(), "{file}");
        assert_eq!(headers["x-linked-size"], size.to_string().as_str());
        assert_eq!(headers["content-length"], size.to_string().as_str());
        no_xet(&headers, &body);
    };
    let shard = src.path().join("model-00001-of-00002.safetensors");
    let almost = src.path().join("almost-large.bin");
    let config = src.path().join("config.json");
    check_head("main", "config.json", &second, &git_blob_id(&config), 13);
    let old_id = hex::encode(crypto::hash::git_object_id("blob", &old_config));
    check_head(
        &first,
        "config.json",
        &first,
        &old_id,
        old_config.len() as u64,
    );
    check_head(
        "main",
        "almost-large.bin",
        &second,
        &git_blob_id(&almost),
        (10 << 20) - 1,
    );
    check_head(
        "main",
        "model-00001-of-00002.safetensors",
        &second,
        &sha256_file(&shard),
        10 << 20,
    );
    let (status, headers, _) = head("/acme/m/resolve/main/nope.json");
    assert_eq!(status, 404);
    assert_eq!(headers["x-error-code"], "EntryNotFound");
    assert_eq!(headers["x-repo-commit"], second.as_str());

    // GET by commit serves that revision's bytes; ranges give 206 with Content-Range.
    let (status, headers, body) = get(&format!("/acme/m/resolve/{first}/config.json"));
    assert_eq!((status, body), (200, old_config));
    assert_eq!(headers["x-repo-commit"], first.as_str());
    let shard_bytes = std::fs::read(&shard).unwrap();
    let path = "/acme/m/resolve/main/model-00001-of-00002.safetensors";
    let (status, headers, body) = request(
        &world.server,
        "GET",
        &a(path),
        alice,
        Some("bytes=0-100000"),
    );
    assert_eq!(status, 206);
    assert_eq!(headers["content-range"], "bytes 0-100000/10485760");
    assert_eq!(body, shard_bytes[..100_001]);
    let (status, _, body) = request(
        &world.server,
        "GET",
        &a(path),
        alice,
        Some("bytes=10000000-"),
    );
    assert_eq!((status, body.as_slice()), (206, &shard_bytes[10_000_000..]));
    let (status, _, _) = request(
        &world.server,
        "GET",
        &a(path),
        alice,
        Some("bytes=10485760-"),
    );
    assert_eq!(status, 416);

    // The tree: real hashes, LFS details for the large file, folders with Git tree ids.
    let tree = json("/api/models/acme/m/tree/main?recursive=true");
    let entries = tree.as_array().unwrap();
    let entry = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap().clone();
    assert_eq!(entry("config.json")["oid"], git_blob_id(&config).as_str());
    assert!(entry("config.json").get("lfs").is_none());
    let lfs = entry("model-00001-of-00002.safetensors");
    assert_eq!(lfs["lfs"]["oid"], sha256_file(&shard).as_str());
    assert_eq!(lfs["lfs"]["size"], 10 << 20);
    assert_eq!(entry("extra/deeper")["type"], "directory");
    assert_eq!(entry("extra/deeper")["oid"].as_str().unwrap().len(), 40);
    let all: Vec<String> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 7 + 3, "{all:?}"); // seven files, three folders

    let top = json("/api/models/acme/m/tree/main");
    let top: Vec<&str> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"extra") && !top.contains(&"extra/deeper"),
        "{top:?}"
    );
    let sub = json("/api/models/acme/m/tree/main/tokenizer");
    assert_eq!(sub.as_array().unwrap().len(), 1);
    assert_eq!(sub[0]["path"], "tokenizer/tokenizer.json");
    let (status, headers, _) = get("/api/models/acme/m/tree/main/no-such-folder");
    assert_eq!(status, 404);
    assert_eq!(headers["x-error-code"], "EntryNotFound");

    // Pages: `Link` points at the agent and names the commit; following it gives the same
    // listing, and so does the client's own pagination.
    let mut paged = Vec::new();
    let mut next = Some(a("/api/models/acme/m/tree/main?recursive=true&limit=3"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let (status, headers, body) = request(&world.server, "GET", &url, alice, None);
        assert_eq!(status, 200);
        let page: Value = serde_json::from_slice(&body).unwrap();
        paged.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        next = headers.get("link").map(|l| {
            let l = l.to_str().unwrap();
            let start = format!("<{}/api/models/acme/m/tree/{second}?", agent.url);
            assert!(
                l.starts_with(&start) && l.ends_with(">; rel=\"next\""),
                "{l}"
            );
            l[1..l.find('>').unwrap()].to_owned()
        });
    }
    assert_eq!((pages, &paged), (4, &all));
    let hf = Hf::new(&agent.url, &world.alice);
    let via_client = hf.py(&["paginate", "acme/m", &a("/api/models/acme/m/tree/main")]);
    assert_eq!(via_client["entries"], serde_json::json!(all));
    let (status, headers, _) = get("/api/models/acme/m/tree/main?limit=5000");
    assert_eq!(status, 400, "{headers:?}");

    // Revisions that do not exist.
    for rev in ["v1.0", &"0".repeat(40)] {
        let (status, headers, _) = get(&format!("/api/models/acme/m/revision/{rev}"));
        assert_eq!(status, 404);
        assert_eq!(headers["x-error-code"], "RevisionNotFound");
    }
    let (status, headers, _) = get("/api/models/acme/ghost");
    assert_eq!(status, 404);
    assert_eq!(headers["x-error-code"], "RepoNotFound");

    // The agent relays the Hub's read routes only: a grant sent through it (here by the
    // vendor's own admin, as any local process could) is refused by the agent itself and
    // never reaches the server.
    let bob = world.server.token("committer", None, "bob");
    let (ca, url, admin) = (
        world.server.ca.clone(),
        a("/v1/models/acme/m/grants"),
        world.admin.clone(),
    );
    let status = runtime().block_on(async move {
        let body = serde_json::json!({ "user": "bob" });
        let r = https_client(&ca)
            .post(url)
            .bearer_auth(admin)
            .json(&body)
            .send();
        r.await.unwrap().status().as_u16()
    });
    assert_eq!(status, 403);
    assert_eq!(agent.count("POST", "/v1/models/acme/m/grants"), 0);
    let (status, _, _) = request(
        &world.server,
        "GET",
        &a("/acme/m/resolve/main/config.json"),
        Some(&bob),
        None,
    );
    assert_eq!(
        status, 404,
        "bob holds no grant: the model is unknown to him"
    );
}

#[test]
fn the_agent_listens_on_loopback_only() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:8090"] {
        let run = Command::new(BIN)
            .args(["agent", "--listen", addr])
            .env("CUSTODY_SERVER", "https://127.0.0.1:1")
            .env("CUSTODY_CA", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{addr}");
        assert!(stderr.contains("loopback only"), "{addr}: {stderr}");
    }
}

/// A plain HTTP request to the agent, with the `Host` header given (a browser page on the
/// host, or a local process, can send anything).
fn agent_request(
    agent: &Agent,
    method: &str,
    path: &str,
    host: &str,
    token: &str,
) -> (u16, String) {
    use std::io::{Read, Write as _};
    let addr = agent.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 2\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn the_agent_relays_only_the_hub_read_routes_and_only_to_its_own_name() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let own = agent.url.trim_start_matches("http://").to_owned();
    let port = own.rsplit(':').next().unwrap().to_owned();
    let alice = world.alice.clone();

    // What the Hugging Face client asks works.
    for (method, path) in [
        ("GET", "/api/models/acme/m"),
        ("GET", "/api/models/acme/m/revision/main"),
        ("GET", "/api/models/acme/m/tree/main?recursive=true"),
        ("HEAD", "/acme/m/resolve/main/config.json"),
        ("GET", "/acme/m/resolve/main/config.json"),
    ] {
        let (status, answer) = agent_request(&agent, method, path, &own, &alice);
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
    let (status, _) = agent_request(
        &agent,
        "GET",
        "/api/models/acme/m",
        &format!("localhost:{port}"),
        &alice,
    );
    assert_eq!(status, 200, "localhost is the agent's own name too");

    // Everything else is refused by the agent itself, the host-only wipe routes first: a
    // local process must not read the wipe list or confirm a wipe with the host's identity.
    for (method, path) in [
        ("GET", "/v1/host/wipe"),
        ("POST", "/v1/host/wipe"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/acme/m/revisions/main/files/config.json"),
        ("POST", "/v1/models/acme/m/grants"),
        ("GET", "/v1/audit/key"),
        ("POST", "/api/models/acme/m/commit/main"),
        ("GET", "/api/whoami-v2"),
        ("PUT", "/acme/m/resolve/main/config.json"),
        ("DELETE", "/api/models/acme/m"),
        ("GET", "/api/models/acme/m/../../../v1/host/wipe"),
    ] {
        let (status, answer) = agent_request(&agent, method, path, &own, &alice);
        assert!(
            status == 403 || status == 404 || status == 405,
            "{method} {path} was relayed: {answer}"
        );
        assert!(answer.contains("agent"), "{method} {path}: {answer}");
    }
    // DNS rebinding: a page from another origin that resolved to 127.0.0.1 sends its own name.
    for host in [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.2:{port}",
        "",
    ] {
        let host = host.replace("{port}", &port);
        let (status, answer) = agent_request(&agent, "GET", "/api/models/acme/m", &host, &alice);
        assert!(
            status == 403 || status == 421 || status == 400,
            "Host {host:?} was relayed: {answer}"
        );
    }
    // None of the refused requests reached the server.
    assert_eq!(agent.count("GET", "/v1/host/wipe"), 0);
    assert_eq!(agent.count("POST", "/v1/host/wipe"), 0);
}

#[test]
fn a_derived_upload_never_becomes_main_for_the_hugging_face_client() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    let vendor_commit = world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    // A grantee uploads a "derived" revision whose config.json would run their code.
    let derived = tempfile::tempdir().unwrap();
    std::fs::write(
        derived.path().join("config.json"),
        br#"{"auto_map":{"AutoModel":"evil.Model"},"trust_remote_code":true}"#,
    )
    .unwrap();
    std::fs::write(derived.path().join("evil.py"), b"import os\n").unwrap();
    let derived_commit = world
        .server
        .ok(
            &world.alice,
            &[
                "upload",
                derived.path().to_str().unwrap(),
                "acme/m",
                "--derived-from",
                &vendor_commit,
            ],
        )
        .trim()
        .to_owned();
    assert_ne!(derived_commit, vendor_commit);
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    let bob = world.server.token("committer", None, "bob");
    grant(&world, "acme/m", "bob");
    let hf = Hf::new(&agent.url, &bob);
    let snapshot = ok_path(&hf.py(&["snapshot", "acme/m"]));
    assert!(
        snapshot.ends_with(format!("snapshots/{vendor_commit}")),
        "main is not the vendor's revision: {}",
        snapshot.display()
    );
    assert_same_tree(&snapshot, src.path());
    let info = hf.py(&["info", "acme/m"]);
    assert_eq!(info["sha"], vendor_commit.as_str(), "{info}");
    // By its commit id, the derived revision is there for whoever asks for it.
    let derived_snapshot = ok_path(&hf.py(&["snapshot", "acme/m", &derived_commit]));
    assert!(derived_snapshot.join("evil.py").exists());
}

/// Issue 19: `hf download --local-dir` writes outside any cache; `custody wipe` finds such a
/// copy in the folders it searches (by the commit in the client's download metadata), removes
/// it and no other model's, and its confirmation (output and audit entry) names every place it
/// looked, so it never claims more than was checked.
#[test]
fn wipe_finds_local_dir_copies_where_it_searches_and_says_where_it_looked() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 2 << 20);
    let commit = world.upload(src.path(), "acme/m");
    let kept_src = tempfile::tempdir().unwrap();
    std::fs::write(kept_src.path().join("config.json"), b"{\"kept\":1}").unwrap();
    world.upload(kept_src.path(), "acme/kept");
    grant(&world, "acme/m", "alice");
    grant(&world, "acme/kept", "alice");
    let agent = Agent::start(s, s.host.as_ref());
    let hf = Hf::new(&agent.url, &world.alice);
    let work = tempfile::tempdir().unwrap();
    let projects = work.path().join("projects");
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let local = projects.join("llama");
    let kept = projects.join("kept");
    for (model, dir) in [("acme/m", &local), ("acme/kept", &kept)] {
        let run = hf.hf(&["download", model, "--local-dir", dir.to_str().unwrap()]);
        assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    }
    assert_same_tree(&local, src.path());
    crate::wipe::delete_model(&world, "m");
    let hf_cache = work.path().join("hf-cache");
    let hf_cache = hf_cache.to_str().unwrap();

    // Searching elsewhere finds nothing, and says exactly where it looked.
    let dry = s.ok(
        "no-token",
        &[
            "wipe",
            "--dry-run",
            "--hf-cache",
            hf_cache,
            "--search",
            elsewhere.to_str().unwrap(),
        ],
    );
    assert!(
        dry.contains("no local copy found in the places searched")
            && dry.contains(&format!("--local-dir copies under {}", elsewhere.display()))
            && !dry.contains(projects.to_str().unwrap()),
        "{dry}"
    );
    assert!(local.join("config.json").exists());

    // A folder someone else can write to, with planted metadata naming the deleted commit and
    // a link out of the folder: wipe does not follow the link, and says so.
    let evil = work.path().join("evil");
    let victim = work.path().join("victim");
    std::fs::create_dir_all(evil.join(".cache/huggingface/download/x")).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"not a model").unwrap();
    std::fs::write(
        evil.join(".cache/huggingface/download/x/precious.metadata"),
        format!("{commit}\netag\n1.0\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&victim, evil.join("x")).unwrap();
    let planted = s.custody(
        "no-token",
        &[
            "wipe",
            "--dry-run",
            "--hf-cache",
            hf_cache,
            "--search",
            evil.to_str().unwrap(),
        ],
    );
    assert!(
        planted
            .stdout
            .contains("is a symbolic link inside a copy's folder; not following it"),
        "{}\n{}",
        planted.stdout,
        planted.stderr
    );
    assert!(victim.join("precious").exists());

    // Searching the folder above the copy finds it: every file, its metadata, nothing kept.
    let done: Value = serde_json::from_str(&s.ok(
        "no-token",
        &[
            "--json",
            "wipe",
            "--hf-cache",
            hf_cache,
            "--search",
            projects.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let wiped = &done["models"][0];
    assert_eq!(wiped["model"], "acme/m", "{done}");
    assert_eq!(wiped["confirmed"], true, "{done}");
    for file in model_files(src.path()) {
        assert!(!local.join(&file).exists(), "{file} survived the wipe");
    }
    let leftovers: Vec<String> = list_files(&local);
    assert!(
        leftovers
            .iter()
            .all(|f| !f.ends_with(".metadata") && !f.ends_with(".incomplete")),
        "{leftovers:?}"
    );
    assert!(
        kept.join("config.json").exists(),
        "another model's copy was removed"
    );
    let searched = done["searched"].to_string();
    assert!(
        searched.contains(&format!("--local-dir copies under {}", projects.display())),
        "{searched}"
    );

    // The confirmation in the log names where the host looked.
    let entry = crate::wipe::sql(
        s,
        "SELECT CAST(entry AS TEXT) FROM audit_log WHERE CAST(entry AS TEXT) LIKE '%wipe.confirm%'",
    );
    assert!(
        entry.contains("searched") && entry.contains(projects.to_str().unwrap()),
        "{entry}"
    );
}

/// Issue 19: an agent without the host's certificate would answer 403 to everything; it
/// refuses to start and names what to set.
#[test]
fn the_agent_refuses_to_start_without_a_host_certificate() {
    let world = World::new();
    let mut child = Command::new(BIN)
        .args(["agent", "--listen", "127.0.0.1:0"])
        .env("CUSTODY_SERVER", &world.server.url)
        .env("CUSTODY_CA", &world.server.ca)
        .env_remove("CUSTODY_TOKEN")
        .env_remove("CUSTODY_HOST_CERT")
        .env_remove("CUSTODY_HOST_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the agent started without a host certificate");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("CUSTODY_HOST_CERT") && stderr.contains("custody host csr"),
        "{stderr}"
    );
}

/// A fetch beyond the model's egress budget (issue 17) is 429: the client retries it a few
/// times (a budget that frees up only in an hour sends no `Retry-After` to the Hub API, so the
/// client does not sleep through it) and then shows custody's reason, with when it frees up.
#[test]
fn the_client_shows_why_an_egress_budget_refused_a_download() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_model(src.path(), 1 << 20);
    world.upload(src.path(), "acme/m");
    grant(&world, "acme/m", "alice");
    world.server.ok(
        &world.admin,
        &["budget", "acme/m", "--per-host", "1x", "--window", "1h"],
    );
    let agent = Agent::start(&world.server, world.server.host.as_ref());
    assert!(ok_path(&Hf::new(&agent.url, &world.alice).py(&["snapshot", "acme/m"])).is_dir());
    let fresh = Hf::new(&agent.url, &world.alice);
    let message = client_error(
        &fresh.py(&["download", "acme/m", "config.json"]),
        "HfHubHTTPError",
    );
    assert!(
        message.contains("egress budget exceeded: host gpu-01 has received")
            && message.contains("it frees up at"),
        "{message}"
    );
    let run = fresh.hf(&["download", "acme/m", "config.json"]);
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("custody: egress budget exceeded: host gpu-01 has received"),
        "{}",
        run.stderr
    );
}
