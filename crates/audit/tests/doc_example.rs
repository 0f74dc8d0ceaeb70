//! The worked example of docs/audit.md, pinned: if this fails, the doc (or the format) changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::bundle::{build_bundle, verify_bundle};
use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::merkle::{leaf_hash, root_from_leaves};
use audit::{Entry, Outcome, Touched};
use crypto::sign::SigningKey;

/// RFC 8032 section 7.1 TEST 1 key, as PKCS#8 v2. A published key: for examples only.
fn example_key() -> SigningKey {
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let public =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    let mut doc = vec![
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    doc.extend_from_slice(&seed);
    doc.extend_from_slice(&[0x81, 0x21, 0x00]);
    doc.extend_from_slice(&public);
    SigningKey::from_pkcs8(&doc).unwrap()
}

fn example_entries() -> Vec<Vec<u8>> {
    let mut a = Entry::new("operator:root", "vendor.create", "acme")
        .with_decision(true, "operator-admin")
        .with_request_id("r-0001");
    a.seq = 0;
    a.time = "2026-11-28T12:00:00.000Z".into();
    let mut b = Entry::new("committer:alice", "fetch", "acme/llama-next@3f9c2a1")
        .with_decision(true, "committer-granted")
        .with_request_id("r-0002")
        .with_outcome(Outcome::Ok)
        .with_touched(vec![Touched {
            path: "config.json".into(),
            sha256: "5d41402abc4b2a76b9719d911017c592".repeat(2),
            bytes: 1234,
        }]);
    b.seq = 1;
    b.time = "2026-11-28T12:00:05.250Z".into();
    vec![a.to_canonical_bytes(), b.to_canonical_bytes()]
}

#[test]
fn worked_example_in_docs() {
    let entries = example_entries();
    let key = example_key();
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
    let root = root_from_leaves(&leaves);
    let cp = Checkpoint {
        origin: "custody.example/audit".into(),
        size: 2,
        root,
    };
    let note = checkpoint::sign(&cp, "custody.example/audit", &key).unwrap();
    let vkey = VerifierKey::new("custody.example/audit", key.public_key())
        .unwrap()
        .to_string();
    let files = build_bundle(&entries, std::slice::from_ref(&note));
    let manifest = String::from_utf8(files.get("manifest.sha256").unwrap().to_vec()).unwrap();
    if std::env::var_os("PRINT_DOC_EXAMPLE").is_some() {
        for e in &entries {
            println!("{}", String::from_utf8_lossy(e));
        }
        for l in &leaves {
            println!("leaf {}", hex::encode(l));
        }
        println!("root {}\n{note}{vkey}\n{manifest}", hex::encode(root));
    }
    assert_eq!(
        String::from_utf8(entries[0].clone()).unwrap(),
        EXPECTED_ENTRY_0
    );
    assert_eq!(hex::encode(leaves[0]), EXPECTED_LEAF_0);
    assert_eq!(hex::encode(root), EXPECTED_ROOT);
    assert_eq!(note, EXPECTED_NOTE);
    assert_eq!(vkey, EXPECTED_VKEY);
    assert_eq!(manifest, EXPECTED_MANIFEST);
    let r = verify_bundle(
        &files,
        &key.public_key(),
        "custody.example/audit",
        "custody.example/audit",
        None,
    );
    assert!(r.intact);
}

const EXPECTED_ENTRY_0: &str = r#"{"v":1,"seq":0,"time":"2026-11-28T12:00:00.000Z","actor":"operator:root","host":null,"action":"vendor.create","resource":"acme","decision":{"allowed":true,"policy":"operator-admin"},"request_id":"r-0001","outcome":"ok","detail":null,"touched":[]}"#;
const EXPECTED_LEAF_0: &str = "dc0ce84f2f019c250d12fd42ecd911fb50a2dcd50aa88a6c2ee621f4e3a70411";
const EXPECTED_ROOT: &str = "8a4ed1fa680d280beb72362ee429489a8d664c771198fb6824d6e1e7e1678add";
const EXPECTED_NOTE: &str = "custody.example/audit\n2\nik7R+mgNKAvrcjYu5ClImo1mTHcRmPtoJNbh5+Fnit0=\n\n\u{2014} custody.example/audit TMLLsuodiQh2G4bszktWeW2QrigLdWFfwoE2HfgzXnjQVtIgjGH0ES8EKcCC+TNZ5j+GktuKA9Iv8mVRqu/8qyCg8Q0=\n";
const EXPECTED_VKEY: &str =
    "custody.example/audit+4cc2cbb2+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea";
const EXPECTED_MANIFEST: &str = "a827f30a87e5b956041b85a3abdf986ca3033d381e8e5b2f79362741645fe227  checkpoints/2.txt\nc7077e4146ca83a16383f981ed749f5ef084db90767845ece2345e702ef3e7c3  entries.jsonl\n";
