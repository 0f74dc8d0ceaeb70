//! A scaled-out custody service on this machine: N `custody server` processes on one
//! PostgreSQL database (a fresh one in the shared throwaway cluster), one S3 bucket and AWS
//! KMS (moto), one service identity made by `custody init`, and HAProxy in TCP mode in front.
//!
//! The custody binary is given by the caller (tests pass `CARGO_BIN_EXE_custody`), so testkit
//! stays free of custody's crates. Instances can be killed (SIGKILL) and started again, with
//! extra environment variables (failpoints).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Haproxy, MotoServer, PgCluster, START_ATTEMPTS, free_port};

/// One `custody server` process.
#[derive(Debug)]
pub struct Instance {
    child: Child,
    pub port: u16,
    /// Its name in the database's leases (printed at start: `custody: instance ID`).
    pub id: String,
    /// Lines it printed on stdout up to "listening".
    pub stdout: Vec<String>,
}

impl Instance {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://127.0.0.1:PORT`, bypassing the load balancer.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// Where a cluster keeps ciphertext and its root of trust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// A versioned bucket and one KMS key per epoch, both on moto (the tests' choice).
    #[default]
    MotoS3AndKms,
    /// A blob directory and a root directory shared by every instance (as an NFS mount would
    /// be): no moto in the data path, for throughput measurements.
    SharedDirectories,
}

/// How to start a cluster.
#[derive(Debug, Default)]
pub struct ClusterOptions {
    /// Appended to every instance's configuration (top-level keys).
    pub extra_toml: String,
    pub storage: Storage,
    /// The PostgreSQL cluster to make the database in (default: the shared one, fsync off).
    pub pg: Option<&'static PgCluster>,
}

/// The cluster. Dropping it kills every process it started.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    pg: &'static PgCluster,
    storage: Storage,
    extra_toml: String,
    pub dir: tempfile::TempDir,
    pub database: String,
    pub database_url: String,
    pub bucket: String,
    /// Made by `custody init --out`; every instance names it as `identity_dir`.
    pub identity_dir: PathBuf,
    /// The certificate clients trust (`identity_dir/tls/cert.pem`).
    pub ca: PathBuf,
    /// The operator token the first start's single-use bootstrap token made
    /// (`root-operator`).
    pub operator: String,
    ports: Vec<u16>,
    instances: Vec<Option<Instance>>,
    lb: Option<Haproxy>,
}

impl Cluster {
    /// Starts `n` instances (one after the other: the first initialises the database) and
    /// HAProxy in front of them. `extra_toml` is appended to every instance's configuration.
    pub fn start(bin: &Path, n: usize, extra_toml: &str) -> Result<Cluster, String> {
        Cluster::start_with(
            bin,
            n,
            ClusterOptions {
                extra_toml: extra_toml.to_owned(),
                ..ClusterOptions::default()
            },
        )
    }

