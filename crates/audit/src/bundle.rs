//! Offline verification of an exported audit log ("bundle"), with no IO: the caller reads the
//! directory into a [`BundleFiles`] and gets a [`Report`] back, as data.
//!
//! Layout (paths relative to the bundle directory, `/`-separated):
//!
//! * `entries.jsonl`: line `i` is exactly the canonical bytes of leaf `first + i` (the entry
//!   with `seq` = `first + i`), each line ending in `\n`; no entries is an empty file. `first`
//!   is 0 for a whole log, or the size of the auditor's checkpoint for an export `--since` it.
//!   In a vendor's export ([`VENDOR_FILE`]) a line may instead stand for another vendor's
//!   entry by hash alone: `-<hex SHA-256 of the entry>` for a format 2 entry (its tag is in
//!   `tags.bin`), `=<hex leaf hash>` for a format 1 entry ([`crate::leaf`]).
//! * `tags.bin`: a version byte, then the 32-byte vendor tag of every line's leaf (format 2
//!   leaves commit to it). Absent: every tag is [`crate::leaf::NO_VENDOR`].
//! * `vendor.json` (a vendor's export only): the vendor, its tag key, and the index of the
//!   entry that published the key's fingerprint. Verification then also proves completeness:
//!   every leaf whose tag is the vendor's is there in full, and every entry in full is the
//!   vendor's.
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
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::leaf::{self, NO_VENDOR, Tag};
use crate::merkle::{CompactRange, Hash};

pub const ENTRIES_FILE: &str = "entries.jsonl";
pub const MANIFEST_FILE: &str = "manifest.sha256";
pub const CHECKPOINTS_DIR: &str = "checkpoints/";
pub const PREFIX_FILE: &str = "proofs/prefix.txt";
pub const LEAVES_FILE: &str = "proofs/leaves.bin";
pub const TAGS_FILE: &str = "tags.bin";
pub const VENDOR_FILE: &str = "vendor.json";

/// First line of `proofs/prefix.txt`: names the format and its version.
const PREFIX_HEADER: &str = "custody-audit-prefix v1";
/// First byte of `proofs/leaves.bin`.
const LEAVES_VERSION: u8 = 1;
/// First byte of `tags.bin`.
const TAGS_VERSION: u8 = 1;
/// `vendor.json`'s `format`.
pub const VENDOR_FORMAT: &str = "custody-vendor-audit v1";

/// `vendor.json`: whose export this is, and the key that tells its leaves from others'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorScope {
    /// [`VENDOR_FORMAT`].
    pub format: String,
    pub vendor: String,
    /// The vendor's tag key, hex.
    pub tag_key: String,
    /// The entry that published the key's fingerprint ([`crate::leaf::key_announcement`]).
    pub key_entry: u64,
}

/// The line a vendor's export carries for an entry: its bytes when it is the vendor's, its hash
/// alone otherwise.
pub fn vendor_line(entry: &[u8], theirs: bool) -> Vec<u8> {
    if theirs {
        entry.to_vec()
    } else if leaf::entry_format(entry) == Some(1) {
        hidden_v1_line(&crate::merkle::leaf_hash(entry))
    } else {
        hidden_entry_line(&crypto::hash::sha256(entry))
    }
}

/// The line standing for a format 2 entry by its SHA-256 alone.
pub fn hidden_entry_line(entry_digest: &[u8; 32]) -> Vec<u8> {
    format!("-{}", hex::encode(entry_digest)).into_bytes()
}

/// The line standing for a format 1 entry by its leaf hash alone.
pub fn hidden_v1_line(leaf: &Hash) -> Vec<u8> {
    format!("={}", hex::encode(leaf)).into_bytes()
}

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
        tags: None,
        vendor: None,
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
    /// Every entry's vendor tag; `None` when all are [`NO_VENDOR`].
    pub tags: Option<&'a [Tag]>,
    /// For a vendor's export: `vendor.json`.
    pub vendor: Option<&'a VendorScope>,
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
    if let Some(tags) = parts.tags {
        let mut bytes = Vec::with_capacity(1 + 32 * tags.len());
        bytes.push(TAGS_VERSION);
        tags.iter().for_each(|t| bytes.extend_from_slice(t));
        files.insert(TAGS_FILE, bytes);
    }
    if let Some(scope) = parts.vendor {
        // Serialising a struct of strings and a number cannot fail.
        let text = serde_json::to_vec_pretty(scope).unwrap_or_default();
        files.insert(VENDOR_FILE, text);
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

fn parse_tags(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&TAGS_VERSION, rest)) if rest.len() % 32 == 0 => Ok(rest),
        Some((&TAGS_VERSION, _)) => Err(format!("{TAGS_FILE}: length is not a multiple of 32")),
        _ => Err(format!("{TAGS_FILE}: unknown format version")),
    }
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
    /// For a vendor's export: whose, and how many of its entries are in full.
    pub vendor: Option<VendorSummary>,
    pub first_problem: Option<Problem>,
}

