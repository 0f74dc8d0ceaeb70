//! Offline verification of exported bundles: an intact bundle verifies, and each kind of
//! tampering is detected and named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::bundle::{
    BundleFiles, CheckpointProblem, ENTRIES_FILE, EntryProblem, MANIFEST_FILE, ManifestProblem,
    PreviousProblem, Problem, Report, build_bundle, verify_bundle,
};
use audit::checkpoint::{self, Checkpoint, CheckpointError};
use audit::leaf::{NO_VENDOR, entry_leaf};
use audit::merkle::root_from_leaves;
use audit::{Entry, Touched};
use crypto::sign::SigningKey;

const NAME: &str = "custody.example/audit";

struct Log {
    key: SigningKey,
}

fn entry(seq: u64, actor: &str) -> Vec<u8> {
    let mut e = Entry::new(actor, "fetch", "acme/model@abc")
        .with_decision(true, "committer-granted")
        .with_request_id(&format!("req-{seq}"))
        .with_touched(vec![Touched {
            path: "config.json".into(),
            sha256: "ab".repeat(32),
            bytes: 12,
        }]);
    e.seq = seq;
    e.time = "2026-01-01T00:00:00.000Z".into();
    e.to_canonical_bytes()
}

fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| entry(i, "committer:alice")).collect()
}

impl Log {
    fn new() -> Self {
        Log {
            key: SigningKey::generate().unwrap().0,
        }
    }

    fn checkpoint(&self, entries: &[Vec<u8>], size: usize) -> String {
        let leaves: Vec<_> = entries[..size]
            .iter()
            .map(|e| entry_leaf(e, &NO_VENDOR))
            .collect();
        let cp = Checkpoint {
            origin: NAME.into(),
            size: size as u64,
            root: root_from_leaves(&leaves),
        };
        checkpoint::sign(&cp, NAME, &self.key).unwrap()
    }

    fn bundle(&self, entries: &[Vec<u8>], sizes: &[usize]) -> BundleFiles {
        let cps: Vec<String> = sizes.iter().map(|&s| self.checkpoint(entries, s)).collect();
        build_bundle(entries, &cps)
    }

    fn verify(&self, files: &BundleFiles, previous: Option<&str>) -> Report {
        verify_bundle(files, &self.key.public_key(), NAME, NAME, previous)
    }
}

fn set_entries(files: &mut BundleFiles, entries: &[Vec<u8>]) {
    let mut jsonl = Vec::new();
    for e in entries {
        jsonl.extend_from_slice(e);
        jsonl.push(b'\n');
    }
    files.insert(ENTRIES_FILE, jsonl);
}

fn cp_problem(report: &Report) -> (&str, &CheckpointProblem) {
    match &report.first_problem {
        Some(Problem::Checkpoint { file, kind }) => (file, kind),
        other => panic!("expected a checkpoint problem, got {other:?}"),
    }
}

#[test]
fn intact_bundle_verifies() {
    let log = Log::new();
    let es = entries(10);
    let files = log.bundle(&es, &[3, 7, 10]);
    let previous = log.checkpoint(&es, 5);
    for prev in [None, Some(previous.as_str())] {
        let r = log.verify(&files, prev);
        assert_eq!(r.first_problem, None);
        assert!(r.intact);
        assert_eq!(
            (r.entries, r.signed_size, r.checkpoints_checked),
            (10, 10, 3)
        );
        assert_eq!(r.exit_code(), 0);
    }
    // Layout: entries, one file per checkpoint, manifest listing the rest.
    let paths: Vec<&str> = files.iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "checkpoints/10.txt",
            "checkpoints/3.txt",
            "checkpoints/7.txt",
            ENTRIES_FILE,
            MANIFEST_FILE
        ]
    );
    let jsonl = files.get(ENTRIES_FILE).unwrap();
    assert!(jsonl.ends_with(b"}\n"));
    assert_eq!(jsonl.split(|&b| b == b'\n').count(), 11);
    let manifest = std::str::from_utf8(files.get(MANIFEST_FILE).unwrap()).unwrap();
    assert_eq!(manifest.lines().count(), 4);
    assert!(manifest.lines().all(|l| l.len() > 66 && &l[64..66] == "  "));
}

#[test]
fn unsigned_tail_is_reported_but_intact() {
    let log = Log::new();
    let es = entries(10);
    let files = build_bundle(&es, &[log.checkpoint(&es, 6)]);
    let r = log.verify(&files, None);
    assert!(r.intact);
    assert_eq!(
        (r.entries, r.signed_size, r.checkpoints_checked),
        (10, 6, 1)
    );
}

