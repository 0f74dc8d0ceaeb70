//! Arbitrary bytes as a signed checkpoint note, a checkpoint body, a verifier key and a bundle's
//! prefix proof. Must never panic; a note must never open without the log key's signature; a
//! body that parses must be exactly the body it parses to (parsing is strict and canonical).
#![no_main]

use audit::bundle::parse_prefix;
use audit::checkpoint::{self, Checkpoint, VerifierKey, parse_canonical_decimal};
use libfuzzer_sys::fuzz_target;

/// The log key the seed notes are signed with (`cargo run --example make_seeds`).
const LOG_VKEY: &str = include_str!("../seeds/log.vkey");

fuzz_target!(|data: &[u8]| {
    let _ = parse_prefix(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(log) = VerifierKey::parse(LOG_VKEY.trim()) else {
        panic!("the committed log key does not parse");
    };
    if let Ok(opened) = checkpoint::open(text, &log.name, &log.key) {
        // Only a note whose text the log key signed opens: its body is the note's first part.
        assert!(
            text.starts_with(&opened.body()),
            "opened a note whose text is not its body"
        );
    }
    if let Ok(body) = Checkpoint::parse_body(text) {
        assert_eq!(body.body(), text, "a parsed body is not canonical");
    }
    if let Ok(key) = VerifierKey::parse(text) {
        assert!(checkpoint::valid_key_name(&key.name));
        assert_eq!(text.split('+').next(), Some(key.name.as_str()));
    }
    if let Some(n) = parse_canonical_decimal(text) {
        assert_eq!(n.to_string(), text);
    }
});
