//! The worked example of docs/audit.md, pinned: if this fails, the doc (or the format) changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::bundle::{Parts, assemble, verify_bundle};
use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::leaf::{Tag, entry_leaf, vendor_tag};
use audit::merkle::root_from_leaves;
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
    // acme's tag key in the example: 32 bytes of 0x11. Both entries concern acme.
    let acme = crypto::mac::TagKey::from_slice(&[0x11; 32]).unwrap();
    let tags: Vec<Tag> = (0..2).map(|seq| vendor_tag(&acme, seq)).collect();
    let leaves: Vec<_> = entries
        .iter()
        .zip(&tags)
        .map(|(e, t)| entry_leaf(e, t))
        .collect();
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
    let files = assemble(&Parts {
        first: 0,
        edge: &[],
        entries: &entries,
        checkpoints: std::slice::from_ref(&note),
        leaves: None,
        tags: Some(&tags),
        vendor: None,
    });
    let manifest = String::from_utf8(files.get("manifest.sha256").unwrap().to_vec()).unwrap();
    if std::env::var_os("PRINT_DOC_EXAMPLE").is_some() {
        for e in &entries {
            println!("{}", String::from_utf8_lossy(e));
        }
        for (t, l) in tags.iter().zip(&leaves) {
            println!("tag {} leaf {}", hex::encode(t), hex::encode(l));
        }
        println!("root {}\n{note}{vkey}\n{manifest}", hex::encode(root));
    }
    assert_eq!(
        String::from_utf8(entries[0].clone()).unwrap(),
        EXPECTED_ENTRY_0
    );
    assert_eq!(hex::encode(tags[0]), EXPECTED_TAG_0);
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

const EXPECTED_ENTRY_0: &str = r#"{"v":2,"seq":0,"time":"2026-11-28T12:00:00.000Z","actor":"operator:root","host":null,"action":"vendor.create","resource":"acme","vendor":"acme","decision":{"allowed":true,"policy":"operator-admin"},"request_id":"r-0001","outcome":"ok","detail":null,"touched":[]}"#;
/// acme's tag of entry 0, then its leaf: checked independently with Python's `hmac` and
/// `hashlib` (docs/audit.md shows the commands).
const EXPECTED_TAG_0: &str = "f924016ba7e33c0f77c617dbcb807add6793b032be5472f507fd687712e3a993";
const EXPECTED_LEAF_0: &str = "37da84d1001056af5521fee3aa37694e5b53de83ae6be3c1b321ca8741bdb41b";
const EXPECTED_ROOT: &str = "7cd774919924e2ab8c1e35df40491cedca80adbcf64db6885f369a9b8f7d3c24";
const EXPECTED_NOTE: &str = "custody.example/audit\n2\nfNd0kZkk4quMHjXfQEkc7cqArbz2TbaIXzaam499PCQ=\n\n\u{2014} custody.example/audit TMLLslh3xN/JMW69McpBFsZ5eL61Yd34pcmEJuQ40Ds+knKOmXf/LRSS0eIbvYb4ZTZDTD/zMXgXWsnCaY5pVnjaAAM=\n";
const EXPECTED_VKEY: &str =
    "custody.example/audit+4cc2cbb2+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea";
const EXPECTED_MANIFEST: &str = "1f3e22a8d62c587749c6efe7b0589667c67c262bb1f80ad0997d4c07d2f0e8ec  checkpoints/2.txt\n1f235fc12ae8b2110589d03176b9c3768922299f7ac4c8ad3727e1f0c9382dcd  entries.jsonl\n5ca97d78e7f35024c14b22dc2cedb8f66dcfb46c1ad868d6d5aae0c6516424a3  tags.bin\n";
