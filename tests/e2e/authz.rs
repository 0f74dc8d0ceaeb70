//! The authorization matrix: who, from which host, may do what — through the real HTTPS
//! server with real client certificates issued by its host CA.
//!
//! One world is built once (vendors, models, users, groups, grants, exclusions, embargo
//! windows, hosts in host groups, a revoked host, expired and revoked tokens, a vendor under
//! the two-person rule) and the table below is run against it in order: each row is a
//! request and what its user must see.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Who is calling: a key into the token map.
type Who = &'static str;

/// Where from: a key into the host map, or no client certificate.
#[derive(Clone, Copy, Debug)]
enum Via {
    NoHost,
    Host(&'static str),
}
use Via::{Host, NoHost};

struct Row {
    who: Who,
    from: Via,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    status: u16,
    /// A fragment of the refusal message the user must see (empty for successes).
    says: &'static str,
}

fn row(who: Who, from: Via, method: &'static str, path: &'static str, status: u16) -> Row {
    Row {
        who,
        from,
        method,
        path,
        body: None,
        status,
        says: "",
    }
}

impl Row {
    fn says(mut self, fragment: &'static str) -> Row {
        self.says = fragment;
        self
    }
    fn body(mut self, body: Value) -> Row {
        self.body = Some(body);
        self
    }
}

const FETCH_M: &str = "/v1/models/acme/m/revisions/main/files/config.json";
const FETCH_EMB: &str = "/v1/models/acme/emb/revisions/main/files/config.json";
const FETCH_CLOSED: &str = "/v1/models/acme/closed/revisions/main/files/config.json";
const FETCH_CPU: &str = "/v1/models/acme/cpu-only/revisions/main/files/config.json";
const FETCH_G1: &str = "/v1/models/globex/g1/revisions/main/files/config.json";
const FETCH_X: &str = "/v1/models/initech/x/revisions/main/files/config.json";

struct Matrix {
    server: TestServer,
    tokens: HashMap<&'static str, String>,
    hosts: HashMap<&'static str, HostCert>,
    pending: String,
}

fn upload_small(server: &TestServer, admin: &str, model: &str, host_group: &str) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"x\":1}").unwrap();
    server.ok(admin, &["upload", src.path().to_str().unwrap(), model]);
    server.ok(admin, &["host", "allow", model, host_group]);
}

