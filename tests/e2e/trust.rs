//! Vendor-held trust: nobody but the vendor's chosen committers gets, swaps or keeps its
//! weights. Each test is an attack that worked before custody held the line, run through the
//! real server: the operator acting alone, a derived upload replacing `main`, side doors in
//! the two-person rule, deletion certificates read by strangers, names leaking through
//! refusals, and what a fetched file looks like on the host.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const CONFIG: &str = "/v1/models/acme/llama/revisions/main/files/config.json";

/// acme with its admin `acme-admin`, a second admin `acme-admin-2` (approved by the first),
/// the two-person rule on, model `acme/llama` on host group `gpu` with host `gpu-01`
/// approved, and committer alice granted.
struct Vendor {
    world: World,
    admin2: String,
}

impl Vendor {
    fn new() -> Vendor {
        let world = World::new();
        let s = &world.server;
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
        write_data(&src.path().join("model.safetensors"), 3 << 20, 11);
        world.upload(src.path(), "acme/llama");
        s.token("committer", None, "bob");
        s.ok(&world.admin, &["grant", "acme/llama", "--to", "alice"]);
        s.ok(&world.admin, &["group", "add", "acme/team", "bob"]);
        s.ok(&world.admin, &["grant", "acme/llama", "--group", "team"]);
        let admin2 = s.admitted_token("vendor-admin", "acme", "acme-admin-2", &world.admin);
        s.ok(&world.admin, &["two-person", "acme", "on"]);
        Vendor { world, admin2 }
    }

    fn server(&self) -> &TestServer {
        &self.world.server
    }
}

/// The body of every 2xx answer to `token` fetching the model's files from `host`.
fn bytes_served(server: &TestServer, token: &str, host: Option<&HostCert>) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    for path in [
        CONFIG,
        "/v1/models/acme/llama/revisions/main/files/model.safetensors",
    ] {
        let url = format!("{}{path}", server.url);
        let (ca, token, host) = (server.ca.clone(), token.to_owned(), host.cloned());
        let (status, len) = runtime().block_on(async move {
            let response = https_client_on(&ca, host.as_ref())
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.bytes().await.map(|b| b.len()).unwrap_or(0);
            (status, body)
        });
        out.push((status, len));
    }
    out
}

fn assert_no_bytes(server: &TestServer, token: &str, host: Option<&HostCert>, what: &str) {
    for (status, _) in bytes_served(server, token, host) {
        assert!(
            !(200..300).contains(&status),
            "{what}: weights were served ({status})"
        );
    }
}

