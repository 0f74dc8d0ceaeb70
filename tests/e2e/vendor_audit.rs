//! A vendor sees for itself (issue 14): its auditor exports its own view of the audit log and
//! verifies offline that none of its entries was left out, while the export names no other
//! vendor; its admins and auditors read the activity on its models from the log.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::{hex_sha256, log_key, verify};
use crate::support::*;

/// acme (with alice fetching its model) and globex (with carol fetching its secret model),
/// both on host gpu-01, plus a refusal of carol at acme.
struct TwoVendors {
    world: World,
    globex_admin: String,
    carol: String,
    acme_auditor: String,
}

impl TwoVendors {
    fn new() -> TwoVendors {
        let world = World::new();
        let server = &world.server;
        server.create_vendor("globex");
        let globex_admin = server.token("vendor-admin", Some("globex"), "globex-admin");
        let carol = server.token("committer", None, "carol");
        server.ok(&globex_admin, &["host", "approve", "globex", "gpu-01"]);
        let acme_auditor = server.admitted_token("auditor", "acme", "acme-auditor", &world.admin);
        let v = TwoVendors {
            world,
            globex_admin,
            carol,
            acme_auditor,
        };
        v.activity();
        v
    }

    /// Uploads, grants and fetches at both vendors, interleaved.
    fn activity(&self) {
        let server = &self.world.server;
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.json"), br#"{"layers":2}"#).unwrap();
        self.world.upload(src.path(), "acme/llama-9");
        server.ok(
            &self.globex_admin,
            &[
                "upload",
                src.path().to_str().unwrap(),
                "globex/secret-model",
            ],
        );
        server.ok(
            &self.globex_admin,
            &["host", "allow", "globex/secret-model", "gpu"],
        );
        server.ok(
            &self.world.admin,
            &["grant", "acme/llama-9", "--to", "alice"],
        );
        server.ok(
            &self.globex_admin,
            &["grant", "globex/secret-model", "--to", "carol"],
        );
        let out = tempfile::tempdir().unwrap();
        server.ok(
            &self.world.alice,
            &[
                "fetch",
                "acme/llama-9",
                "--out",
                out.path().join("a").to_str().unwrap(),
            ],
        );
        server.ok(
            &self.carol,
            &[
                "fetch",
                "globex/secret-model",
                "--out",
                out.path().join("g").to_str().unwrap(),
            ],
        );
    }

    fn export(
        &self,
        token: &str,
        vendor: &str,
        since: Option<&Path>,
    ) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("bundle");
        let mut args = vec![
            "audit",
            "export",
            "--vendor",
            vendor,
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(s) = since {
            args.extend(["--since", s.to_str().unwrap()]);
        }
        self.world.server.ok(token, &args);
        (tmp, out)
    }
}

