//! The harness: a server process, CLI runs against it, and test data.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_custody");

/// The name of the operator token a first start makes with the bootstrap token.
pub const OPERATOR: &str = "root-operator";

pub struct TestServer {
    child: Child,
    pub data: tempfile::TempDir,
    pub url: String,
    pub ca: PathBuf,
    pub operator: String,
    pub stdout: Vec<String>,
    /// The exclusive host the CLI and API helpers act from, once one is enrolled.
    pub host: Option<HostCert>,
}

/// An enrolled exclusive host's certificate and key files.
#[derive(Clone, Debug)]
pub struct HostCert {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl HostCert {
    /// The host's record of what `custody fetch` wrote (for `custody wipe`): one per host,
    /// beside its key, never in the user's home.
    pub fn host_state(&self) -> PathBuf {
        self.key.with_file_name("fetched.json")
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(tempfile::tempdir().unwrap(), &[])
    }

    /// Starts a server on `data` (which may hold an earlier installation) with extra flags.
    pub fn start_with(data: tempfile::TempDir, extra: &[&str]) -> TestServer {
        TestServer::start_env(data, extra, &[])
    }

    /// Like [`TestServer::start_with`], with extra environment variables for the server.
    pub fn start_env(data: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        TestServer::start_unclaimed(data, extra, env).claimed()
    }

    /// A first start wrote the single-use bootstrap token to a file: it makes the operator
    /// token the tests use, as the README's quickstart does.
    pub fn claimed(mut self) -> TestServer {
        if let Some(bootstrap) = self.bootstrap_token() {
            self.operator = self
                .ok(
                    &bootstrap,
                    &["token", "create", "--role", "operator", "--name", OPERATOR],
                )
                .trim()
                .to_owned();
        }
        self
    }

    /// Starts a server and leaves its bootstrap token (if it wrote one) unused: `operator` is
    /// empty.
    pub fn start_unclaimed(
        data: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        TestServer::start_binary(Path::new(BIN), data, extra, env)
    }

    /// Starts the server of another custody binary (`bin`) and leaves its bootstrap token
    /// unused, as [`TestServer::start_unclaimed`] does.
    pub fn start_binary(
        bin: &Path,
        data: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(data.path().join("custody"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            // The server's clock, moved by `advance_clock` (a test hook: test builds only).
            .env("CUSTODY_TEST_CLOCK_FILE", data.path().join("clock-offset"))
            .envs(env.iter().copied())
            .env(
                "CUSTODY_LOG",
                std::env::var("CUSTODY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
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
        let mut lines = Vec::new();
        let url = loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("custody: listening on ") {
                        let url = addr.to_owned();
                        lines.push(line);
                        break url;
                    }
                    lines.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let log =
                        std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default();
                    panic!("server did not start; stdout: {lines:?}\nlog:\n{log}");
                }
            }
        };
        let ca = data.path().join("custody/tls/cert.pem");
        TestServer {
            child,
            data,
            url,
            ca,
            operator: String::new(),
            stdout: lines,
            host: None,
        }
    }

    /// The file the first start wrote the bootstrap token to, as its stdout names it.
    pub fn bootstrap_token_file(&self) -> Option<PathBuf> {
        self.stdout.iter().find_map(|l| {
            l.split("operator bootstrap token written to ")
                .nth(1)
                .and_then(|rest| rest.split(" (").next())
                .map(PathBuf::from)
        })
    }

    /// The bootstrap token, read from its file (while it is there).
    pub fn bootstrap_token(&self) -> Option<String> {
        let path = self.bootstrap_token_file()?;
        Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
    }

    /// Where the server serves its metrics, as its stdout names it (`None`: metrics off).
    pub fn metrics_url(&self) -> Option<String> {
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix("custody: metrics on ").map(str::to_owned))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("custody")
    }

    /// Moves the server's clock `secs` forward (every decision that depends on the time reads
    /// it: expiries, embargoes, `delete_after`), instead of sleeping.
    pub fn advance_clock(&self, secs: i64) {
        advance_clock_file(&self.data.path().join("clock-offset"), secs);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM to the server (a graceful stop, as systemd asks for one).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `secs` for the server to exit; its exit status, or `None` if still running.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `host:port` the server listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_owned()
    }

    /// Whether the server process has exited (for tests that make it stop).
    pub fn try_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Stops the server and hands back its data directory (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        let data = std::mem::replace(&mut self.data, dir);
        drop(self);
        data
    }

    /// Runs the CLI as the holder of `token`, on the default host (if one is enrolled).
    pub fn custody(&self, token: &str, args: &[&str]) -> Run {
        self.custody_on(self.host.as_ref(), token, args)
    }

    /// Runs the CLI as the holder of `token` on `host` (`None`: without a host certificate).
    pub fn custody_on(&self, host: Option<&HostCert>, token: &str, args: &[&str]) -> Run {
        let mut command = self.command(host, token);
        Run::from(command.args(args).output().unwrap())
    }