#[test]
fn empty_log_verifies() {
    let log = Log::new();
    let files = log.bundle(&[], &[0]);
    assert_eq!(files.get(ENTRIES_FILE).unwrap(), b"");
    let r = log.verify(&files, None);
    assert_eq!(r.first_problem, None);
    assert_eq!((r.entries, r.checkpoints_checked), (0, 1));
}

#[test]
fn edited_entry_is_caught_by_the_checkpoint_covering_it() {
    let log = Log::new();
    let mut es = entries(10);
    let mut files = log.bundle(&es, &[3, 7, 10]);
    // A careful attacker: valid JSON, right seq, manifest recomputed.
    es[5] = entry(5, "committer:mallory");
    set_entries(&mut files, &es);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    let (file, kind) = cp_problem(&r);
    assert_eq!(file, "checkpoints/7.txt");
    assert_eq!(
        kind,
        &CheckpointProblem::RootMismatch {
            size: 7,
            suspects: 3..7
        }
    );
    assert!(!r.intact);
    assert_eq!(r.exit_code(), 1);
    assert_eq!(r.checkpoints_checked, 1);
    assert!(
        r.first_problem
            .unwrap()
            .to_string()
            .contains("an entry in 3..7 was changed")
    );

    // Without resealing the manifest, the root mismatch is still what is reported.
    let mut files = log.bundle(&entries(10), &[3, 7, 10]);
    set_entries(&mut files, &es);
    let r = log.verify(&files, None);
    assert_eq!(cp_problem(&r).0, "checkpoints/7.txt");

    // With a checkpoint at every size, the changed entry is pinned exactly.
    let sizes: Vec<usize> = (1..=10).collect();
    let mut files = log.bundle(&entries(10), &sizes);
    set_entries(&mut files, &es);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        cp_problem(&r).1,
        &CheckpointProblem::RootMismatch {
            size: 6,
            suspects: 5..6
        }
    );
}

#[test]
fn broken_entry_is_named_by_index() {
    let log = Log::new();
    let mut es = entries(10);
    let good = log.bundle(&es, &[10]);

    es[4].pop(); // no closing brace
    let mut files = good.clone();
    set_entries(&mut files, &es);
    let r = log.verify(&files, None);
    assert!(
        matches!(
            &r.first_problem,
            Some(Problem::Entry {
                index: 4,
                kind: EntryProblem::Unparseable(_)
            })
        ),
        "{r:?}"
    );

    // Trailing whitespace.
    let mut es = entries(10);
    es[6].push(b' ');
    let mut files = good.clone();
    set_entries(&mut files, &es);
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Entry {
            index: 6,
            kind: EntryProblem::Whitespace
        })
    );

    // Missing seq.
    let mut es = entries(10);
    es[2] = br#"{"v":1,"time":"x"}"#.to_vec();
    let mut files = good.clone();
    set_entries(&mut files, &es);
    let r = log.verify(&files, None);
    assert!(
        matches!(&r.first_problem, Some(Problem::Entry { index: 2, kind: EntryProblem::Unparseable(m) }) if m.contains("seq"))
    );

    // An empty line.
    let mut es = entries(10);
    es.insert(3, Vec::new());
    let mut files = good.clone();
    set_entries(&mut files, &es);
    let r = log.verify(&files, None);
    assert!(matches!(
        &r.first_problem,
        Some(Problem::Entry {
            index: 3,
            kind: EntryProblem::Unparseable(_)
        })
    ));

    // The file cut inside the last line, and cut right before its final newline.
    let mut files = good.clone();
    let jsonl = files.get_mut(ENTRIES_FILE).unwrap();
    jsonl.truncate(jsonl.len() - 5);
    let r = log.verify(&files, None);
    assert!(matches!(
        &r.first_problem,
        Some(Problem::Entry {
            index: 9,
            kind: EntryProblem::Unparseable(_)
        })
    ));
    let mut files = good.clone();
    files.get_mut(ENTRIES_FILE).unwrap().pop();
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Entry {
            index: 9,
            kind: EntryProblem::NoFinalNewline
        })
    );
    assert_eq!(r.entries, 10);
}

