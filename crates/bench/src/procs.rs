//! Child processes (the `custody` server and CLI, the static server), their memory high-water
//! mark and CPU time, and the server side of a transfer seen through `/proc/PID/io`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A server process we started; killed (by its own handle) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    /// Lines it printed before it listened.
    pub stdout: Vec<String>,
}

impl Server {
    /// Starts `cmd` and waits for a line `PREFIX URL` on its stdout, as tests/e2e/support.rs
    /// does for the custody server. stderr goes to `log`.
    pub fn start(mut cmd: Command, prefix: &str, log: &Path) -> anyhow::Result<Server> {
        let log_file = std::fs::File::create(log)?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting the server")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout for the life of the process.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let mut server = loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(prefix) {
                        let url = url.trim().to_owned();
                        lines.push(line);
                        break Server {
                            child,
                            url,
                            stdout: Vec::new(),
                        };
                    }
                    lines.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    bail!("the server did not start; stdout: {lines:?}\nlog:\n{log}");
                }
            }
        };
        server.stdout = lines;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        peak_rss_kib(self.pid())
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident memory (`VmHWM`) of process `pid` so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(rchar, wchar)` of a process: bytes it read and wrote through system calls (sockets and
/// files alike). `None` where the kernel does not let us read them.
fn io_counters(pid: u32) -> Option<(u64, u64)> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("rchar:")?, field("wchar:")?))
}

/// The CPU time (user + system, all threads) a process has used so far, from `/proc/PID/stat`.
/// `None` once it is gone or where the kernel does not show it.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    // After it: state is field 3, utime field 14, stime field 15.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks_per_second(),
    ))
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat`'s times, asked of `getconf` once.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Which of the server's counters carries the file's bytes.
#[derive(Clone, Copy)]
pub enum Direction {
    /// The server writes the sealed parts to storage (`wchar`: its socket reads are `recv`
    /// calls, which `rchar` does not count).
    Upload,
    /// The server writes the body to its socket (`wchar`).
    Download,
}

/// One timed client run.
pub struct Timed {
    /// From starting the client to its exit: what the user waits for.
    pub wall: Duration,
    /// The server's part: from its first MiB of body to its last byte (download) or to the
    /// client's exit (upload, which ends with completing and committing the object).
    pub server_side: Option<Duration>,
    /// The client's peak resident memory (`VmHWM`, sampled every 5 ms until it exits), KiB.
    pub client_peak_kib: u64,
    /// CPU time the server used while the client ran.
    pub server_cpu: Option<Duration>,
    /// CPU time the client used (its last sample, at most 5 ms before it exited).
    pub client_cpu: Option<Duration>,
}

/// Runs the client `cmd` to completion, sampling the server's I/O counters and the client's
/// memory high-water mark and CPU time every 5 ms.
pub fn run_timed(mut cmd: Command, server_pid: u32, direction: Direction) -> anyhow::Result<Timed> {
    let stop = Arc::new(AtomicBool::new(false));
    let server_cpu_before = cpu_time(server_pid);
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the client")?;
    let client_pid = child.id();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut client_peak_kib = 0;
            let mut client_cpu = None;
            while !stop.load(Ordering::Relaxed) {
                client_peak_kib = client_peak_kib.max(peak_rss_kib(client_pid).unwrap_or(0));
                client_cpu = cpu_time(client_pid).or(client_cpu);
                if let Some((r, w)) = io_counters(server_pid) {
                    samples.push((start.elapsed(), r, w));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (samples, client_peak_kib, client_cpu)
        })
    };
    let output = child.wait_with_output();
    let wall = start.elapsed();
    let server_cpu = cpu_time(server_pid)
        .zip(server_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    stop.store(true, Ordering::Relaxed);
    let (samples, client_peak_kib, client_cpu) = sampler.join().unwrap_or_default();
    let output = output.context("running the client")?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}):\n{}",
            cmd.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(Timed {
        wall,
        server_side: server_window(&samples, direction, wall),
        client_peak_kib,
        server_cpu,
        client_cpu,
    })
}

fn server_window(
    samples: &[(Duration, u64, u64)],
    direction: Direction,
    wall: Duration,
) -> Option<Duration> {
    const MIB: u64 = 1 << 20;
    let value = |s: &(Duration, u64, u64)| match direction {
        Direction::Upload | Direction::Download => s.2,
    };
    let base = value(samples.first()?);
    let last = value(samples.last()?);
    if last.saturating_sub(base) < 16 * MIB {
        return None;
    }
    let first = samples.iter().find(|s| value(s) >= base + MIB)?.0;
    let end = match direction {
        Direction::Upload => wall,
        Direction::Download => samples.iter().find(|s| value(s) + 64 * 1024 >= last)?.0,
    };
    end.checked_sub(first)
}

/// The `custody` binary: `explicit`, or beside this executable (the same target directory).
pub fn custody_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this executable has no parent directory")?
            .join("custody"),
    };
    if !path.is_file() {
        bail!(
            "no custody binary at {} (build it with `cargo build --release -p cli`, or pass --custody PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// Flushes dirty pages so one step's write-back does not land in the next step's time.
pub fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

/// `--perf DIR`: CPU profiles of a run, for docs/performance.md. `perf record` (software
/// clock: these machines have no hardware counters) attaches to the server for the whole
/// transfer and wraps each CLI run, one data file per step. Profiling slows what it watches:
/// the figures of such a run are not the benchmark's.
pub struct Perf {
    pub dir: PathBuf,
}

const PERF_RECORD: [&str; 6] = ["record", "-e", "cpu-clock", "-F", "499", "-g"];

impl Perf {
    /// Starts recording process `pid` into `DIR/NAME.data`.
    pub fn attach(&self, pid: u32, name: &str) -> anyhow::Result<Recording> {
        let child = Command::new("perf")
            .args(PERF_RECORD)
            .arg("-o")
            .arg(self.dir.join(format!("{name}.data")))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record (Debian package linux-perf)")?;
        // perf needs a moment to attach before the work it should see starts.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Recording(child))
    }

    /// `cmd`, run under `perf record` into `DIR/NAME.data`.
    pub fn wrap(&self, cmd: &Command, name: &str) -> Command {
        let mut wrapped = Command::new("perf");
        wrapped
            .args(PERF_RECORD)
            .arg("-o")
            .arg(self.dir.join(format!("{name}.data")))
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }
}

/// A `perf record` attached to a process.
pub struct Recording(Child);

impl Recording {
    /// Stops recording; perf writes its file on SIGINT.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
