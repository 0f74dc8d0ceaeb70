//! Operating the server: a busy port, health and readiness, structured logs joined to the
//! audit log by request id, Prometheus metrics and alert rules, TLS certificate reload, the
//! systemd unit, completions and man pages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// An unauthenticated GET over HTTPS: status, `x-request-id`, body.
fn get(ca: &Path, url: &str, request_id: Option<&str>) -> (u16, Option<String>, String) {
    let ca = ca.to_owned();
    let url = url.to_owned();
    let request_id = request_id.map(str::to_owned);
    runtime().block_on(async move {
        let mut request = https_client(&ca).get(url);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, id, response.text().await.unwrap())
    })
}

/// A plain HTTP GET of the metrics listener (`http://ADDR/metrics`).
pub(crate) fn scrape(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    body.to_owned()
}

/// promtool: `CUSTODY_PROMTOOL` (tests/run sets it), else from PATH.
fn promtool() -> String {
    let promtool = std::env::var("CUSTODY_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    assert!(
        Command::new(&promtool).arg("--version").output().is_ok(),
        "promtool is missing: tests/run fetches it (from the Debian package prometheus)"
    );
    promtool
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `custody server` to its end (it must fail): exit status and stderr.
fn failed_start(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .arg("server")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server started: {args:?}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_busy_port_fails_the_start_before_anything_is_created() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("custody");
    let data_arg = data.to_str().unwrap();

    let (code, stderr) = failed_start(&[
        "--data-dir",
        data_arg,
        "--listen",
        &addr,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    // Neither the data directory nor the root of trust beside it.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the failed start left {left:?}");

    // The metrics port is bound before any state too.
    let (code, stderr) = failed_start(&[
        "--data-dir",
        data_arg,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listening for metrics on {addr}")),
        "{stderr}"
    );
    assert!(!data.exists());
    assert!(!dir.path().join("custody.root").exists());
}

#[test]
fn healthz_and_readyz_answer_without_a_token_and_readyz_turns_503_when_storage_or_root_goes() {
    let server = TestServer::start();
    let (status, id, body) = get(&server.ca, &format!("{}/healthz", server.url), None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(id.is_some_and(|id| !id.is_empty()));
    let readyz = format!("{}/readyz", server.url);
    let (status, _, body) = get(&server.ca, &readyz, None);
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // The blob storage goes away: not ready (the answer says nothing more; the log says what).
    let blobs = server.data_dir().join("blobs");
    let moved = server.data_dir().join("blobs.away");
    std::fs::rename(&blobs, &moved).unwrap();
    wait_for(10, "readyz to say 503", || {
        get(&server.ca, &readyz, None).0 == 503
    });
    assert_eq!(get(&server.ca, &readyz, None).2, "not ready\n");
    assert!(server.log().contains("blob storage"), "{}", server.log());
    // /healthz still answers: the process is up.
    assert_eq!(
        get(&server.ca, &format!("{}/healthz", server.url), None).0,
        200
    );
    std::fs::rename(&moved, &blobs).unwrap();
    wait_for(10, "readyz to say 200 again", || {
        get(&server.ca, &readyz, None).0 == 200
    });

    // The root of trust goes away (its directory is unmounted, say): not ready.
    let root = server.data.path().join("custody.root");
    let root_moved = server.data.path().join("custody.root.away");
    std::fs::rename(&root, &root_moved).unwrap();
    wait_for(10, "readyz to say 503 without the root", || {
        get(&server.ca, &readyz, None).0 == 503
    });
    assert!(server.log().contains("root of trust"), "{}", server.log());
    std::fs::rename(&root_moved, &root).unwrap();
    wait_for(10, "readyz to say 200 with the root back", || {
        get(&server.ca, &readyz, None).0 == 200
    });
}

#[test]
fn readyz_turns_503_when_the_database_is_gone() {
    let cluster = testkit::PgCluster::start().unwrap();
    let url = cluster.fresh_database().unwrap();
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), &["--database-url", &url]);
    let readyz = format!("{}/readyz", server.url);
    assert_eq!(get(&server.ca, &readyz, None).0, 200);
    // Stops PostgreSQL and removes its cluster.
    drop(cluster);
    wait_for(20, "readyz to say 503 without the database", || {
        get(&server.ca, &readyz, None).0 == 503
    });
    assert!(server.log().contains("database"), "{}", server.log());
}

/// The server log's lines, each parsed as JSON (every line must be JSON).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect()
}

/// The access log line of request `id`.
fn access_line(lines: &[Value], id: &str) -> Value {
    lines
        .iter()
        .find(|l| l["target"] == "custody::access" && l["request_id"] == id)
        .unwrap_or_else(|| panic!("no access line for request {id}"))
        .clone()
}

#[test]
fn json_logs_carry_the_request_id_that_the_audit_entry_and_the_response_carry_and_no_token() {
    let world = World::on(TestServer::start_with(
        tempfile::tempdir().unwrap(),
        &["--log-format", "json"],
    ));
    let server = &world.server;
    let url = server.url.clone();
    let ca = server.ca.clone();
    let operator = server.operator.clone();
    let alice = world.alice.clone();

    // A client's id is taken; a request without one gets one.
    let (create_status, create_id, unnamed_id, denied_id, bad_id) =
        runtime().block_on(async move {
            let client = https_client(&ca);
            let created = client
                .post(format!("{url}/v1/vendors"))
                .bearer_auth(&operator)
                .header("x-request-id", "ops-create-globex")
                .json(&wire::admin::CreateVendor {
                    name: "globex".into(),
                })
                .send()
                .await
                .unwrap();
            let header = |r: &reqwest::Response| {
                r.headers()
                    .get("x-request-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            };
            let unnamed = client
                .get(format!("{url}/v1/whoami"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap();
            // A committer may not create vendors: denied and audited.
            let denied = client
                .post(format!("{url}/v1/vendors"))
                .bearer_auth(&alice)
                .json(&wire::admin::CreateVendor {
                    name: "initech".into(),
                })
                .send()
                .await
                .unwrap();
            assert_eq!(denied.status(), 403);
            // An id that could forge structure in a log or the audit log is replaced.
            let forged = client
                .get(format!("{url}/v1/whoami"))
                .bearer_auth(&alice)
                .header("x-request-id", "a\",\"level\":\"ERROR")
                .send()
                .await
                .unwrap();
            (
                created.status().as_u16(),
                header(&created),
                header(&unnamed),
                header(&denied),
                header(&forged),
            )
        });
    assert_eq!(create_status, 201);
    assert_eq!(create_id, "ops-create-globex");
    assert!(!unnamed_id.is_empty() && unnamed_id != create_id);
    assert!(
        bad_id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{bad_id}"
    );

    // The audit entries of those requests carry the same ids.
    let entries = server.ok(&server.operator, &["audit", "entries", "0", "100000"]);
    let entries: Vec<Value> = entries
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created = entries
        .iter()
        .find(|e| e["action"] == "vendor.create" && e["resource"] == "globex")
        .unwrap();
    assert_eq!(created["request_id"], "ops-create-globex");
    let denied = entries
        .iter()
        .find(|e| e["action"] == "create-vendor" && e["outcome"] == "denied")
        .unwrap();
    assert_eq!(denied["request_id"], denied_id.as_str());

    // The access lines: one JSON object each, with the route template, status, duration and
    // the caller's user id.
    let lines = json_lines(&server.log());
    let line = access_line(&lines, "ops-create-globex");
    assert_eq!(line["route"], "/v1/vendors");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 201);
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(line["duration_ms"].is_u64(), "{line}");
    assert!(!line["user_id"].as_str().unwrap().is_empty(), "{line}");
    let denied_line = access_line(&lines, &denied_id);
    assert_eq!(denied_line["status"], 403);
    // The decision logged inside the request carries its id too (the request span).
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "authorization decision"
                && l["span"]["request_id"] == denied_id.as_str()
                && l["allowed"] == false),
        "no decision line in the request's span"
    );
    // Raw paths are not logged, only templates.
    let fetch_path = access_line(&lines, &unnamed_id);
    assert_eq!(fetch_path["route"], "/v1/whoami");

    // No token, nor any part of its secret, reaches the log; a refused one neither.
    let log = server.log();
    let refused = "0123456789abcdef.not-a-real-secret-but-one-the-log-must-not-show";
    assert_eq!(
        server.api(refused, "GET", "/v1/whoami", None).0,
        401,
        "a made-up token was accepted"
    );
    let log_after = server.log();
    for token in [&server.operator, &world.admin, &world.alice, refused] {
        let secret = token.split_once('.').unwrap().1;
        assert!(!log.contains(secret) && !log_after.contains(secret));
    }
    json_lines(&log_after);
}

#[test]
fn text_logs_have_no_colour_codes_when_written_to_a_file() {
    let server = TestServer::start();
    server.ok(&server.operator, &["vendor", "create", "acme"]);
    let log = server.log();
    assert!(log.contains("custody::access"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
}

/// Metric names (without `_bucket`, `_sum`, `_count`) a scrape exports.
fn exported_names(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .map_or(n.clone(), str::to_owned)
        })
        .collect()
}

/// The value of the sample `series` (exact name and labels as rendered).
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_after_real_traffic_pass_promtool_and_count_what_happened() {
    let world = World::new();
    let server = &world.server;
    let metrics = server.metrics_url().expect("metrics are on by default");
    assert!(metrics.starts_with("http://127.0.0.1:"), "{metrics}");

    let size = (3 << 20) + 5;
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("w.bin"), size, 3);
    world.upload(src.path(), "acme/m");
    // Alice has no grant yet: denied.
    let out = tempfile::tempdir().unwrap();
    let out_arg = out.path().to_str().unwrap();
    assert!(
        !server
            .custody(&world.alice, &["fetch", "acme/m", "--out", out_arg])
            .success
    );
    server.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    server.ok(&world.alice, &["fetch", "acme/m", "--out", out_arg]);
    server.ok(&server.operator, &["audit", "checkpoint", "--sign"]);
    assert_eq!(
        server
            .api("0000000000000000.bad", "GET", "/v1/whoami", None)
            .0,
        401
    );

    // Invented methods cannot grow the number of series: they count as "other".
    let (url, ca) = (server.url.clone(), server.ca.clone());
    runtime().block_on(async move {
        let client = https_client(&ca);
        for invented in ["INVENTED1", "INVENTED2"] {
            let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
            let response = client
                .request(method, format!("{url}/v1/whoami"))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error());
        }
    });

    let text = scrape(&metrics);
    assert!(
        !text.contains("INVENTED") && text.contains("method=\"other\""),
        "{text}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let checked = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success() && checked.stderr.is_empty() && checked.stdout.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Requests by route template and status (never the raw path).
    assert!(
        sample(
            &text,
            "custody_http_requests_total{method=\"PUT\",route=\"/v1/uploads/{id}/files/{index}\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "custody_http_requests_total{method=\"GET\",route=\"/v1/whoami\",status=\"401\"}"
        ) >= 1.0
    );
    assert!(
        !text.contains("acme/m") && !text.contains("w.bin"),
        "{text}"
    );
    assert!(text.contains("custody_http_request_duration_seconds_bucket{"));
    let size = size as f64;
    assert!(sample(&text, "custody_uploaded_bytes_total") >= size);
    assert!(sample(&text, "custody_served_bytes_total{api=\"native\"}") >= size);
    assert_eq!(
        sample(&text, "custody_transfers_in_flight{direction=\"download\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "custody_transfers_in_flight{direction=\"upload\"}"),
        0.0
    );
    assert!(text.contains("custody_authorization_decisions_total{outcome=\"denied\""));
    assert!(text.contains("custody_authorization_decisions_total{outcome=\"allowed\""));
    // Every entry in the log was appended by this process.
    let appended = sample(&text, "custody_audit_entries_appended_total");
    let log_size = sample(&text, "custody_audit_log_entries");
    assert!(
        appended >= 10.0 && appended <= log_size,
        "{appended} {log_size}"
    );
    assert!(text.contains("custody_audit_append_duration_seconds_bucket"));
    assert!(sample(&text, "custody_audit_checkpoint_age_seconds") < 600.0);
    assert_eq!(sample(&text, "custody_deletions{state=\"certified\"}"), 0.0);
    assert_eq!(
        sample(&text, "custody_deletion_oldest_unfinished_age_seconds"),
        0.0
    );
    assert_eq!(sample(&text, "custody_upload_sessions_open"), 0.0);

    // The alert rules and the dashboard only use metrics the server exports (a histogram by
    // its base name), or Prometheus's own `up`.
    let mut names = exported_names(&text);
    // Counted only when they happen: present in the registry's descriptions.
    for rare in [
        "custody_storage_errors_total",
        "custody_tls_certificate_reloads_total",
    ] {
        assert!(text.contains(&format!("# HELP {rare} ")) || !names.contains(rare));
        names.insert(rare.to_owned());
    }
    for file in [
        "deploy/prometheus/custody-alerts.yml",
        "deploy/grafana/custody-dashboard.json",
    ] {
        let body = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for used in body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("custody_"))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| used.strip_suffix(s))
                .unwrap_or(used);
            assert!(
                names.contains(base),
                "{file} uses {used}, which the server does not export"
            );
        }
    }
}

#[test]
fn metrics_can_be_turned_off() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), &["--no-metrics"]);
    assert_eq!(server.metrics_url(), None, "{:?}", server.stdout);
    server.ok(&server.operator, &["vendor", "create", "acme"]);
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "custody-alerts.yml"],
        ["test", "rules", "custody-alerts.test.yml"],
    ] {
        let output = Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/custody-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

/// Two certificate pairs for 127.0.0.1, and a file that trusts both.
struct Pairs {
    dir: tempfile::TempDir,
}

impl Pairs {
    fn new() -> Pairs {
        let dir = tempfile::tempdir().unwrap();
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut trusted = String::new();
        for name in ["a", "b"] {
            let (cert, key) = crypto::tls::self_signed_server_cert(&names).unwrap();
            std::fs::write(dir.path().join(format!("{name}.crt")), &cert).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.as_bytes()).unwrap();
            trusted.push_str(&cert);
        }
        std::fs::write(dir.path().join("trusted.pem"), trusted).unwrap();
        Pairs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The DER of pair `name`'s certificate.
    fn der(&self, name: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(self.path(&format!("{name}.crt")))
            .unwrap()
            .to_vec()
    }

    /// Installs pair `name` as the served files, each replaced by a rename (as tools do).
    fn install(&self, name: &str) {
        for ext in ["key", "crt"] {
            let tmp = self.path(&format!("next.{ext}"));
            std::fs::copy(self.path(&format!("{name}.{ext}")), &tmp).unwrap();
            std::fs::rename(&tmp, self.path(&format!("served.{ext}"))).unwrap();
        }
    }

    /// A server on the served pair, checking the files every `check` seconds.
    fn server(&self, check: u64) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("custody.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\ntls_reload_check_secs = {check}\n",
                data.path().join("custody"),
                self.path("served.crt"),
                self.path("served.key"),
            ),
        )
        .unwrap();
        let mut server =
            TestServer::start_unclaimed(data, &["--config", config.to_str().unwrap()], &[]);
        server.ca = self.path("trusted.pem");
        server
    }
}

