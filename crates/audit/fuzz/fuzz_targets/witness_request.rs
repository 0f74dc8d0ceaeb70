//! Arbitrary bytes as a witness's `add-checkpoint` request (and as its answer, its state file
//! and a witness key). Must never panic; a request that parses is exactly its canonical
//! encoding; only a checkpoint the log key signed is accepted, and never one smaller than the
//! checkpoint the witness kept.
#![no_main]

use audit::checkpoint::{self, VerifierKey};
use audit::witness::{self, MAX_PROOF_LINES};
use libfuzzer_sys::fuzz_target;

/// The log key the seed notes are signed with (`cargo run --example make_seeds`).
const LOG_VKEY: &str = include_str!("../seeds/log.vkey");
/// A checkpoint of size 7 signed by that key: what the witness kept, in half the runs.
const KEPT: &str = include_str!("../seeds/checkpoint/note");

fuzz_target!(|data: &[u8]| {
    let Ok(log) = VerifierKey::parse(LOG_VKEY.trim()) else {
        panic!("the committed log key does not parse");
    };
    let Ok(kept) = checkpoint::open(KEPT, &log.name, &log.key) else {
        panic!("the committed note does not open");
    };
    if let Ok(request) = witness::parse_add_checkpoint(data) {
        assert_eq!(request.encode().as_bytes(), data, "a parsed request is not canonical");
        assert!(request.proof.len() <= MAX_PROOF_LINES);
        for last in [None, Some(&kept)] {
            if let Ok(accepted) = witness::add_checkpoint(&log, last, &request) {
                let signed = checkpoint::open(&request.note, &log.name, &log.key).ok();
                assert_eq!(signed.as_ref(), Some(&accepted), "accepted an unsigned checkpoint");
                assert!(accepted.size >= last.map_or(0, |c| c.size), "rolled back");
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = witness::parse_cosignature_lines(text);
        let _ = witness::WitnessState::decode(text, &log);
        let _ = witness::CosignerKey::parse(text);
        if let Ok(quorum) = witness::check_quorum(text, &[], 0) {
            assert!(quorum.valid.is_empty());
        }
    }
});
