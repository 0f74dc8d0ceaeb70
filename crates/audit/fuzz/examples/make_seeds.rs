//! Writes the seed corpora of the audit fuzz targets and the log key they verify against:
//! `cargo run --example make_seeds` (from this folder). A new run makes a new key, so commit
//! the key and the seeds together.
#![allow(clippy::unwrap_used, reason = "a one-off generator fails loudly")]

use std::path::Path;

use audit::bundle::{
    BundleFiles, Parts, VENDOR_FORMAT, VendorScope, assemble, build_bundle, encode_prefix,
    vendor_line,
};
use audit::checkpoint::{self, Checkpoint, VerifierKey};
use audit::leaf::{NO_VENDOR, entry_leaf, key_announcement, vendor_tag};
use audit::merkle::{CompactRange, root_from_leaves};
use audit::{Entry, Outcome};
use crypto::sign::SigningKey;

const ORIGIN: &str = "custody.example/audit";

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let (key, _) = SigningKey::generate().unwrap();
    let vkey = VerifierKey::new(ORIGIN, key.public_key()).unwrap();
    std::fs::create_dir_all(seeds.join("checkpoint")).unwrap();
    std::fs::create_dir_all(seeds.join("bundle")).unwrap();
    std::fs::write(seeds.join("log.vkey"), format!("{vkey}\n")).unwrap();

    let entries: Vec<Vec<u8>> = (0..7u64)
        .map(|seq| {
            let mut e = Entry::new("committer:alice", "fetch", "acme/model@0123abcd")
                .with_decision(seq % 3 != 0, "committer-granted")
                .with_request_id(&format!("req-{seq}"))
                .with_outcome(Outcome::Ok);
            e.time = "2026-01-01T00:00:00.000Z".into();
            e.seq = seq;
            e.to_canonical_bytes()
        })
        .collect();
    let leaves: Vec<_> = entries.iter().map(|e| entry_leaf(e, &NO_VENDOR)).collect();
    let note = |size: usize| {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: size as u64,
            root: root_from_leaves(&leaves[..size]),
        };
        checkpoint::sign(&cp, ORIGIN, &key).unwrap()
    };
    let (note3, note7) = (note(3), note(7));

    let dir = seeds.join("checkpoint");
    std::fs::write(dir.join("note"), &note7).unwrap();
    std::fs::write(
        dir.join("body"),
        note7.split("\n\n").next().unwrap().to_owned() + "\n",
    )
    .unwrap();
    std::fs::write(dir.join("vkey"), vkey.to_string()).unwrap();
    let mut edge = CompactRange::new();
    for leaf in &leaves[..3] {
        edge.push(*leaf);
    }
    std::fs::write(dir.join("prefix"), encode_prefix(3, edge.edge())).unwrap();
    std::fs::write(dir.join("decimal"), "18446744073709551615").unwrap();

    let dir = seeds.join("bundle");
    let whole = build_bundle(&entries, &[note3.clone(), note7.clone()]);
    std::fs::write(dir.join("whole"), frame(&whole, None)).unwrap();
    std::fs::write(dir.join("whole-with-previous"), frame(&whole, Some(&note3))).unwrap();
    let since = assemble(&Parts {
        first: 3,
        edge: edge.edge(),
        entries: &entries[3..],
        checkpoints: &[note3.clone(), note7.clone()],
        leaves: Some(&leaves[3..]),
        tags: None,
        vendor: None,
    });
    std::fs::write(dir.join("since-3"), frame(&since, Some(&note3))).unwrap();
    let mut tampered = whole.clone();
    let text = tampered.get_mut(audit::bundle::ENTRIES_FILE).unwrap();
    let at = text.iter().position(|&b| b == b'5').unwrap();
    text[at] = b'6';
    std::fs::write(dir.join("tampered-entry"), frame(&tampered, None)).unwrap();
    vendor_seed(&key, &dir);
}

/// A vendor's export (acme's entries in full, globex's by hash), with the kept key.
fn vendor_seed(key: &SigningKey, dir: &Path) {
    let acme = crypto::mac::TagKey::from_slice(&[0x11; 32]).unwrap();
    let mut entries = Vec::new();
    let mut tags = Vec::new();
    for seq in 0..6u64 {
        let (action, resource) = match seq {
            0 => ("vendor.create", "acme"),
            _ if seq % 2 == 0 => ("fetch", "acme/model@0123abcd"),
            _ => ("fetch", "globex/other@4567cdef"),
        };
        let mut e = Entry::new("committer:alice", action, resource);
        if seq == 0 {
            e = e.with_detail(key_announcement(&acme));
        }
        e.time = "2026-01-01T00:00:00.000Z".into();
        e.seq = seq;
        entries.push(e.to_canonical_bytes());
        tags.push(if seq % 2 == 0 {
            vendor_tag(&acme, seq)
        } else {
            [0x22; 32]
        });
    }
    let leaves: Vec<_> = entries
        .iter()
        .zip(&tags)
        .map(|(e, t)| entry_leaf(e, t))
        .collect();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 6,
        root: root_from_leaves(&leaves),
    };
    let note = checkpoint::sign(&cp, ORIGIN, key).unwrap();
    let lines: Vec<Vec<u8>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| vendor_line(e, i % 2 == 0))
        .collect();
    let scope = VendorScope {
        format: VENDOR_FORMAT.into(),
        vendor: "acme".into(),
        tag_key: acme.expose_bytes().iter().map(|b| format!("{b:02x}")).collect(),
        key_entry: 0,
    };
    let files = assemble(&Parts {
        first: 0,
        edge: &[],
        entries: &lines,
        checkpoints: &[note],
        leaves: Some(&leaves),
        tags: Some(&tags),
        vendor: Some(&scope),
    });
    let mut framed = frame(&files, None);
    framed.extend_from_slice(b"\xff\xfevendor-key\0");
    framed.extend_from_slice(scope.tag_key.as_bytes());
    std::fs::write(dir.join("vendor"), framed).unwrap();
}

/// The bundle target's input format: `path NUL bytes`, separated by FF FE.
fn frame(files: &BundleFiles, previous: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |path: &str, bytes: &[u8]| {
        if !out.is_empty() {
            out.extend_from_slice(b"\xff\xfe");
        }
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.extend_from_slice(bytes);
    };
    for (path, bytes) in files.iter() {
        push(path, bytes);
    }
    if let Some(previous) = previous {
        push("previous", previous.as_bytes());
    }
    out
}