/// A client that keeps its connection and reports the certificate each answer came with.
struct Watcher {
    client: reqwest::Client,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Watcher {
    fn new(server: &TestServer) -> Watcher {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&server.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(std::sync::Arc::new(roots))
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .tls_info(true)
            .pool_idle_timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        Watcher {
            client,
            url: format!("{}/healthz", server.url),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// The DER certificate the server answered with.
    fn certificate(&self) -> Vec<u8> {
        self.rt.block_on(async {
            let response = self.client.get(&self.url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let der = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .unwrap()
                .to_vec();
            response.text().await.unwrap();
            der
        })
    }
}

/// What a new connection is served.
fn fresh_certificate(server: &TestServer) -> Vec<u8> {
    Watcher::new(server).certificate()
}

/// Writes a certificate for 127.0.0.1 that expired yesterday, and its key.
fn expired_pair(cert: &Path, key: &Path) {
    let venv = match std::env::var_os("CUSTODY_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(".venv"),
    };
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
    .public_key(key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=30))
    .not_valid_after(now - datetime.timedelta(days=1))
    .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    .sign(key, hashes.SHA256()))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
"#;
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(cert)
        .arg(key)
        .output()
        .unwrap_or_else(|e| panic!("no Python in {} (tests/run makes it): {e}", venv.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn hangup(server: &TestServer) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_open_connections_keep_working() {
    let pairs = Pairs::new();
    pairs.install("a");
    let mut server = pairs.server(1);
    let open = Watcher::new(&server);
    assert_eq!(open.certificate(), pairs.der("a"));

    // The files change: new connections get the new certificate within a few seconds.
    pairs.install("b");
    wait_for(15, "the renewed certificate", || {
        fresh_certificate(&server) == pairs.der("b")
    });
    // The connection opened before still works (it keeps the certificate it shook hands
    // with, which shows it is the same connection).
    assert_eq!(open.certificate(), pairs.der("a"));
    assert!(
        server.log().contains("TLS certificate reloaded"),
        "{}",
        server.log()
    );
    assert!(!server.try_exited());
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_is_refused_keeping_the_old() {
    let pairs = Pairs::new();
    pairs.install("a");
    // Files are not watched (0): only SIGHUP reloads.
    let mut server = pairs.server(0);
    assert_eq!(fresh_certificate(&server), pairs.der("a"));
    pairs.install("b");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fresh_certificate(&server),
        pairs.der("a"),
        "reloaded without SIGHUP"
    );
    hangup(&server);
    wait_for(10, "the certificate after SIGHUP", || {
        fresh_certificate(&server) == pairs.der("b")
    });

    // A key that does not go with the certificate: refused, logged, the old pair stays.
    std::fs::copy(pairs.path("a.crt"), pairs.path("served.crt")).unwrap();
    hangup(&server);
    wait_for(10, "the refusal in the log", || {
        server.log().contains("new TLS certificate refused")
    });
    assert!(
        server.log().contains("does not go with"),
        "{}",
        server.log()
    );
    assert_eq!(fresh_certificate(&server), pairs.der("b"));

    // Not a certificate at all: the same.
    std::fs::write(
        pairs.path("served.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    let refusals = server.log().matches("new TLS certificate refused").count();
    hangup(&server);
    wait_for(10, "the second refusal", || {
        server.log().matches("new TLS certificate refused").count() > refusals
    });
    assert_eq!(fresh_certificate(&server), pairs.der("b"));

    // An expired certificate with its own key: the same (made by Python's cryptography, which
    // moto brings into the test venv).
    expired_pair(&pairs.path("served.crt"), &pairs.path("served.key"));
    let refusals = server.log().matches("new TLS certificate refused").count();
    hangup(&server);
    wait_for(10, "the third refusal", || {
        server.log().matches("new TLS certificate refused").count() > refusals
    });
    assert!(
        server.log().contains("is not valid now"),
        "{}",
        server.log()
    );
    assert_eq!(fresh_certificate(&server), pairs.der("b"));
    assert!(!server.try_exited(), "SIGHUP stopped the server");
    // The refusals are counted for the alert rule.
    let text = scrape(&server.metrics_url().unwrap());
    assert_eq!(
        sample(
            &text,
            "custody_tls_certificate_reloads_total{result=\"refused\"}"
        ),
        3.0
    );
}

#[test]
fn sighup_on_custodys_own_certificate_changes_nothing_and_stops_nothing() {
    let mut server = TestServer::start();
    let before = fresh_certificate(&server);
    hangup(&server);
    wait_for(10, "the SIGHUP note", || server.log().contains("SIGHUP"));
    assert!(!server.try_exited(), "SIGHUP stopped the server");
    assert_eq!(fresh_certificate(&server), before);
}

#[test]
fn custody_health_waits_for_readyz() {
    let server = TestServer::start();
    let run = |path: &[&str]| {
        let output = Command::new(BIN)
            .args(["health", "--server", &server.url, "--ca"])
            .arg(&server.ca)
            .args(path)
            .env_remove("CUSTODY_TOKEN")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&["--ready"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("/readyz: yes"), "{stdout}");
    assert_eq!(run(&[]).0, Some(0));
    let blobs = server.data_dir().join("blobs");
    let gone = server.data_dir().join("gone");
    std::fs::rename(&blobs, &gone).unwrap();
    let readyz = format!("{}/readyz", server.url);
    wait_for(10, "readyz to say 503", || {
        get(&server.ca, &readyz, None).0 == 503
    });
    let (code, _, stderr) = run(&["--ready", "--wait", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/readyz: no (HTTP 503)"), "{stderr}");
    // It keeps asking while the server is not ready yet, and says yes once it is.
    let waiting = Command::new(BIN)
        .args([
            "health",
            "--ready",
            "--wait",
            "30",
            "--server",
            &server.url,
            "--ca",
        ])
        .arg(&server.ca)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&gone, &blobs).unwrap();
    let output = waiting.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("/readyz: yes"));
    // A server that is not there: no.
    let url = server.url.clone();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&server.ca, ca.path()).unwrap();
    drop(server);
    let output = Command::new(BIN)
        .args(["health", "--server", &url, "--ca"])
        .arg(ca.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // Debian's systemd package carries it; a machine without systemd has no use for the
        // unit. Say so instead of passing silently.
        panic!("systemd-analyze is missing: install the Debian package systemd");
    }
    let unit = std::fs::read_to_string(repo_root().join("deploy/custody.service")).unwrap();
    assert!(
        unit.contains("custody health --ready"),
        "the unit does not wait for /readyz"
    );
    // The unit names the installed binary; here it is the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custody.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/custody", BIN)).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let run = |args: &[&str]| {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    // bash accepts it and registers completion for `custody`, with subcommands and flags.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("custody.bash");
    std::fs::write(&script, &bash).unwrap();
    let registered = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p custody",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    for word in [
        "verify-certificate",
        "recover-operator",
        "--log-format",
        "--metrics-listen",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    for shell in ["zsh", "fish"] {
        assert!(run(&["completions", shell]).contains("verify-certificate"));
    }
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH custody"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("verify\\-certificate") || man.contains("verify-certificate"));
    let pages = dir.path().join("man");
    run(&["man", "--out", pages.to_str().unwrap()]);
    for page in [
        "custody.1",
        "custody-server.1",
        "custody-audit-key.1",
        "custody-service-key.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let server_page = std::fs::read_to_string(pages.join("custody-server.1")).unwrap();
    assert!(server_page.contains("log\\-format"), "{server_page}");
}

#[test]
fn a_database_migrated_by_a_newer_custody_is_refused_by_an_older_one() {
    let server = TestServer::start();
    server.ok(&server.operator, &["vendor", "create", "acme"]);
    let data = server.stop();
    // What a newer version's first start leaves: a migration this binary does not know.
    let db = data.path().join("custody/db/custody.sqlite");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990, 'from a newer custody', 1, X'00', 0);",
        )
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stderr) = failed_start(&[
        "--data-dir",
        data.path().join("custody").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("opening the metadata database") && stderr.contains("99990"),
        "{stderr}"
    );
}
