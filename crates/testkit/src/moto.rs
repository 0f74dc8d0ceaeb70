//! A throwaway S3 server: moto in server mode, from the venv that `tests/run` prepares.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{START_ATTEMPTS, free_port, sh_quote, spawn_watchdog};

/// How long moto may take to answer its first request (it starts in about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// moto's S3 (and KMS, ...) on `http://127.0.0.1:PORT`. It accepts any credentials; use access
/// key `test`, secret `test`, region `us-east-1` and path-style addressing.
///
/// Dropping it kills the server; a watchdog kills it too once the test process is gone (for
/// [`MotoServer::shared`], which is never dropped, and for a killed test binary).
pub struct MotoServer {
    url: String,
    port: u16,
    child: Child,
    watchdog: Option<Child>,
    // Declared last: removed after `Drop::drop` killed the server.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("url", &self.url)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl MotoServer {
    /// Start `moto_server` on a free port and wait until it answers HTTP. Blocking.
    pub fn start() -> Result<MotoServer, String> {
        let venv = venv_dir();
        let exe = venv.join("bin").join("moto_server");
        if !exe.is_file() {
            return Err(format!(
                "moto_server not found in {}: run tests/run (it creates the venv with moto[server])",
                venv.display()
            ));
        }
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = MotoServer::spawn(&exe)?;
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = std::fs::read_to_string(server.log_file())
                        .unwrap_or_else(|e| format!("(no server log: {e})"));
                    last_err = format!("{e}\n--- moto_server log ---\n{log}");
                    // Port clash is worth another try; anything else is not.
                    if !log.contains("already in use") {
                        break;
                    }
                }
            }
        }
        Err(format!("moto_server did not start: {last_err}"))
    }

    /// Run moto on a free port, its output in a fresh temp dir, under a watchdog.
    fn spawn(exe: &Path) -> Result<MotoServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-moto-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for moto: {e}"))?;
        let log_path = dir.path().join("log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log_path.display()))?;
        let port = free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let mut server = MotoServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            watchdog: None,
            dir,
        };
        let on_exit = format!(
            "kill {pid}; rm -rf {dir}",
            pid = server.child.id(),
            dir = sh_quote(&server.dir.path().to_string_lossy()),
        );
        server.watchdog = Some(spawn_watchdog("moto", &on_exit)?);
        Ok(server)
    }

    /// The server shared by all tests of this test binary, started on first use. Give each
    /// test its own bucket ([`MotoServer::fresh_bucket`]).
    pub fn shared() -> Result<&'static MotoServer, String> {
        static SHARED: OnceLock<Result<MotoServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(MotoServer::start)
            .as_ref()
            .map_err(|e| format!("shared moto server failed to start: {e}"))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create bucket `name` (3-63 lowercase letters, digits, `-`), with versioning enabled when
    /// `versioned`.
    pub fn create_bucket(&self, name: &str, versioned: bool) -> Result<(), String> {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "invalid bucket name {name:?}: use 3-63 lowercase letters, digits or `-`"
            ));
        }
        self.request("PUT", &format!("/{name}"), b"")?;
        if versioned {
            let body =
                b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                         <Status>Enabled</Status></VersioningConfiguration>";
            self.request("PUT", &format!("/{name}?versioning"), body)?;
        }
        Ok(())
    }

    /// Create bucket `name` with S3 Object Lock enabled (and so versioning): versions under a
    /// legal hold cannot be deleted ([`MotoServer::set_legal_hold`]), as on AWS.
    pub fn create_locked_bucket(&self, name: &str) -> Result<(), String> {
        self.request_with(
            "PUT",
            &format!("/{name}"),
            &[("x-amz-bucket-object-lock-enabled", "true")],
            b"",
        )?;
        Ok(())
    }

    /// Every stored version in `bucket`: `(key, version id)`, delete markers excluded.
    pub fn object_versions(&self, bucket: &str) -> Result<Vec<(String, String)>, String> {
        let xml = self.request("GET", &format!("/{bucket}?versions"), b"")?;
        let mut out = Vec::new();
        for version in xml.split("<Version>").skip(1) {
            let field = |name: &str| {
                version
                    .split(&format!("<{name}>"))
                    .nth(1)
                    .and_then(|rest| rest.split(&format!("</{name}>")).next())
                    .map(str::to_owned)
            };
            match (field("Key"), field("VersionId")) {
                (Some(key), Some(id)) => out.push((key, id)),
                _ => return Err(format!("unexpected ListObjectVersions answer: {xml}")),
            }
        }
        Ok(out)
    }

    /// Puts (or lifts) an S3 Object Lock legal hold on one version: while it is on, deleting
    /// that version is refused with AccessDenied.
    pub fn set_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        on: bool,
    ) -> Result<(), String> {
        let body = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        self.request_with(
            "PUT",
            &format!("/{bucket}/{key}?legal-hold&versionId={version}"),
            &[("content-type", "application/xml")],
            body.as_bytes(),
        )?;
        Ok(())
    }

    /// One KMS API call (`action` such as `CancelKeyDeletion`, a JSON request body), as an
    /// AWS principal with the rights would make it: for tests that undo a root's destruction.
    /// Ok(JSON answer) on 2xx.
    pub fn kms(&self, action: &str, body: &str) -> Result<String, String> {
        let what = format!("moto KMS {action}");
        let target = format!("TrentService.{action}");
        let (status, text) = http(
            self.port,
            "POST",
            "/",
            DUMMY_KMS_AUTHORIZATION,
            &[
                ("x-amz-target", &target),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            body.as_bytes(),
        )
        .map_err(|e| format!("{what}: {e}"))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(format!("{what}: HTTP {status}: {text}"))
        }
    }

    /// Create a bucket with a name unique in this process (`t-<pid>-<n>`); returns the name.
    pub fn fresh_bucket(&self, versioned: bool) -> Result<String, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.create_bucket(&name, versioned)?;
        Ok(name)
    }

    /// One HTTP/1.1 request with a dummy signature (moto checks that requests are signed,
    /// not the signature); Ok(body) on 2xx.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<String, String> {
        self.request_with(method, path, &[], body)
    }

    fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<String, String> {
        let what = format!("moto {method} {path}");
        let (status, text) = http(self.port, method, path, DUMMY_AUTHORIZATION, headers, body)
            .map_err(|e| format!("{what}: {e}"))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(format!("{what}: HTTP {status}: {text}"))
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited at start-up ({status})"));
            }
            if http(
                self.port,
                "GET",
                "/moto-api/",
                DUMMY_AUTHORIZATION,
                &[],
                b"",
            )
            .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server did not answer on port {} within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$CUSTODY_TEST_VENV`, else `.venv` at the workspace root.
fn venv_dir() -> PathBuf {
    match std::env::var_os("CUSTODY_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    }
}

/// moto picks the service from the credential scope: KMS calls name `kms`.
const DUMMY_KMS_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kms/\
                                       aws4_request, SignedHeaders=host, Signature=00";

/// Sent with every request: moto answers unsigned requests as anonymous ones (refusing, for
/// example, deletes), but does not verify signatures.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/\
                                   aws4_request, SignedHeaders=host, Signature=00";

/// A minimal HTTP/1.1 exchange with `Connection: close`; returns the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    authorization: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let timeout = Some(Duration::from_secs(10));
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Authorization: {authorization}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}
