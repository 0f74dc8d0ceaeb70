//! A throwaway HAProxy in TCP mode: TLS passes through untouched, so client certificates reach
//! the servers behind it (HTTP mode would terminate TLS at HAProxy and lose them).

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, sh_quote, spawn_watchdog};

const NOT_FOUND: &str = "haproxy not found: install the Debian package `haproxy` (tests/run does)";

/// `haproxy -f CONFIG -db` on 127.0.0.1, round robin over `backends`, with health checks every
/// 500 ms (a dead backend is out after one failed check) and a failed connection retried on
/// another backend. Dropping it kills it; a watchdog does too once the test process is gone.
pub struct Haproxy {
    port: u16,
    child: Child,
    watchdog: Option<Child>,
    // Declared last: removed after `Drop::drop` killed the process.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Haproxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Haproxy")
            .field("port", &self.port)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// The configuration for a frontend on `port` over `backends` (ports on 127.0.0.1).
pub fn haproxy_config(port: u16, backends: &[u16]) -> String {
    let mut config = format!(
        "global\n  maxconn 4096\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n\
         \x20 retries 3\n  option redispatch\n\
         frontend custody\n  bind 127.0.0.1:{port}\n  default_backend servers\n\
         backend servers\n  balance roundrobin\n\
         \x20 default-server inter 500ms fall 1 rise 2\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!("  server s{i} 127.0.0.1:{backend} check\n"));
    }
    config
}

impl Haproxy {
    /// Starts HAProxy in front of `backends` and waits until its frontend accepts connections.
    pub fn start(backends: &[u16]) -> Result<Haproxy, String> {
        let exe = find_haproxy()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-haproxy-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for haproxy: {e}"))?;
        let mut last_err = String::new();
        for _ in 0..crate::START_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(port, backends))
                .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
            let log = dir.path().join("log");
            let out = std::fs::File::create(&log)
                .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
            let mut child = Command::new(&exe)
                .arg("-f")
                .arg(&config)
                .arg("-db")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot run {exe}: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "haproxy exited at start-up ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    let on_exit = format!(
                        "kill {pid}; rm -rf {dir}",
                        pid = child.id(),
                        dir = sh_quote(&dir.path().to_string_lossy())
                    );
                    let watchdog = Some(spawn_watchdog("haproxy", &on_exit)?);
                    return Ok(Haproxy {
                        port,
                        child,
                        watchdog,
                        dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "haproxy did not listen within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last_err)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`: the service as its clients reach it.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_haproxy() -> Result<String, String> {
    for candidate in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(candidate).is_file() {
            return Ok(candidate.to_owned());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let exe = dir.join("haproxy");
            if exe.is_file() {
                return Ok(exe.to_string_lossy().into_owned());
            }
        }
    }
    Err(NOT_FOUND.to_owned())
}