/// Audit entries of the server's log whose action is `action`, as JSON.
fn audit_entries(server: &TestServer, action: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    server.ok(
        &server.operator,
        &["audit", "export", "--out", out.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(out.join("entries.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == action)
        .collect()
}

fn pending_id(v: &Value) -> String {
    v["pending"]
        .as_str()
        .unwrap_or_else(|| panic!("not pending: {v}"))
        .to_owned()
}

#[test]
fn the_operator_acting_alone_obtains_no_weights() {
    let v = Vendor::new();
    let s = v.server();
    let op = s.operator.clone();
    let gpu01 = s.host.clone().unwrap();

    // 1. A token named like a granted committer is a credential for that same person, and it
    //    counts at acme only once acme's admins approve it.
    let out = s.ok(
        &op,
        &[
            "--json",
            "token",
            "create",
            "--role",
            "committer",
            "--name",
            "alice",
        ],
    );
    let minted: Value = serde_json::from_str(out.trim()).unwrap();
    let fake_alice = minted["token"].as_str().unwrap().to_owned();
    assert_eq!(minted["new_user"], false, "{minted}");
    assert_eq!(minted["awaiting"][0]["vendor"], "acme", "{minted}");
    assert_no_bytes(s, &fake_alice, Some(&gpu01), "a re-issued alice token");
    let listed = s.custody(&fake_alice, &["ls"]);
    assert!(!listed.stdout.contains("acme/llama"), "{}", listed.stdout);

    // 2. A new admin of acme: inert until acme approves, and cannot approve itself in.
    let out = s.ok(
        &op,
        &[
            "--json",
            "token",
            "create",
            "--role",
            "vendor-admin",
            "--vendor",
            "acme",
            "--name",
            "op-admin",
        ],
    );
    let minted: Value = serde_json::from_str(out.trim()).unwrap();
    let op_admin = minted["token"].as_str().unwrap().to_owned();
    let endorsement = minted["awaiting"][0]["pending"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = s.api(
        &op_admin,
        "POST",
        "/v1/models/acme/llama/grants",
        Some(json!({ "user": "op-admin" })),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains("needs the vendor's approval"),
        "{body}"
    );
    let (status, _) = s.api(
        &op_admin,
        "POST",
        &format!("/v1/pending/{endorsement}/approve"),
        None,
    );
    assert!(status == 403 || status == 404, "approved itself: {status}");
    assert_no_bytes(s, &op_admin, Some(&gpu01), "an unapproved admin token");

    // 3. A host the operator enrolls into the allowed group receives nothing of acme's, even
    //    for the real alice: acme never approved that enrollment.
    let op_host = s.enroll_host("op-host", "gpu");
    assert_no_bytes(s, &v.world.alice, Some(&op_host), "an unapproved host");
    assert_no_bytes(
        s,
        &fake_alice,
        Some(&op_host),
        "fake alice on the operator's host",
    );

    // 4. Groups are acme's: the operator cannot add itself or anyone to acme's team.
    for user in ["root-operator", "mallory"] {
        let (status, body) = s.api(
            &op,
            "POST",
            "/v1/vendors/acme/groups/team/members",
            Some(json!({ "user": user })),
        );
        assert!(status == 403 || status == 404, "{user}: {status} {body}");
    }

    // 5. Scheduling destruction under the two-person rule waits for acme; so does anything
    //    the operator asks. It cannot approve anything, nor lift an exclusion.
    s.ok(&v.world.admin, &["exclude", "acme/llama", "mallory"]);
    let (status, body) = s.api(
        &op,
        "PUT",
        "/v1/models/acme/llama/delete-after",
        Some(json!({ "at": 4_000_000_000i64 })),
    );
    assert_eq!(status, 202, "{body}");
    let scheduled = pending_id(&body);
    let (status, _) = s.api(
        &op,
        "POST",
        &format!("/v1/pending/{scheduled}/approve"),
        None,
    );
    assert_eq!(status, 403, "the operator approved a request");
    let (status, _) = s.api(
        &op,
        "DELETE",
        "/v1/vendors/acme/exclusions/mallory?model=llama",
        None,
    );
    assert_eq!(status, 403, "the operator lifted an exclusion");
    let (status, body) = s.api(&op, "GET", "/v1/models/acme/llama", None);
    assert_eq!(status, 200, "{body}");

    // Every token the operator holds, from every host: no byte.
    for token in [&op, &fake_alice, &op_admin] {
        for host in [None, Some(&gpu01), Some(&op_host)] {
            assert_no_bytes(s, token, host, "an operator-held token");
        }
    }
    // The real alice on the approved host still fetches.
    assert!(
        bytes_served(s, &v.world.alice, Some(&gpu01))
            .iter()
            .all(|(status, _)| *status == 200)
    );
    // And every attempt is in the log.
    let refused: Vec<Value> = audit_entries(s, "grant")
        .into_iter()
        .chain(audit_entries(s, "fetch"))
        .chain(audit_entries(s, "manage-groups"))
        .chain(audit_entries(s, "approve"))
        .chain(audit_entries(s, "exclude"))
        .filter(|e| e["outcome"] == "denied")
        .collect();
    for actor in [
        "operator:root-operator",
        "committer:alice",
        "vendor-admin:op-admin",
    ] {
        assert!(
            refused.iter().any(|e| e["actor"] == actor),
            "no refusal of {actor} recorded"
        );
    }
    assert!(
        audit_entries(s, "deletion.schedule.request")
            .iter()
            .any(|e| e["actor"] == "operator:root-operator")
    );
}

#[test]
fn a_credential_becomes_good_at_a_vendor_only_with_that_vendors_approval() {
    let v = Vendor::new();
    let s = v.server();
    let gpu01 = s.host.clone().unwrap();
    // alice lost her token; the operator issues another for her.
    let out = s.ok(
        &s.operator,
        &[
            "--json",
            "token",
            "create",
            "--role",
            "committer",
            "--name",
            "alice",
        ],
    );
    let minted: Value = serde_json::from_str(out.trim()).unwrap();
    let alice2 = minted["token"].as_str().unwrap().to_owned();
    let request = minted["awaiting"][0]["pending"]
        .as_str()
        .unwrap()
        .to_owned();
    // She sees why she gets nothing, and what waits.
    let who = s.ok(&alice2, &["--json", "whoami"]);
    let who: Value = serde_json::from_str(who.trim()).unwrap();
    assert_eq!(who["user"], "alice");
    assert_eq!(who["awaiting"][0]["vendor"], "acme", "{who}");
    let (status, body) = s.api(&alice2, "GET", "/v1/models/acme/llama", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("vendor's approval"), "{body}");
    // Under the two-person rule it takes two of acme's people.
    let listed = s.ok(&v.world.admin, &["pending", "acme"]);
    assert!(
        listed.contains(&request) && listed.contains("alice"),
        "{listed}"
    );
    let first = s.ok(&v.world.admin, &["approve", &request]);
    assert!(first.contains("1 of 2"), "{first}");
    assert_no_bytes(s, &alice2, Some(&gpu01), "after one approval of two");
    s.ok(&v.admin2, &["approve", &request]);
    assert!(
        bytes_served(s, &alice2, Some(&gpu01))
            .iter()
            .all(|(status, _)| *status == 200)
    );
    // Rotating keeps exactly that standing and kills the old secret.
    let rotated = s.ok(&alice2, &["token", "rotate"]).trim().to_owned();
    assert!(
        bytes_served(s, &rotated, Some(&gpu01))
            .iter()
            .all(|(status, _)| *status == 200)
    );
    let old = s.custody(&alice2, &["ls"]);
    assert!(!old.success, "the rotated-away token still works");
}

#[test]
fn every_widening_change_waits_for_a_second_person_under_the_rule() {
    let v = Vendor::new();
    let s = v.server();
    let admin = v.world.admin.clone();
    let gpu01 = s.host.clone().unwrap();
    let carol = s.token("committer", None, "carol");
    s.token("committer", None, "dave");
    s.ok(&admin, &["exclude", "acme/llama", "bob"]);
    let gpu02 = s.enroll_host("gpu-02", "gpu");
    // A host group exists once a host is enrolled in it.
    s.enroll_host("cpu-01", "cpu");
    let tomorrow = (std::time::SystemTime::now() + Duration::from_secs(86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    // What the vendor's access view says (`custody access`), as the second admin reads it.
    let access = {
        let admin2 = v.admin2.clone();
        move |s: &TestServer| -> Value {
            serde_json::from_str(s.ok(&admin2, &["--json", "access", "acme/llama"]).trim()).unwrap()
        }
    };
    let listed = |v: &Value, key: &str, what: &str| {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.to_string().contains(what))
    };
    // (what, the command, whether it has taken effect)
    type Check = Box<dyn Fn(&TestServer) -> bool>;
    let cases: Vec<(&str, Vec<String>, Check)> = vec![
        (
            "grant",
            vec![
                "grant".into(),
                "acme/llama".into(),
                "--to".into(),
                "carol".into(),
            ],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| listed(&access(s), "grants", "user:carol")
            }),
        ),
        (
            "lifting an exclusion",
            vec![
                "exclude".into(),
                "acme/llama".into(),
                "bob".into(),
                "--remove".into(),
            ],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| !listed(&access(s), "exclusions", "bob")
            }),
        ),
        (
            "approving a host",
            vec![
                "host".into(),
                "approve".into(),
                "acme".into(),
                "gpu-02".into(),
            ],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| {
                    access(s)["hosts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h["name"] == "gpu-02" && !h["approved_by"].is_null())
                }
            }),
        ),
        (
            "allowing a host group",
            vec![
                "host".into(),
                "allow".into(),
                "acme/llama".into(),
                "cpu".into(),
            ],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| listed(&access(s), "host_groups", "cpu")
            }),
        ),
        (
            "adding a group member",
            vec![
                "group".into(),
                "add".into(),
                "acme/team".into(),
                "dave".into(),
            ],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| listed(&access(s), "groups", "dave")
            }),
        ),
        (
            "an embargo that opens earlier",
            vec!["embargo".into(), "acme/llama".into(), "--clear".into()],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| access(s)["embargo"]["not_before"].is_null()
            }),
        ),
        (
            "scheduling destruction",
            vec!["delete-after".into(), "acme/llama".into(), tomorrow.clone()],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| access(s)["delete_after"].is_i64()
            }),
        ),
        (
            "turning the rule off",
            vec!["two-person".into(), "acme".into(), "off".into()],
            Box::new({
                let access = access.clone();
                move |s: &TestServer| access(s)["two_person"] == false
            }),
        ),
    ];
    // Tightening takes effect at once: an embargo that opens later.
    let year_ahead = (std::time::SystemTime::now() + Duration::from_secs(365 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    s.ok(
        &admin,
        &[
            "embargo",
            "acme/llama",
            "--not-before",
            &year_ahead.to_string(),
        ],
    );
    assert_eq!(access(s)["embargo"]["not_before"], year_ahead);
    for (what, args, took_effect) in cases {
        let mut full = vec!["--json".to_owned()];
        full.extend(args);
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        let out: Value = serde_json::from_str(s.ok(&admin, &args).trim()).unwrap();
        let id = pending_id(&out);
        assert!(!took_effect(s), "{what} took effect on one admin's word");
        // The requester, under another of their roles, is the same person.
        let own = s.custody(&admin, &["approve", &id]);
        assert!(!own.success, "{what}: approved by its requester");
        let approved = s.ok(&v.admin2, &["approve", &id]);
        assert!(
            took_effect(s),
            "{what} did not take effect once approved: {approved}\n{}",
            s.ok(&v.admin2, &["access", "acme/llama"])
        );
    }
    // Everything approved: carol (granted) fetches on gpu-02 (approved), the embargo cleared.
    assert!(
        bytes_served(s, &carol, Some(&gpu02))
            .iter()
            .all(|(status, _)| *status == 200)
    );
    assert!(
        bytes_served(s, &carol, Some(&gpu01))
            .iter()
            .all(|(status, _)| *status == 200)
    );
}

#[test]
fn one_person_with_two_roles_cannot_approve_their_own_request() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/llama");
    let admin2 = s.admitted_token("vendor-admin", "acme", "acme-admin-2", &world.admin);
    // acme-admin holds a second admin token (approved by the other admin) and a committer
    // token: three credentials, one person.
    let second = s.admitted_token("vendor-admin", "acme", "acme-admin", &admin2);
    let as_committer = s.token("committer", None, "acme-admin");
    s.token("committer", None, "zed");
    s.ok(&world.admin, &["two-person", "acme", "on"]);
    let (status, body) = s.api(
        &world.admin,
        "POST",
        "/v1/models/acme/llama/grants",
        Some(json!({ "user": "zed" })),
    );
    assert_eq!(status, 202, "{body}");
    let id = pending_id(&body);
    // As an admin: refused, it is their own request. As a committer: a committer approves
    // nothing, and this one may not even see the model (404).
    let (status, body) = s.api(&second, "POST", &format!("/v1/pending/{id}/approve"), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("your own request"), "{body}");
    let (status, body) = s.api(
        &as_committer,
        "POST",
        &format!("/v1/pending/{id}/approve"),
        None,
    );
    assert!(status == 403 || status == 404, "{status} {body}");
    let (status, body) = s.api(&admin2, "POST", &format!("/v1/pending/{id}/approve"), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_expired_request_cannot_be_approved() {
    let world = World::on(TestServer::start_with(
        tempfile::tempdir().unwrap(),
        &["--pending-ttl-secs", "2"],
    ));
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/llama");
    let admin2 = s.admitted_token("vendor-admin", "acme", "acme-admin-2", &world.admin);
    s.ok(&world.admin, &["two-person", "acme", "on"]);
    let (status, body) = s.api(
        &world.admin,
        "POST",
        "/v1/models/acme/llama/grants",
        Some(json!({ "user": "alice" })),
    );
    assert_eq!(status, 202, "{body}");
    let id = pending_id(&body);
    s.advance_clock(5);
    let listed = s.ok(&admin2, &["pending", "acme"]);
    assert!(listed.contains("expired"), "{listed}");
    let late = s.custody(&admin2, &["approve", &id]);
    assert!(
        !late.success && late.stderr.contains("expired"),
        "{}",
        late.stderr
    );
    let (status, _) = s.api(&world.alice, "GET", "/v1/models/acme/llama", None);
    assert_eq!(status, 404, "an expired grant request gave access");
}

#[test]
fn strangers_learn_nothing_about_deletions_vendors_or_models() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    world.upload(src.path(), "acme/secret");
    let certificate = tempfile::tempdir().unwrap();
    let cert_path = certificate.path().join("cert.json");
    s.ok(
        &world.admin,
        &[
            "delete",
            "--yes",
            "acme/secret",
            "--certificate-out",
            cert_path.to_str().unwrap(),
        ],
    );
    let cert: Value = serde_json::from_str(&std::fs::read_to_string(&cert_path).unwrap()).unwrap();
    let deletion = cert["certificate"]["deletion"]["certificate_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no certificate id in {cert}"))
        .to_owned();
    // A committer without a grant: a real deletion and a made-up one look the same.
    let made_up = "0123456789abcdef";
    let (real_status, real) = s.api(
        &world.alice,
        "GET",
        &format!("/v1/deletions/{deletion}"),
        None,
    );
    let (fake_status, fake) = s.api(
        &world.alice,
        "GET",
        &format!("/v1/deletions/{made_up}"),
        None,
    );
    assert_eq!((real_status, fake_status), (404, 404));
    assert_eq!(
        real["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&deletion, "ID"),
        fake["error"]["message"]
            .as_str()
            .unwrap()
            .replace(made_up, "ID"),
    );
    // The vendor's admin and the operator read it.
    for token in [&world.admin, &s.operator] {
        let (status, body) = s.api(token, "GET", &format!("/v1/deletions/{deletion}"), None);
        assert_eq!(status, 200, "{body}");
    }
    // A deleted model names no deletion to a stranger.
    let (status, body) = s.api(&world.alice, "GET", "/v1/models/acme/secret", None);
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains(&deletion), "{body}");
    // Missing and forbidden vendors and models answer alike.
    s.create_vendor("globex");
    world.upload(src.path(), "acme/other");
    let globex_admin = s.token("vendor-admin", Some("globex"), "gil");
    for (real, missing) in [
        ("/v1/models/acme/other", "/v1/models/acme/nosuch"),
        (
            "/v1/models/acme/other/revisions/main/files/config.json",
            "/v1/models/acme/nosuch/revisions/main/files/config.json",
        ),
        (
            "/v1/vendors/acme/exclusions",
            "/v1/vendors/nosuch/exclusions",
        ),
    ] {
        for token in [&world.alice, &globex_admin] {
            let (a, body_a) = s.api(token, "GET", real, None);
            let (b, body_b) = s.api(token, "GET", missing, None);
            assert_eq!((a, b), (404, 404), "{real}: {body_a} / {body_b}");
            let strip = |v: &Value| {
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace("acme/other", "X")
                    .replace("acme/nosuch", "X")
                    .replace("nosuch", "X")
                    .replace("acme", "X")
            };
            assert_eq!(strip(&body_a), strip(&body_b), "{real}");
        }
    }
}

