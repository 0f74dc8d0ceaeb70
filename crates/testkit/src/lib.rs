//! Real throwaway servers for tests.
//!
//! Design: tests in custody talk to real servers, not mocks. This crate starts them on
//! 127.0.0.1 from the binaries installed on the machine and makes sure they go away again:
//!
//! * [`PgCluster::start`] runs `initdb` + `pg_ctl start` in a fresh temp dir on a free port
//!   (trust auth, fsync off). Dropping the cluster stops it (`-m immediate`) and deletes the dir.
//! * Every cluster also gets a *watchdog*: a tiny `sh` loop that polls the test process with
//!   `kill -0` once a second and, once the process is gone, stops the server and removes the
//!   dir. This covers what `Drop` cannot: [`PgCluster::shared`] lives in a `static` (statics are
//!   never dropped) and a test binary may be killed or abort. No threads, no `libc`.
//! * PostgreSQL refuses to run as root. When the effective uid is 0, the temp dir is handed to
//!   user `postgres` and every PostgreSQL binary runs through `runuser -u postgres --`.
//! * [`MotoServer::start`] runs moto's S3 server (`moto_server`, from the venv that `tests/run`
//!   creates: `$CUSTODY_TEST_VENV`, else `.venv` at the workspace root) on a free port, under
//!   the same kind of watchdog; dropping it kills the server.
//! * [`Haproxy::start`] runs HAProxy in TCP mode in front of some ports (Debian `haproxy`,
//!   installed by `tests/run`), under the same kind of watchdog.
//! * [`Cluster::start`] puts it together: N `custody server` processes (the binary is given)
//!   on a fresh PostgreSQL database, a moto bucket and moto's KMS, one identity from
//!   `custody init`, behind HAProxy.
//! * [`SoftHsm::new`] initialises a SoftHSM2 token (a PKCS#11 HSM in software) in a temp dir
//!   with its own `SOFTHSM2_CONF`; [`in_child_with_softhsm`] reruns a test in a child process
//!   with that variable set, for tests that load the PKCS#11 module themselves.
//! * Missing binaries are an error naming the package to install, never a silent skip.
//!
//! Errors are plain `String`s with enough context (command, stderr, server log) to act on.
#![forbid(unsafe_code)]

mod cluster;
mod haproxy;
mod moto;
mod softhsm;

pub use cluster::{Cluster, ClusterOptions, Instance, Storage};
pub use haproxy::{Haproxy, haproxy_config};
pub use moto::MotoServer;
pub use softhsm::{SOFTHSM_PIN, SOFTHSM_TOKEN, SoftHsm, in_child_with_softhsm};

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read the port, release).
///
/// Panics never; if even binding port 0 fails, returns 0, which no server will accept, so the
/// caller's start fails loudly instead.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found: install the \
                         Debian package `postgresql` (apt-get install -y postgresql)";
const START_ATTEMPTS: usize = 5;

/// A throwaway PostgreSQL cluster listening on 127.0.0.1, superuser `postgres`, trust auth.
pub struct PgCluster {
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// fsync and synchronous commit on (benchmarks of durable writes); off for tests.
    durable: bool,
    watchdog: Option<Child>,
    // Declared last: removed after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl PgCluster {
    /// Initialise and start a new cluster (fsync off: fast, not crash-safe; for tests).
    /// Blocking; takes a second or two.
    pub fn start() -> Result<PgCluster, String> {
        Self::start_with(false)
    }

    /// A cluster with PostgreSQL's durability settings (fsync, synchronous commit), for
    /// benchmarks that claim durable writes.
    pub fn start_durable() -> Result<PgCluster, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<PgCluster, String> {
        let bindir = find_bindir()?;
        let as_postgres = effective_uid_is_root()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for PostgreSQL: {e}"))?;
        prepare_dir(dir.path(), as_postgres)?;
        let mut cluster = PgCluster {
            bindir,
            port: 0,
            as_postgres,
            durable,
            watchdog: None,
            dir,
        };
        cluster.init_and_start()?;
        Ok(cluster)
    }

