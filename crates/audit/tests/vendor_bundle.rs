//! A vendor's export: the vendor's entries in full, everyone else's by hash, and a proof that
//! none of the vendor's entries was left out. Each way an operator could cheat is caught and
//! named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::bundle::{
    BundleFiles, ENTRIES_FILE, EntryProblem, Expectations, Parts, Problem, Report, VENDOR_FILE,
    VENDOR_FORMAT, VendorProblem, VendorScope, assemble, hidden_entry_line, vendor_line,
    verify_bundle_with,
};
use audit::checkpoint::{self, Checkpoint};
use audit::leaf::{NO_VENDOR, Tag, entry_leaf, key_announcement, vendor_tag};
use audit::merkle::{CompactRange, Hash, root_from_leaves};
use audit::{Entry, Touched};
use crypto::mac::TagKey;
use crypto::sign::SigningKey;

const NAME: &str = "custody.example/audit";

/// A small log: acme and globex are created (each publishing its tag key), then their users
/// act on their models, interleaved with the service's own entries.
struct Log {
    key: SigningKey,
    acme: TagKey,
    globex: TagKey,
    entries: Vec<Vec<u8>>,
    tags: Vec<Tag>,
}

impl Log {
    fn new() -> Log {
        let mut log = Log {
            key: SigningKey::generate().unwrap().0,
            acme: TagKey::generate().unwrap(),
            globex: TagKey::generate().unwrap(),
            entries: Vec::new(),
            tags: Vec::new(),
        };
        log.push("operator:root", "token.create", "service", None);
        let a = key_announcement(&log.acme);
        log.push("operator:root", "vendor.create", "acme", Some(a));
        let g = key_announcement(&log.globex);
        log.push("operator:root", "vendor.create", "globex", Some(g));
        for i in 0..4 {
            log.push("committer:alice", "fetch", "acme/llama-9@abc", None);
            log.push("committer:bob", "fetch", "globex/secret-model@def", None);
            if i % 2 == 0 {
                log.push("anonymous", "authenticate", "service", None);
            }
        }
        log
    }

    fn push(&mut self, actor: &str, action: &str, resource: &str, detail: Option<String>) {
        let seq = self.entries.len() as u64;
        let mut e = Entry::new(actor, action, resource)
            .with_request_id(&format!("req-{seq}"))
            .with_touched(vec![Touched {
                path: "config.json".into(),
                sha256: "ab".repeat(32),
                bytes: 12,
            }]);
        if let Some(d) = detail {
            e = e.with_detail(d);
        }
        e.seq = seq;
        e.time = "2026-12-01T00:00:00.000Z".into();
        let tag = match e.vendor.as_deref() {
            Some("acme") => vendor_tag(&self.acme, seq),
            Some("globex") => vendor_tag(&self.globex, seq),
            _ => NO_VENDOR,
        };
        self.entries.push(e.to_canonical_bytes());
        self.tags.push(tag);
    }

    fn leaves(&self) -> Vec<Hash> {
        self.entries
            .iter()
            .zip(&self.tags)
            .map(|(e, t)| entry_leaf(e, t))
            .collect()
    }

    fn checkpoint(&self, size: usize) -> String {
        let cp = Checkpoint {
            origin: NAME.into(),
            size: size as u64,
            root: root_from_leaves(&self.leaves()[..size]),
        };
        checkpoint::sign(&cp, NAME, &self.key).unwrap()
    }