#[test]
fn a_derived_upload_never_changes_what_main_names() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), br#"{"v":"vendor"}"#).unwrap();
    let vendor_commit = world.upload(src.path(), "acme/llama");
    s.ok(&world.admin, &["grant", "acme/llama", "--to", "alice"]);
    let derived = tempfile::tempdir().unwrap();
    std::fs::write(
        derived.path().join("config.json"),
        br#"{"v":"evil","auto_map":{}}"#,
    )
    .unwrap();
    let derived_commit = s
        .ok(
            &world.alice,
            &[
                "upload",
                derived.path().to_str().unwrap(),
                "acme/llama",
                "--derived-from",
                &vendor_commit,
            ],
        )
        .trim()
        .to_owned();
    // By name: the vendor's revision, for the CLI and the API.
    let out = tempfile::tempdir().unwrap();
    s.ok(
        &world.admin,
        &["fetch", "acme/llama", "--out", out.path().to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(out.path().join("config.json")).unwrap(),
        br#"{"v":"vendor"}"#
    );
    let (status, body) = s.api(
        &world.alice,
        "GET",
        "/v1/models/acme/llama/revisions/main",
        None,
    );
    assert_eq!(
        (status, body["commit"].as_str()),
        (200, Some(vendor_commit.as_str()))
    );
    // By commit: the derived revision, listed as derived.
    let (status, body) = s.api(
        &world.alice,
        "GET",
        &format!("/v1/models/acme/llama/revisions/{derived_commit}"),
        None,
    );
    assert_eq!(
        (status, body["derived_from"].as_str()),
        (200, Some(vendor_commit.as_str()))
    );
    let listing: Value =
        serde_json::from_str(s.ok(&world.alice, &["--json", "ls"]).trim()).unwrap();
    assert_eq!(
        listing["models"][0]["latest"],
        vendor_commit.as_str(),
        "{listing}"
    );
}

