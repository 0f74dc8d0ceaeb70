//! `cosignature/v1` against a vector made by an independent implementation
//! (`tests/vectors/gen_cosignature.py`, Python's `cryptography`): a fixed witness key, time
//! and checkpoint give these exact bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::witness::{self, CosignerKey};
use crypto::sign::SigningKey;
use serde_json::Value;

fn vector() -> Value {
    serde_json::from_str(include_str!("vectors/cosignature.json")).unwrap()
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap().to_owned()
}

/// An Ed25519 PKCS#8 v2 document for a raw seed and its public key.
fn signing_key(seed: &[u8], public: &[u8]) -> SigningKey {
    let mut pkcs8 = vec![
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(seed);
    pkcs8.extend_from_slice(&[0x81, 0x21, 0x00]);
    pkcs8.extend_from_slice(public);
    SigningKey::from_pkcs8(&pkcs8).unwrap()
}

#[test]
fn the_cosignature_of_a_fixed_key_and_time_is_byte_for_byte_the_vector() {
    let v = vector();
    let witness_key = CosignerKey::parse(&text(&v, "witness_vkey")).unwrap();
    assert_eq!(witness_key.to_string(), text(&v, "witness_vkey"));
    let log = VerifierKey::parse(&text(&v, "log_vkey")).unwrap();
    let note = text(&v, "note");
    let cp: Checkpoint = checkpoint::open(&note, &log.name, &log.key).unwrap();
    let timestamp = v["timestamp"].as_u64().unwrap();

    let body = cp.body();
    assert_eq!(
        witness::cosigned_message(&body, timestamp),
        text(&v, "signed_message").into_bytes()
    );
    let seed = hex::decode(text(&v, "witness_seed_hex")).unwrap();
    let sk = signing_key(&seed, witness_key.key.as_bytes());
    let line = witness::cosign(&cp, &text(&v, "witness_name"), &sk, timestamp).unwrap();
    assert_eq!(line, text(&v, "cosignature_line"));

    // The vector's line, appended to the note, is a valid cosignature; the log's signature
    // still opens.
    let cosigned = witness::with_cosignatures(&note, [line.as_str()]);
    let quorum = witness::check_quorum(&cosigned, std::slice::from_ref(&witness_key), 1).unwrap();
    assert!(quorum.met(), "{quorum}");
    assert_eq!(quorum.valid, vec![(witness_key.name.clone(), timestamp)]);
    assert_eq!(
        checkpoint::open(&cosigned, &log.name, &log.key).unwrap(),
        cp
    );
    // One changed character of the signature: not counted.
    let mut broken = line.clone().into_bytes();
    let at = broken.len() - 10;
    broken[at] = if broken[at] == b'A' { b'B' } else { b'A' };
    let broken = String::from_utf8(broken).unwrap();
    let quorum = witness::check_quorum(
        &witness::with_cosignatures(&note, [broken.as_str()]),
        &[witness_key],
        1,
    )
    .unwrap();
    assert!(!quorum.met(), "{quorum}");
}
