//! Offline verification of an exported audit log ("bundle"), with no IO: the caller reads the
//! directory into a [`BundleFiles`] and gets a [`Report`] back, as data.
//!
//! Layout (paths relative to the bundle directory, `/`-separated):
//!
//! * `entries.jsonl`: line `i` is exactly the canonical bytes of leaf `first + i` (the entry
//!   with `seq` = `first + i`), each line ending in `\n`; no entries is an empty file. `first`
//!   is 0 for a whole log, or the size of the auditor's checkpoint for an export `--since` it.
//! * `checkpoints/<size>.txt`: signed checkpoint notes ([`crate::checkpoint`]), sizes from
//!   `first` to the end of the bundle.
//! * `proofs/prefix.txt` (only when `first` > 0): the right edge of the tree of `first` leaves
//!   (one perfect-subtree hash per set bit of `first`). Folded, it gives the root of the first
//!   `first` leaves, which must equal the signed root of `checkpoints/<first>.txt`; appending
//!   the bundle's entries to it gives every later root. This is the consistency proof from the
//!   auditor's checkpoint to the new ones, and it also proves the new entries.
//! * `proofs/leaves.bin` (optional): the leaf hashes the log's database holds for the bundle's
//!   entries (a version byte, then 32 bytes per entry). Untrusted like everything else: they
//!   are used only to *name* a changed entry, and only when they rebuild the signed root
//!   themselves (so they are the leaves the log signed).
//! * `manifest.sha256`: `sha256sum` lines `<hex>  <path>` for every other file, sorted by path.
//!
//! Verification trusts nothing stored: every leaf hash is rebuilt from the raw line bytes, the
//! tree root is rebuilt at each checkpoint's size and compared with the signed root, and an
//! auditor's older checkpoint (`previous`) must be a prefix of the log. The manifest only
//! catches accidental damage (it is unsigned); the signatures are what an attacker cannot forge.
//!
//! The first problem is reported in this order: unusable input, entries (lowest index first),
//! checkpoints (smallest size first), the auditor's previous checkpoint, the proofs, the
//! manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::sign::VerifyingKey;
use serde::Deserialize;

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::merkle::{CompactRange, Hash, leaf_hash};

pub const ENTRIES_FILE: &str = "entries.jsonl";
pub const MANIFEST_FILE: &str = "manifest.sha256";
pub const CHECKPOINTS_DIR: &str = "checkpoints/";
pub const PREFIX_FILE: &str = "proofs/prefix.txt";
pub const LEAVES_FILE: &str = "proofs/leaves.bin";

/// First line of `proofs/prefix.txt`: names the format and its version.
const PREFIX_HEADER: &str = "custody-audit-prefix v1";
/// First byte of `proofs/leaves.bin`.
const LEAVES_VERSION: u8 = 1;

/// The files of a bundle, by relative path (`/`-separated), in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(path.into(), bytes);
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Vec<u8>> {
        self.files.get_mut(path)
    }

    pub fn remove(&mut self, path: &str) -> Option<Vec<u8>> {
        self.files.remove(path)
    }

    /// All files, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))
    }

    /// The manifest text for the current files (every file but the manifest itself).
    pub fn manifest_text(&self) -> String {
        let mut out = String::new();
        for (path, bytes) in self.iter().filter(|(p, _)| *p != MANIFEST_FILE) {
            out.push_str(&hex::encode(crypto::hash::sha256(bytes)));
            out.push_str("  ");
            out.push_str(path);
            out.push('\n');
        }
        out
    }

    /// Rewrites `manifest.sha256` to match the current files.
    pub fn reseal_manifest(&mut self) {
        let text = self.manifest_text();
        self.insert(MANIFEST_FILE, text.into_bytes());
    }
}

/// Lays out a bundle of a whole log: the entries as `entries.jsonl`, each signed checkpoint
/// note as `checkpoints/<size>.txt`, and the manifest. See [`assemble`].
pub fn build_bundle(entries: &[Vec<u8>], checkpoints: &[String]) -> BundleFiles {
    assemble(&Parts {
        first: 0,
        edge: &[],
        entries,
        checkpoints,
        leaves: None,
    })
}

