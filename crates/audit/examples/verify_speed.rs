//! Times offline verification of a bundle of N small entries (default 1,000,000):
//! `cargo run --release -p audit --example verify_speed [N]`.
//!
//! Builds the entries, signs checkpoints at N/2 and N, lays out the bundle in memory, then
//! times `verify_bundle` (every leaf rebuilt, every seq parsed, roots, signatures, manifest)
//! and `root_from_leaves` alone.

use std::time::Instant;

use audit::bundle::{build_bundle, verify_bundle};
use audit::checkpoint::{self, Checkpoint};
use audit::leaf::{NO_VENDOR, entry_leaf};
use audit::merkle::root_from_leaves;
use audit::{Entry, Outcome};
use crypto::sign::SigningKey;

const NAME: &str = "custody.example/audit";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 1_000_000,
    };
    let (key, _) = SigningKey::generate()?;

    let t = Instant::now();
    let entries: Vec<Vec<u8>> = (0..n as u64)
        .map(|seq| {
            let mut e = Entry::new("committer:alice", "fetch", "acme/model@0123abcd")
                .with_decision(true, "committer-granted")
                .with_request_id(&format!("req-{seq}"))
                .with_outcome(Outcome::Ok);
            e.seq = seq;
            e.to_canonical_bytes()
        })
        .collect();
    let bytes: usize = entries.iter().map(|e| e.len() + 1).sum();
    let leaves: Vec<_> = entries.iter().map(|e| entry_leaf(e, &NO_VENDOR)).collect();
    let mut notes = Vec::new();
    for size in [n / 2, n] {
        let cp = Checkpoint {
            origin: NAME.into(),
            size: size as u64,
            root: root_from_leaves(&leaves[..size]),
        };
        notes.push(checkpoint::sign(&cp, NAME, &key)?);
    }
    let files = build_bundle(&entries, &notes);
    println!(
        "built {n} entries ({:.1} MB entries.jsonl) in {:.2?}",
        bytes as f64 / 1e6,
        t.elapsed()
    );

    let t = Instant::now();
    let root = root_from_leaves(&leaves);
    println!("root_from_leaves over {n} leaf hashes: {:.2?}", t.elapsed());
    std::hint::black_box(root);

    let t = Instant::now();
    let again: Vec<_> = entries.iter().map(|e| entry_leaf(e, &NO_VENDOR)).collect();
    println!("leaf hashes alone: {:.2?}", t.elapsed());
    std::hint::black_box(again);
    let t = Instant::now();
    let report = verify_bundle(&files, &key.public_key(), NAME, NAME, Some(&notes[0]));
    let took = t.elapsed();
    println!(
        "verify_bundle: {took:.2?} for {} entries, {} checkpoints, intact: {}",
        report.entries, report.checkpoints_checked, report.intact
    );
    if !report.intact {
        return Err(format!("unexpected problem: {:?}", report.first_problem).into());
    }
    Ok(())
}