/// What a verified vendor export covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorSummary {
    pub vendor: String,
    /// The vendor's entries, present in full.
    pub entries_in_full: u64,
    /// Entries before the vendor's tag key was published: they carry no tag and cannot be
    /// attributed (the log's entries of format 1).
    pub before_key: u64,
    /// The tag key, hex: keep it to check a later export `--since` ([`Expectations`]).
    pub tag_key: String,
}

/// What the auditor brings to a verification besides the log key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expectations<'a> {
    /// An older signed checkpoint the auditor kept: the log must still contain it.
    pub previous: Option<&'a str>,
    /// For a vendor's export: the vendor's tag key (hex) from an earlier verified export.
    pub vendor_key: Option<&'a str>,
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
    /// A vendor's export does not prove whose it is.
    Vendor(VendorProblem),
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
    /// A line standing for an entry by hash is not `-` or `=` and 64 hex digits.
    MalformedHash,
    /// Only the entry's hash is in a bundle of the whole log.
    HashOnly,
    /// The entry's tag is the vendor's, yet the vendor's export carries only its hash: one of
    /// the vendor's entries was withheld.
    Withheld { vendor: String },
    /// In full in the vendor's export, but not the vendor's: its `vendor` field or its tag
    /// says otherwise.
    NotTheVendors {
        vendor: String,
        found: Option<String>,
    },
    /// Written after the vendor's tag key was published, yet without a vendor tag (format 1).
    Untagged { vendor: String, key_entry: u64 },
    /// The entry `vendor.json` names as publishing the tag key does not publish it.
    KeyNotPublished { vendor: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VendorProblem {
    /// The bundle's tag key is not the one the auditor pinned from an earlier export.
    KeyMismatch { vendor: String },
    /// The entry said to publish the tag key is not in the log the bundle covers.
    KeyEntryBeyond { key_entry: u64, entries: u64 },
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
                EntryProblem::MalformedHash => write!(
                    f,
                    "entry {index}: a line standing for an entry is not '-' or '=' and 64 hex digits"
                ),
                EntryProblem::HashOnly => write!(
                    f,
                    "entry {index}: only its hash is in this bundle of the whole log"
                ),
                EntryProblem::Withheld { vendor } => write!(
                    f,
                    "entry {index}: withheld: it concerns {vendor} (its tag is {vendor}'s) but the export carries only its hash"
                ),
                EntryProblem::NotTheVendors { vendor, found }
                    if found.as_deref() == Some(vendor) =>
                {
                    write!(
                        f,
                        "entry {index}: in full and naming {vendor}, but its leaf's tag is not {vendor}'s"
                    )
                }
                EntryProblem::NotTheVendors { vendor, found } => write!(
                    f,
                    "entry {index}: in full, but not {vendor}'s (its vendor is {})",
                    found.as_deref().unwrap_or("none")
                ),
                EntryProblem::Untagged { vendor, key_entry } => write!(
                    f,
                    "entry {index}: has no vendor tag, though {vendor}'s tag key was published at entry {key_entry}"
                ),
                EntryProblem::KeyNotPublished { vendor } => write!(
                    f,
                    "entry {index}: does not publish {vendor}'s tag key, as vendor.json says"
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
            Problem::Vendor(kind) => match kind {
                VendorProblem::KeyMismatch { vendor } => write!(
                    f,
                    "vendor.json: {vendor}'s tag key is not the one you kept from an earlier export"
                ),
                VendorProblem::KeyEntryBeyond { key_entry, entries } => write!(
                    f,
                    "vendor.json: the tag key was published at entry {key_entry}, beyond the {entries} entries exported"
                ),
            },
            Problem::Unusable(why) => write!(f, "cannot verify: {why}"),
        }
    }
}