/// What a bundle is made of.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// Index of the first entry (0 for a whole log).
    pub first: u64,
    /// The right edge of the tree of `first` leaves ([`crate::merkle::edge_nodes`] order);
    /// empty when `first` is 0.
    pub edge: &'a [Hash],
    /// Canonical entry bytes, `first` onwards.
    pub entries: &'a [Vec<u8>],
    /// Signed checkpoint notes.
    pub checkpoints: &'a [String],
    /// The log's stored leaf hashes for `entries`, if the exporter has them.
    pub leaves: Option<&'a [Hash]>,
}

/// Lays out a bundle: the entries as `entries.jsonl`, each signed checkpoint note as
/// `checkpoints/<size>.txt` (size read from the note's second line, unverified; a note whose
/// size cannot be read is stored as `checkpoints/unreadable-<i>.txt`, which verification then
/// reports), the proofs, and the manifest. Entries must not contain `\n` (canonical JSON
/// never does); one that does yields a bundle that fails verification.
pub fn assemble(parts: &Parts<'_>) -> BundleFiles {
    let mut files = BundleFiles::new();
    let len = parts.entries.iter().map(|e| e.len() + 1).sum();
    let mut jsonl = Vec::with_capacity(len);
    for e in parts.entries {
        jsonl.extend_from_slice(e);
        jsonl.push(b'\n');
    }
    files.insert(ENTRIES_FILE, jsonl);
    for (i, note) in parts.checkpoints.iter().enumerate() {
        let size = note.split('\n').nth(1).and_then(|s| s.parse::<u64>().ok());
        let name = match size {
            Some(size) => format!("{CHECKPOINTS_DIR}{size}.txt"),
            None => format!("{CHECKPOINTS_DIR}unreadable-{i}.txt"),
        };
        files.insert(name, note.clone().into_bytes());
    }
    if parts.first > 0 {
        files.insert(
            PREFIX_FILE,
            encode_prefix(parts.first, parts.edge).into_bytes(),
        );
    }
    if let Some(leaves) = parts.leaves {
        files.insert(LEAVES_FILE, encode_leaves(leaves));
    }
    files.reseal_manifest();
    files
}

/// `proofs/prefix.txt`: a header line, the size, then one base64 hash per line.
pub fn encode_prefix(size: u64, edge: &[Hash]) -> String {
    let mut out = format!("{PREFIX_HEADER}\n{size}\n");
    for hash in edge {
        out.push_str(&B64.encode(hash));
        out.push('\n');
    }
    out
}

/// Parses `proofs/prefix.txt` into the tree edge it describes.
pub fn parse_prefix(bytes: &[u8]) -> Result<CompactRange, String> {
    let bad = |why: &str| format!("{PREFIX_FILE}: {why}");
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not utf-8"))?;
    let text = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("does not end with a newline"))?;
    let mut lines = text.split('\n');
    if lines.next() != Some(PREFIX_HEADER) {
        return Err(bad("unknown format (expected \"custody-audit-prefix v1\")"));
    }
    let size = lines
        .next()
        .and_then(crate::checkpoint::parse_canonical_decimal)
        .ok_or_else(|| bad("size is not a canonical decimal number"))?;
    let edge = lines
        .map(|l| {
            B64.decode(l)
                .ok()
                .and_then(|v| <Hash>::try_from(v).ok())
                .ok_or_else(|| bad("a hash is not 32 bytes of canonical base64"))
        })
        .collect::<Result<Vec<Hash>, String>>()?;
    CompactRange::from_edge(size, edge)
        .map_err(|_| bad("the number of hashes does not match the size"))
}

/// `proofs/leaves.bin`: the version byte, then the 32-byte hashes.
pub fn encode_leaves(leaves: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 * leaves.len());
    out.push(LEAVES_VERSION);
    for leaf in leaves {
        out.extend_from_slice(leaf);
    }
    out
}

fn parse_leaves(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&LEAVES_VERSION, rest)) if rest.len() % 32 == 0 => Ok(rest),
        Some((&LEAVES_VERSION, _)) => Err(format!("{LEAVES_FILE}: length is not a multiple of 32")),
        _ => Err(format!("{LEAVES_FILE}: unknown format version")),
    }
}

