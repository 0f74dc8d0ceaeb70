//! What one authorization costs the server, with many grants and exclusions in the database.
//!
//! `cargo run --release -p bench --example authorize`
//!
//! A SQLite store holds one model with 10,000 direct grants, 1,000 exclusions (model and
//! vendor level) and 100 group grants. Each row times, per request, what `auth::authorize`
//! does: read the principal's facts from the store (`request_facts`) and decide with the
//! built-in Cedar policies. Beside it, the baseline: the decision alone on facts prepared in
//! advance. Prints p50 and p99 in microseconds and the ratio of the two.
//!
//! Then a listing, as `GET /v1/models` decides it: 66 models of the vendor, each with a grant
//! to the caller, decided for one caller with the facts of all of them read in one statement
//! (`models_facts`), beside the same listing read one `request_facts` per model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use policy::{Action, PolicyEngine, Principal};
use server::auth::{Asking, CallerHost, Credential, Target, models_facts, request_facts};
use store::{FollowUp, Grantee, NewHost, NewModel, Store};
use types::{GroupName, ModelName, Role, UserName, VendorName};

const RUNS: usize = 5_000;
const LISTINGS: usize = 300;
const LISTED: usize = 66;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn entry() -> audit::Entry {
    audit::Entry::new("system", "bench", "service")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("b.sqlite").display()
    );
    let store = Store::connect(&url).await.unwrap();
    let vendor = VendorName::parse("acme").unwrap();
    store.create_vendor("v1", &vendor, entry()).await.unwrap();
    let name = ModelName::parse("m").unwrap();
    store
        .create_model(
            &NewModel {
                id: "m1",
                vendor_id: "v1",
                name: &name,
                key_epoch: 0,
                wrapped_key: &[0u8; 8],
            },
            entry(),
        )
        .await
        .unwrap();
    let model = store.model(&vendor, &name).await.unwrap().unwrap();
    let host_group = types::HostGroupName::parse("gpu").unwrap();
    store
        .allow_host_group("m1", &host_group, "bench", entry())
        .await
        .unwrap();
    let host_name = types::HostName::parse("gpu-01").unwrap();
    store
        .enroll_host(
            &NewHost {
                id: "h1",
                name: &host_name,
                group: &host_group,
                cert_sha256: "00",
                not_after: i64::MAX,
                enrolled_by: "bench",
            },
            entry(),
        )
        .await
        .unwrap();
    store
        .approve_host("v1", "h1", "bench", entry())
        .await
        .unwrap();
    let follow_up = FollowUp {
        approvals_needed: 1,
        requested_by: "bench".into(),
        ttl_secs: 3600,
    };
    print!("populating 10,000 grants, 1,000 exclusions, 100 group grants… ");
    let started = Instant::now();
    for i in 0..10_000 {
        let user = UserName::parse(&format!("user-{i}")).unwrap();
        store
            .grant(
                "v1",
                "m1",
                &Grantee::User(user),
                "bench",
                None,
                &follow_up,
                entry(),
            )
            .await
            .unwrap();
    }
    for i in 0..1_000 {
        let user = UserName::parse(&format!("user-{}", i * 7)).unwrap();
        let model_id = (i % 2 == 0).then_some("m1");
        store
            .exclude("v1", model_id, &user, "bench", entry())
            .await
            .unwrap();
    }
    for i in 0..100 {
        let group = GroupName::parse(&format!("team-{i}")).unwrap();
        store
            .grant(
                "v1",
                "m1",
                &Grantee::Group(group.clone()),
                "bench",
                None,
                &follow_up,
                entry(),
            )
            .await
            .unwrap();
        let member = UserName::parse(&format!("member-{i}")).unwrap();
        store
            .add_group_member("v1", &group, &member, "bench", &follow_up, entry())
            .await
            .unwrap();
    }
    println!("{:.1} s", started.elapsed().as_secs_f64());

    let engine =
        PolicyEngine::from_files(policy::EMBEDDED_SCHEMA, policy::EMBEDDED_POLICIES).unwrap();
    let host = CallerHost::Enrolled(store.host_by_cert("00").await.unwrap().unwrap());
    let credential = Credential {
        token_id: "t".into(),
        user_id: "u".into(),
        all_vendors: true,
        bootstrap: false,
    };
    let principal = |user: &str| Principal {
        user: UserName::parse(user).unwrap(),
        role: Role::Committer,
        vendor: None,
    };
    let now = 1_800_000_000;
    println!();
    println!("| request | facts + decide p50 (µs) | p99 | decide only p50 | p99 | p99 ratio |");
    println!("|---|---|---|---|---|---|");
    for (label, user, expect) in [
        ("granted user, fetch", "user-1", true),
        ("excluded user, fetch", "user-14", false),
        ("group member, fetch", "member-5", true),
        ("no grant, fetch", "stranger", false),
    ] {
        let p = principal(user);
        let mut full = Vec::with_capacity(RUNS);
        let mut decide_only = Vec::with_capacity(RUNS);
        let asking = Asking {
            principal: &p,
            credential: &credential,
            host: Some(&host),
        };
        let facts = request_facts(&store, &asking, Target::Model(&model), now)
            .await
            .unwrap();
        for _ in 0..RUNS {
            let t = Instant::now();
            let f = request_facts(&store, &asking, Target::Model(&model), now)
                .await
                .unwrap();
            let d = engine.decide(&f, Action::Fetch);
            full.push(t.elapsed());
            assert_eq!(d.allowed, expect, "{label}: {d:?}");
            let t = Instant::now();
            let d = engine.decide(&facts, Action::Fetch);
            decide_only.push(t.elapsed());
            assert_eq!(d.allowed, expect);
        }
        full.sort();
        decide_only.sort();
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x |",
            percentile(&full, 0.5),
            percentile(&full, 0.99),
            percentile(&decide_only, 0.5),
            percentile(&decide_only, 0.99),
            percentile(&full, 0.99) / percentile(&decide_only, 0.99)
        );
    }

    print!("\npopulating {LISTED} models with a grant to user-1 each… ");
    for i in 1..LISTED {
        let id = format!("m{}", i + 1);
        let name = ModelName::parse(&format!("m-{}", i + 1)).unwrap();
        store
            .create_model(
                &NewModel {
                    id: &id,
                    vendor_id: "v1",
                    name: &name,
                    key_epoch: 0,
                    wrapped_key: &[0u8; 8],
                },
                entry(),
            )
            .await
            .unwrap();
        store
            .allow_host_group(&id, &host_group, "bench", entry())
            .await
            .unwrap();
        let user = Grantee::User(UserName::parse("user-1").unwrap());
        store
            .grant("v1", &id, &user, "bench", None, &follow_up, entry())
            .await
            .unwrap();
    }
    println!("done");
    let models = store.models(Some(&vendor)).await.unwrap();
    assert_eq!(models.len(), LISTED);
    let listed: Vec<&store::ModelRecord> = models.iter().collect();
    let p = principal("user-1");
    let asking = Asking {
        principal: &p,
        credential: &credential,
        host: Some(&host),
    };
    let mut batched = Vec::with_capacity(LISTINGS);
    let mut per_model = Vec::with_capacity(LISTINGS);
    for _ in 0..LISTINGS {
        let t = Instant::now();
        let all = models_facts(&store, &asking, &listed, now).await.unwrap();
        let shown = all
            .iter()
            .filter(|f| {
                f.as_ref()
                    .is_some_and(|f| engine.decide(f, Action::ReadMetadata).allowed)
            })
            .count();
        batched.push(t.elapsed());
        assert_eq!(shown, LISTED);
        let t = Instant::now();
        let mut shown = 0;
        for m in &listed {
            let f = request_facts(&store, &asking, Target::Model(m), now)
                .await
                .unwrap();
            shown += usize::from(engine.decide(&f, Action::ReadMetadata).allowed);
        }
        per_model.push(t.elapsed());
        assert_eq!(shown, LISTED);
    }
    batched.sort();
    per_model.sort();
    println!();
    println!("| listing of {LISTED} models | p50 (µs) | p99 | p99 per model |");
    println!("|---|---|---|---|");
    for (label, times) in [
        ("facts in one statement + decide each", &batched),
        ("one request_facts per model + decide each", &per_model),
    ] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.1} |",
            percentile(times, 0.5),
            percentile(times, 0.99),
            percentile(times, 0.99) / LISTED as f64
        );
    }
}