#[test]
fn swapped_entries_are_named() {
    let log = Log::new();
    let mut es = entries(10);
    let mut files = log.bundle(&es, &[10]);
    es.swap(2, 4);
    set_entries(&mut files, &es);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Entry {
            index: 2,
            kind: EntryProblem::SeqMismatch { found: 4 }
        })
    );
    assert_eq!(
        r.first_problem.unwrap().to_string(),
        "entry 2: seq is 4, expected 2"
    );

    // Swapped and renumbered so that seq looks right: the root catches it.
    let mut es = entries(10);
    let (a, b) = (entry(2, "committer:bob"), entry(4, "committer:carol"));
    es[2] = a;
    es[4] = b;
    let mut files = log.bundle(&es, &[10]);
    let mut swapped = es.clone();
    swapped[2] = entry(2, "committer:carol");
    swapped[4] = entry(4, "committer:bob");
    set_entries(&mut files, &swapped);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        cp_problem(&r).1,
        &CheckpointProblem::RootMismatch {
            size: 10,
            suspects: 0..10
        }
    );
}

#[test]
fn deleted_last_entry_against_a_covering_checkpoint() {
    let log = Log::new();
    let mut es = entries(10);
    let mut files = log.bundle(&es, &[5, 10]);
    es.pop();
    set_entries(&mut files, &es);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    let (file, kind) = cp_problem(&r);
    assert_eq!(file, "checkpoints/10.txt");
    assert_eq!(
        kind,
        &CheckpointProblem::BeyondEntries {
            size: 10,
            entries: 9
        }
    );
    assert_eq!(r.entries, 9);
    assert_eq!(r.checkpoints_checked, 1);
}

#[test]
fn deleted_last_entry_against_previous() {
    // The operator drops the last entry, deletes the checkpoint covering it and signs a new one:
    // the bundle is self-consistent, but the auditor's earlier checkpoint exposes it.
    let log = Log::new();
    let es = entries(10);
    let previous = log.checkpoint(&es, 10);
    let cut = &es[..9];
    let files = log.bundle(cut, &[5, 9]);
    assert!(log.verify(&files, None).intact);
    let r = log.verify(&files, Some(&previous));
    assert_eq!(
        r.first_problem,
        Some(Problem::Previous(PreviousProblem::BeyondEntries {
            size: 10,
            entries: 9
        }))
    );
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn truncated_or_rewritten_log_fails_against_previous() {
    let log = Log::new();
    let es = entries(20);
    let previous = log.checkpoint(&es, 12);

    // Truncated to 8 entries, re-signed.
    let files = log.bundle(&es[..8], &[8]);
    let r = log.verify(&files, Some(&previous));
    assert_eq!(
        r.first_problem,
        Some(Problem::Previous(PreviousProblem::BeyondEntries {
            size: 12,
            entries: 8
        }))
    );

    // Rewritten history, same length and longer, re-signed throughout.
    let mut rewritten = es.clone();
    rewritten[3] = entry(3, "committer:mallory");
    for n in [12, 20] {
        let files = log.bundle(&rewritten[..n], &[n]);
        assert!(log.verify(&files, None).intact);
        let r = log.verify(&files, Some(&previous));
        assert_eq!(
            r.first_problem,
            Some(Problem::Previous(PreviousProblem::RootMismatch {
                size: 12
            }))
        );
    }

    // A longer, honest log is consistent with the previous checkpoint.
    let files = log.bundle(&es, &[20]);
    assert!(log.verify(&files, Some(&previous)).intact);

    // A previous checkpoint that is not the log's is refused.
    let other = Log::new();
    let r = log.verify(&files, Some(&other.checkpoint(&es, 12)));
    assert_eq!(
        r.first_problem,
        Some(Problem::Previous(PreviousProblem::Signature(
            CheckpointError::WrongKeyId(NAME.into())
        )))
    );
}

#[test]
fn edited_checkpoint_is_named() {
    let log = Log::new();
    let es = entries(10);
    let good = log.bundle(&es, &[3, 7, 10]);
    let path = "checkpoints/7.txt";
    let note = std::str::from_utf8(good.get(path).unwrap())
        .unwrap()
        .to_owned();

    // Edited size, edited root, truncated signature.
    let lines: Vec<&str> = note.split('\n').collect();
    let mut edits = vec![
        note.replacen("\n7\n", "\n8\n", 1),
        note.replacen(lines[2], &lines[2].replace(&lines[2][..4], "AAAA"), 1),
    ];
    let sig = lines[4];
    edits.push(note.replacen(sig, &sig[..sig.len() - 12], 1));
    let expected = [
        CheckpointProblem::Signature(CheckpointError::BadSignature),
        CheckpointProblem::Signature(CheckpointError::BadSignature),
        CheckpointProblem::Signature(CheckpointError::MalformedSignature),
    ];
    for (edit, want) in edits.into_iter().zip(expected) {
        let mut files = good.clone();
        files.insert(path, edit.into_bytes());
        files.reseal_manifest();
        let r = log.verify(&files, None);
        assert_eq!(cp_problem(&r), (path, &want));
        assert_eq!(r.checkpoints_checked, 2);
    }

    // A checkpoint signed by another key.
    let other = Log::new();
    let mut files = good.clone();
    files.insert(path, other.checkpoint(&es, 7).into_bytes());
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        cp_problem(&r),
        (
            path,
            &CheckpointProblem::Signature(CheckpointError::WrongKeyId(NAME.into()))
        )
    );

    // A genuine checkpoint under the wrong file name.
    let mut files = good.clone();
    let moved = files.remove(path).unwrap();
    files.insert("checkpoints/8.txt", moved);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        cp_problem(&r),
        (
            "checkpoints/8.txt",
            &CheckpointProblem::FileName { size: 7 }
        )
    );

    // Not UTF-8.
    let mut files = good.clone();
    files.insert(path, vec![0xff, 0xfe]);
    files.reseal_manifest();
    assert_eq!(
        cp_problem(&log.verify(&files, None)),
        (path, &CheckpointProblem::NotText)
    );

    // Verified against the wrong origin.
    let r = verify_bundle(
        &good,
        &log.key.public_key(),
        NAME,
        "other.example/log",
        None,
    );
    assert_eq!(
        cp_problem(&r).1,
        &CheckpointProblem::WrongOrigin { found: NAME.into() }
    );
}