    /// acme's export of entries `first..`, as the server builds it.
    fn acme_export(&self, first: usize) -> BundleFiles {
        let lines: Vec<Vec<u8>> = self.entries[first..]
            .iter()
            .map(|e| {
                let theirs = std::str::from_utf8(e)
                    .unwrap()
                    .contains(r#""vendor":"acme""#);
                vendor_line(e, theirs)
            })
            .collect();
        let mut edge_range = CompactRange::new();
        for leaf in &self.leaves()[..first] {
            edge_range.push(*leaf);
        }
        let scope = VendorScope {
            format: VENDOR_FORMAT.into(),
            vendor: "acme".into(),
            tag_key: hex::encode(self.acme.expose_bytes()),
            key_entry: 1,
        };
        let mut sizes = vec![self.entries.len()];
        if first > 0 {
            sizes.insert(0, first);
        }
        let notes: Vec<String> = sizes.iter().map(|&s| self.checkpoint(s)).collect();
        assemble(&Parts {
            first: first as u64,
            edge: edge_range.edge(),
            entries: &lines,
            checkpoints: &notes,
            leaves: Some(&self.leaves()[first..]),
            tags: Some(&self.tags[first..]),
            vendor: Some(&scope),
        })
    }

    fn verify(&self, files: &BundleFiles, vendor_key: Option<&str>) -> Report {
        let expect = Expectations {
            previous: None,
            vendor_key,
        };
        verify_bundle_with(files, &self.key.public_key(), NAME, NAME, &expect)
    }

    fn acme_hex(&self) -> String {
        hex::encode(self.acme.expose_bytes())
    }
}

fn lines(files: &BundleFiles) -> Vec<Vec<u8>> {
    let text = files.get(ENTRIES_FILE).unwrap();
    text.strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn set_lines(files: &mut BundleFiles, lines: &[Vec<u8>]) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    files.insert(ENTRIES_FILE, text);
    files.reseal_manifest();
}

fn entry_problem(report: &Report) -> (u64, &EntryProblem) {
    match &report.first_problem {
        Some(Problem::Entry { index, kind }) => (*index, kind),
        other => panic!("expected an entry problem, got {other:?}"),
    }
}

/// Indexes of acme's entries in the log.
fn acme_indexes(log: &Log) -> Vec<usize> {
    (0..log.entries.len())
        .filter(|&i| {
            std::str::from_utf8(&log.entries[i])
                .unwrap()
                .contains(r#""vendor":"acme""#)
        })
        .collect()
}

#[test]
fn the_intact_export_verifies_and_counts_the_vendors_entries() {
    let log = Log::new();
    let files = log.acme_export(0);
    let report = log.verify(&files, None);
    assert!(report.intact, "{:?}", report.first_problem);
    let summary = report.vendor.unwrap();
    assert_eq!(summary.vendor, "acme");
    assert_eq!(summary.entries_in_full, acme_indexes(&log).len() as u64);
    assert_eq!(summary.tag_key, log.acme_hex());
    // The same export also verifies with the key pinned.
    assert!(log.verify(&files, Some(&log.acme_hex())).intact);
}

#[test]
fn the_export_names_no_other_vendor_model_or_user() {
    let log = Log::new();
    let files = log.acme_export(0);
    for (path, bytes) in files.iter() {
        let text = String::from_utf8_lossy(bytes);
        for secret in ["globex", "secret-model", "bob", "anonymous", "token.create"] {
            assert!(!text.contains(secret), "{path} names {secret}");
        }
    }
    assert!(String::from_utf8_lossy(files.get(ENTRIES_FILE).unwrap()).contains("alice"));
}

#[test]
fn a_withheld_entry_is_named() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let victim = acme_indexes(&log)[2];
    let mut l = lines(&files);
    l[victim] = hidden_entry_line(&crypto::hash::sha256(&log.entries[victim]));
    set_lines(&mut files, &l);
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 1);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, victim as u64);
    assert!(matches!(kind, EntryProblem::Withheld { vendor } if vendor == "acme"));
    assert!(
        report
            .first_problem
            .unwrap()
            .to_string()
            .contains("withheld")
    );
}

#[test]
fn a_dropped_entry_is_named() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let victim = acme_indexes(&log)[1];
    let mut l = lines(&files);
    l.remove(victim);
    set_lines(&mut files, &l);
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 1);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, victim as u64, "{kind:?}");
    // The next line moved up: the slot of acme's entry now holds another line (by hash: the
    // tag there is acme's, so it reads as withheld) or a later entry (its seq is wrong).
    assert!(matches!(
        kind,
        EntryProblem::SeqMismatch { .. } | EntryProblem::Withheld { .. }
    ));
}

#[test]
fn a_withheld_entry_with_a_forged_tag_breaks_the_signed_root() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let victim = acme_indexes(&log)[3];
    let mut l = lines(&files);
    l[victim] = hidden_entry_line(&crypto::hash::sha256(&log.entries[victim]));
    set_lines(&mut files, &l);
    // The operator also rewrites the tag so it no longer looks like acme's.
    let mut tags = files.get("tags.bin").unwrap().to_vec();
    tags[1 + victim * 32] ^= 1;
    files.insert("tags.bin", tags);
    files.reseal_manifest();
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 1, "{:?}", report.first_problem);
    let problem = report.first_problem.unwrap().to_string();
    assert!(
        problem.contains(&format!("entry {victim}")),
        "the stored leaves name the entry: {problem}"
    );
}

#[test]
fn an_edited_entry_is_named() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let victim = acme_indexes(&log)[2];
    let mut l = lines(&files);
    l[victim] = String::from_utf8(l[victim].clone())
        .unwrap()
        .replace("alice", "carol")
        .into_bytes();
    set_lines(&mut files, &l);
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 1);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, victim as u64);
    assert!(matches!(kind, EntryProblem::Changed { .. }), "{kind:?}");
}