fn lines(bundle: &Path) -> Vec<String> {
    std::fs::read_to_string(bundle.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn set_lines(bundle: &Path, lines: &[String]) {
    std::fs::write(bundle.join("entries.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// Indexes of the lines holding an entry in full.
fn in_full(lines: &[String]) -> Vec<usize> {
    (0..lines.len())
        .filter(|&i| lines[i].starts_with('{'))
        .collect()
}

fn copy_bundle(bundle: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("copy");
    let status = std::process::Command::new("cp")
        .args(["-a", bundle.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    (tmp, to)
}

#[test]
fn a_vendors_auditor_proves_its_export_complete_and_sees_nobody_elses() {
    let v = TwoVendors::new();
    let server = &v.world.server;
    let key = log_key(server);
    let (_tmp, bundle) = v.export(&v.acme_auditor, "acme", None);

    let (code, report) = verify(&bundle, &key, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["vendor"]["vendor"], "acme");
    let all = lines(&bundle);
    let full = in_full(&all);
    assert_eq!(report["vendor"]["entries_in_full"], full.len());
    assert!(
        full.len() >= 6,
        "acme's creation, upload, grant, fetch...: {full:?}"
    );
    assert!(full.len() < all.len(), "other entries travel by hash");
    for i in &full {
        let e: Value = serde_json::from_str(&all[*i]).unwrap();
        assert_eq!(e["vendor"], "acme", "{e}");
    }
    let fetch = full
        .iter()
        .map(|i| serde_json::from_str::<Value>(&all[*i]).unwrap())
        .find(|e| e["action"] == "fetch" && e["outcome"] == "ok")
        .expect("alice's fetch is in acme's export");
    assert_eq!(fetch["actor"], "committer:alice");
    assert_eq!(fetch["host"], "gpu-01");
    // What a person reads: completeness, and the key to keep.
    let output = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&bundle)
        .args(["--log-key", &key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "complete for acme: its {} entries are all here in full",
            full.len()
        )),
        "{text}"
    );
    assert!(text.contains("--vendor-key"), "{text}");

    // Nothing of globex's: no vendor, model or user name in any file.
    for entry in walk(&bundle) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        for secret in ["globex", "secret-model", "carol"] {
            assert!(!text.contains(secret), "{} names {secret}", entry.display());
        }
    }

    // Dropping, editing, reordering or withholding one of acme's entries: exit 1, named.
    let victim = full[full.len() / 2];
    type Tamper = Box<dyn Fn(&mut Vec<String>)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "dropped",
            Box::new(move |l: &mut Vec<String>| {
                l.remove(victim);
            }),
        ),
        (
            "edited",
            Box::new(move |l: &mut Vec<String>| {
                l[victim] = l[victim].replacen("\"time\":\"2", "\"time\":\"1", 1);
            }),
        ),
        (
            "reordered",
            Box::new(move |l: &mut Vec<String>| l.swap(victim, victim + 1)),
        ),
        (
            "withheld",
            Box::new(move |l: &mut Vec<String>| {
                l[victim] = format!("-{}", hex_sha256(l[victim].as_bytes()));
            }),
        ),
    ];
    for (what, tamper) in cases {
        let (_t, copy) = copy_bundle(&bundle);
        let mut l = lines(&copy);
        tamper(&mut l);
        set_lines(&copy, &l);
        let (code, report) = verify(&copy, &key, &[]);
        assert_eq!(code, 1, "{what}: {report}");
        assert_eq!(report["entry"], victim, "{what} names the entry: {report}");
    }

    // globex's admin cannot export acme's view, nor can acme's auditor export globex's.
    for (token, vendor) in [(&v.globex_admin, "acme"), (&v.acme_auditor, "globex")] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("b");
        let run = server.custody(
            token,
            &[
                "audit",
                "export",
                "--vendor",
                vendor,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(!run.success, "{vendor}: {}", run.stdout);
        assert!(!out.join("entries.jsonl").exists());
    }
    // A committer neither.
    let (status, _) = server.api(&v.world.alice, "GET", "/v1/audit/entries?vendor=acme", None);
    assert_eq!(status, 403);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_later_export_is_checked_against_the_key_the_auditor_kept() {
    let v = TwoVendors::new();
    let server = &v.world.server;
    let key = log_key(server);
    let (_first_tmp, first) = v.export(&v.acme_auditor, "acme", None);
    assert_eq!(verify(&first, &key, &[]).0, 0);
    // The auditor keeps the checkpoint the first export was signed up to, and vendor.json.
    let size = lines(&first).len();
    let kept = first.join(format!("checkpoints/{size}.txt"));
    assert!(kept.exists());

    v.activity();
    let (_tmp, later) = v.export(&v.acme_auditor, "acme", Some(&kept));
    // Without the kept key, the later export cannot prove whose tag is whose: unusable.
    let (code, report) = verify(&later, &key, &[]);
    assert_eq!(code, 2, "{report}");
    assert!(
        report["problem"].as_str().unwrap().contains("--vendor-key"),
        "{report}"
    );
    let vendor_json = first.join("vendor.json");
    let pinned = [
        "--vendor-key",
        vendor_json.to_str().unwrap(),
        "--previous",
        kept.to_str().unwrap(),
    ];
    let (code, report) = verify(&later, &key, &pinned);
    assert_eq!(code, 0, "{report}");
    assert!(report["vendor"]["entries_in_full"].as_u64().unwrap() >= 3);
    // A bundle whose vendor.json carries another key is refused against the kept one.
    let (_t, copy) = copy_bundle(&later);
    let text = std::fs::read_to_string(copy.join("vendor.json")).unwrap();
    let scope: Value = serde_json::from_str(&text).unwrap();
    let other = text.replace(scope["tag_key"].as_str().unwrap(), &"ab".repeat(32));
    std::fs::write(copy.join("vendor.json"), other).unwrap();
    let (code, report) = verify(&copy, &key, &pinned);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["problem"].as_str().unwrap().contains("tag key"),
        "{report}"
    );
}

#[test]
fn activity_shows_what_happened_to_a_vendors_models() {
    let v = TwoVendors::new();
    let server = &v.world.server;
    // carol is refused at acme.
    let out = tempfile::tempdir().unwrap();
    let run = server.custody(
        &v.carol,
        &[
            "fetch",
            "acme/llama-9",
            "--out",
            out.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!run.success);

    let text = server.ok(&v.world.admin, &["--json", "activity", "acme"]);
    let activity: Value = serde_json::from_str(text.trim()).unwrap();
    let events = activity["events"].as_array().unwrap();
    let find = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .collect::<Vec<_>>()
    };
    let fetched = find("fetch", "ok");
    assert_eq!(fetched.len(), 1, "{events:?}");
    assert_eq!(fetched[0]["actor"], "committer:alice");
    assert_eq!(fetched[0]["host"], "gpu-01");
    assert_eq!(fetched[0]["files"], 1);
    assert_eq!(fetched[0]["bytes"], 12);
    assert!(!find("grant", "ok").is_empty());
    assert!(!find("upload.commit", "ok").is_empty());
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "denied" && e["actor"] == "committer:carol"),
        "carol's refusal at acme is acme's: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("secret-model")),
        "nothing of globex's"
    );
    // Each event's index finds the same entry in acme's export.
    let (_tmp, bundle) = v.export(&v.acme_auditor, "acme", None);
    let lines = lines(&bundle);
    for e in events.iter().filter(|e| e["action"] != "audit.read") {
        let index = e["index"].as_u64().unwrap() as usize;
        let entry: Value = serde_json::from_str(&lines[index]).unwrap();
        assert_eq!(entry["action"], e["action"]);
        assert_eq!(entry["time"], e["time"]);
    }

    // One model, a time window, a person reading it, and who may not.
    let text = server.ok(&v.acme_auditor, &["--json", "activity", "acme/llama-9"]);
    let model: Value = serde_json::from_str(text.trim()).unwrap();
    let model_events = model["events"].as_array().unwrap();
    assert!(!model_events.is_empty());
    assert!(
        model_events
            .iter()
            .all(|e| e["resource"].as_str().unwrap().starts_with("acme/llama-9"))
    );
    let text = server.ok(
        &v.world.admin,
        &[
            "--json",
            "activity",
            "acme",
            "--since",
            "2999-01-01T00:00:00Z",
        ],
    );
    let later: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(later["events"].as_array().unwrap().len(), 0);
    let text = server.ok(&v.world.admin, &["activity", "acme/llama-9"]);
    assert!(text.contains("fetch"), "{text}");
    assert!(
        text.contains("by committer:alice on gpu-01, 1 file(s), 12 bytes"),
        "{text}"
    );
    for token in [&v.globex_admin, &v.world.alice, &server.operator] {
        let run = server.custody(token, &["activity", "acme"]);
        assert!(!run.success, "{}", run.stdout);
    }
}

#[test]
fn watch_follows_a_vendors_events_as_they_happen_and_resumes_from_an_index() {
    use std::io::BufRead;
    let v = TwoVendors::new();
    let server = &v.world.server;
    let start = |from: Option<u64>| {
        let mut args = vec!["--json".to_owned(), "watch".into(), "acme/llama-9".into()];
        if let Some(f) = from {
            args.extend(["--from".into(), f.to_string()]);
        }
        let mut child = server
            .command(None, &v.acme_auditor)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    };
    let next_fetch = |rx: &std::sync::mpsc::Receiver<Value>| loop {
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("watch printed the fetch within 30 s");
        if e["action"] == "fetch" && e["outcome"] == "ok" {
            return e;
        }
    };

    // History first (alice's fetch in TwoVendors::new), then what happens while it watches.
    let (mut child, rx) = start(None);
    let first = next_fetch(&rx);
    assert_eq!(first["actor"], "committer:alice");
    let out = tempfile::tempdir().unwrap();
    server.ok(
        &v.world.alice,
        &[
            "fetch",
            "acme/llama-9",
            "--out",
            out.path().join("again").to_str().unwrap(),
        ],
    );
    let live = next_fetch(&rx);
    assert!(live["index"].as_u64() > first["index"].as_u64());
    assert_eq!(live["host"], "gpu-01");
    // globex's events never show, and a watcher does not see its own polls.
    server.ok(
        &v.carol,
        &[
            "fetch",
            "globex/secret-model",
            "--out",
            out.path().join("g").to_str().unwrap(),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    while let Ok(e) = rx.try_recv() {
        assert!(!e.to_string().contains("secret-model"), "{e}");
        assert_ne!(e["action"], "audit.read", "{e}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Resumed after the live fetch: the older ones are not printed again.
    let resume = live["index"].as_u64().unwrap() + 1;
    let (mut child, rx) = start(Some(resume));
    server.ok(
        &v.world.alice,
        &[
            "fetch",
            "acme/llama-9",
            "--out",
            out.path().join("third").to_str().unwrap(),
        ],
    );
    let third = next_fetch(&rx);
    assert!(third["index"].as_u64().unwrap() >= resume);
    child.kill().unwrap();
    child.wait().unwrap();

    // Not for another vendor's people.
    let run = server.custody(&v.globex_admin, &["watch", "acme"]);
    assert!(!run.success);
}

/// A local HTTPS receiver (Python's standard library), started by the test: it answers 200
/// (307 to `/hook` for `/redirect`) and writes each request's path, headers and body as one
/// JSON line to `log`.
struct Receiver {
    child: std::process::Child,
    log: PathBuf,
}

const RECEIVER: &str = r#"
import http.server, json, ssl, sys
port, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode()}) + "\n")
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("location", "/hook")
        else:
            self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl Receiver {
    /// Serves with `dir/receiver.crt` and `dir/receiver.key` on `port`.
    fn start_with_cert(dir: &Path, port: u16) -> Receiver {
        std::fs::write(dir.join("receiver.py"), RECEIVER).unwrap();
        let log = dir.join("received.jsonl");
        let child = std::process::Command::new("python3")
            .arg(dir.join("receiver.py"))
            .arg(port.to_string())
            .arg(dir.join("receiver.crt"))
            .arg(dir.join("receiver.key"))
            .arg(&log)
            .spawn()
            .unwrap();
        Receiver { child, log }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_webhook_receives_signed_events_and_retries_until_the_receiver_answers() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[webhooks]\nallowed_hosts = [\"127.0.0.1\"]\n",
            data.path().join("custody")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let world = World::on(TestServer::start_with(data, &["--config", &config]));
    let server = &world.server;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/hook");

    // Refused: plain HTTP, a host the operator does not allow, a committer setting one.
    for (token, bad) in [
        (&world.admin, format!("http://127.0.0.1:{port}/hook")),
        (&world.admin, "https://169.254.169.254/latest".to_owned()),
        (
            &world.admin,
            format!("https://user:pw@127.0.0.1:{port}/hook"),
        ),
        (&world.alice, url.clone()),
    ] {
        let run = server.custody(token, &["webhook", "set", "acme", &bad]);
        assert!(!run.success, "{bad}: {}", run.stdout);
    }
    let run = server.custody(
        &world.admin,
        &["webhook", "set", "acme", "http://127.0.0.1/x"],
    );
    assert!(run.stderr.contains("https"), "{}", run.stderr);
    let run = server.custody(
        &world.admin,
        &["webhook", "set", "acme", "https://10.0.0.1/x"],
    );
    assert!(
        run.stderr.contains("does not allow webhooks to 10.0.0.1"),
        "{}",
        run.stderr
    );

    // The receiver's certificate is made before it starts, so the webhook can trust it.
    let receiver_dir = dir.path().join("r");
    std::fs::create_dir_all(&receiver_dir).unwrap();
    let (cert, key) = crypto::tls::self_signed_server_cert(&["127.0.0.1".into()]).unwrap();
    std::fs::write(receiver_dir.join("ca.pem"), &cert).unwrap();
    let set = server.ok(
        &world.admin,
        &[
            "--json",
            "webhook",
            "set",
            "acme",
            &url,
            "--receiver-ca",
            receiver_dir.join("ca.pem").to_str().unwrap(),
        ],
    );
    let set: Value = serde_json::from_str(set.trim()).unwrap();
    let secret = hex::decode(set["secret"].as_str().unwrap()).unwrap();
    assert_eq!(secret.len(), 32);

    // Events while the receiver is down: a grant and a fetch.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), br#"{"layers":2}"#).unwrap();
    world.upload(src.path(), "acme/llama-9");
    server.ok(&world.admin, &["grant", "acme/llama-9", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    server.ok(
        &world.alice,
        &[
            "fetch",
            "acme/llama-9",
            "--out",
            out.path().join("a").to_str().unwrap(),
        ],
    );
    wait_for(30, "a failed delivery attempt", || {
        let shown = server.ok(&world.admin, &["--json", "webhook", "show", "acme"]);
        let shown: Value = serde_json::from_str(shown.trim()).unwrap();
        shown["failures"].as_u64().unwrap_or(0) >= 1
    });
    let shown = server.ok(&world.admin, &["webhook", "show", "acme"]);
    assert!(shown.contains("failed attempt"), "{shown}");
    assert!(shown.contains("cannot connect"), "{shown}");
    assert!(
        !shown.contains(&hex::encode(&secret)),
        "the secret is shown only once"
    );

    // The receiver comes up, with the certificate the webhook trusts: the events arrive.
    std::fs::write(receiver_dir.join("receiver.crt"), &cert).unwrap();
    std::fs::write(receiver_dir.join("receiver.key"), key.as_bytes()).unwrap();
    let receiver = Receiver::start_with_cert(&receiver_dir, port);
    wait_for(60, "the webhook delivery", || {
        !receiver.received().is_empty()
    });
    let got = &receiver.received()[0];
    let body = got["body"].as_str().unwrap();
    let timestamp = got["headers"]["x-custody-timestamp"].as_str().unwrap();
    let expected = format!(
        "v1={}",
        hex::encode(crypto::mac::hmac_sha256(
            &secret,
            format!("{timestamp}.{body}").as_bytes()
        ))
    );
    assert_eq!(got["headers"]["x-custody-signature"], expected.as_str());
    let delivery: Value = serde_json::from_str(body).unwrap();
    assert_eq!(delivery["vendor"], "acme");
    let events = delivery["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["action"] == "grant"), "{events:?}");
    let fetch = events
        .iter()
        .find(|e| e["action"] == "fetch")
        .expect("the fetch is delivered");
    assert_eq!(fetch["actor"], "committer:alice");
    assert_eq!(fetch["host"], "gpu-01");
    assert!(
        !events.iter().any(|e| e["action"] == "upload.begin"),
        "uploads are not what a webhook carries: {events:?}"
    );

    // The delivery is in the log (written once the receiver has answered, so a moment after
    // it received the events); removing the webhook stops it.
    let outcomes = || -> Vec<Value> {
        let text = server.ok(&world.admin, &["--json", "activity", "acme"]);
        let activity: Value = serde_json::from_str(text.trim()).unwrap();
        activity["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "webhook.deliver")
            .map(|e| e["outcome"].clone())
            .collect()
    };
    wait_for(20, "the successful delivery's entry", || {
        outcomes().iter().any(|o| o == "ok")
    });
    assert!(outcomes().iter().any(|o| o == "failed"));

    // A receiver that redirects is a failed delivery: the redirect is not followed.
    let delivered = receiver.received().len();
    server.ok(
        &world.admin,
        &[
            "webhook",
            "set",
            "acme",
            &format!("https://127.0.0.1:{port}/redirect"),
            "--receiver-ca",
            receiver_dir.join("ca.pem").to_str().unwrap(),
        ],
    );
    server.ok(&world.admin, &["revoke", "acme/llama-9", "--from", "alice"]);
    wait_for(30, "a refused redirect", || {
        let shown = server.ok(&world.admin, &["--json", "webhook", "show", "acme"]);
        let shown: Value = serde_json::from_str(shown.trim()).unwrap();
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 307"))
    });
    let after = receiver.received();
    assert!(after.len() > delivered);
    assert!(
        after[delivered..].iter().all(|r| r["path"] == "/redirect"),
        "the redirect was followed: {:?}",
        &after[delivered..]
    );

    server.ok(&world.admin, &["webhook", "remove", "acme"]);
    let run = server.custody(&world.admin, &["webhook", "show", "acme"]);
    assert!(!run.success);
}

#[test]
fn the_audit_logs_own_resource_names_are_not_vendor_names_and_idle_polls_record_nothing() {
    let world = World::new();
    let server = &world.server;
    // An entry's vendor is read off its resource: the service's own resources stay unclaimed.
    for reserved in ["service", "keys", "unknown", "deletion", "model"] {
        let run = server.custody(&server.operator, &["vendor", "create", reserved]);
        assert!(!run.success, "{reserved}");
        assert!(run.stderr.contains("reserved"), "{}", run.stderr);
    }
    // Two long polls that find nothing (from beyond the end of the log) add no entry.
    let key = log_key(server);
    let (_t, before) = crate::audit::export(server, None);
    for _ in 0..2 {
        let (status, body) = server.api(
            &world.admin,
            "GET",
            "/v1/vendors/acme/activity?from=999999&wait=1",
            None,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["events"].as_array().unwrap().len(), 0);
    }
    let (_t, after) = crate::audit::export(server, None);
    assert_eq!(verify(&after, &key, &[]).0, 0);
    let polls = |bundle: &Path| {
        crate::audit::entries(bundle)
            .iter()
            .filter(|e| {
                e["action"] == "audit.read"
                    && e["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("activity of"))
            })
            .count()
    };
    assert_eq!(polls(&before), 0);
    assert_eq!(polls(&after), 0);
    // A poll that returns events is recorded.
    let (status, _) = server.api(
        &world.admin,
        "GET",
        "/v1/vendors/acme/activity?wait=1",
        None,
    );
    assert_eq!(status, 200);
    let (_t, last) = crate::audit::export(server, None);
    assert_eq!(polls(&last), 1);
}