    pub fn command(&self, host: Option<&HostCert>, token: &str) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("CUSTODY_SERVER", &self.url)
            .env("CUSTODY_TOKEN", token)
            .env("CUSTODY_CA", &self.ca)
            .env_remove("CUSTODY_HOST_CERT")
            .env_remove("CUSTODY_HOST_KEY")
            .env_remove("CUSTODY_HOST_STATE")
            // `custody wipe` cleans the Hugging Face cache: never the real one in tests.
            .env("HF_HUB_CACHE", self.data.path().join("hf-cache"))
            .stdin(Stdio::null());
        if let Some(h) = host {
            command
                .env("CUSTODY_HOST_CERT", &h.cert)
                .env("CUSTODY_HOST_KEY", &h.key)
                .env("CUSTODY_HOST_STATE", h.host_state());
        }
        command
    }

    /// Makes a host key and request (as the host would), and enrolls it (as the operator).
    pub fn enroll_host(&self, name: &str, group: &str) -> HostCert {
        let dir = self.data.path().join("hosts").join(name);
        let out = dir.to_str().unwrap();
        let csr = Command::new(BIN)
            .args(["host", "csr", "--name", name, "--out", out])
            .output()
            .unwrap();
        assert!(
            csr.status.success(),
            "{}",
            String::from_utf8_lossy(&csr.stderr)
        );
        let cert = dir.join("host.crt");
        self.ok(
            &self.operator,
            &[
                "host",
                "enroll",
                dir.join("host.csr").to_str().unwrap(),
                "--name",
                name,
                "--group",
                group,
                "--out",
                cert.to_str().unwrap(),
            ],
        );
        HostCert {
            name: name.to_owned(),
            cert,
            key: dir.join("host.key"),
        }
    }