#[test]
fn manifest_mismatch_is_named() {
    let log = Log::new();
    let good = log.bundle(&entries(10), &[3, 10]);

    // A changed digest.
    let mut files = good.clone();
    let text = std::str::from_utf8(files.get(MANIFEST_FILE).unwrap())
        .unwrap()
        .to_owned();
    let line = text.lines().find(|l| l.ends_with(ENTRIES_FILE)).unwrap();
    let flipped = format!(
        "{}{}",
        if line.starts_with('0') { "1" } else { "0" },
        &line[1..]
    );
    files.insert(MANIFEST_FILE, text.replace(line, &flipped).into_bytes());
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Manifest {
            path: ENTRIES_FILE.into(),
            kind: ManifestProblem::DigestMismatch
        })
    );
    assert_eq!(r.exit_code(), 1);

    // An extra file, a missing file.
    let mut files = good.clone();
    files.insert("notes.txt", b"hello".to_vec());
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Manifest {
            path: "notes.txt".into(),
            kind: ManifestProblem::Unlisted
        })
    );
    let mut files = good.clone();
    files.remove("checkpoints/3.txt");
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Manifest {
            path: "checkpoints/3.txt".into(),
            kind: ManifestProblem::Missing
        })
    );
}

#[test]
fn unusable_input_is_exit_code_2() {
    let log = Log::new();
    let good = log.bundle(&entries(4), &[4]);
    let cases: Vec<(BundleFiles, &str)> = vec![
        (
            {
                let mut f = good.clone();
                f.remove(ENTRIES_FILE);
                f
            },
            "entries.jsonl is missing",
        ),
        (
            {
                let mut f = good.clone();
                f.remove(MANIFEST_FILE);
                f
            },
            "manifest.sha256 is missing",
        ),
        (
            {
                let mut f = good.clone();
                f.remove("checkpoints/4.txt");
                f.reseal_manifest();
                f
            },
            "bundle has no checkpoint",
        ),
        (
            {
                let mut f = good.clone();
                f.insert(MANIFEST_FILE, vec![0xff]);
                f
            },
            "manifest.sha256 is not utf-8",
        ),
        (
            {
                let mut f = good.clone();
                f.insert(MANIFEST_FILE, b"abc  entries.jsonl\n".to_vec());
                f
            },
            "manifest.sha256 line 1 is malformed",
        ),
        (BundleFiles::new(), "entries.jsonl is missing"),
    ];
    for (files, why) in cases {
        let r = log.verify(&files, None);
        assert_eq!(r.first_problem, Some(Problem::Unusable(why.into())));
        assert!(!r.intact);
        assert_eq!(r.exit_code(), 2);
    }
}