    /// [`Cluster::start`] with other storage or another PostgreSQL cluster.
    pub fn start_with(bin: &Path, n: usize, options: ClusterOptions) -> Result<Cluster, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pg = match options.pg {
            Some(pg) => pg,
            None => PgCluster::shared()?,
        };
        let database = format!(
            "c_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let database_url = pg.create_database(&database)?;
        let bucket = match options.storage {
            Storage::MotoS3AndKms => MotoServer::shared()?.fresh_bucket(true)?,
            Storage::SharedDirectories => String::new(),
        };
        let dir = tempfile::Builder::new()
            .prefix("testkit-cluster-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for the cluster: {e}"))?;
        let identity_dir = dir.path().join("identity");
        let out = Command::new(bin)
            .arg("init")
            .arg("--out")
            .arg(&identity_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} init: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "custody init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            pg,
            storage: options.storage,
            extra_toml: options.extra_toml,
            ca: identity_dir.join("tls/cert.pem"),
            identity_dir,
            dir,
            database,
            database_url,
            bucket,
            operator: String::new(),
            ports,
            instances: (0..n).map(|_| None).collect(),
            lb: None,
        };
        for i in 0..n {
            // A port that was free when chosen may be taken before the instance binds it
            // (other tests pick ports too): choose another and start again.
            let mut attempt = 1;
            loop {
                std::fs::write(cluster.config_path(i), cluster.config(i))
                    .map_err(|e| format!("cannot write the configuration of instance {i}: {e}"))?;
                match cluster.start_instance(i, &[]) {
                    Err(e) if e.contains("Address already in use") && attempt < START_ATTEMPTS => {
                        cluster.ports[i] = free_port();
                        attempt += 1;
                    }
                    started => break started?,
                }
            }
            if i == 0 {
                cluster.operator = cluster.first_operator()?;
            }
        }
        cluster.lb = Some(Haproxy::start(&cluster.ports)?);
        Ok(cluster)
    }

    /// The configuration of instance `i` (TOML): PostgreSQL, the storage, the shared identity,
    /// its own (unused) data directory.
    pub fn config(&self, i: usize) -> String {
        let head = format!(
            "data_dir = {data:?}\n\
             listen = \"127.0.0.1:{port}\"\n\
             database_url = {db:?}\n\
             identity_dir = {identity:?}\n\
             {extra}\n",
            data = self.dir.path().join(format!("instance-{i}")),
            port = self.ports.get(i).copied().unwrap_or(0),
            db = self.database_url,
            identity = self.identity_dir,
            extra = self.extra_toml,
        );
        match self.storage {
            Storage::MotoS3AndKms => {
                let moto = MotoServer::shared()
                    .map(|m| m.url().to_owned())
                    .unwrap_or_default();
                format!(
                    "{head}[s3]\nendpoint_url = {moto:?}\nregion = \"us-east-1\"\n\
                     bucket = {bucket:?}\nforce_path_style = true\naccess_key_id = \"test\"\n\
                     secret_access_key = \"test\"\n\
                     [root]\nkind = \"kms\"\nendpoint_url = {moto:?}\nregion = \"us-east-1\"\n\
                     access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
                    bucket = self.bucket,
                )
            }
            Storage::SharedDirectories => format!(
                "{head}blob_dir = {blobs:?}\n[root]\nkind = \"file\"\ndir = {root:?}\n",
                blobs = self.dir.path().join("shared-blobs"),
                root = self.dir.path().join("shared-root"),
            ),
        }
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("instance-{i}.toml"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("instance-{i}.log"))
    }

    /// The log of instance `i` (every start appends to it).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Starts instance `i` with extra environment variables; waits until it listens.
    pub fn start_instance(&mut self, i: usize, env: &[(&str, &str)]) -> Result<(), String> {
        if let Some(Some(running)) = self.instances.get_mut(i)
            && running.child.try_wait().ok().flatten().is_none()
        {
            return Err(format!("instance {i} is running"));
        }
        let instance = self.spawn(&self.config_path(i), &self.log_path(i), env)?;
        self.instances[i] = Some(instance);
        Ok(())
    }

    /// Runs `custody server --config CONFIG` and waits for "listening". The error carries
    /// the process's output when it exits instead (as it does when it refuses to start).
    pub fn spawn(
        &self,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Instance, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut child = Command::new(&self.bin)
            .arg("server")
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .env(
                "CUSTODY_LOG",
                std::env::var("CUSTODY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
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
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    let listening = line.starts_with("custody: listening on ");
                    lines.push(line);
                    if listening {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(format!(
                        "the server did not start ({status:?}); stdout: {lines:?}\nlog:\n{log}"
                    ));
                }
            }
        }
        let id = lines
            .iter()
            .find_map(|l| l.strip_prefix("custody: instance "))
            .unwrap_or_default()
            .to_owned();
        let port = lines
            .iter()
            .find_map(|l| l.strip_prefix("custody: listening on https://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        Ok(Instance {
            child,
            port,
            id,
            stdout: lines,
        })
    }

    pub fn instance(&self, i: usize) -> Option<&Instance> {
        self.instances.get(i).and_then(Option::as_ref)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// `https://127.0.0.1:PORT` of instance `i` (whether or not it runs).
    /// Reads the bootstrap token from the file instance 0 named and makes the operator token
    /// `root-operator` with it, as an operator does after the first start.
    fn first_operator(&self) -> Result<String, String> {
        let path = self
            .instance(0)
            .and_then(|s| {
                s.stdout.iter().find_map(|l| {
                    l.split("operator bootstrap token written to ")
                        .nth(1)
                        .and_then(|rest| rest.split(" (").next())
                })
            })
            .map(PathBuf::from)
            .ok_or("the first instance wrote no bootstrap token")?;
        let bootstrap = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let out = Command::new(&self.bin)
            .args([
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "root-operator",
            ])
            .env("CUSTODY_SERVER", self.instance_url(0))
            .env("CUSTODY_CA", &self.ca)
            .env("CUSTODY_TOKEN", bootstrap.trim())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "making the operator token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn instance_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i])
    }

    /// The load balancer's URL: the service as clients reach it.
    pub fn url(&self) -> String {
        self.lb.as_ref().map(Haproxy::url).unwrap_or_default()
    }

    /// Kills instance `i` with SIGKILL (no clean-up, as `kill -9`).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut instance) = self.instances[i].take() {
            let _ = instance.child.kill();
            let _ = instance.child.wait();
        }
    }

    /// Whether instance `i` has exited (by itself: a failpoint, a refusal).
    pub fn exited(&mut self, i: usize) -> bool {
        match self.instances[i].as_mut() {
            None => true,
            Some(instance) => instance.child.try_wait().ok().flatten().is_some(),
        }
    }

    /// Forgets a dead instance (so it can be started again).
    pub fn reap(&mut self, i: usize) {
        if self.exited(i) {
            self.kill(i);
        }
    }

    /// Runs SQL in the cluster's database (observation only: `psql -At`).
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        self.pg.psql(&self.database, sql)
    }

    /// The index of the instance holding lease `name`, if a running one does.
    pub fn lease_holder(&self, name: &str) -> Option<usize> {
        let holder = self
            .sql(&format!(
                "SELECT holder FROM leases WHERE name = '{name}' AND expires_at > \
                 EXTRACT(EPOCH FROM clock_timestamp()) * 1000"
            ))
            .ok()?;
        let holder = holder.trim();
        self.instances
            .iter()
            .position(|i| i.as_ref().is_some_and(|i| i.id == holder))
    }

    /// Bytes read and written by instance `i` (`rchar`, `wchar` of /proc/PID/io; sockets
    /// included): which instance is serving a transfer.
    pub fn io(&self, i: usize) -> Option<(u64, u64)> {
        let pid = self.instance(i)?.pid();
        let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        Some((field("rchar:")?, field("wchar:")?))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.lb = None;
        for i in 0..self.instances.len() {
            self.kill(i);
        }
    }
}