/// The fields of an entry that verification reads.
#[derive(Deserialize)]
struct EntryHead {
    seq: u64,
    #[serde(default)]
    action: String,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// A vendor's export, as verification checks it.
struct VendorCheck {
    vendor: String,
    key: crypto::mac::TagKey,
    key_hex: String,
    key_entry: u64,
    announcement: String,
}

/// The actions that publish a vendor's tag key.
pub const KEY_PUBLISHING_ACTIONS: [&str; 2] = ["vendor.create", "vendor.audit-key"];

fn vendor_check(files: &BundleFiles) -> Result<Option<VendorCheck>, String> {
    let Some(bytes) = files.get(VENDOR_FILE) else {
        return Ok(None);
    };
    let scope: VendorScope =
        serde_json::from_slice(bytes).map_err(|e| format!("{VENDOR_FILE}: {e}"))?;
    if scope.format != VENDOR_FORMAT {
        return Err(format!(
            "{VENDOR_FILE}: unknown format {:?} (expected {VENDOR_FORMAT:?})",
            scope.format
        ));
    }
    let key_bytes =
        hex::decode(&scope.tag_key).map_err(|_| format!("{VENDOR_FILE}: tag_key is not hex"))?;
    let key = crypto::mac::TagKey::from_slice(&key_bytes)
        .map_err(|e| format!("{VENDOR_FILE}: tag_key: {e}"))?;
    if files.get(TAGS_FILE).is_none() {
        return Err(format!("a vendor's export needs {TAGS_FILE}"));
    }
    Ok(Some(VendorCheck {
        announcement: leaf::key_announcement(&key),
        vendor: scope.vendor,
        key,
        key_hex: scope.tag_key.to_ascii_lowercase(),
        key_entry: scope.key_entry,
    }))
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
    let expect = Expectations {
        previous,
        vendor_key: None,
    };
    verify_bundle_with(files, log_key, key_name, origin, &expect)
}

/// [`verify_bundle`] with everything the auditor kept ([`Expectations`]); a vendor's export
/// (with `vendor.json`) is also checked for completeness.
pub fn verify_bundle_with(
    files: &BundleFiles,
    log_key: &VerifyingKey,
    key_name: &str,
    origin: &str,
    expect: &Expectations<'_>,
) -> Report {
    let previous = expect.previous;
    let mut report = Report {
        intact: false,
        first: 0,
        entries: 0,
        signed_size: 0,
        checkpoints_checked: 0,
        vendor: None,
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
    let tags = match files.get(TAGS_FILE).map(parse_tags) {
        None => None,
        Some(Ok(tags)) => Some(tags),
        Some(Err(why)) => return unusable(report, why),
    };
    let vendor = match vendor_check(files) {
        Ok(v) => v,
        Err(why) => return unusable(report, why),
    };
    let mut vendor_problem = None;
    if let Some(v) = &vendor {
        match expect.vendor_key.map(|k| k.trim().to_ascii_lowercase()) {
            Some(pinned) if pinned != v.key_hex => {
                vendor_problem = Some(Problem::Vendor(VendorProblem::KeyMismatch {
                    vendor: v.vendor.clone(),
                }));
            }
            Some(_) => {}
            None if v.key_entry < first => {
                let why = format!(
                    "this export of {} starts at entry {first}, after its tag key was published \
                     (entry {}): give the key you kept from your first verified export \
                     (--vendor-key)",
                    v.vendor, v.key_entry
                );
                return unusable(report, why);
            }
            None => {}
        }
    }
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
        let scan = scan_entries(
            entries,
            start,
            Inputs {
                stored_leaves,
                tags,
                vendor: vendor.as_ref(),
            },
            &wanted,
        );
        // A panic in the digest thread cannot happen short of a bug; if it does, say so.
        let manifest = manifest
            .join()
            .unwrap_or_else(|_| Some(Problem::Unusable("manifest check failed".to_owned())));
        (scan, manifest)
    });
    report.entries = scan.entries;
    let end = first + scan.entries;
    if let Some(v) = &vendor {
        report.vendor = Some(VendorSummary {
            vendor: v.vendor.clone(),
            entries_in_full: scan.in_full,
            before_key: v.key_entry.saturating_sub(first).min(scan.entries),
            tag_key: v.key_hex.clone(),
        });
        if v.key_entry >= end && vendor_problem.is_none() {
            vendor_problem = Some(Problem::Vendor(VendorProblem::KeyEntryBeyond {
                key_entry: v.key_entry,
                entries: end,
            }));
        }
    }

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