// ---- bundles that continue from a checkpoint, and stored leaf hashes ----

use audit::bundle::{LEAVES_FILE, PREFIX_FILE, Parts, ProofProblem, assemble};
use audit::merkle::{CompactRange, Hash};

fn leaves_of(entries: &[Vec<u8>]) -> Vec<Hash> {
    entries.iter().map(|e| entry_leaf(e, &NO_VENDOR)).collect()
}

/// The edge of the tree of the first `size` entries, as the store gives it.
fn edge(entries: &[Vec<u8>], size: usize) -> Vec<Hash> {
    let mut range = CompactRange::new();
    for leaf in leaves_of(&entries[..size]) {
        range.push(leaf);
    }
    range.edge().to_vec()
}

impl Log {
    /// A bundle of entries `first..`, checkpoints at `sizes`, with the stored leaves.
    fn since(&self, entries: &[Vec<u8>], first: usize, sizes: &[usize]) -> BundleFiles {
        let notes: Vec<String> = sizes.iter().map(|&s| self.checkpoint(entries, s)).collect();
        let leaves = leaves_of(&entries[first..]);
        assemble(&Parts {
            first: first as u64,
            edge: &edge(entries, first),
            entries: &entries[first..],
            checkpoints: &notes,
            leaves: Some(&leaves),
            tags: None,
            vendor: None,
        })
    }
}

#[test]
fn a_bundle_since_a_checkpoint_verifies_against_it() {
    let log = Log::new();
    let es = entries(23);
    let prev = log.checkpoint(&es, 11);
    let files = log.since(&es, 11, &[11, 17, 23]);
    assert!(files.get(PREFIX_FILE).is_some());
    for previous in [None, Some(prev.as_str())] {
        let r = log.verify(&files, previous);
        assert_eq!(r.first_problem, None);
        assert_eq!((r.first, r.entries, r.signed_size), (11, 12, 23));
        assert_eq!(r.checkpoints_checked, 3);
    }
    // Every start works, powers of two and odd sizes alike.
    for first in [1usize, 2, 7, 8, 16, 22, 23] {
        let files = log.since(&es, first, &[first, 23]);
        let r = log.verify(&files, Some(&log.checkpoint(&es, first)));
        assert_eq!(r.first_problem, None, "first {first}");
    }
    // A later previous checkpoint inside the bundle is checked as usual.
    let r = log.verify(&files, Some(&log.checkpoint(&es, 20)));
    assert_eq!(r.first_problem, None);
}

#[test]
fn a_bundle_since_a_checkpoint_catches_tampering() {
    let log = Log::new();
    let es = entries(23);
    let good = log.since(&es, 11, &[11, 23]);

    // An edited entry is named exactly, with the checkpoint that signed it.
    let mut edited = es.clone();
    edited[15] = entry(15, "committer:mallory");
    let mut files = good.clone();
    set_entries(&mut files, &edited[11..]);
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Entry {
            index: 15,
            kind: EntryProblem::Changed {
                checkpoint: "checkpoints/23.txt".into()
            }
        })
    );
    assert_eq!(r.exit_code(), 1);

    // A rewritten edge (to hide a change before the bundle) fails against the signed root.
    let mut files = good.clone();
    let mut other = es.clone();
    other[3] = entry(3, "committer:mallory");
    let prefix = audit::bundle::encode_prefix(11, &edge(&other, 11));
    files.insert(PREFIX_FILE, prefix.into_bytes());
    files.reseal_manifest();
    let r = log.verify(&files, None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Proof {
            file: PREFIX_FILE.into(),
            kind: ProofProblem::PrefixRootMismatch { size: 11 }
        })
    );

    // The last entry deleted: the newest checkpoint reaches beyond the entries.
    let mut files = good.clone();
    set_entries(&mut files, &es[11..22]);
    files.insert(
        LEAVES_FILE,
        audit::bundle::encode_leaves(&leaves_of(&es[11..22])),
    );
    files.reseal_manifest();
    let r = log.verify(&files, None);
    let (file, kind) = cp_problem(&r);
    assert_eq!(file, "checkpoints/23.txt");
    assert!(matches!(
        kind,
        CheckpointProblem::BeyondEntries {
            size: 23,
            entries: 22
        }
    ));

    // An entry moved: seq no longer matches its position.
    let mut files = good.clone();
    let mut swapped = es[11..].to_vec();
    swapped.swap(0, 1);
    set_entries(&mut files, &swapped);
    files.reseal_manifest();
    assert!(matches!(
        log.verify(&files, None).first_problem,
        Some(Problem::Entry {
            index: 11,
            kind: EntryProblem::SeqMismatch { found: 12 }
        })
    ));
}