    /// Runs the CLI and insists that it succeeds; returns stdout.
    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let run = self.custody(token, args);
        if !run.success {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "custody {args:?} failed:\n{}\nserver log (last lines, newest first):\n{}",
                run.stderr,
                tail.join("\n")
            );
        }
        run.stdout
    }

    pub fn create_vendor(&self, name: &str) {
        self.ok(&self.operator, &["vendor", "create", name]);
    }

    pub fn token(&self, role: &str, vendor: Option<&str>, name: &str) -> String {
        let mut args = vec!["token", "create", "--role", role, "--name", name];
        if let Some(v) = vendor {
            args.extend(["--vendor", v]);
        }
        let token = self.ok(&self.operator, &args).trim().to_owned();
        assert!(token.contains('.'), "not a token: {token}");
        token
    }

    /// A token the operator issues that waits for the vendor (a further admin or auditor, or
    /// another credential for an existing person), approved by `approver`, an admin of
    /// `vendor`: it then counts there. One approval: the vendor's two-person rule must be off.
    pub fn admitted_token(&self, role: &str, vendor: &str, name: &str, approver: &str) -> String {
        let mut args = vec!["--json", "token", "create", "--role", role, "--name", name];
        if role != "committer" {
            args.extend(["--vendor", vendor]);
        }
        let out = self.ok(&self.operator, &args);
        let created: Value = serde_json::from_str(out.trim()).unwrap();
        let waiting = created["awaiting"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["vendor"] == vendor)
            .unwrap_or_else(|| panic!("{name}'s token waits for nothing at {vendor}: {created}"));
        self.ok(approver, &["approve", waiting["pending"].as_str().unwrap()]);
        created["token"].as_str().unwrap().to_owned()
    }

    /// Calls the API directly, for requests the CLI would never make.
    pub fn api(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let ca = self.ca.clone();
        let token = token.to_owned();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let host = self.host.clone();
        runtime().block_on(async move {
            let client = https_client_on(&ca, host.as_ref());
            let mut request = client.request(method, url).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let value = response.json().await.unwrap_or(Value::Null);
            (status, value)
        })
    }

    /// Sends raw bytes as a file of an upload session.
    pub fn put_bytes(&self, token: &str, path: &str, bytes: Vec<u8>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let ca = self.ca.clone();
        let token = token.to_owned();
        runtime().block_on(async move {
            let response = https_client(&ca)
                .put(url)
                .bearer_auth(token)
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    }

    /// GET with an optional `Range` header: status, `Content-Range`, and the body (or the
    /// error that cut it).
    pub fn get_range(
        &self,
        token: &str,
        path: &str,
        range: Option<&str>,
    ) -> (u16, Option<String>, Result<Vec<u8>, String>) {
        let url = format!("{}{path}", self.url);
        let ca = self.ca.clone();
        let token = token.to_owned();
        let range = range.map(str::to_owned);
        let host = self.host.clone();
        runtime().block_on(async move {
            let mut request = https_client_on(&ca, host.as_ref())
                .get(url)
                .bearer_auth(token);
            if let Some(r) = range {
                request = request.header("range", r);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_range = response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| format!("{e:#}"));
            (status, content_range, body)
        })
    }

    /// Starts the CLI without waiting for it, for tests that interrupt it.
    pub fn spawn_custody(&self, token: &str, args: &[&str]) -> Child {
        self.command(self.host.as_ref(), token)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn https_client(ca: &Path) -> reqwest::Client {
    https_client_on(ca, None)
}

/// An HTTPS client trusting `ca`, presenting `host`'s certificate when given.
pub fn https_client_on(ca: &Path, host: Option<&HostCert>) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Arc::new(roots));
    let tls = match host {
        Some(h) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&h.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&h.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

pub struct Run {
    pub success: bool,
    /// The exit status (`None` when a signal ended the process).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            success: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Writes `len` bytes of deterministic, incompressible-looking data: a random 1 MiB block,
/// each copy stamped with its index and the seed so no two segments are alike.
pub fn write_data(path: &Path, len: u64, seed: u64) {
    use rand::{RngCore, SeedableRng};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut block = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut block);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0u64;
    let mut index = 0u64;
    while written < len {
        block[..8].copy_from_slice(&index.to_le_bytes());
        block[8..16].copy_from_slice(&seed.to_le_bytes());
        let n = (len - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        written += n as u64;
        index += 1;
    }
    file.flush().unwrap();
}

/// Asserts two files are byte-identical, without loading them whole.
pub fn assert_same_file(a: &Path, b: &Path) {
    use std::io::Read;
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    assert_eq!(
        ma.len(),
        mb.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let mut fa = std::io::BufReader::new(std::fs::File::open(a).unwrap());
    let mut fb = std::io::BufReader::new(std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(
            ba[..n] == bb[..n],
            "{} and {} differ",
            a.display(),
            b.display()
        );
    }
}

/// Every file under `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// The ciphertext files of a server's stored objects, for tamper tests: each object is a
/// directory of part files beside its part index, and the objects of these tests (under
/// 8 MiB) have one part, so each path here holds one whole object.
pub fn stored_objects(server: &TestServer) -> Vec<PathBuf> {
    let root = server.data_dir().join("blobs/objects");
    list_files(&root)
        .into_iter()
        .filter(|p| !p.ends_with("/index"))
        .map(|p| root.join(p))
        .collect()
}

/// A server with vendor `acme`, its admin, and a committer `alice`.
pub struct World {
    pub server: TestServer,
    pub admin: String,
    pub alice: String,
}

impl World {
    pub fn new() -> World {
        World::on(TestServer::start())
    }

    /// The server gets an enrolled host `gpu-01` in host group `gpu`, which the CLI and API
    /// helpers then act from; [`World::upload`] allows that group for the model.
    pub fn on(mut server: TestServer) -> World {
        server.create_vendor("acme");
        let admin = server.token("vendor-admin", Some("acme"), "acme-admin");
        let alice = server.token("committer", None, "alice");
        server.host = Some(server.enroll_host("gpu-01", "gpu"));
        // The operator enrolls hosts; each vendor approves those that may hold its weights.
        server.ok(&admin, &["host", "approve", "acme", "gpu-01"]);
        World {
            server,
            admin,
            alice,
        }
    }

    /// Uploads `dir` as `acme/MODEL`; returns the commit id.
    pub fn upload(&self, dir: &Path, model: &str) -> String {
        let commit = self
            .server
            .ok(&self.admin, &["upload", dir.to_str().unwrap(), model])
            .trim()
            .to_owned();
        assert_eq!(commit.len(), 40, "not a commit id: {commit:?}");
        assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()));
        self.server
            .ok(&self.admin, &["host", "allow", model, "gpu"]);
        commit
    }

    /// Uploads one file `w.bin` of `size` bytes (the data of `seed`) as `acme/MODEL` and grants
    /// it to alice; returns the folder it came from and the file's native fetch URL.
    pub fn upload_one_file_for_alice(
        &self,
        model: &str,
        size: u64,
        seed: u64,
    ) -> (tempfile::TempDir, String) {
        let src = tempfile::tempdir().unwrap();
        write_data(&src.path().join("w.bin"), size, seed);
        let commit = self.upload(src.path(), model);
        self.server
            .ok(&self.admin, &["grant", model, "--to", "alice"]);
        let url = format!(
            "{}/v1/models/{model}/revisions/{commit}/files/w.bin",
            self.server.url
        );
        (src, url)
    }
}

/// Waits until `ready` holds, polling; panics after `secs`.
pub fn wait_for(secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Adds `secs` to the offset in a server's clock file (`CUSTODY_TEST_CLOCK_FILE`), replacing
/// the file whole so the server never reads half of it.
pub fn advance_clock_file(path: &Path, secs: i64) {
    let now: i64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, (now + secs).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
