//! Offline verification of an exported audit log ("bundle"), with no IO: the caller reads the
//! directory into a [`BundleFiles`] and gets a [`Report`] back, as data.
//!
//! Layout (paths relative to the bundle directory, `/`-separated):
//!
//! * `entries.jsonl`: line `i` is exactly the canonical bytes of leaf `i` (entry with `seq` = i),
//!   each line ending in `\n`; an empty log is an empty file.
//! * `checkpoints/<size>.txt`: signed checkpoint notes ([`crate::checkpoint`]).
//! * `manifest.sha256`: `sha256sum` lines `<hex>  <path>` for every other file, sorted by path.
//!
//! Verification trusts nothing stored: every leaf hash is rebuilt from the raw line bytes, the
//! tree root is rebuilt at each checkpoint's size and compared with the signed root, and an
//! auditor's older checkpoint (`previous`) must be a prefix of the log. The manifest only
//! catches accidental damage (it is unsigned); the signatures are what an attacker cannot forge.
//!
//! The first problem is reported in this order: unusable input, entries (lowest index first),
//! checkpoints (smallest size first), the auditor's previous checkpoint, the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crypto::sign::VerifyingKey;
use serde::Deserialize;

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::merkle::{CompactRange, Hash, leaf_hash};

pub const ENTRIES_FILE: &str = "entries.jsonl";
pub const MANIFEST_FILE: &str = "manifest.sha256";
pub const CHECKPOINTS_DIR: &str = "checkpoints/";

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

/// Lays out a bundle: the entries as `entries.jsonl`, each signed checkpoint note as
/// `checkpoints/<size>.txt` (size read from the note's second line, unverified; a note whose
/// size cannot be read is stored as `checkpoints/unreadable-<i>.txt`, which verification then
/// reports), and the manifest. Entries must not contain `\n` (canonical JSON never does);
/// one that does yields a bundle that fails verification.
pub fn build_bundle(entries: &[Vec<u8>], checkpoints: &[String]) -> BundleFiles {
    let mut files = BundleFiles::new();
    let len = entries.iter().map(|e| e.len() + 1).sum();
    let mut jsonl = Vec::with_capacity(len);
    for e in entries {
        jsonl.extend_from_slice(e);
        jsonl.push(b'\n');
    }
    files.insert(ENTRIES_FILE, jsonl);
    for (i, note) in checkpoints.iter().enumerate() {
        let size = note.split('\n').nth(1).and_then(|s| s.parse::<u64>().ok());
        let name = match size {
            Some(size) => format!("{CHECKPOINTS_DIR}{size}.txt"),
            None => format!("{CHECKPOINTS_DIR}unreadable-{i}.txt"),
        };
        files.insert(name, note.clone().into_bytes());
    }
    files.reseal_manifest();
    files
}

/// The outcome of [`verify_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// No problem found.
    pub intact: bool,
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
    /// Entry (line) `index` of `entries.jsonl`.
    Entry { index: u64, kind: EntryProblem },
    /// A file under `checkpoints/`.
    Checkpoint {
        file: String,
        kind: CheckpointProblem,
    },
    /// The auditor's previous checkpoint is not a prefix of this log.
    Previous(PreviousProblem),
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
    let checkpoint_files: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(p, _)| p.starts_with(CHECKPOINTS_DIR))
        .collect();
    if checkpoint_files.is_empty() {
        return unusable(report, "bundle has no checkpoint".to_owned());
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

    let previous = match previous.map(|note| checkpoint::open(note, key_name, log_key)) {
        None => Ok(None),
        Some(Ok(cp)) if cp.origin != origin => {
            Err(PreviousProblem::WrongOrigin { found: cp.origin })
        }
        Some(Ok(cp)) => Ok(Some(cp)),
        Some(Err(e)) => Err(PreviousProblem::Signature(e)),
    };

    // One pass over the entries: rebuild leaves, check form and seq, take roots where needed.
    let mut wanted: BTreeSet<u64> = signed.iter().map(|s| s.checkpoint.size).collect();
    if let Ok(Some(p)) = &previous {
        wanted.insert(p.size);
    }
    // The manifest digests (one more pass over every byte) run beside the entry scan.
    let (scan, manifest_problem) = std::thread::scope(|scope| {
        let manifest = scope.spawn(|| check_manifest(files, &manifest));
        let scan = scan_entries(entries, &wanted);
        // A panic in the digest thread cannot happen short of a bug; if it does, say so.
        let manifest = manifest
            .join()
            .unwrap_or_else(|_| Some(Problem::Unusable("manifest check failed".to_owned())));
        (scan, manifest)
    });
    report.entries = scan.entries;

    // Checkpoint roots, smallest size first.
    signed.sort_by_key(|s| s.checkpoint.size);
    let mut last_good = 0u64;
    for s in &signed {
        let cp = &s.checkpoint;
        let kind = match scan.roots.get(&cp.size) {
            None => Some(CheckpointProblem::BeyondEntries {
                size: cp.size,
                entries: scan.entries,
            }),
            Some(root) if *root != cp.root => Some(CheckpointProblem::RootMismatch {
                size: cp.size,
                suspects: last_good..cp.size,
            }),
            Some(_) => None,
        };
        match kind {
            Some(kind) => checkpoint_problems.push((
                cp.size,
                Problem::Checkpoint {
                    file: s.file.clone(),
                    kind,
                },
            )),
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
                entries: scan.entries,
            }),
            Some(root) if *root != p.root => Some(PreviousProblem::RootMismatch { size: p.size }),
            Some(_) => None,
        },
    };

    report.first_problem = scan
        .first_problem
        .or(checkpoint_problems.into_iter().next().map(|(_, p)| p))
        .or(previous_problem.map(Problem::Previous))
        .or(manifest_problem);
    report.intact = report.first_problem.is_none();
    report
}

struct Scan {
    entries: u64,
    /// Root at each wanted size that is <= the number of entries.
    roots: BTreeMap<u64, Hash>,
    first_problem: Option<Problem>,
}

fn scan_entries(bytes: &[u8], wanted: &BTreeSet<u64>) -> Scan {
    let mut range = CompactRange::new();
    let mut roots = BTreeMap::new();
    let mut first_problem = None;
    let mut next_wanted = wanted.iter().copied().peekable();
    let mut take_root = |range: &CompactRange, roots: &mut BTreeMap<u64, Hash>| {
        while let Some(&size) = next_wanted.peek() {
            if size > range.size() {
                break;
            }
            if size == range.size() {
                roots.insert(size, range.root());
            }
            next_wanted.next();
        }
    };
    let body = match bytes.last() {
        None => bytes,
        Some(b'\n') => &bytes[..bytes.len() - 1],
        Some(_) => bytes,
    };
    let unterminated = !bytes.is_empty() && !bytes.ends_with(b"\n");
    if !bytes.is_empty() {
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            take_root(&range, &mut roots);
            let index = i as u64;
            range.push(leaf_hash(line));
            if first_problem.is_some() {
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
            first_problem = kind.map(|kind| Problem::Entry { index, kind });
        }
    }
    take_root(&range, &mut roots);
    let entries = range.size();
    if unterminated && first_problem.is_none() {
        first_problem = Some(Problem::Entry {
            index: entries - 1,
            kind: EntryProblem::NoFinalNewline,
        });
    }
    Scan {
        entries,
        roots,
        first_problem,
    }
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
