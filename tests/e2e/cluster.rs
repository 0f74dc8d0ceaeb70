//! Scale-out: three `custody server` processes on one PostgreSQL database, one S3 bucket and
//! AWS KMS (moto), one identity from `custody init`, behind HAProxy in TCP mode (TLS and
//! client certificates end at custody). They are one service, and nothing is lost when any of
//! them dies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Cluster;

use crate::support::*;

/// How long another instance may take to pick up singleton work after its holder died
/// (README "Scale out": lease TTL 10 s + poll 2 s; the test allows for a loaded machine).
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// The service as its users see it: vendor `acme`, its admin, committer `alice` and an
/// exclusive host `gpu-01` in host group `gpu`, all made through the load balancer.
struct Service {
    cluster: Cluster,
    admin: String,
    alice: String,
    host: HostCert,
    scratch: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        Service::with(3, "")
    }

    fn with(instances: usize, extra_toml: &str) -> Service {
        let cluster = Cluster::start(Path::new(BIN), instances, extra_toml)
            .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
        let scratch = tempfile::tempdir().unwrap();
        let mut service = Service {
            cluster,
            admin: String::new(),
            alice: String::new(),
            host: HostCert {
                name: String::new(),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            scratch,
        };
        let operator = service.cluster.operator.clone();
        let lb = service.cluster.url();
        service.ok(&lb, None, &operator, &["vendor", "create", "acme"]);
        service.admin = service.token("vendor-admin", Some("acme"), "acme-admin");
        service.alice = service.token("committer", None, "alice");
        service.host = service.enroll("gpu-01", "gpu");
        // The operator enrolls; only the vendor makes a host eligible for its weights.
        service.ok(
            &lb,
            None,
            &service.admin,
            &["host", "approve", "acme", "gpu-01"],
        );
        service
    }

    fn lb(&self) -> String {
        self.cluster.url()
    }

    fn command(&self, url: &str, host: Option<&HostCert>, token: &str) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("CUSTODY_SERVER", url)
            .env("CUSTODY_TOKEN", token)
            .env("CUSTODY_CA", &self.cluster.ca)
            .env_remove("CUSTODY_HOST_CERT")
            .env_remove("CUSTODY_HOST_KEY")
            .env(
                "CUSTODY_HOST_STATE",
                self.scratch.path().join("fetched.json"),
            )
            .env("HF_HUB_CACHE", self.scratch.path().join("hf-cache"))
            .stdin(Stdio::null());
        if let Some(h) = host {
            command
                .env("CUSTODY_HOST_CERT", &h.cert)
                .env("CUSTODY_HOST_KEY", &h.key);
        }
        command
    }

    fn run(&self, url: &str, host: Option<&HostCert>, token: &str, args: &[&str]) -> Run {
        Run::from(self.command(url, host, token).args(args).output().unwrap())
    }

    fn ok(&self, url: &str, host: Option<&HostCert>, token: &str, args: &[&str]) -> String {
        let run = self.run(url, host, token, args);
        assert!(
            run.success,
            "custody {args:?} via {url} failed:\n{}",
            run.stderr
        );
        run.stdout
    }

    fn token(&self, role: &str, vendor: Option<&str>, name: &str) -> String {
        let mut args = vec!["token", "create", "--role", role, "--name", name];
        if let Some(v) = vendor {
            args.extend(["--vendor", v]);
        }
        self.ok(&self.lb(), None, &self.cluster.operator, &args)
            .trim()
            .to_owned()
    }

    fn enroll(&self, name: &str, group: &str) -> HostCert {
        let dir = self.scratch.path().join("hosts").join(name);
        let out = Command::new(BIN)
            .args([
                "host",
                "csr",
                "--name",
                name,
                "--out",
                dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = dir.join("host.crt");
        self.ok(
            &self.lb(),
            None,
            &self.cluster.operator,
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

    /// Uploads `dir` as `acme/MODEL` through `url`, allows `gpu` and grants alice.
    fn upload(&self, url: &str, dir: &Path, model: &str) {
        self.ok(
            url,
            None,
            &self.admin,
            &["upload", dir.to_str().unwrap(), model],
        );
        self.ok(url, None, &self.admin, &["host", "allow", model, "gpu"]);
        self.ok(url, None, &self.admin, &["grant", model, "--to", "alice"]);
    }

    /// Fetches `model` through `url` as alice on the host; returns the run and the folder.
    fn fetch(&self, url: &str, model: &str) -> (Run, tempfile::TempDir) {
        let out = tempfile::tempdir().unwrap();
        let run = self.run(
            url,
            Some(&self.host),
            &self.alice,
            &[
                "fetch",
                model,
                "--out",
                out.path().join("m").to_str().unwrap(),
            ],
        );
        (run, out)
    }

    fn assert_fetches_identical(&self, url: &str, model: &str, src: &Path) {
        let (run, out) = self.fetch(url, model);
        assert!(run.success, "fetching {model} via {url}: {}", run.stderr);
        for file in list_files(src) {
            assert_same_file(&src.join(&file), &out.path().join("m").join(&file));
        }
    }

    fn deletion_state(&self, id: &str) -> String {
        self.cluster
            .sql(&format!("SELECT state FROM deletions WHERE id = '{id}'"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Writes the deletion's certificate and checks it offline with the service and log keys.
    fn verify_certificate(&self, id: &str) -> Value {
        let cert = self.scratch.path().join(format!("{id}.json"));
        self.ok(
            &self.lb(),
            None,
            &self.admin,
            &["deletion", id, "--certificate-out", cert.to_str().unwrap()],
        );
        let service_key = service_key_from_api(self);
        let log_key = self
            .ok(&self.lb(), None, &self.cluster.operator, &["audit", "key"])
            .trim()
            .to_owned();
        let out = Command::new(BIN)
            .arg("verify-certificate")
            .arg(&cert)
            .args(["--service-key", &service_key, "--log-key", &log_key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the certificate of {id} does not verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&std::fs::read_to_string(cert).unwrap()).unwrap()
    }
}

/// The service key, as `GET /v1/service-key` gives it.
fn service_key_from_api(service: &Service) -> String {
    let ca = service.cluster.ca.clone();
    let url = format!("{}/v1/service-key", service.lb());
    let token = service.admin.clone();
    runtime().block_on(async move {
        let v: Value = https_client(&ca)
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["service_key"].as_str().unwrap().to_owned()
    })
}

fn model_dir(seed: u64, size: u64) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("config.json"),
        format!("{{\"seed\":{seed}}}"),
    )
    .unwrap();
    write_data(&src.path().join("model.safetensors"), size, seed);
    src
}

fn request_deletion(service: &Service, url: &str, model: &str) -> String {
    let out = service.ok(
        url,
        None,
        &service.admin,
        &["--json", "delete", "--yes", model],
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["deletion"].as_str().unwrap().to_owned()
}

/// Issue 12, tests 1, 6 and 7: one service through any instance; revocations in force
/// everywhere at the next request; an instance with another identity or key store refuses to
/// start, and one with none invents none.
#[test]
fn three_instances_are_one_service() {
    let mut service = Service::start();
    let src = model_dir(1, (9 << 20) + 7);
    service.upload(&service.lb(), src.path(), "acme/one");
    for i in 0..3 {
        service.assert_fetches_identical(&service.cluster.instance_url(i), "acme/one", src.path());
    }

    // A token revoked through instance 0 is refused by 1 and 2 at their next request.
    let bob = service.token("committer", None, "bob");
    for i in 1..3 {
        service.ok(&service.cluster.instance_url(i), None, &bob, &["ls"]);
    }
    // A token is `ID.SECRET`.
    let bob_id = bob.split('.').next().unwrap().to_owned();
    service.ok(
        &service.cluster.instance_url(0),
        None,
        &service.cluster.operator,
        &["token", "revoke", &bob_id],
    );
    for i in 1..3 {
        let run = service.run(&service.cluster.instance_url(i), None, &bob, &["ls"]);
        assert!(!run.success, "instance {i} still accepts a revoked token");
        assert!(run.stderr.contains("401"), "instance {i}: {}", run.stderr);
    }

    // A host revoked through instance 0 receives no byte from 1 or 2.
    service.ok(
        &service.cluster.instance_url(0),
        None,
        &service.cluster.operator,
        &["host", "revoke", "gpu-01"],
    );
    for i in 1..3 {
        let (run, out) = service.fetch(&service.cluster.instance_url(i), "acme/one");
        assert!(!run.success, "instance {i} served a revoked host");
        assert!(
            !out.path().join("m/model.safetensors").exists(),
            "instance {i} wrote weights for a revoked host"
        );
    }

    // A fourth instance with another audit log key (another `custody init`) refuses to start.
    let other = service.scratch.path().join("other-identity");
    let init = Command::new(BIN)
        .args(["init", "--out", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    // Only the log key differs: the rest is this service's.
    for part in [
        "tls/cert.pem",
        "tls/key.pem",
        "tls/host-ca.pem",
        "tls/host-ca.key",
        "keys/service-signing.key",
    ] {
        std::fs::copy(service.cluster.identity_dir.join(part), other.join(part)).unwrap();
    }
    let refused = fourth(&service, |config| {
        config.replace(
            &format!("{:?}", service.cluster.identity_dir),
            &format!("{other:?}"),
        )
    });
    assert!(
        refused.contains("audit-log-key") && refused.contains("refusing to start"),
        "{refused}"
    );

    // One with another key store (a root key file directory instead of the service's KMS
    // roots) refuses too.
    let roots = service.scratch.path().join("other-roots");
    let refused = fourth(&service, |config| {
        let (head, _) = config.split_once("[root]").unwrap();
        format!("{head}[root]\nkind = \"file\"\ndir = {roots:?}\n")
    });
    assert!(
        refused.contains("root provider") || refused.contains("aws-kms"),
        "{refused}"
    );

    // One with no identity at all invents none: it refuses, and writes nothing there.
    let empty = service.scratch.path().join("no-identity");
    std::fs::create_dir_all(&empty).unwrap();
    let refused = fourth(&service, |config| {
        config.replace(
            &format!("{:?}", service.cluster.identity_dir),
            &format!("{empty:?}"),
        )
    });
    assert!(refused.contains("custody init"), "{refused}");
    assert!(list_files(&empty).is_empty(), "{:?}", list_files(&empty));
    // Nor does one in the embedded layout (no identity_dir) pointed at this database.
    let data = service.scratch.path().join("fresh-data");
    let refused = fourth(&service, |config| {
        config
            .lines()
            .filter(|l| !l.starts_with("identity_dir"))
            .map(|l| {
                if l.starts_with("data_dir") {
                    format!("data_dir = {data:?}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert!(refused.contains("already in use"), "{refused}");
    let made: Vec<String> = list_files(&data)
        .into_iter()
        .filter(|f| f.ends_with(".key") || f.ends_with(".pem"))
        .collect();
    assert!(
        made.is_empty(),
        "a refused instance made key files: {made:?}"
    );
    // The three are unaffected.
    service.cluster.reap(0);
    assert!(!service.cluster.exited(0));
}

/// Starts a fourth instance with a configuration derived from instance 0's; it must refuse
/// to start. Returns what it said.
fn fourth(service: &Service, edit: impl FnOnce(String) -> String) -> String {
    let config = edit(service.cluster.config(0));
    let config = config.replace(
        &format!(
            "listen = \"127.0.0.1:{}\"",
            service.cluster.instance(0).unwrap().port
        ),
        "listen = \"127.0.0.1:0\"",
    );
    let path = service.scratch.path().join("fourth.toml");
    std::fs::write(&path, config).unwrap();
    let log = service.scratch.path().join("fourth.log");
    let _ = std::fs::remove_file(&log);
    match service.cluster.spawn(&path, &log, &[]) {
        Ok(_) => panic!("a fourth instance with another identity or key store started"),
        Err(e) => e,
    }
}

/// Issue 12, test 2: while one instance shreds a model, the other two create models and
/// upload without pause: every model created meanwhile fetches identically afterwards, the
/// shredded one is gone, and the certificate verifies.
#[test]
fn models_created_during_a_shred_on_another_instance_survive_it() {
    let service = Arc::new(Service::start());
    let doomed = model_dir(100, 3 << 20);
    let kept = model_dir(101, (5 << 20) + 1);
    service.upload(&service.lb(), doomed.path(), "acme/doomed");
    service.upload(&service.lb(), kept.path(), "acme/kept");
    let runner = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            service.cluster.lease_holder("deletions")
        })
        .expect("no instance runs deletions");
    let writers: Vec<usize> = (0..3).filter(|i| *i != runner).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = writers
        .iter()
        .map(|&w| {
            let (service, stop, made) = (service.clone(), stop.clone(), made.clone());
            std::thread::spawn(move || {
                let url = service.cluster.instance_url(w);
                let mut created = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) || n < 2 {
                    let name = format!("acme/during-{w}-{n}");
                    let src = model_dir(1000 + (w as u64) * 100 + n, 1 << 20);
                    service.upload(&url, src.path(), &name);
                    made.fetch_add(1, Ordering::SeqCst);
                    created.push((name, src));
                    n += 1;
                }
                created
            })
        })
        .collect();
    wait_for(120, "the writers to get going", || {
        made.load(Ordering::SeqCst) >= 2
    });
    let id = request_deletion(
        &service,
        &service.cluster.instance_url(writers[0]),
        "acme/doomed",
    );
    wait_for(120, "the shred to finish", || {
        service.deletion_state(&id) == "certified"
    });
    stop.store(true, Ordering::SeqCst);
    let created: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(created.len() >= 4, "too few models made during the shred");
    let rewrapped: usize = (0..3)
        .map(|i| {
            service
                .cluster
                .log(i)
                .matches("key epoch moved while creating a model")
                .count()
        })
        .sum();
    eprintln!(
        "{} models created during the shred; {rewrapped} creations met the rotation and were \
         wrapped again",
        created.len()
    );
    // The log shows model creations on both sides of the rotation.
    let log = service
        .cluster
        .sql("SELECT count(*) FROM key_epochs WHERE state = 'live'")
        .unwrap();
    assert_eq!(
        log.trim(),
        "1",
        "only the current epoch is live after a shred"
    );
    for (name, src) in &created {
        service.assert_fetches_identical(&service.lb(), name, src.path());
    }
    service.assert_fetches_identical(&service.lb(), "acme/kept", kept.path());
    let (run, _) = service.fetch(&service.lb(), "acme/doomed");
    assert!(
        !run.success && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );
    let cert = service.verify_certificate(&id);
    assert_eq!(
        cert["certificate"]["deletion"]["models"][0]["name"],
        "doomed"
    );
}

/// Issue 12, test 3: the instance running a shred is killed (SIGKILL) right after each step;
/// another instance finishes it within the bound; the certificate verifies; nothing else is
/// lost.
#[test]
fn a_shred_survives_the_death_of_its_runner_at_every_step() {
    let mut service = Service::start();
    let kept = model_dir(200, (4 << 20) + 3);
    let doomed = model_dir(201, 2 << 20);
    service.upload(&service.lb(), kept.path(), "acme/kept");
    service.upload(&service.lb(), doomed.path(), "acme/doomed");

    // Every instance dies right after the first of these steps it completes. The test starts
    // the dead again only once all are dead, so each step is completed by a fresh holder of
    // the lease, which then dies: keys, epoch and objects by the three, the check by a
    // restarted one, the certificate by the last.
    let steps = [
        "keys_destroyed",
        "epoch_destroyed",
        "objects_deleted",
        "checked",
    ];
    for i in 0..3 {
        service.cluster.kill(i);
        service
            .cluster
            .start_instance(
                i,
                &[(
                    "CUSTODY_FAILPOINT_DELETION",
                    "keys_destroyed,epoch_destroyed,objects_deleted",
                )],
            )
            .unwrap();
    }
    let id = request_deletion(&service, &service.cluster.instance_url(0), "acme/doomed");
    let mut reached = Vec::new();
    let mut last = service.deletion_state(&id);
    let mut died_at: Option<Instant> = None;
    let mut dead_before = 0;
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while last != "certified" {
        assert!(
            Instant::now() < deadline,
            "the shred did not finish: {last} {reached:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        let state = service.deletion_state(&id);
        if state != last {
            if let Some(t) = died_at.take() {
                let took = t.elapsed();
                assert!(
                    took < TAKEOVER_BOUND,
                    "{took:?} passed between the runner's death and the next step ({state})"
                );
                eprintln!("the runner died after {last}; {state} done {took:?} later");
            }
            reached.push(state.clone());
            last = state;
        }
        let dead = (0..3).filter(|i| service.cluster.exited(*i)).count();
        if dead > dead_before {
            died_at.get_or_insert_with(Instant::now);
        }
        dead_before = dead;
        if dead == 3 {
            for i in 0..3 {
                service.cluster.reap(i);
            }
            restarts += 1;
            if restarts == 1 {
                // One instance, to complete and die after the check.
                service
                    .cluster
                    .start_instance(0, &[("CUSTODY_FAILPOINT_DELETION", "checked")])
                    .unwrap();
            } else {
                for i in 0..3 {
                    service.cluster.start_instance(i, &[]).unwrap();
                }
            }
            dead_before = (0..3).filter(|i| service.cluster.exited(*i)).count();
        }
    }
    for step in steps {
        assert!(
            reached.iter().any(|s| s == step),
            "{step} never reached: {reached:?}"
        );
    }
    for i in 0..3 {
        if service.cluster.exited(i) {
            service.cluster.reap(i);
            service.cluster.start_instance(i, &[]).unwrap();
        }
    }
    let cert = service.verify_certificate(&id);
    assert_eq!(
        cert["certificate"]["deletion"]["models"][0]["name"],
        "doomed"
    );
    service.assert_fetches_identical(&service.lb(), "acme/kept", kept.path());
    let (run, _) = service.fetch(&service.lb(), "acme/doomed");
    assert!(
        !run.success && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );
}

/// The instance moving the most bytes right now, measured over a short while by the bytes it
/// writes (`wchar`): an upload's ciphertext to storage, a fetch's bytes to the client. What a
/// server receives cannot be measured so: tokio reads sockets with `recv`, which `rchar`
/// does not count.
fn busiest(cluster: &Cluster) -> usize {
    let sample = |i| cluster.io(i).map_or(0, |(_, written)| written);
    let before: Vec<u64> = (0..cluster.len()).map(sample).collect();
    std::thread::sleep(Duration::from_millis(300));
    let moved: Vec<u64> = (0..cluster.len())
        .map(|i| sample(i).saturating_sub(before[i]))
        .collect();
    let busiest = (0..cluster.len()).max_by_key(|&i| moved[i]).unwrap();
    eprintln!("bytes written in 300 ms by each instance: {moved:?}; killing {busiest}");
    busiest
}

/// Starts a transfer (`start(attempt)`), waits until `under_way(attempt)`, then kills
/// (SIGKILL) the instance moving the most bytes and waits for the transfer to end. Parts and
/// ranges may travel on connections to different instances, so the kill can miss the one
/// serving the transfer, which then finishes by itself: the instance is restarted and the
/// transfer tried again (a fresh one), at most three times. Returns the attempt that died
/// with its instance, and that instance (restarted).
fn kill_mid_transfer(
    service: &mut Service,
    start: impl Fn(&Service, u32) -> std::process::Child,
    under_way: impl Fn(&Service, u32) -> bool,
) -> (u32, usize) {
    for attempt in 0..3 {
        let mut transfer = start(service, attempt);
        wait_for(120, "the transfer under way", || {
            under_way(service, attempt)
        });
        let serving = busiest(&service.cluster);
        service.cluster.kill(serving);
        let status = transfer.wait().unwrap();
        if !status.success() {
            return (attempt, serving);
        }
        eprintln!("attempt {attempt}: the kill missed the instance serving the transfer");
        service.cluster.start_instance(serving, &[]).unwrap();
    }
    panic!("three transfers in a row survived the death of the busiest instance");
}

/// A TCP relay to `target` that moves at most `bytes_per_sec` each way per connection: a
/// slow link, so that a transfer is still under way when the test kills its instance (on an
/// idle loopback a 96 MiB upload may end before the kill lands).
struct SlowLink {
    url: String,
    stop: Arc<AtomicBool>,
}

impl SlowLink {
    fn start(target: &str, bytes_per_sec: u64) -> SlowLink {
        let target = target
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 << 10];
                        let pause =
                            Duration::from_secs_f64(buf.len() as f64 / bytes_per_sec as f64);
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    std::thread::sleep(pause.mul_f64(n as f64 / buf.len() as f64));
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        SlowLink { url, stop }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Issue 12, test 4: the instance serving an upload, then a fetch, is killed (SIGKILL)
/// mid-transfer; the CLI, run again through the load balancer, resumes on another instance
/// and the result is identical.
#[test]
fn transfers_resume_through_the_balancer_when_their_instance_dies() {
    let mut service = Service::start();
    let src = tempfile::tempdir().unwrap();
    let size = 96u64 << 20;
    write_data(&src.path().join("shard.safetensors"), size, 300);
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let dir = src.path().to_str().unwrap().to_owned();
    let model = |attempt: u32| format!("acme/big-{attempt}");
    // 32 MB/s: the 96 MiB transfers take seconds, the kill lands a quarter of the way in.
    let slow = SlowLink::start(&service.lb(), 32 << 20);

    let upload = |service: &Service, attempt: u32| {
        service
            .command(&slow.url, None, &service.admin)
            .args(["upload", &dir, &model(attempt)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stored_parts = |service: &Service, _: u32| {
        service
            .cluster
            .sql("SELECT count(*) FROM upload_parts")
            .is_ok_and(|n| n.trim().parse::<u64>().unwrap_or(0) >= 3)
    };
    let (attempt, serving) = kill_mid_transfer(&mut service, upload, stored_parts);
    let model = model(attempt);
    let out = service.ok(
        &service.lb(),
        None,
        &service.admin,
        &["upload", &dir, &model, "--json"],
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let sent = report["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size,
        "the second run re-sent everything ({sent} bytes)"
    );
    service.cluster.start_instance(serving, &[]).unwrap();
    service.ok(
        &service.lb(),
        None,
        &service.admin,
        &["host", "allow", &model, "gpu"],
    );
    service.ok(
        &service.lb(),
        None,
        &service.admin,
        &["grant", &model, "--to", "alice"],
    );

    let out = tempfile::tempdir().unwrap();
    let target = |attempt: u32| out.path().join(format!("m{attempt}"));
    let fetch = |service: &Service, attempt: u32| {
        service
            .command(&slow.url, Some(&service.host), &service.alice)
            .args(["fetch", &model, "--out", target(attempt).to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let finished_ranges = |_: &Service, attempt: u32| {
        std::fs::read(target(attempt).join("shard.safetensors.custody-partial.state"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["done"].as_array().is_some_and(|d| d.len() >= 2))
    };
    let (attempt, _) = kill_mid_transfer(&mut service, fetch, finished_ranges);
    let target = target(attempt);
    let out_json = service.ok(
        &service.lb(),
        Some(&service.host),
        &service.alice,
        &["--json", "fetch", &model, "--out", target.to_str().unwrap()],
    );
    let report: Value = serde_json::from_str(out_json.trim()).unwrap();
    let received = report["bytes_received"].as_u64().unwrap();
    assert!(
        received < size,
        "the second fetch started over ({received} bytes)"
    );
    for f in ["shard.safetensors", "config.json"] {
        assert_same_file(&src.path().join(f), &target.join(f));
    }
}

/// Issue 12, test 5: 3 instances x 32 concurrent writers of audited actions append to one
/// log: the export verifies offline and holds every entry exactly once.
#[test]
fn writers_on_three_instances_append_to_one_gap_free_log() {
    let service = Service::start();
    let per_writer = 4;
    let ca = service.cluster.ca.clone();
    let operator = service.cluster.operator.clone();
    let urls: Vec<String> = (0..3).map(|i| service.cluster.instance_url(i)).collect();
    let statuses = runtime().block_on(async move {
        let mut tasks = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let client = https_client(&ca);
            for w in 0..32 {
                let (client, url, operator) = (client.clone(), url.clone(), operator.clone());
                tasks.push(tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for k in 0..per_writer {
                        let name = format!("v{i}x{w}x{k}");
                        let status = client
                            .post(format!("{url}/v1/vendors"))
                            .bearer_auth(&operator)
                            .json(&serde_json::json!({ "name": name }))
                            .send()
                            .await
                            .unwrap()
                            .status()
                            .as_u16();
                        statuses.push(status);
                    }
                    statuses
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "{statuses:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    service.ok(
        &service.lb(),
        None,
        &service.cluster.operator,
        &["audit", "export", "--out", bundle.to_str().unwrap()],
    );
    let key = service
        .ok(
            &service.lb(),
            None,
            &service.cluster.operator,
            &["audit", "key"],
        )
        .trim()
        .to_owned();
    let verified = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&bundle)
        .args(["--log-key", &key])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let entries: Vec<Value> = std::fs::read_to_string(bundle.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "gap or reordering at {i}");
    }
    for i in 0..3 {
        for w in 0..32 {
            for k in 0..per_writer {
                let name = format!("v{i}x{w}x{k}");
                let n = entries
                    .iter()
                    .filter(|e| e["action"] == "vendor.create" && e["resource"] == name.as_str())
                    .count();
                assert_eq!(n, 1, "vendor {name} is in the log {n} times");
            }
        }
    }
}