#[test]
fn fetched_files_are_private_and_planted_links_are_not_followed() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    write_data(&src.path().join("sub/model.safetensors"), 2 << 20, 3);
    world.upload(src.path(), "acme/llama");
    s.ok(&world.admin, &["grant", "acme/llama", "--to", "alice"]);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("llama");
    s.ok(
        &world.alice,
        &["fetch", "acme/llama", "--out", dest.to_str().unwrap()],
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("sub")), 0o700);
    assert_eq!(mode(&dest.join("config.json")), 0o600);
    assert_eq!(mode(&dest.join("sub/model.safetensors")), 0o600);

    // Another local process plants links where fetch will write: the file it points at
    // stays untouched, and the fetched bytes land in a fresh private file.
    let victim = out.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let dest2 = out.path().join("llama2");
    std::fs::create_dir_all(dest2.join("sub")).unwrap();
    symlink(&victim, dest2.join("config.json.custody-partial")).unwrap();
    symlink(&victim, dest2.join("sub/model.safetensors.custody-partial")).unwrap();
    // And a pre-existing partial file someone else can read is not reused.
    let run = s.custody(
        &world.alice,
        &["fetch", "acme/llama", "--out", dest2.to_str().unwrap()],
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    assert_same_file(
        &src.path().join("sub/model.safetensors"),
        &dest2.join("sub/model.safetensors"),
    );
    assert!(
        !std::fs::symlink_metadata(dest2.join("config.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(mode(&dest2.join("config.json")), 0o600);

    let dest3 = out.path().join("llama3");
    std::fs::create_dir_all(&dest3).unwrap();
    let planted = dest3.join("config.json.custody-partial");
    std::fs::write(&planted, b"{}").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = s.custody(
        &world.alice,
        &["fetch", "acme/llama", "--out", dest3.to_str().unwrap()],
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        mode(&dest3.join("config.json")),
        0o600,
        "a world-readable partial file was reused"
    );
}

/// Issue 19: a stale or mistaken request can be ended without carrying it out: rejected by
/// another of the vendor's admins, cancelled by its requester. Neither takes effect, a later
/// approval is refused, strangers learn nothing of it, and both are in the audit log.
#[test]
fn a_pending_request_rejected_or_cancelled_never_takes_effect() {
    let v = Vendor::new();
    let s = v.server();
    let admin = v.world.admin.clone();
    s.token("committer", None, "carol");
    let file = |s: &TestServer| {
        let (status, body) = s.api(
            &admin,
            "POST",
            "/v1/models/acme/llama/grants",
            Some(json!({ "user": "carol" })),
        );
        assert_eq!(status, 202, "{body}");
        pending_id(&body)
    };
    let carol_granted = |s: &TestServer| {
        s.ok(&v.admin2, &["--json", "access", "acme/llama"])
            .contains("user:carol")
    };

    let id = file(s);
    // A committer may not end the vendor's requests (one who cannot see the model learns
    // nothing of them: 404, as for approvals).
    let (status, _) = s.api(
        &v.world.alice,
        "POST",
        &format!("/v1/pending/{id}/reject"),
        None,
    );
    assert_eq!(status, 403);
    let rejected = s.ok(&v.admin2, &["reject", &id]);
    assert!(
        rejected.contains("rejected: nothing of it takes effect"),
        "{rejected}"
    );
    let late = s.custody(&v.admin2, &["approve", &id]);
    assert!(
        !late.success && late.stderr.contains("already rejected"),
        "{}",
        late.stderr
    );
    assert!(!carol_granted(s));

    let own = file(s);
    let cancelled = s.ok(&admin, &["reject", &own]);
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let late = s.custody(&v.admin2, &["approve", &own]);
    assert!(!late.success, "a cancelled request was approved");
    assert!(!carol_granted(s));
    let pending = s.ok(&admin, &["pending", "acme"]);
    assert!(
        !pending.contains(&id) && !pending.contains(&own),
        "{pending}"
    );
    assert_eq!(audit_entries(s, "pending.reject").len(), 1);
    assert_eq!(audit_entries(s, "pending.cancel").len(), 1);
}