/// The outcome of [`verify_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// No problem found.
    pub intact: bool,
    /// Index of the first entry (0 unless the bundle continues from an earlier checkpoint).
    pub first: u64,
    /// Number of entries (lines) in `entries.jsonl`.
    pub entries: u64,
    /// The largest tree size covered by a checkpoint that verified (signature and root):
    /// entries beyond it were checked for form and sequence but are not yet signed.
    pub signed_size: u64,
    /// Checkpoints whose signature and root both verified.
    pub checkpoints_checked: usize,
    pub first_problem: Option<Problem>,
}

impl Report {
    /// Exit code for the CLI: 0 intact, 1 a verification failure, 2 input that cannot be verified.
    pub fn exit_code(&self) -> u8 {
        match &self.first_problem {
            None => 0,
            Some(Problem::Unusable(_)) => 2,
            Some(_) => 1,
        }
    }
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The entry with sequence number `index` (line `index - first` of `entries.jsonl`).
    Entry { index: u64, kind: EntryProblem },
    /// A file under `checkpoints/`.
    Checkpoint {
        file: String,
        kind: CheckpointProblem,
    },
    /// The auditor's previous checkpoint is not a prefix of this log.
    Previous(PreviousProblem),
    /// A file under `proofs/` disagrees with the signed checkpoints or the entries.
    Proof { file: String, kind: ProofProblem },
    /// A file disagrees with `manifest.sha256`.
    Manifest { path: String, kind: ManifestProblem },
    /// The input cannot be verified at all (missing files, malformed manifest, no checkpoint).
    Unusable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// Not JSON, or no unsigned-integer `seq` field (the parser's message).
    Unparseable(String),
    /// `seq` differs from the line index: an entry was removed, inserted or moved.
    SeqMismatch { found: u64 },
    /// Leading or trailing whitespace (incl. `\r`): not canonical bytes.
    Whitespace,
    /// The file does not end with a newline: the last line was cut.
    NoFinalNewline,
    /// The entry's bytes are not the ones the log signed: its rebuilt leaf hash differs from
    /// the leaf hash in `proofs/leaves.bin`, and those leaves rebuild the signed root of
    /// `checkpoint` (so they are the signed leaves).
    Changed { checkpoint: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofProblem {
    /// The tree edge in `proofs/prefix.txt` does not fold to the signed root at its size.
    PrefixRootMismatch { size: u64 },
    /// `proofs/leaves.bin` has another number of hashes than there are entries.
    LeafCount { found: u64, entries: u64 },
    /// The stored leaf hash of entry `index` differs from its rebuilt leaf hash, although the
    /// entries match every signed root: the log's stored tree disagrees with its entries.
    LeafMismatch { index: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// Not UTF-8.
    NotText,
    /// The note is malformed or its signature does not verify under the log key.
    Signature(CheckpointError),
    /// Signed, but for another log.
    WrongOrigin { found: String },
    /// The file name is not `<size>.txt` for the signed size.
    FileName { size: u64 },
    /// The signed size is larger than the number of entries: entries were removed.
    BeyondEntries { size: u64, entries: u64 },
    /// The root rebuilt from the first `size` entries differs from the signed root: some entry
    /// in `suspects` (from the last checkpoint that matched to this one) was changed.
    RootMismatch {
        size: u64,
        suspects: std::ops::Range<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviousProblem {
    Signature(CheckpointError),
    WrongOrigin {
        found: String,
    },
    /// The log is shorter than what the auditor saw before: it was truncated.
    BeyondEntries {
        size: u64,
        entries: u64,
    },
    /// The first `size` entries no longer hash to the root the auditor saw: rewritten history.
    RootMismatch {
        size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestProblem {
    /// Listed in the manifest but absent.
    Missing,
    /// Present but not listed.
    Unlisted,
    /// Content differs from the listed SHA-256.
    DigestMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Entry { index, kind } => match kind {
                EntryProblem::Unparseable(e) => write!(f, "entry {index}: unparseable: {e}"),
                EntryProblem::SeqMismatch { found } => {
                    write!(f, "entry {index}: seq is {found}, expected {index}")
                }
                EntryProblem::Whitespace => {
                    write!(f, "entry {index}: leading or trailing whitespace")
                }
                EntryProblem::NoFinalNewline => {
                    write!(
                        f,
                        "entry {index}: last line has no newline (truncated file)"
                    )
                }
                EntryProblem::Changed { checkpoint } => write!(
                    f,
                    "entry {index}: changed: its bytes are not the entry that {checkpoint} signed"
                ),
            },
            Problem::Checkpoint { file, kind } => match kind {
                CheckpointProblem::NotText => write!(f, "checkpoint {file}: not utf-8"),
                CheckpointProblem::Signature(e) => write!(f, "checkpoint {file}: {e}"),
                CheckpointProblem::WrongOrigin { found } => {
                    write!(f, "checkpoint {file}: origin is {found:?}")
                }
                CheckpointProblem::FileName { size } => {
                    write!(
                        f,
                        "checkpoint {file}: file name does not match signed size {size}"
                    )
                }
                CheckpointProblem::BeyondEntries { size, entries } => write!(
                    f,
                    "checkpoint {file}: signed size {size} but only {entries} entries: entries were removed"
                ),
                CheckpointProblem::RootMismatch { size, suspects } => write!(
                    f,
                    "checkpoint {file}: root of the first {size} entries differs from the signed root: an entry in {}..{} was changed",
                    suspects.start, suspects.end
                ),
            },
            Problem::Previous(kind) => match kind {
                PreviousProblem::Signature(e) => write!(f, "previous checkpoint: {e}"),
                PreviousProblem::WrongOrigin { found } => {
                    write!(f, "previous checkpoint: origin is {found:?}")
                }
                PreviousProblem::BeyondEntries { size, entries } => write!(
                    f,
                    "previous checkpoint: size {size} but the log has only {entries} entries: log truncated"
                ),
                PreviousProblem::RootMismatch { size } => write!(
                    f,
                    "previous checkpoint: the first {size} entries no longer match its root: log rewritten"
                ),
            },
            Problem::Proof { file, kind } => match kind {
                ProofProblem::PrefixRootMismatch { size } => write!(
                    f,
                    "{file}: the tree edge does not match the signed root at size {size}"
                ),
                ProofProblem::LeafCount { found, entries } => {
                    write!(f, "{file}: {found} leaf hashes for {entries} entries")
                }
                ProofProblem::LeafMismatch { index } => write!(
                    f,
                    "{file}: the stored leaf hash of entry {index} differs from its bytes, although every signed root matches: the log's stored tree disagrees with its entries"
                ),
            },
            Problem::Manifest { path, kind } => match kind {
                ManifestProblem::Missing => write!(f, "manifest: {path} is missing"),
                ManifestProblem::Unlisted => write!(f, "manifest: {path} is not listed"),
                ManifestProblem::DigestMismatch => {
                    write!(f, "manifest: {path} has another sha-256")
                }
            },
            Problem::Unusable(why) => write!(f, "cannot verify: {why}"),
        }
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// A verified checkpoint file (signature and origin fine), awaiting its root check.
struct SignedCheckpoint {
    file: String,
    checkpoint: Checkpoint,
}

/// Verifies a bundle against the log's key (`key_name`, `log_key`) and `origin`, and, when
/// given, against `previous`: an older signed checkpoint the auditor kept.
pub fn verify_bundle(
    files: &BundleFiles,
    log_key: &VerifyingKey,
    key_name: &str,
    origin: &str,
    previous: Option<&str>,
) -> Report {
    let mut report = Report {
        intact: false,
        first: 0,
        entries: 0,
        signed_size: 0,
        checkpoints_checked: 0,
        first_problem: None,
    };
    let unusable = |mut report: Report, why: String| {
        report.first_problem = Some(Problem::Unusable(why));
        report
    };

    // Unusable input first.
    let Some(entries) = files.get(ENTRIES_FILE) else {
        return unusable(report, format!("{ENTRIES_FILE} is missing"));
    };
    let Some(manifest) = files.get(MANIFEST_FILE) else {
        return unusable(report, format!("{MANIFEST_FILE} is missing"));
    };
    let manifest = match parse_manifest(manifest) {
        Ok(m) => m,
        Err(why) => return unusable(report, why),
    };
    let start = match files.get(PREFIX_FILE).map(parse_prefix) {
        None => CompactRange::new(),
        Some(Ok(range)) => range,
        Some(Err(why)) => return unusable(report, why),
    };
    let first = start.size();
    report.first = first;
    let stored_leaves = match files.get(LEAVES_FILE).map(parse_leaves) {
        None => None,
        Some(Ok(leaves)) => Some(leaves),
        Some(Err(why)) => return unusable(report, why),
    };
    let checkpoint_files: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(p, _)| p.starts_with(CHECKPOINTS_DIR))
        .collect();
    if checkpoint_files.is_empty() {
        return unusable(report, "bundle has no checkpoint".to_owned());
    }
    if first > 0
        && files
            .get(&format!("{CHECKPOINTS_DIR}{first}.txt"))
            .is_none()
    {
        return unusable(
            report,
            format!("the bundle starts at entry {first} but has no checkpoint of size {first}"),
        );
    }

    let mut checkpoint_problems: Vec<(u64, Problem)> = Vec::new();
    let mut signed: Vec<SignedCheckpoint> = Vec::new();
    for (file, bytes) in checkpoint_files {
        let problem = |kind| Problem::Checkpoint {
            file: file.to_owned(),
            kind,
        };
        let Ok(note) = std::str::from_utf8(bytes) else {
            checkpoint_problems.push((0, problem(CheckpointProblem::NotText)));
            continue;
        };
        let cp = match checkpoint::open(note, key_name, log_key) {
            Ok(cp) => cp,
            Err(e) => {
                checkpoint_problems.push((0, problem(CheckpointProblem::Signature(e))));
                continue;
            }
        };
        if cp.origin != origin {
            let kind = CheckpointProblem::WrongOrigin { found: cp.origin };
            checkpoint_problems.push((cp.size, problem(kind)));
            continue;
        }
        if file != format!("{CHECKPOINTS_DIR}{}.txt", cp.size) {
            checkpoint_problems.push((
                cp.size,
                problem(CheckpointProblem::FileName { size: cp.size }),
            ));
            continue;
        }
        signed.push(SignedCheckpoint {
            file: file.to_owned(),
            checkpoint: cp,
        });
    }
    // A checkpoint older than the bundle cannot be checked against its entries.
    if let Some(s) = signed.iter().find(|s| s.checkpoint.size < first) {
        let why = format!(
            "{} is older than the bundle's first entry ({first})",
            s.file
        );
        return unusable(report, why);
    }

    let previous = match previous.map(|note| checkpoint::open(note, key_name, log_key)) {
        None => Ok(None),
        Some(Ok(cp)) if cp.origin != origin => {
            Err(PreviousProblem::WrongOrigin { found: cp.origin })
        }
        Some(Ok(cp)) => Ok(Some(cp)),
        Some(Err(e)) => Err(PreviousProblem::Signature(e)),
    };
    if let Ok(Some(p)) = &previous
        && p.size < first
    {
        let why = format!(
            "the previous checkpoint (size {}) is older than the bundle's first entry ({first}): \
             export with --since that checkpoint",
            p.size
        );
        return unusable(report, why);
    }

    // One pass over the entries: rebuild leaves, check form and seq, take roots where needed.
    let mut wanted: BTreeSet<u64> = signed.iter().map(|s| s.checkpoint.size).collect();
    if let Ok(Some(p)) = &previous {
        wanted.insert(p.size);
    }
    // The manifest digests (one more pass over every byte) run beside the entry scan.
    let (scan, manifest_problem) = std::thread::scope(|scope| {
        let manifest = scope.spawn(|| check_manifest(files, &manifest));
        let scan = scan_entries(entries, start, stored_leaves, &wanted);
        // A panic in the digest thread cannot happen short of a bug; if it does, say so.
        let manifest = manifest
            .join()
            .unwrap_or_else(|_| Some(Problem::Unusable("manifest check failed".to_owned())));
        (scan, manifest)
    });
    report.entries = scan.entries;
    let end = first + scan.entries;

    // Checkpoint roots, smallest size first.
    signed.sort_by_key(|s| s.checkpoint.size);
    let mut last_good = first;
    for s in &signed {
        let cp = &s.checkpoint;
        let problem = |kind| Problem::Checkpoint {
            file: s.file.clone(),
            kind,
        };
        let found = match scan.roots.get(&cp.size) {
            None => Some(problem(CheckpointProblem::BeyondEntries {
                size: cp.size,
                entries: end,
            })),
            Some(root) if *root == cp.root => None,
            // The bundle's starting point itself is wrong: its edge is not the signed tree.
            Some(_) if cp.size == first && first > 0 => Some(Problem::Proof {
                file: PREFIX_FILE.to_owned(),
                kind: ProofProblem::PrefixRootMismatch { size: first },
            }),
            Some(_) => Some(match scan.changed_below(cp.size, &cp.root) {
                Some(index) => Problem::Entry {
                    index,
                    kind: EntryProblem::Changed {
                        checkpoint: s.file.clone(),
                    },
                },
                None => problem(CheckpointProblem::RootMismatch {
                    size: cp.size,
                    suspects: last_good..cp.size,
                }),
            }),
        };
        match found {
            Some(p) => checkpoint_problems.push((cp.size, p)),
            None => {
                report.checkpoints_checked += 1;
                report.signed_size = report.signed_size.max(cp.size);
                last_good = cp.size;
            }
        }
    }
    // Unreadable and unsigned ones sort first (size 0), then by size; stable for equal sizes.
    checkpoint_problems.sort_by_key(|(size, _)| *size);

    let previous_problem = match previous {
        Err(kind) => Some(kind),
        Ok(None) => None,
        Ok(Some(p)) => match scan.roots.get(&p.size) {
            None => Some(PreviousProblem::BeyondEntries {
                size: p.size,
                entries: end,
            }),
            Some(root) if *root != p.root => Some(PreviousProblem::RootMismatch { size: p.size }),
            Some(_) => None,
        },
    };

    let proof_problem = match stored_leaves {
        Some(leaves) if leaves.len() as u64 / 32 != scan.entries => Some(Problem::Proof {
            file: LEAVES_FILE.to_owned(),
            kind: ProofProblem::LeafCount {
                found: leaves.len() as u64 / 32,
                entries: scan.entries,
            },
        }),
        _ => scan.first_leaf_mismatch.map(|index| Problem::Proof {
            file: LEAVES_FILE.to_owned(),
            kind: ProofProblem::LeafMismatch { index },
        }),
    };

    report.first_problem = scan
        .first_problem
        .or(checkpoint_problems.into_iter().next().map(|(_, p)| p))
        .or(previous_problem.map(Problem::Previous))
        .or(proof_problem)
        .or(manifest_problem);
    report.intact = report.first_problem.is_none();
    report
}

struct Scan {
    /// Lines in `entries.jsonl`.
    entries: u64,
    /// Root rebuilt from the entries at each wanted size that the bundle reaches.
    roots: BTreeMap<u64, Hash>,
    /// Root of the stored leaf hashes (`proofs/leaves.bin`) at the same sizes, while they last.
    stored_roots: BTreeMap<u64, Hash>,
    /// The first entry whose rebuilt leaf hash differs from its stored one.
    first_leaf_mismatch: Option<u64>,
    first_problem: Option<Problem>,
}

impl Scan {
    /// The changed entry below `size`, when the stored leaves are the ones signed at `size`
    /// (they rebuild the signed `root`): then they name it exactly.
    fn changed_below(&self, size: u64, root: &Hash) -> Option<u64> {
        if self.stored_roots.get(&size) != Some(root) {
            return None;
        }
        self.first_leaf_mismatch.filter(|&index| index < size)
    }
}

/// Records the roots of `range` (and `stored`) at the wanted sizes it has reached.
fn take_roots(
    wanted: &[u64],
    next: &mut usize,
    range: &CompactRange,
    stored: Option<&CompactRange>,
    scan: &mut Scan,
) {
    while let Some(&size) = wanted.get(*next) {
        if size > range.size() {
            break;
        }
        if size == range.size() {
            scan.roots.insert(size, range.root());
            if let Some(stored) = stored {
                scan.stored_roots.insert(size, stored.root());
            }
        }
        *next += 1;
    }
}

fn scan_entries(
    bytes: &[u8],
    start: CompactRange,
    stored_leaves: Option<&[u8]>,
    wanted: &BTreeSet<u64>,
) -> Scan {
    let first = start.size();
    let wanted: Vec<u64> = wanted.iter().copied().collect();
    let mut next = 0;
    let mut scan = Scan {
        entries: 0,
        roots: BTreeMap::new(),
        stored_roots: BTreeMap::new(),
        first_leaf_mismatch: None,
        first_problem: None,
    };
    let mut stored = stored_leaves.map(|_| start.clone());
    let mut range = start;
    let body = match bytes.last() {
        None => bytes,
        Some(b'\n') => &bytes[..bytes.len() - 1],
        Some(_) => bytes,
    };
    let unterminated = !bytes.is_empty() && !bytes.ends_with(b"\n");
    if !bytes.is_empty() {
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            take_roots(&wanted, &mut next, &range, stored.as_ref(), &mut scan);
            let index = first + i as u64;
            let leaf = leaf_hash(line);
            range.push(leaf);
            if let Some(stored_range) = stored.as_mut() {
                let at = i * 32;
                let hash = stored_leaves
                    .and_then(|l| l.get(at..at + 32))
                    .and_then(|h| <Hash>::try_from(h).ok());
                match hash {
                    Some(hash) => {
                        if hash != leaf && scan.first_leaf_mismatch.is_none() {
                            scan.first_leaf_mismatch = Some(index);
                        }
                        stored_range.push(hash);
                    }
                    None => stored = None,
                }
            }
            if scan.first_problem.is_some() {
                continue;
            }
            let kind = if line.first().is_some_and(u8::is_ascii_whitespace)
                || line.last().is_some_and(u8::is_ascii_whitespace)
            {
                Some(EntryProblem::Whitespace)
            } else {
                match serde_json::from_slice::<SeqOnly>(line) {
                    Err(e) => Some(EntryProblem::Unparseable(e.to_string())),
                    Ok(SeqOnly { seq }) if seq != index => {
                        Some(EntryProblem::SeqMismatch { found: seq })
                    }
                    Ok(_) => None,
                }
            };
            scan.first_problem = kind.map(|kind| Problem::Entry { index, kind });
        }
    }
    take_roots(&wanted, &mut next, &range, stored.as_ref(), &mut scan);
    scan.entries = range.size() - first;
    if unterminated && scan.first_problem.is_none() {
        scan.first_problem = Some(Problem::Entry {
            index: range.size() - 1,
            kind: EntryProblem::NoFinalNewline,
        });
    }
    scan
}

/// Parses `sha256sum` output: `<64 lowercase hex>  <path>\n` lines, no duplicates.
fn parse_manifest(bytes: &[u8]) -> Result<BTreeMap<String, [u8; 32]>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{MANIFEST_FILE} is not utf-8"))?;
    let mut out = BTreeMap::new();
    if text.is_empty() {
        return Ok(out);
    }
    let Some(text) = text.strip_suffix('\n') else {
        return Err(format!("{MANIFEST_FILE} does not end with a newline"));
    };
    for (n, line) in text.split('\n').enumerate() {
        let bad = || format!("{MANIFEST_FILE} line {} is malformed", n + 1);
        let (digest, path) = line.split_once("  ").ok_or_else(bad)?;
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        if path.is_empty() || path == MANIFEST_FILE || path.chars().any(char::is_control) {
            return Err(bad());
        }
        let mut d = [0u8; 32];
        hex::decode_to_slice(digest, &mut d).map_err(|_| bad())?;
        if out.insert(path.to_owned(), d).is_some() {
            return Err(format!("{MANIFEST_FILE} lists {path} twice"));
        }
    }
    Ok(out)
}

fn check_manifest(files: &BundleFiles, manifest: &BTreeMap<String, [u8; 32]>) -> Option<Problem> {
    let problem = |path: &str, kind| {
        Some(Problem::Manifest {
            path: path.to_owned(),
            kind,
        })
    };
    // Walk both sorted lists together so problems come in path order.
    let mut paths: BTreeSet<&str> = manifest.keys().map(String::as_str).collect();
    paths.extend(files.iter().map(|(p, _)| p).filter(|p| *p != MANIFEST_FILE));
    for path in paths {
        match (manifest.get(path), files.get(path)) {
            (Some(_), None) => return problem(path, ManifestProblem::Missing),
            (None, Some(_)) => return problem(path, ManifestProblem::Unlisted),
            (Some(d), Some(bytes)) if crypto::hash::sha256(bytes) != *d => {
                return problem(path, ManifestProblem::DigestMismatch);
            }
            _ => {}
        }
    }
    None
}
