//! What deploy/ and the Dockerfile promise, checked without a cluster or a container runtime
//! (none runs here): the Kubernetes manifests validate strictly against the Kubernetes API's
//! schemas (`kubernetes-validate`, PyPI, in the test venv), the configuration they mount is one
//! the server reads, and the image holds the binary alone, as a non-root user, with nothing the
//! binary needs beyond what the runtime image has.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var("CUSTODY_TEST_VENV").expect(
        "CUSTODY_TEST_VENV names the test venv (tests/run makes it, with kubernetes-validate)",
    );
    Path::new(&venv).join("bin").join(name)
}

/// The value of `field:` in the Deployment (its first occurrence).
fn deployment_field(field: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/deployment.yaml")).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing"))
        .trim()
        .to_owned()
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let files = manifests();
    let out = Command::new(venv_tool("kubernetes-validate"))
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for kind in [
        "deployment/custody",
        "service/custody",
        "configmap/custody-config",
        "secret/custody-env",
        "poddisruptionbudget/custody",
        "networkpolicy/custody",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}")),
            "{kind}: {said}"
        );
    }

    // The validator refuses what the API server would: a misspelt field fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("deployment.yaml");
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/deployment.yaml")).unwrap();
    std::fs::write(&bad, text.replace("  replicas: 3", "  replica: 3")).unwrap();
    let out = Command::new(venv_tool("kubernetes-validate"))
        .arg("--strict")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field passed");
}

/// The custody.toml the ConfigMap mounts, as the server reads it: several stateless instances
/// (S3, KMS, the shared identity), metrics reachable by the scraper, JSON logs; and the
/// Deployment probes the routes the server answers.
#[test]
fn the_kubernetes_configuration_is_one_the_server_reads() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("custody.toml");
    let out = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))['data']['custody.toml'])",
        ])
        .arg(repo().join("deploy/kubernetes/configmap.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&toml, &out.stdout).unwrap();
    let config = server::ServerConfig::from_toml_file(&toml).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(config.metrics.listen.to_string(), "0.0.0.0:9464");
    assert!(config.metrics.enabled);
    assert_eq!(config.log_format, server::LogFormat::Json);
    assert_eq!(config.identity_dir.as_deref(), Some(Path::new("/identity")));
    assert!(config.s3.is_some(), "several instances need the bucket");
    let grace: u64 = deployment_field("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        config.limits.shutdown_grace_secs < grace,
        "Kubernetes would kill transfers the server still waits for"
    );
    assert!(
        format!("{:?}", config.root).contains("Kms"),
        "several instances need a shared root: {:?}",
        config.root
    );

    // The probes ask the routes a running server answers, unauthenticated.
    let deployment =
        std::fs::read_to_string(repo().join("deploy/kubernetes/deployment.yaml")).unwrap();
    let world = World::new();
    for path in ["/healthz", "/readyz"] {
        assert!(deployment.contains(&format!("path: {path}")), "{path}");
        let (status, _) = world.server.api("", "GET", path, None);
        assert_eq!(status, 200, "{path}");
    }
}

/// The Dockerfile's runtime stage: a distroless image, the binary alone (no RUN: there is no
/// shell to run it), a non-root user, the binary as the entry point; and the binary links only
/// what that image has (libc, libm, libgcc_s).
#[test]
fn the_image_holds_the_binary_alone_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let runtime = &instructions[*stages.last().unwrap()..];
    assert!(
        runtime[0].starts_with("FROM gcr.io/distroless/") && runtime[0].contains(":nonroot"),
        "{}",
        runtime[0]
    );
    assert!(
        !runtime.iter().any(|l| l.starts_with("RUN ")),
        "the runtime stage runs nothing: {runtime:?}"
    );
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap()),
        "{user}"
    );
    assert!(
        runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/custody"]"#),
        "{runtime:?}"
    );

    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    let libraries = String::from_utf8_lossy(&ldd.stdout);
    for line in libraries.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            name.starts_with("linux-vdso")
                || name.contains("ld-linux")
                || ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name),
            "the binary needs {name}, which the distroless cc image does not have"
        );
    }
}