fn build() -> Matrix {
    let world = World::new();
    let server = world.server;
    let op = server.operator.clone();
    let mut tokens: HashMap<&'static str, String> = HashMap::new();
    tokens.insert("operator", op.clone());
    tokens.insert("acme-admin", world.admin.clone());
    tokens.insert("alice", world.alice.clone());
    for user in ["bob", "carol", "dave", "eve", "frank"] {
        tokens.insert(user, server.token("committer", None, user));
    }
    let acme_admin = world.admin.clone();
    tokens.insert(
        "auditor",
        server.admitted_token("auditor", "acme", "audrey", &acme_admin),
    );
    server.create_vendor("globex");
    tokens.insert(
        "globex-admin",
        server.token("vendor-admin", Some("globex"), "gil"),
    );
    server.create_vendor("initech");
    tokens.insert(
        "initech-admin",
        server.token("vendor-admin", Some("initech"), "ina"),
    );
    let ina = tokens["initech-admin"].clone();
    tokens.insert(
        "initech-admin2",
        server.admitted_token("vendor-admin", "initech", "ivo", &ina),
    );
    // A token that expires, and one that is revoked.
    let expiring = server.ok(
        &op,
        &[
            "token",
            "create",
            "--role",
            "committer",
            "--name",
            "alice-temp",
            "--expires-in",
            "1s",
        ],
    );
    tokens.insert("alice-expired", expiring.trim().to_owned());
    let revoked = server.token("committer", None, "alice");
    let revoked_id = revoked.split('.').next().unwrap().to_owned();
    server.ok(&op, &["token", "revoke", &revoked_id]);
    tokens.insert("alice-revoked", revoked);
    tokens.insert(
        "garbage",
        "0123456789abcdef.not-the-secret-at-all".to_owned(),
    );

    // Hosts: the world's gpu-01 in group gpu; cpu-01 in group cpu; gpu-02 revoked.
    let mut hosts = HashMap::new();
    hosts.insert("gpu-01", server.host.clone().unwrap());
    hosts.insert("cpu-01", server.enroll_host("cpu-01", "cpu"));
    hosts.insert("gpu-02", server.enroll_host("gpu-02", "gpu"));
    server.ok(&op, &["host", "revoke", "gpu-02"]);
    // Each vendor approves the hosts that may hold its weights.
    server.ok(
        &tokens["acme-admin"],
        &["host", "approve", "acme", "cpu-01"],
    );
    server.ok(
        &tokens["globex-admin"],
        &["host", "approve", "globex", "gpu-01"],
    );
    server.ok(
        &tokens["initech-admin"],
        &["host", "approve", "initech", "gpu-01"],
    );

    let admin = tokens["acme-admin"].clone();
    for model in ["acme/m", "acme/emb", "acme/closed"] {
        upload_small(&server, &admin, model, "gpu");
    }
    upload_small(&server, &admin, "acme/cpu-only", "cpu");
    upload_small(&server, &tokens["globex-admin"], "globex/g1", "gpu");
    upload_small(&server, &tokens["initech-admin"], "initech/x", "gpu");

    // Grants: alice and dave directly, group team (bob, carol); frank's grant expires.
    for model in ["acme/m", "acme/emb", "acme/closed", "acme/cpu-only"] {
        server.ok(&admin, &["grant", model, "--to", "alice"]);
    }
    server.ok(&admin, &["grant", "acme/m", "--to", "dave"]);
    server.ok(&admin, &["group", "add", "acme/team", "bob"]);
    server.ok(&admin, &["group", "add", "acme/team", "carol"]);
    server.ok(&admin, &["grant", "acme/m", "--group", "team"]);
    server.ok(
        &admin,
        &["grant", "acme/m", "--to", "frank", "--expires-in", "1s"],
    );
    server.ok(
        &tokens["globex-admin"],
        &["grant", "globex/g1", "--to", "alice"],
    );
    // Exclusions: carol from the model (though her group holds a grant), dave from acme.
    server.ok(&admin, &["exclude", "acme/m", "carol"]);
    server.ok(&admin, &["exclude", "acme", "dave"]);
    // Embargo: emb opens in a year; closed was open in 1970 only.
    let year_ahead = (std::time::SystemTime::now() + Duration::from_secs(365 * 86400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    server.ok(
        &admin,
        &["embargo", "acme/emb", "--not-before", &year_ahead],
    );
    server.ok(
        &admin,
        &[
            "embargo",
            "acme/closed",
            "--not-before",
            "1",
            "--not-after",
            "2",
        ],
    );
    // Two-person rule at initech: ina's grant to alice waits for a second admin.
    server.ok(&ina, &["two-person", "initech", "on"]);
    let out = server.ok(&ina, &["--json", "grant", "initech/x", "--to", "alice"]);
    let pending: Value = serde_json::from_str(out.trim()).unwrap();
    let pending = pending["pending"].as_str().unwrap().to_owned();
    // Let the 1-second token and grant expire.
    server.advance_clock(5);
    Matrix {
        server,
        tokens,
        hosts,
        pending,
    }
}

impl Matrix {
    fn call(&self, r: &Row, path: &str) -> (u16, String) {
        let host = match r.from {
            NoHost => None,
            Host(h) => Some(&self.hosts[h]),
        };
        let client = https_client_on(&self.server.ca, host);
        let url = format!("{}{path}", self.server.url);
        let token = self.tokens[r.who].clone();
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
        let body = r.body.clone();
        runtime().block_on(async move {
            let mut request = client.request(method, url).bearer_auth(token);
            if let Some(b) = body {
                request = request.json(&b);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            (status, message)
        })
    }
}

#[test]
fn authorization_matrix() {
    let m = build();
    let approve = format!("/v1/pending/{}/approve", m.pending);
    let approve: &'static str = Box::leak(approve.into_boxed_str());
    let rows = vec![
        // --- fetching weight bytes: grant, host, host group, exclusions, roles, tokens
        row("alice", Host("gpu-01"), "GET", FETCH_M, 200),
        row("alice", NoHost, "GET", FETCH_M, 403).says("requires an exclusive host"),
        row("alice", Host("cpu-01"), "GET", FETCH_M, 403).says("not in a host group allowed"),
        row("alice", Host("gpu-02"), "GET", FETCH_M, 403).says("host has been revoked"),
        row("bob", Host("gpu-01"), "GET", FETCH_M, 200),
        // Whoever may not even see the model gets what a missing model gets.
        row("carol", Host("gpu-01"), "GET", FETCH_M, 404).says("model acme/m not found"),
        row("dave", Host("gpu-01"), "GET", FETCH_M, 404).says("model acme/m not found"),
        row("eve", Host("gpu-01"), "GET", FETCH_M, 404).says("model acme/m not found"),
        row("frank", Host("gpu-01"), "GET", FETCH_M, 404).says("model acme/m not found"),
        row(
            "eve",
            Host("gpu-01"),
            "GET",
            "/v1/models/acme/nosuch/revisions/main/files/config.json",
            404,
        )
        .says("model acme/nosuch not found"),
        row("auditor", Host("gpu-01"), "GET", FETCH_M, 403).says("auditors"),
        row("operator", Host("gpu-01"), "GET", FETCH_M, 403).says("operators"),
        row("acme-admin", Host("gpu-01"), "GET", FETCH_M, 200),
        row("acme-admin", NoHost, "GET", FETCH_M, 403).says("requires an exclusive host"),
        row("globex-admin", Host("gpu-01"), "GET", FETCH_M, 404).says("not found"),
        row("alice-expired", Host("gpu-01"), "GET", FETCH_M, 401).says("expired"),
        row("alice-revoked", Host("gpu-01"), "GET", FETCH_M, 401).says("revoked"),
        row("garbage", Host("gpu-01"), "GET", FETCH_M, 401).says("invalid"),
        row("alice", Host("gpu-01"), "GET", FETCH_G1, 200),
        row("bob", Host("gpu-01"), "GET", FETCH_G1, 404).says("not found"),
        // A host the vendor did not approve receives nothing, even in an allowed group.
        row("alice", Host("cpu-01"), "GET", FETCH_G1, 403)
            .says("not approved by the model's vendor"),
        // --- embargo windows and per-model host groups
        row("alice", Host("gpu-01"), "GET", FETCH_EMB, 403).says("embargo"),
        row("alice", NoHost, "GET", "/v1/models/acme/emb", 200),
        row("alice", Host("gpu-01"), "GET", FETCH_CLOSED, 403).says("window"),
        row("alice", Host("gpu-01"), "GET", FETCH_CPU, 403).says("not in a host group allowed"),
        row("alice", Host("cpu-01"), "GET", FETCH_CPU, 200),
        // --- metadata: no host needed, same grants and exclusions
        row("alice", NoHost, "GET", "/v1/models/acme/m", 200),
        row(
            "bob",
            NoHost,
            "GET",
            "/v1/models/acme/m/revisions/main",
            200,
        ),
        row("eve", NoHost, "GET", "/v1/models/acme/m", 404).says("not found"),
        row("carol", NoHost, "GET", "/v1/models/acme/m", 404).says("not found"),
        row("dave", NoHost, "GET", "/v1/models/acme/m", 404).says("not found"),
        row("auditor", NoHost, "GET", "/v1/models/acme/m", 200),
        row("auditor", NoHost, "GET", "/v1/models/globex/g1", 404).says("not found"),
        // --- grants, exclusions, settings: vendor admins of their own vendor only
        row("alice", NoHost, "POST", "/v1/models/acme/m/grants", 403)
            .body(json!({ "user": "eve" }))
            .says("only a vendor admin of acme grants access"),
        row("auditor", NoHost, "POST", "/v1/models/acme/m/grants", 403)
            .body(json!({ "user": "eve" })),
        row(
            "globex-admin",
            NoHost,
            "POST",
            "/v1/models/acme/m/grants",
            404,
        )
        .body(json!({ "user": "eve" }))
        .says("not found"),
        row("operator", NoHost, "POST", "/v1/models/acme/m/grants", 403)
            .body(json!({ "user": "eve" })),
        row("acme-admin", NoHost, "GET", "/v1/models/acme/m/grants", 200),
        row(
            "globex-admin",
            NoHost,
            "POST",
            "/v1/vendors/acme/exclusions",
            404,
        )
        .body(json!({ "user": "alice" })),
        row("alice", NoHost, "PUT", "/v1/models/acme/m/embargo", 403)
            .body(json!({ "not_before": null, "not_after": null })),
        row(
            "globex-admin",
            NoHost,
            "PUT",
            "/v1/vendors/acme/settings",
            404,
        )
        .body(json!({ "two_person": false })),
        row("alice", NoHost, "POST", "/v1/models/acme/m/uploads", 403)
            .body(json!({ "message": "", "files": [] })),
        row(
            "globex-admin",
            NoHost,
            "POST",
            "/v1/models/acme/new/uploads",
            404,
        )
        .body(json!({ "message": "", "files": [] })),
        // --- hosts, groups and tokens: the operator's
        row("acme-admin", NoHost, "GET", "/v1/hosts", 403),
        row("alice", NoHost, "POST", "/v1/hosts/gpu-01/revoke", 403),
        row("operator", NoHost, "GET", "/v1/hosts", 200),
        row("acme-admin", NoHost, "GET", "/v1/tokens", 403),
        row(
            "alice",
            NoHost,
            "POST",
            "/v1/vendors/acme/groups/team/members",
            403,
        )
        .body(json!({ "user": "eve" })),
        // Groups are the vendor's: the operator changes none.
        row(
            "operator",
            NoHost,
            "POST",
            "/v1/vendors/acme/groups/team/members",
            403,
        )
        .body(json!({ "user": "eve" })),
        row("acme-admin", NoHost, "GET", "/v1/vendors/acme/groups", 200),
        row("operator", NoHost, "GET", "/v1/tokens", 200),
        // --- two-person rule: a pending grant gives nothing until a second admin approves
        row("alice", Host("gpu-01"), "GET", FETCH_X, 404).says("not found"),
        row("initech-admin", NoHost, "POST", approve, 403).says("cannot approve your own"),
        row("acme-admin", NoHost, "POST", approve, 404).says("not found"),
        row("operator", NoHost, "POST", approve, 403),
        row("initech-admin2", NoHost, "POST", approve, 200),
        row("initech-admin2", NoHost, "POST", approve, 409).says("already approved"),
        row("alice", Host("gpu-01"), "GET", FETCH_X, 200),
    ];
    assert!(rows.len() >= 58, "the matrix has {} rows", rows.len());
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let (status, message) = m.call(r, r.path);
        let fragment_ok = r.says.is_empty() || message.contains(r.says);
        if status != r.status || !fragment_ok {
            failures.push(format!(
                "row {i}: {} from {:?}: {} {} -> {status} {message:?}, expected {} containing {:?}",
                r.who, r.from, r.method, r.path, r.status, r.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What a refused fetch returns is an error body, never weight bytes.
    let (_, body) = m.call(&row("eve", Host("gpu-01"), "GET", FETCH_M, 404), FETCH_M);
    assert!(!body.contains("\"x\":1"));
}

#[test]
fn revoking_a_host_takes_effect_on_its_next_request() {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/live");
    let s = &world.server;
    s.ok(&world.admin, &["grant", "acme/live", "--to", "alice"]);
    let host = s.host.clone().unwrap();
    // One client, one kept-alive TLS connection: the certificate was checked at its
    // handshake; revocation must still apply to the very next request on it.
    let client = https_client_on(&s.ca, Some(&host));
    let url = format!(
        "{}/v1/models/acme/live/revisions/main/files/config.json",
        s.url
    );
    let (before, after) = runtime().block_on(async {
        let get = || async {
            client
                .get(&url)
                .bearer_auth(&world.alice)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        let before = get().await;
        s.ok(&s.operator, &["host", "revoke", &host.name]);
        (before, get().await)
    });
    assert_eq!(before, 200);
    assert_eq!(after, 403);
    // Listing needs no host and still works.
    assert!(
        s.custody_on(None, &world.alice, &["ls", "acme/live"])
            .success
    );
    // The CLI on the revoked host says why.
    let run = s.custody(
        &world.alice,
        &[
            "fetch",
            "acme/live",
            "--out",
            src.path().join("o").to_str().unwrap(),
        ],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    let hosts = s.ok(&s.operator, &["host", "ls"]);
    assert!(hosts.contains("gpu-01  gpu  revoked"), "{hosts}");
}

#[test]
fn a_certificate_from_another_ca_fails_the_handshake() {
    let world = World::new();
    let s = &world.server;
    // A "host" that made its own CA and signed its own certificate.
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca_key) = crypto::host_ca::new_host_ca("rogue CA").unwrap();
    let (key_pem, csr) = crypto::host_ca::host_key_and_csr("gpu-01").unwrap();
    let issued =
        crypto::host_ca::sign_host_csr(&ca_pem, &ca_key, &csr, "gpu-01", 1_700_000_000).unwrap();
    let rogue = HostCert {
        name: "gpu-01".into(),
        cert: dir.path().join("c.pem"),
        key: dir.path().join("k.pem"),
    };
    std::fs::write(&rogue.cert, issued.cert_pem).unwrap();
    std::fs::write(&rogue.key, key_pem.as_bytes()).unwrap();
    let run = s.custody_on(Some(&rogue), &world.alice, &["ls"]);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("refused this host's client certificate (CUSTODY_HOST_CERT)"),
        "{}",
        run.stderr
    );
}

#[test]
fn host_enrollment_refuses_bad_requests_and_duplicate_names() {
    let world = World::new();
    let s = &world.server;
    let (status, body) = s.api(
        &s.operator,
        "POST",
        "/v1/hosts",
        Some(json!({ "name": "gpu-09", "group": "gpu", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" })),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_csr");
    let dir = s.data.path().join("dup");
    s.custody_on(
        None,
        "",
        &[
            "host",
            "csr",
            "--name",
            "gpu-01",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    let run = s.custody(
        &s.operator,
        &[
            "host",
            "enroll",
            dir.join("host.csr").to_str().unwrap(),
            "--name",
            "gpu-01",
            "--group",
            "gpu",
            "--out",
            dir.join("host.crt").to_str().unwrap(),
        ],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("already enrolled"), "{}", run.stderr);
    // The key never left the host directory, and is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("host.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "host key mode {mode:o}");
    }
}

#[test]
fn invalid_policies_stop_the_server_with_the_validator_message() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for f in ["schema.cedarschema", "permits.cedar", "forbids.cedar"] {
        std::fs::copy(root.join(f), policies.join(f)).unwrap();
    }
    // A forbid that reads an optional attribute without `has`: strict validation refuses it
    // (and Cedar would skip it at evaluation, failing open).
    std::fs::write(
        policies.join("extra.cedar"),
        "@id(\"unguarded\")\n@reason(\"r\")\nforbid (principal, action == Action::\"fetch\", resource)\nwhen { context.host.revoked };\n",
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--policy-dir",
        ])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed strict validation"), "{stderr}");
    assert!(
        stderr.contains("host"),
        "the validator's words are missing: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a refused start created the installation"
    );
    // The same directory fails `custody policy validate`; the shipped one passes.
    let check = std::process::Command::new(BIN)
        .args(["policy", "validate"])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let check = std::process::Command::new(BIN)
        .args(["policy", "validate"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
