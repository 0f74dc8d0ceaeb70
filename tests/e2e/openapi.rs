//! The OpenAPI 3.1 description of the native API (server/src/openapi.rs): valid
//! (`openapi-spec-validator`, PyPI, in the test venv), the same wherever it is read (the
//! server's `/v1/openapi.json`, `custody openapi`, docs/openapi.json), and complete: every
//! route the router serves is described, and every described operation is served.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validate(file: &Path) -> (bool, String) {
    let venv = std::env::var("CUSTODY_TEST_VENV")
        .expect("CUSTODY_TEST_VENV names the test venv (tests/run makes it)");
    let out = Command::new(Path::new(&venv).join("bin/openapi-spec-validator"))
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn served(server: &TestServer) -> Value {
    runtime().block_on(async {
        https_client(&server.ca)
            .get(format!("{}/v1/openapi.json", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

#[test]
fn the_description_is_valid_and_the_same_wherever_it_is_read() {
    let server = TestServer::start();
    let from_server = served(&server);
    assert_eq!(from_server["openapi"], "3.1.0");
    let printed: Value = serde_json::from_str(&server.ok("", &["openapi"])).unwrap();
    assert_eq!(
        printed, from_server,
        "custody openapi differs from the server's"
    );
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(
        kept, from_server,
        "docs/openapi.json is out of date: cargo run -p cli -- openapi > docs/openapi.json"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, from_server.to_string()).unwrap();
    let (ok, said) = validate(&file);
    assert!(ok, "{said}");

    // The validator refuses a broken description: a path parameter nobody declares.
    let mut broken = from_server.clone();
    let paths = broken["paths"].as_object_mut().unwrap();
    let grants = paths.remove("/v1/models/{vendor}/{model}/grants").unwrap();
    paths.insert("/v1/models/{vendor}/{model}/{extra}/grants".into(), grants);
    std::fs::write(&file, broken.to_string()).unwrap();
    let (ok, said) = validate(&file);
    assert!(!ok, "an undeclared path parameter passed: {said}");
}

/// Routes are registered from their descriptions (`routes!` in api/mod.rs); the one route
/// axum needs spelt its own way (the file route's wildcard) is described too. And each
/// described operation reaches a handler: with a token that is not one, the answer is never
/// the router's 404 for an unknown route nor a 405 for a method it does not serve.
#[test]
fn every_route_served_is_described_and_every_description_is_served() {
    let server = TestServer::start();
    let spec = served(&server);
    let paths = spec["paths"].as_object().unwrap();

    let router = std::fs::read_to_string(repo().join("crates/server/src/api/mod.rs")).unwrap();
    let plain: BTreeSet<String> = router
        .match_indices(".route(")
        .map(|(at, _)| {
            let rest = &router[at..];
            let start = rest.find('"').unwrap() + 1;
            let end = start + rest[start..].find('"').unwrap();
            rest[start..end].to_owned()
        })
        .collect();
    assert_eq!(
        plain,
        BTreeSet::from(["/v1/models/{vendor}/{model}/revisions/{rev}/files/{*path}".to_owned()]),
        "a route registered outside routes!() must be described by hand and listed here"
    );
    for path in &plain {
        let described = path.replace("{*path}", "{path}");
        assert!(paths.contains_key(&described), "{path} is not described");
    }

    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let status = runtime().block_on(async {
                https_client(&server.ca)
                    .request(
                        reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        format!("{}{concrete}", server.url),
                    )
                    .bearer_auth("not-a.token")
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
            assert!(
                status != 404 && status != 405,
                "{method} {path} is described but not served ({status})"
            );
        }
    }
    assert!(operations >= 65, "only {operations} operations described");
}
