//! Decision latency with many grants and exclusions.
//!
//! `cargo run --release -p policy --example decide_bench`
//!
//! Three ways a request can be decided, on one model with 10,000 direct grants, 1,000
//! exclusions and 100 group grants:
//! 1. decide only: the entity store and request are built once, then decided (lower bound).
//! 2. build + decide with ALL grants and exclusions as entity data (per request).
//! 3. build + decide with only the relevant facts: is this user a reader, which of its
//!    groups are readers, is it excluded — what the server passes (the design).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use policy::{Action, Facts, Grant, HostFacts, ModelFacts, PolicyEngine, Principal, ResourceFacts};
use types::{Role, UserName, VendorName};

const NOW: i64 = 1_800_000_000;

fn user(n: &str) -> UserName {
    UserName::parse(n).unwrap()
}

fn facts(principal: &str, model: ModelFacts, groups: Vec<String>) -> Facts {
    Facts {
        principal: Principal {
            user: user(principal),
            role: Role::Committer,
            vendor: None,
        },
        groups,
        resource: ResourceFacts::Model(model),
        host: Some(HostFacts {
            name: "gpu-01".into(),
            groups: vec!["gpu".into()],
            revoked: false,
            vendor_approved: true,
        }),
        now: NOW,
        credential_counts: true,
    }
}

fn model(
    readers: Vec<Grant<UserName>>,
    groups: Vec<Grant<String>>,
    excluded: Vec<UserName>,
) -> ModelFacts {
    ModelFacts {
        id: "acme/big".into(),
        vendor: VendorName::parse("acme").unwrap(),
        readers,
        reader_groups: groups,
        excluded,
        vendor_excluded: vec![],
        host_groups: vec!["gpu".into()],
        not_before: Some(NOW - 1000),
        not_after: Some(NOW + 1000),
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

fn measure(name: &str, iterations: usize, mut f: impl FnMut() -> bool, expect: bool) {
    for _ in 0..iterations / 10 {
        assert_eq!(f(), expect);
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let allowed = f();
        samples.push(start.elapsed());
        assert_eq!(allowed, expect, "{name}");
    }
    let (p50, p99) = percentiles(samples);
    println!("{name:<58} p50 {:>9.1?}  p99 {:>9.1?}", p50, p99);
}

fn main() {
    let engine = PolicyEngine::embedded().unwrap();
    let readers: Vec<Grant<UserName>> = (0..10_000)
        .map(|i| {
            // A tenth of the grants expire (already expired ones are dropped when building).
            if i % 10 == 0 {
                Grant::until(user(&format!("user{i}")), NOW - 1)
            } else {
                Grant::forever(user(&format!("user{i}")))
            }
        })
        .collect();
    let excluded: Vec<UserName> = (0..1_000)
        .map(|i| user(&format!("user{}", i * 7 + 3)))
        .collect();
    let groups: Vec<Grant<String>> = (0..100)
        .map(|i| Grant::forever(format!("team{i}")))
        .collect();
    let full = model(readers.clone(), groups.clone(), excluded.clone());

    // user5002: granted, not excluded -> allow. user3: granted but excluded -> deny.
    let allowed_full = facts("user5002", full.clone(), vec!["team7".into()]);
    let denied_full = facts("user3", full, vec![]);

    // Relevant facts only: the server asks the database about this user only.
    let allowed_small = facts(
        "user5002",
        model(
            vec![Grant::forever(user("user5002"))],
            vec![Grant::forever("team7".into())],
            vec![],
        ),
        vec!["team7".into(), "unrelated".into()],
    );
    let denied_small = facts(
        "user3",
        model(
            vec![Grant::forever(user("user3"))],
            vec![],
            vec![user("user3")],
        ),
        vec![],
    );

    println!("policies: {}", engine.policy_ids().len());
    println!("model: 10,000 direct grants (1,000 expired), 100 group grants, 1,000 exclusions\n");

    let prepared = engine.prepare(&allowed_full, Action::Fetch).unwrap();
    measure(
        "decide only, full entity data (allow)",
        20_000,
        || engine.decide_prepared(&prepared).allowed,
        true,
    );
    let prepared = engine.prepare(&denied_full, Action::Fetch).unwrap();
    measure(
        "decide only, full entity data (excluded: deny)",
        20_000,
        || engine.decide_prepared(&prepared).allowed,
        false,
    );
    let prepared = engine.prepare(&allowed_small, Action::Fetch).unwrap();
    measure(
        "decide only, relevant facts (allow)",
        20_000,
        || engine.decide_prepared(&prepared).allowed,
        true,
    );

    measure(
        "build + decide, full entity data (allow)",
        300,
        || engine.decide(&allowed_full, Action::Fetch).allowed,
        true,
    );
    measure(
        "build + decide, full entity data (excluded: deny)",
        300,
        || engine.decide(&denied_full, Action::Fetch).allowed,
        false,
    );
    measure(
        "build + decide, relevant facts (allow)",
        20_000,
        || engine.decide(&allowed_small, Action::Fetch).allowed,
        true,
    );
    measure(
        "build + decide, relevant facts (excluded: deny)",
        20_000,
        || engine.decide(&denied_small, Action::Fetch).allowed,
        false,
    );
    measure(
        "build + decide, relevant facts, list (allow)",
        20_000,
        || engine.decide(&allowed_small, Action::ReadMetadata).allowed,
        true,
    );
}