#[test]
fn stored_leaves_name_an_edited_entry_only_when_they_are_the_signed_ones() {
    let log = Log::new();
    let es = entries(10);
    let notes = [log.checkpoint(&es, 4), log.checkpoint(&es, 10)];
    let leaves = leaves_of(&es);
    let mut edited = es.clone();
    edited[6] = entry(6, "committer:mallory");
    let build = |entries: &[Vec<u8>], leaves: &[Hash]| {
        assemble(&Parts {
            first: 0,
            edge: &[],
            entries,
            checkpoints: &notes,
            leaves: Some(leaves),
            tags: None,
            vendor: None,
        })
    };
    // Leaves as the log stored them: the entry is named.
    let r = log.verify(&build(&edited, &leaves), None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Entry {
            index: 6,
            kind: EntryProblem::Changed {
                checkpoint: "checkpoints/10.txt".into()
            }
        })
    );
    // The attacker also rewrote the stored leaf: those leaves no longer match the signature,
    // so they name nothing; the range is reported instead.
    let r = log.verify(&build(&edited, &leaves_of(&edited)), None);
    let (file, kind) = cp_problem(&r);
    assert_eq!(file, "checkpoints/10.txt");
    assert_eq!(
        kind,
        &CheckpointProblem::RootMismatch {
            size: 10,
            suspects: 4..10
        }
    );
    // Entries intact but a stored leaf wrong: the log's stored tree is damaged; said last.
    let mut bad = leaves.clone();
    bad[2][0] ^= 1;
    let r = log.verify(&build(&es, &bad), None);
    assert_eq!(
        r.first_problem,
        Some(Problem::Proof {
            file: LEAVES_FILE.into(),
            kind: ProofProblem::LeafMismatch { index: 2 }
        })
    );
    assert_eq!(r.checkpoints_checked, 2);
    // A leaf list of the wrong length.
    let r = log.verify(&build(&es, &leaves[..9]), None);
    assert!(matches!(
        r.first_problem,
        Some(Problem::Proof {
            kind: ProofProblem::LeafCount {
                found: 9,
                entries: 10
            },
            ..
        })
    ));
}

#[test]
fn unusable_continuations_are_exit_code_2() {
    let log = Log::new();
    let es = entries(12);
    let good = log.since(&es, 5, &[5, 12]);
    let unusable = |files: &BundleFiles, previous: Option<&str>| {
        let r = log.verify(files, previous);
        assert_eq!(r.exit_code(), 2, "{:?}", r.first_problem);
        match r.first_problem {
            Some(Problem::Unusable(why)) => why,
            other => panic!("{other:?}"),
        }
    };
    // No checkpoint at the bundle's start: the edge cannot be trusted.
    let mut files = good.clone();
    files.remove("checkpoints/5.txt");
    files.reseal_manifest();
    assert!(unusable(&files, None).contains("no checkpoint of size 5"));
    // A checkpoint older than the bundle.
    let mut files = good.clone();
    files.insert("checkpoints/3.txt", log.checkpoint(&es, 3).into_bytes());
    files.reseal_manifest();
    assert!(unusable(&files, None).contains("older than the bundle's first entry"));
    // The auditor's checkpoint is older than the bundle: export since it instead.
    let why = unusable(&good, Some(&log.checkpoint(&es, 2)));
    assert!(why.contains("--since"), "{why}");
    // Malformed proofs.
    for (path, bytes) in [
        (PREFIX_FILE, b"custody-audit-prefix v2\n5\n".to_vec()),
        (PREFIX_FILE, b"custody-audit-prefix v1\n5\n".to_vec()),
        (PREFIX_FILE, b"custody-audit-prefix v1\n05\nAAAA\n".to_vec()),
        (LEAVES_FILE, vec![1, 2, 3]),
        (LEAVES_FILE, vec![2]),
    ] {
        let mut files = good.clone();
        files.insert(path, bytes);
        files.reseal_manifest();
        let why = unusable(&files, None);
        assert!(why.starts_with(path), "{why}");
    }
}