#[test]
fn reordered_entries_are_named() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let (a, b) = (acme_indexes(&log)[1], acme_indexes(&log)[2]);
    let mut l = lines(&files);
    l.swap(a, b);
    set_lines(&mut files, &l);
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 1);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, a as u64);
    assert!(matches!(kind, EntryProblem::SeqMismatch { .. }), "{kind:?}");
}

#[test]
fn another_vendors_entry_in_full_is_refused() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    let globex = (0..log.entries.len())
        .find(|&i| {
            std::str::from_utf8(&log.entries[i])
                .unwrap()
                .contains("secret-model")
        })
        .unwrap();
    let mut l = lines(&files);
    l[globex] = log.entries[globex].clone();
    set_lines(&mut files, &l);
    let report = log.verify(&files, None);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, globex as u64);
    assert!(matches!(kind, EntryProblem::NotTheVendors { found: Some(v), .. } if v == "globex"));
}

#[test]
fn another_key_cannot_make_the_vendor_look_idle() {
    // The operator hands acme another key and every line by hash: with that key no tag
    // matches, so nothing looks withheld; the key's publication gives it away.
    let log = Log::new();
    let mut files = log.acme_export(0);
    let fake = TagKey::generate().unwrap();
    let all_hidden: Vec<Vec<u8>> = log.entries.iter().map(|e| vendor_line(e, false)).collect();
    set_lines(&mut files, &all_hidden);
    let scope = VendorScope {
        format: VENDOR_FORMAT.into(),
        vendor: "acme".into(),
        tag_key: hex::encode(fake.expose_bytes()),
        key_entry: 1,
    };
    files.insert(VENDOR_FILE, serde_json::to_vec(&scope).unwrap());
    files.reseal_manifest();
    let report = log.verify(&files, None);
    let (index, kind) = entry_problem(&report);
    assert_eq!(index, 1);
    assert!(
        matches!(kind, EntryProblem::KeyNotPublished { .. }),
        "{kind:?}"
    );
    // Pinned, the fake key is refused outright.
    let report = log.verify(&files, Some(&log.acme_hex()));
    assert!(matches!(
        report.first_problem,
        Some(Problem::Entry { .. } | Problem::Vendor(VendorProblem::KeyMismatch { .. }))
    ));
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn an_export_since_a_checkpoint_needs_the_kept_key() {
    let log = Log::new();
    let files = log.acme_export(5);
    let report = log.verify(&files, None);
    assert_eq!(report.exit_code(), 2, "{:?}", report.first_problem);
    assert!(
        report
            .first_problem
            .unwrap()
            .to_string()
            .contains("--vendor-key")
    );
    let report = log.verify(&files, Some(&log.acme_hex()));
    assert!(report.intact, "{:?}", report.first_problem);
    let other = hex::encode([9u8; 32]);
    let report = log.verify(&files, Some(&other));
    assert!(matches!(
        report.first_problem,
        Some(Problem::Vendor(VendorProblem::KeyMismatch { .. }))
    ));
}

#[test]
fn a_whole_log_bundle_may_not_hide_entries() {
    let log = Log::new();
    let mut files = log.acme_export(0);
    files.remove(VENDOR_FILE);
    files.reseal_manifest();
    let report = log.verify(&files, None);
    let (_, kind) = entry_problem(&report);
    assert!(matches!(kind, EntryProblem::HashOnly));
}

/// The fuzz target's vendor seed is an intact vendor export (so fuzzing starts from one that
/// passes every check, and mutates from there).
#[test]
fn the_fuzz_seed_of_a_vendor_export_verifies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let vkey = std::fs::read_to_string(format!("{dir}/log.vkey")).unwrap();
    let log = audit::checkpoint::VerifierKey::parse(vkey.trim()).unwrap();
    let framed = std::fs::read(format!("{dir}/bundle/vendor")).unwrap();
    let mut files = BundleFiles::new();
    let mut vendor_key = None;
    for chunk in split(&framed) {
        let nul = chunk.iter().position(|&b| b == 0).unwrap();
        let path = std::str::from_utf8(&chunk[..nul]).unwrap();
        let bytes = chunk[nul + 1..].to_vec();
        if path == "vendor-key" {
            vendor_key = Some(String::from_utf8(bytes).unwrap());
        } else {
            files.insert(path, bytes);
        }
    }
    let expect = Expectations {
        previous: None,
        vendor_key: vendor_key.as_deref(),
    };
    let origin = "custody.example/audit";
    let report = verify_bundle_with(&files, &log.key, &log.name, origin, &expect);
    assert!(report.intact, "{:?}", report.first_problem);
    assert_eq!(report.vendor.unwrap().entries_in_full, 3);
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == b"\xff\xfe") {
        out.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    out.push(rest);
    out
}