    let proof_problem = match (stored_leaves, tags) {
        (_, Some(tags)) if tags.len() as u64 / 32 != scan.entries => Some(Problem::Proof {
            file: TAGS_FILE.to_owned(),
            kind: ProofProblem::LeafCount {
                found: tags.len() as u64 / 32,
                entries: scan.entries,
            },
        }),
        (Some(leaves), _) if leaves.len() as u64 / 32 != scan.entries => Some(Problem::Proof {
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

    // A key other than the one the auditor kept explains everything after it: first.
    let (key_mismatch, vendor_problem) = match vendor_problem {
        Some(p @ Problem::Vendor(VendorProblem::KeyMismatch { .. })) => (Some(p), None),
        other => (None, other),
    };
    report.first_problem = key_mismatch
        .or(scan.first_problem)
        .or(vendor_problem)
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
    /// A vendor's entries in full.
    in_full: u64,
    first_problem: Option<Problem>,
}

/// What the entry scan reads besides the entries.
struct Inputs<'a> {
    stored_leaves: Option<&'a [u8]>,
    tags: Option<&'a [u8]>,
    vendor: Option<&'a VendorCheck>,
}

fn hash_at(bytes: Option<&[u8]>, i: usize) -> Option<Hash> {
    bytes
        .and_then(|b| b.get(i * 32..i * 32 + 32))
        .and_then(|h| <Hash>::try_from(h).ok())
}

fn parse_hex32(text: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// How a line of `entries.jsonl` stands for its entry.
enum Line {
    Entry,
    HiddenTagged,
    HiddenV1,
    Malformed,
}

/// The leaf a line stands for, and how.
fn line_leaf(line: &[u8], tag: &Tag) -> (Hash, Line) {
    let hidden = |make: fn(&Tag, &[u8; 32]) -> Hash, kind| match parse_hex32(&line[1..]) {
        Some(h) => (make(tag, &h), kind),
        None => (leaf::entry_leaf(line, tag), Line::Malformed),
    };
    match line.first() {
        Some(b'-') => hidden(leaf::tagged_leaf, Line::HiddenTagged),
        Some(b'=') => hidden(|_, leaf| *leaf, Line::HiddenV1),
        _ => (leaf::entry_leaf(line, tag), Line::Entry),
    }
}

/// What is wrong with line `index` (its leaf's `tag`), if anything.
fn line_problem(
    line: &[u8],
    kind: &Line,
    index: u64,
    tag: &Tag,
    vendor: Option<&VendorCheck>,
    in_full: &mut u64,
) -> Option<EntryProblem> {
    let after_key = |v: &VendorCheck| index >= v.key_entry;
    match (kind, vendor) {
        (Line::Malformed, _) => Some(EntryProblem::MalformedHash),
        (Line::HiddenTagged | Line::HiddenV1, None) => Some(EntryProblem::HashOnly),
        (Line::HiddenTagged, Some(v))
            if after_key(v) && *tag == leaf::vendor_tag(&v.key, index) =>
        {
            Some(EntryProblem::Withheld {
                vendor: v.vendor.clone(),
            })
        }
        (Line::HiddenTagged | Line::HiddenV1, Some(v)) if index == v.key_entry => {
            Some(EntryProblem::KeyNotPublished {
                vendor: v.vendor.clone(),
            })
        }
        (Line::HiddenV1, Some(v)) if after_key(v) => Some(EntryProblem::Untagged {
            vendor: v.vendor.clone(),
            key_entry: v.key_entry,
        }),
        (Line::HiddenTagged | Line::HiddenV1, Some(_)) => None,
        (Line::Entry, _) => {
            if line.first().is_some_and(u8::is_ascii_whitespace)
                || line.last().is_some_and(u8::is_ascii_whitespace)
            {
                return Some(EntryProblem::Whitespace);
            }
            let head = match serde_json::from_slice::<EntryHead>(line) {
                Err(e) => return Some(EntryProblem::Unparseable(e.to_string())),
                Ok(head) if head.seq != index => {
                    return Some(EntryProblem::SeqMismatch { found: head.seq });
                }
                Ok(head) => head,
            };
            let v = vendor?;
            let not_theirs = || EntryProblem::NotTheVendors {
                vendor: v.vendor.clone(),
                found: head.vendor.clone(),
            };
            if head.vendor.as_deref() != Some(v.vendor.as_str()) {
                return Some(not_theirs());
            }
            if leaf::entry_format(line) == Some(1) {
                return after_key(v).then(|| EntryProblem::Untagged {
                    vendor: v.vendor.clone(),
                    key_entry: v.key_entry,
                });
            }
            if after_key(v) && *tag != leaf::vendor_tag(&v.key, index) {
                return Some(not_theirs());
            }
            if index == v.key_entry
                && !(KEY_PUBLISHING_ACTIONS.contains(&head.action.as_str())
                    && head
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains(&v.announcement)))
            {
                return Some(EntryProblem::KeyNotPublished {
                    vendor: v.vendor.clone(),
                });
            }
            *in_full += 1;
            None
        }
    }
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
    inputs: Inputs<'_>,
    wanted: &BTreeSet<u64>,
) -> Scan {
    let stored_leaves = inputs.stored_leaves;
    let first = start.size();
    let wanted: Vec<u64> = wanted.iter().copied().collect();
    let mut next = 0;
    let mut scan = Scan {
        entries: 0,
        roots: BTreeMap::new(),
        stored_roots: BTreeMap::new(),
        first_leaf_mismatch: None,
        in_full: 0,
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
            let tag = hash_at(inputs.tags, i).unwrap_or(NO_VENDOR);
            let (leaf, kind) = line_leaf(line, &tag);
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
            let problem = line_problem(line, &kind, index, &tag, inputs.vendor, &mut scan.in_full);
            scan.first_problem = problem.map(|kind| Problem::Entry { index, kind });
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