    /// The cluster shared by all tests of this test binary, started on first use.
    ///
    /// It is never dropped; its watchdog stops it and removes its dir within about a second
    /// after the test process exits. Use [`PgCluster::fresh_database`] for per-test isolation.
    pub fn shared() -> Result<&'static PgCluster, String> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(PgCluster::start)
            .as_ref()
            .map_err(|e| format!("shared PostgreSQL cluster failed to start: {e}"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        self.db_url("postgres")
    }

    /// URL of database `name` in this cluster (whether or not it exists).
    pub fn db_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding `psql`, `pg_ctl`, ... of this cluster.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Create database `name` (letters, digits, `_`; at most 63 bytes) and return its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "invalid database name {name:?}: use 1-63 ASCII letters, digits or `_`"
            ));
        }
        let mut cmd = self.pg_command("createdb");
        cmd.args(self.conn_args()).arg(name);
        run(&mut cmd, &format!("createdb {name}"))?;
        Ok(self.db_url(name))
    }

    /// Create a database with a name unique in this process (`t_<pid>_<n>`); returns its URL.
    pub fn fresh_database(&self) -> Result<String, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t_{}_{n}", std::process::id()))
    }

    /// Run `sql` with `psql -At` (unaligned, tuples only) in database `db`; returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.pg_command("psql");
        cmd.args(self.conn_args()).args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        run(&mut cmd, &format!("psql -d {db} -c {sql:?}"))
    }

    fn conn_args(&self) -> [String; 6] {
        let port = self.port.to_string();
        ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"].map(String::from)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A command for PostgreSQL binary `prog`, run as `postgres` when we are root.
    fn pg_command(&self, prog: &str) -> Command {
        let exe = self.bindir.join(prog);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The caller's cwd may not be readable by `postgres`; the temp dir is.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn init_and_start(&mut self) -> Result<(), String> {
        let mut initdb = self.pg_command("initdb");
        initdb.arg("-D").arg(self.data_dir()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(&mut initdb, "initdb")?;

        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            let speed = if self.durable {
                ""
            } else {
                "-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
            };
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} {speed}-c max_connections=200",
                self.port,
                sh_quote(&self.dir.path().to_string_lossy()),
            );
            let mut start = self.pg_command("pg_ctl");
            start
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "-l"])
                .arg(self.log_file())
                .args(["-o", &opts, "start"]);
            match run(&mut start, "pg_ctl start") {
                Ok(_) => {
                    self.watchdog = Some(self.spawn_watchdog()?);
                    return Ok(());
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.log_file())
                        .unwrap_or_else(|e| format!("(no server log: {e})"));
                    last_err = format!("{e}\n--- server log ---\n{log}");
                    // Port clash ("could not bind") is worth another try; anything else is not.
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        break;
                    }
                }
            }
        }
        Err(format!("PostgreSQL did not start: {last_err}"))
    }

    /// Background `sh` that stops the server and removes the dir once this process is gone.
    fn spawn_watchdog(&self) -> Result<Child, String> {
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        let as_pg = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let on_exit = format!(
            "{as_pg}{pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
            pg_ctl = q(&self.bindir.join("pg_ctl")),
            data = q(&self.data_dir()),
            dir = q(self.dir.path()),
        );
        spawn_watchdog("PostgreSQL", &on_exit)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let mut stop = self.pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        // `self.dir` (TempDir) is removed when the fields drop, right after this.
    }
}

/// A background `sh` that polls this process with `kill -0` once a second and runs the shell
/// command `on_exit` once it is gone: cleans up after statics and killed test binaries.
fn spawn_watchdog(what: &str, on_exit: &str) -> Result<Child, String> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {on_exit}",
        pid = std::process::id(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn the {what} watchdog (sh): {e}"))
}

/// Run `cmd` to completion; Ok(stdout) on success, otherwise an error with its output.
fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        if stdout.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", stdout.trim())
        },
    ))
}

/// `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`, then `PATH`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<(Vec<u64>, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let version = e
                    .file_name()
                    .to_string_lossy()
                    .split('.')
                    .map(|p| p.parse().unwrap_or(0))
                    .collect();
                (version, e.path().join("bin"))
            })
            .collect();
        versioned.sort();
        candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| has_all(d))
        .ok_or_else(|| NOT_FOUND.to_string())
}

/// Effective uid from `/proc/self/status` (`Uid: real effective saved fs`); falls back to `id -u`.
fn effective_uid_is_root() -> Result<bool, String> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
    {
        return Ok(euid == "0");
    }
    let out = run(Command::new("id").arg("-u"), "id -u")?;
    Ok(out.trim() == "0")
}

/// Make `dir` usable by the server: mode 0755 and, as root, owned by `postgres` with every
/// ancestor traversable by others.
fn prepare_dir(dir: &Path, as_postgres: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod 0755 {}: {e}", dir.display()))?;
    if !as_postgres {
        return Ok(());
    }
    if run(
        Command::new("id").args(["-u", "postgres"]),
        "id -u postgres",
    )
    .is_err()
    {
        return Err(
            "running as root, so PostgreSQL must run as user `postgres`, but that user \
                    does not exist: install the Debian package `postgresql` (it creates the \
                    user) or `useradd --system postgres`"
                .to_string(),
        );
    }
    for anc in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(anc)
            .map_err(|e| format!("cannot stat {}: {e}", anc.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not traversable by user `postgres`: chmod o+x it or point \
                 TMPDIR at a directory that is",
                anc.display(),
                mode & 0o7777
            ));
        }
    }
    run(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir),
        &format!("chown -R postgres:postgres {}", dir.display()),
    )?;
    Ok(())
}

/// Quote for `sh` (single quotes; embedded `'` as `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
