//! Witnesses, pure: C2SP tlog-cosignature (`cosignature/v1`, Ed25519) and the checks of C2SP
//! tlog-witness's `add-checkpoint`. No IO, no clock, no HTTP: the server crate serves and
//! persists, and passes the time in.
//!
//! A witness keeps, per log, the last checkpoint it cosigned. It cosigns a new one only when
//! the log's key signed it and a consistency proof shows it extends the one kept; so a log
//! that was rolled back (a restored database) or forked (two histories shown to two
//! auditors) cannot get the same witness to cosign both. A cosignature is a signed-note
//! signature line over
//!
//! ```text
//! cosignature/v1
//! time <POSIX seconds>
//! <the checkpoint body: origin, size, root hash>
//! ```
//!
//! whose key id is SHA-256(name || 0x0A || 0x04 || public key)[:4] and whose signature bytes
//! are the timestamp (u64, big-endian) followed by the Ed25519 signature. The verifier key of
//! a witness is the signed-note vkey with signature type 0x04: `name+keyid+base64(0x04||key)`.
//!
//! Requests are parsed strictly ([`parse_add_checkpoint`]); the refusals carry what the spec
//! asks the witness to answer ([`Refusal`]), the server maps them to statuses.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::sign::{SigningKey, VerifyingKey};

use crate::checkpoint::{
    self, Checkpoint, CheckpointError, SIG_PREFIX, VerifierKey, parse_sig_line, split_note,
};
use crate::merkle::{self, Hash};

/// The signature type byte of Ed25519 `cosignature/v1` keys. Frozen (C2SP).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The first line of every signed message. Frozen (C2SP).
pub const COSIGNATURE_HEADER: &str = "cosignature/v1";
/// A client sends at most this many consistency proof lines (C2SP tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;
/// The largest `add-checkpoint` body a witness reads: a proof of 63 hashes and a note with
/// 100 signature lines fit well within it.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The Content-Type of a 409 answer's body (C2SP tlog-witness).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// First line of a witness's state file; the `v1` is its version.
const STATE_HEADER: &str = "custody-witness-state v1";

/// A cosigner's public key and name. Two cosigners must never share a key: the Ed25519
/// message does not commit to the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignerKey {
    pub name: String,
    pub key: VerifyingKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignerKeyError {
    #[error("invalid witness name: no spaces, '+' or control characters")]
    InvalidName,
    #[error("malformed witness key: {0}")]
    Malformed(&'static str),
}

impl CosignerKey {
    pub fn new(name: &str, key: VerifyingKey) -> Result<CosignerKey, CosignerKeyError> {
        if !checkpoint::valid_key_name(name) {
            return Err(CosignerKeyError::InvalidName);
        }
        Ok(CosignerKey {
            name: name.to_owned(),
            key,
        })
    }

    /// SHA-256(name || 0x0A || 0x04 || public key)[:4].
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = crypto::hash::Sha256::new();
        h.update(self.name.as_bytes());
        h.update(&[0x0A, ALG_COSIGNATURE_V1]);
        h.update(self.key.as_bytes());
        let d = h.finish();
        [d[0], d[1], d[2], d[3]]
    }

    /// Parses `name+keyid+base64(0x04 || key)`; the key id must match.
    pub fn parse(s: &str) -> Result<CosignerKey, CosignerKeyError> {
        let bad = CosignerKeyError::Malformed;
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+keyid+key"));
        };
        if id_hex.len() != 8
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("key id is not 8 lowercase hex digits"));
        }
        let raw = B64
            .decode(key_b64)
            .map_err(|_| bad("key is not canonical base64"))?;
        match raw.split_first() {
            Some((&ALG_COSIGNATURE_V1, public)) => {
                let key = VerifyingKey::from_slice(public)
                    .map_err(|_| bad("ed25519 key is not 32 bytes"))?;
                let ck = CosignerKey::new(name, key)?;
                if hex::encode(ck.key_id()) != id_hex {
                    return Err(bad("key id does not match name and key"));
                }
                Ok(ck)
            }
            Some((0x01, _)) => Err(bad(
                "this is a log's signing key (type 0x01), not a witness's cosignature key (type 0x04)",
            )),
            Some(_) => Err(bad("not an ed25519 cosignature/v1 key (type 0x04)")),
            None => Err(bad("key is empty")),
        }
    }
}

impl fmt::Display for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_COSIGNATURE_V1);
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(raw)
        )
    }
}

/// The message a `cosignature/v1` signs: the header, the time line, and the checkpoint body
/// (`text`, ending in a newline, without signature lines).
pub fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}").into_bytes()
}

/// Cosigns `checkpoint` at `timestamp` (POSIX seconds, 1 to 2^63 - 1): one signature line,
/// ending in a newline, as an `add-checkpoint` answer carries it.
pub fn cosign(
    checkpoint: &Checkpoint,
    name: &str,
    key: &SigningKey,
    timestamp: u64,
) -> Result<String, CosignerKeyError> {
    let cosigner = CosignerKey::new(name, key.public_key())?;
    if timestamp == 0 || timestamp > i64::MAX as u64 {
        return Err(CosignerKeyError::Malformed(
            "a cosignature's time must be between 1 and 2^63 - 1",
        ));
    }
    let signature = key.sign(&cosigned_message(&checkpoint.body(), timestamp));
    let mut blob = Vec::with_capacity(4 + 8 + signature.len());
    blob.extend_from_slice(&cosigner.key_id());
    blob.extend_from_slice(&timestamp.to_be_bytes());
    blob.extend_from_slice(&signature);
    Ok(format!("{SIG_PREFIX}{name} {}\n", B64.encode(blob)))
}

/// Why one witness's cosignature did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    #[error("no cosignature")]
    Missing,
    #[error("a signature line under its name has another key id (another key of that name)")]
    WrongKeyId,
    #[error("malformed cosignature")]
    Malformed,
    #[error("the cosignature's time is 0 or beyond 2^63 - 1")]
    BadTime,
    #[error("the cosignature does not verify")]
    BadSignature,
    #[error("two cosignatures by the same key")]
    Duplicate,
}

/// Checks `witness`'s cosignature among `lines` (a note's signature lines) over `text` (the
/// note's body); returns its time.
fn cosignature_of(
    text: &str,
    lines: &[&str],
    witness: &CosignerKey,
) -> Result<u64, CosignatureError> {
    let want = witness.key_id();
    let mut found: Option<Vec<u8>> = None;
    let mut name_seen = false;
    for line in lines {
        let Ok((name, id, blob)) = parse_sig_line(line) else {
            continue;
        };
        if name != witness.name {
            continue;
        }
        name_seen = true;
        if id == want {
            if found.is_some() {
                return Err(CosignatureError::Duplicate);
            }
            found = Some(blob);
        }
    }
    let blob = match (found, name_seen) {
        (Some(blob), _) => blob,
        (None, true) => return Err(CosignatureError::WrongKeyId),
        (None, false) => return Err(CosignatureError::Missing),
    };
    if blob.len() != 8 + crypto::sign::SIGNATURE_LEN {
        return Err(CosignatureError::Malformed);
    }
    let (time, signature) = blob.split_at(8);
    let mut be = [0u8; 8];
    be.copy_from_slice(time);
    let timestamp = u64::from_be_bytes(be);
    if timestamp == 0 || timestamp > i64::MAX as u64 {
        return Err(CosignatureError::BadTime);
    }
    if !witness
        .key
        .verify(&cosigned_message(text, timestamp), signature)
    {
        return Err(CosignatureError::BadSignature);
    }
    Ok(timestamp)
}

/// Whether a checkpoint carries enough valid cosignatures, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// The checkpoint the cosignatures are for.
    pub checkpoint: Checkpoint,
    pub required: usize,
    /// Witnesses whose cosignature verified, with its time.
    pub valid: Vec<(String, u64)>,
    /// Witnesses without a cosignature on this checkpoint.
    pub missing: Vec<String>,
    /// Witnesses whose cosignature is there but does not count, and why.
    pub invalid: Vec<(String, CosignatureError)>,
}

impl Quorum {
    pub fn met(&self) -> bool {
        self.valid.len() >= self.required
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint of size {}: {} of {} required witness cosignatures",
            self.checkpoint.size,
            self.valid.len(),
            self.required
        )?;
        if !self.valid.is_empty() {
            let names: Vec<&str> = self.valid.iter().map(|(n, _)| n.as_str()).collect();
            write!(f, "; valid: {}", names.join(", "))?;
        }
        if !self.missing.is_empty() {
            write!(f, "; missing: {}", self.missing.join(", "))?;
        }
        for (name, why) in &self.invalid {
            write!(f, "; invalid: {name} ({why})")?;
        }
        Ok(())
    }
}

/// Counts the valid cosignatures by `witnesses` on `note` (a signed checkpoint note; its log
/// signature is the caller's to check). A key given twice counts once, and so does one key
/// under two names (its cosignature cannot tell them apart).
pub fn check_quorum(
    note: &str,
    witnesses: &[CosignerKey],
    required: usize,
) -> Result<Quorum, CheckpointError> {
    let (text, lines) = split_note(note)?;
    let checkpoint = Checkpoint::parse_body(text)?;
    let mut quorum = Quorum {
        checkpoint,
        required,
        valid: Vec::new(),
        missing: Vec::new(),
        invalid: Vec::new(),
    };
    let mut counted: BTreeSet<[u8; 32]> = BTreeSet::new();
    for witness in witnesses {
        match cosignature_of(text, &lines, witness) {
            Ok(time) => {
                if counted.insert(witness.key.to_bytes()) {
                    quorum.valid.push((witness.name.clone(), time));
                }
            }
            Err(CosignatureError::Missing) => quorum.missing.push(witness.name.clone()),
            Err(e) => quorum.invalid.push((witness.name.clone(), e)),
        }
    }
    Ok(quorum)
}

/// Appends cosignature lines to a signed note, skipping lines it already carries.
pub fn with_cosignatures<'a>(note: &str, lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = note.to_owned();
    for line in lines {
        let line = line.trim_end_matches('\n');
        if line.is_empty() || out.lines().any(|l| l == line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// An `add-checkpoint` request body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old N`, one base64 hash per line, a blank line, the note.
    pub fn encode(&self) -> String {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&B64.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }
}

/// Why a witness refuses a request, as C2SP tlog-witness names it (the server maps each to
/// its status: 400, 404, 403, 409, 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed request, or an old size beyond the checkpoint's (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The checkpoint is for a log this witness does not know (404).
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// No valid signature by the log's key (403).
    #[error("not signed by the log's key: {0}")]
    NotSigned(CheckpointError),
    /// The old size is not the size this witness last cosigned, which it answers (409).
    #[error("the old size is not {size}, the size this witness cosigned last")]
    Conflict { size: u64 },
    /// The proof does not show the checkpoint extends the last one cosigned (422).
    #[error("not consistent: {0}")]
    Inconsistent(&'static str),
}

/// Parses an `add-checkpoint` body strictly.
pub fn parse_add_checkpoint(body: &[u8]) -> Result<AddCheckpoint, Refusal> {
    let bad = |why: &str| Refusal::BadRequest(why.to_owned());
    if body.len() > MAX_REQUEST_BYTES {
        return Err(bad("the request body is too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("the request body is not UTF-8"))?;
    let (head, note) = text
        .split_once("\n\n")
        .ok_or_else(|| bad("no blank line before the checkpoint"))?;
    let mut lines = head.split('\n');
    let old_size = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .and_then(checkpoint::parse_canonical_decimal)
        .ok_or_else(|| bad("the first line must be \"old <size>\" in canonical decimal"))?;
    let mut proof = Vec::new();
    for line in lines {
        if proof.len() == MAX_PROOF_LINES {
            return Err(bad("more than 63 consistency proof lines"));
        }
        let hash = B64
            .decode(line)
            .ok()
            .and_then(|v| Hash::try_from(v.as_slice()).ok())
            .ok_or_else(|| bad("a proof line is not a base64 SHA-256 hash"))?;
        proof.push(hash);
    }
    if note.is_empty() {
        return Err(bad("no checkpoint"));
    }
    Ok(AddCheckpoint {
        old_size,
        proof,
        note: note.to_owned(),
    })
}

/// What a witness decides on `request` for the log `log` (its origin is the key's name), given
/// the checkpoint it cosigned last (`None`: never). The accepted checkpoint, to persist and
/// then cosign.
pub fn add_checkpoint(
    log: &VerifierKey,
    last: Option<&Checkpoint>,
    request: &AddCheckpoint,
) -> Result<Checkpoint, Refusal> {
    // The origin is read before the signature is checked only to answer 404 for another log.
    let (text, _) =
        split_note(&request.note).map_err(|e| Refusal::BadRequest(format!("checkpoint: {e}")))?;
    let claimed = Checkpoint::parse_body(text)
        .map_err(|e| Refusal::BadRequest(format!("checkpoint: {e}")))?;
    if claimed.origin != log.name {
        return Err(Refusal::UnknownLog(claimed.origin));
    }
    let checkpoint = match checkpoint::open(&request.note, &log.name, &log.key) {
        Ok(cp) => cp,
        Err(
            e @ (CheckpointError::MalformedNote(_)
            | CheckpointError::MalformedBody(_)
            | CheckpointError::MalformedSignature),
        ) => return Err(Refusal::BadRequest(format!("checkpoint: {e}"))),
        Err(e) => return Err(Refusal::NotSigned(e)),
    };
    if request.old_size > checkpoint.size {
        return Err(Refusal::BadRequest(
            "the old size is larger than the checkpoint's".into(),
        ));
    }
    let last_size = last.map_or(0, |cp| cp.size);
    if request.old_size != last_size {
        return Err(Refusal::Conflict { size: last_size });
    }
    if checkpoint.size == 0 && checkpoint.root != merkle::empty_root() {
        return Err(Refusal::Inconsistent(
            "a checkpoint of size 0 must have the empty tree's root",
        ));
    }
    let Some(last) = last.filter(|cp| cp.size > 0) else {
        if !request.proof.is_empty() {
            return Err(Refusal::Inconsistent("the proof must be empty from size 0"));
        }
        return Ok(checkpoint);
    };
    if checkpoint.size == last.size && checkpoint.root != last.root {
        return Err(Refusal::Inconsistent(
            "another root for the size this witness cosigned: the log forked",
        ));
    }
    if !merkle::verify_consistency(
        last.size,
        checkpoint.size,
        &last.root,
        &checkpoint.root,
        &request.proof,
    ) {
        return Err(Refusal::Inconsistent(
            "the consistency proof from the checkpoint this witness cosigned does not verify",
        ));
    }
    Ok(checkpoint)
}

/// Parses a witness's answer to `add-checkpoint`: signature lines only. Whether one of them
/// is a valid cosignature is [`check_quorum`]'s to say, on the note they are appended to.
pub fn parse_cosignature_lines(body: &str) -> Result<Vec<String>, CosignatureError> {
    let body = body.strip_suffix('\n').ok_or(CosignatureError::Malformed)?;
    let mut lines = Vec::new();
    for line in body.split('\n') {
        parse_sig_line(line).map_err(|_| CosignatureError::Malformed)?;
        lines.push(format!("{line}\n"));
    }
    if lines.is_empty() || lines.len() > MAX_PROOF_LINES {
        return Err(CosignatureError::Malformed);
    }
    Ok(lines)
}

/// What a witness keeps for its log: the last checkpoint it cosigned, as the log signed it,
/// and its own cosignature line on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessState {
    pub checkpoint: Checkpoint,
    pub note: String,
    pub cosignature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a witness state file of a known version")]
    UnknownFormat,
    #[error("the state file is damaged: {0}")]
    Damaged(&'static str),
    #[error("the kept checkpoint does not verify under the log key: {0}")]
    LogKey(CheckpointError),
}

impl WitnessState {
    /// The state file: the header line, the cosignature line, then the note.
    pub fn encode(&self) -> String {
        format!(
            "{STATE_HEADER}\n{}\n{}",
            self.cosignature.trim_end_matches('\n'),
            self.note
        )
    }

    /// Reads a state file; its note must still verify under `log`.
    pub fn decode(text: &str, log: &VerifierKey) -> Result<WitnessState, StateError> {
        let rest = text
            .strip_prefix(STATE_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(StateError::UnknownFormat)?;
        let (cosignature, note) = rest
            .split_once('\n')
            .ok_or(StateError::Damaged("no cosignature line"))?;
        parse_sig_line(cosignature).map_err(|_| StateError::Damaged("bad cosignature line"))?;
        let checkpoint = checkpoint::open(note, &log.name, &log.key).map_err(StateError::LogKey)?;
        if checkpoint.origin != log.name {
            return Err(StateError::Damaged(
                "the kept checkpoint is for another log",
            ));
        }
        Ok(WitnessState {
            checkpoint,
            note: note.to_owned(),
            cosignature: format!("{cosignature}\n"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const LOG: &str = "custody.example/audit";

    fn key() -> SigningKey {
        SigningKey::generate().unwrap().0
    }

    fn tree(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    /// The root of the first `n` leaves and the note signing it.
    fn signed(log: &SigningKey, n: u64) -> (Checkpoint, String) {
        let cp = Checkpoint {
            origin: LOG.into(),
            size: n,
            root: merkle::root_from_leaves(&tree(n)),
        };
        let note = checkpoint::sign(&cp, LOG, log).unwrap();
        (cp, note)
    }

    fn proof(old: u64, new: u64) -> Vec<Hash> {
        let mut store = merkle::MemoryTreeStore::new();
        let mut size = 0;
        for leaf in tree(new) {
            size = merkle::append(&mut store, size, leaf).unwrap();
        }
        merkle::consistency_proof(&store, old, new).unwrap()
    }

    fn request(old: u64, proof: Vec<Hash>, note: &str) -> AddCheckpoint {
        AddCheckpoint {
            old_size: old,
            proof,
            note: note.to_owned(),
        }
    }

    #[test]
    fn a_growing_log_is_cosigned_and_a_rollback_or_fork_is_refused() {
        let log = key();
        let vk = VerifierKey::new(LOG, log.public_key()).unwrap();
        let (cp5, note5) = signed(&log, 5);
        // First contact: old 0, no proof.
        let got = add_checkpoint(&vk, None, &request(0, vec![], &note5)).unwrap();
        assert_eq!(got, cp5);
        // Growth with a proof from 5.
        let (cp9, note9) = signed(&log, 9);
        assert_eq!(
            add_checkpoint(&vk, Some(&cp5), &request(5, proof(5, 9), &note9)).unwrap(),
            cp9
        );
        // The same checkpoint again is fine (old size = size, equal roots, empty proof).
        assert_eq!(
            add_checkpoint(&vk, Some(&cp9), &request(9, vec![], &note9)).unwrap(),
            cp9
        );
        // A rolled-back log offers its old size: 409 with the size kept.
        let (_, note7) = signed(&log, 7);
        assert_eq!(
            add_checkpoint(&vk, Some(&cp9), &request(5, proof(5, 7), &note7)),
            Err(Refusal::Conflict { size: 9 })
        );
        // Claiming the witness's size with a smaller checkpoint is a bad request.
        assert!(matches!(
            add_checkpoint(&vk, Some(&cp9), &request(9, vec![], &note7)),
            Err(Refusal::BadRequest(_))
        ));
        // A fork: another history of 12 entries, with an honest proof of its own tree.
        let mut forked = tree(12);
        forked[3] = merkle::leaf_hash(b"rewritten");
        let fork = Checkpoint {
            origin: LOG.into(),
            size: 12,
            root: merkle::root_from_leaves(&forked),
        };
        let fork_note = checkpoint::sign(&fork, LOG, &log).unwrap();
        assert!(matches!(
            add_checkpoint(&vk, Some(&cp9), &request(9, proof(9, 12), &fork_note)),
            Err(Refusal::Inconsistent(_))
        ));
        // Same size, other root.
        let other9 = Checkpoint {
            root: merkle::leaf_hash(b"x"),
            ..cp9.clone()
        };
        let other_note = checkpoint::sign(&other9, LOG, &log).unwrap();
        assert!(matches!(
            add_checkpoint(&vk, Some(&cp9), &request(9, vec![], &other_note)),
            Err(Refusal::Inconsistent(_))
        ));
        // A proof from 0 must be empty.
        assert!(matches!(
            add_checkpoint(&vk, None, &request(0, proof(5, 9), &note9)),
            Err(Refusal::Inconsistent(_))
        ));
    }

    #[test]
    fn checkpoints_not_signed_by_the_log_or_of_another_log_are_refused() {
        let log = key();
        let vk = VerifierKey::new(LOG, log.public_key()).unwrap();
        let (_, note) = signed(&key(), 3);
        assert!(matches!(
            add_checkpoint(&vk, None, &request(0, vec![], &note)),
            Err(Refusal::NotSigned(CheckpointError::WrongKeyId(_)))
        ));
        let other = Checkpoint {
            origin: "elsewhere/log".into(),
            size: 1,
            root: merkle::leaf_hash(b"a"),
        };
        let note = checkpoint::sign(&other, "elsewhere/log", &log).unwrap();
        assert_eq!(
            add_checkpoint(&vk, None, &request(0, vec![], &note)),
            Err(Refusal::UnknownLog("elsewhere/log".into()))
        );
        // An edited size: the signature fails.
        let (_, note) = signed(&log, 3);
        let edited = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            add_checkpoint(&vk, None, &request(0, vec![], &edited)),
            Err(Refusal::NotSigned(CheckpointError::BadSignature))
        ));
        // Size 0 must carry the empty root.
        let zero = Checkpoint {
            origin: LOG.into(),
            size: 0,
            root: merkle::leaf_hash(b"not empty"),
        };
        let note = checkpoint::sign(&zero, LOG, &log).unwrap();
        assert!(matches!(
            add_checkpoint(&vk, None, &request(0, vec![], &note)),
            Err(Refusal::Inconsistent(_))
        ));
    }

    #[test]
    fn requests_parse_strictly() {
        let log = key();
        let (_, note) = signed(&log, 9);
        let good = request(5, proof(5, 9), &note);
        assert_eq!(
            parse_add_checkpoint(good.encode().as_bytes()).unwrap(),
            good
        );
        let empty_proof = request(0, vec![], &note);
        assert_eq!(
            parse_add_checkpoint(empty_proof.encode().as_bytes()).unwrap(),
            empty_proof
        );
        let hash = B64.encode([7u8; 32]);
        for bad in [
            format!("old 05\n\n{note}"),
            format!("old -1\n\n{note}"),
            format!("old  5\n\n{note}"),
            format!("Old 5\n\n{note}"),
            format!("old 5\n{}\n\n{note}", &hash[1..]),
            format!("old 5\n{hash} \n\n{note}"),
            format!("old 5\n{hash}\n"),
            "old 5\n\n".to_owned(),
            format!("old 5{note}"),
            format!("old 5\n{}\n\n{note}", vec![hash.as_str(); 64].join("\n")),
        ] {
            assert!(
                matches!(
                    parse_add_checkpoint(bad.as_bytes()),
                    Err(Refusal::BadRequest(_))
                ),
                "{bad:?}"
            );
        }
        let max = format!("old 5\n{}\n\n{note}", vec![hash.as_str(); 63].join("\n"));
        assert_eq!(
            parse_add_checkpoint(max.as_bytes()).unwrap().proof.len(),
            63
        );
        assert!(parse_add_checkpoint(&[0xff, b'\n', b'\n']).is_err());
        assert!(parse_add_checkpoint(&vec![b'a'; MAX_REQUEST_BYTES + 1]).is_err());
    }

    #[test]
    fn cosignatures_verify_and_count_toward_a_quorum() {
        let log = key();
        let (w1, w2, w3) = (key(), key(), key());
        let k1 = CosignerKey::new("w1.example", w1.public_key()).unwrap();
        let k2 = CosignerKey::new("w2.example", w2.public_key()).unwrap();
        let k3 = CosignerKey::new("w3.example", w3.public_key()).unwrap();
        let (cp, note) = signed(&log, 4);
        let line1 = cosign(&cp, "w1.example", &w1, 1_700_000_000).unwrap();
        let line2 = cosign(&cp, "w2.example", &w2, 1_700_000_001).unwrap();
        let both = with_cosignatures(&note, [line1.as_str(), line2.as_str(), line1.as_str()]);
        assert_eq!(both.matches("w1.example").count(), 1, "no line twice");
        // The log's signature still opens with the cosignatures appended.
        assert_eq!(checkpoint::open(&both, LOG, &log.public_key()).unwrap(), cp);
        let q = check_quorum(&both, &[k1.clone(), k2.clone(), k3.clone()], 2).unwrap();
        assert!(q.met(), "{q}");
        assert_eq!(
            q.valid,
            vec![
                ("w1.example".into(), 1_700_000_000),
                ("w2.example".into(), 1_700_000_001)
            ]
        );
        assert_eq!(q.missing, vec!["w3.example".to_owned()]);
        assert!(
            !check_quorum(&both, &[k1.clone(), k2.clone(), k3.clone()], 3)
                .unwrap()
                .met()
        );
        // The same key twice, or under two names, counts once.
        let alias = CosignerKey::new("alias.example", w1.public_key()).unwrap();
        let alias_line = cosign(&cp, "alias.example", &w1, 1_700_000_002).unwrap();
        let aliased = with_cosignatures(&note, [line1.as_str(), alias_line.as_str()]);
        assert!(
            !check_quorum(&aliased, &[k1.clone(), k1.clone(), alias], 2)
                .unwrap()
                .met()
        );
        // A cosignature on another checkpoint (moved onto this note) does not verify.
        let (other, _) = signed(&log, 5);
        let moved = cosign(&other, "w1.example", &w1, 1_700_000_000).unwrap();
        let q = check_quorum(
            &with_cosignatures(&note, [moved.as_str()]),
            std::slice::from_ref(&k1),
            1,
        )
        .unwrap();
        assert_eq!(
            q.invalid,
            vec![("w1.example".into(), CosignatureError::BadSignature)]
        );
        // An edited time breaks it too.
        let mut blob = B64
            .decode(line1.trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        blob[11] ^= 1;
        let edited = format!("{SIG_PREFIX}w1.example {}\n", B64.encode(&blob));
        let q = check_quorum(
            &with_cosignatures(&note, [edited.as_str()]),
            std::slice::from_ref(&k1),
            1,
        )
        .unwrap();
        assert_eq!(
            q.invalid,
            vec![("w1.example".into(), CosignatureError::BadSignature)]
        );
        // A log signature (type 0x01 key id) under the witness's name is not a cosignature.
        let as_note = checkpoint::sign(&cp, "w1.example", &w1).unwrap();
        let log_style = as_note.lines().last().unwrap();
        let q = check_quorum(&with_cosignatures(&note, [log_style]), &[k1], 1).unwrap();
        assert_eq!(
            q.invalid,
            vec![("w1.example".into(), CosignatureError::WrongKeyId)]
        );
        // Time 0 is never signed.
        assert!(cosign(&cp, "w1.example", &w1, 0).is_err());
    }

    #[test]
    fn cosigner_keys_round_trip_and_are_checked() {
        let w = key();
        let k = CosignerKey::new("witness.example/w1", w.public_key()).unwrap();
        let text = k.to_string();
        assert_eq!(CosignerKey::parse(&text).unwrap(), k);
        // A log's vkey (type 0x01) is refused, with a message saying so.
        let log_vkey = VerifierKey::new("witness.example/w1", w.public_key())
            .unwrap()
            .to_string();
        let err = CosignerKey::parse(&log_vkey).unwrap_err().to_string();
        assert!(
            err.contains("key id does not match") || err.contains("log's signing key"),
            "{err}"
        );
        let parts: Vec<&str> = text.splitn(3, '+').collect();
        assert!(CosignerKey::parse(&format!("{}+00000000+{}", parts[0], parts[2])).is_err());
        assert!(CosignerKey::parse(&format!("other+{}+{}", parts[1], parts[2])).is_err());
        assert!(CosignerKey::parse(&format!("{}+{}", parts[0], parts[1])).is_err());
        assert!(CosignerKey::new("has space", w.public_key()).is_err());
    }

    #[test]
    fn the_state_file_round_trips_and_needs_the_log_key() {
        let log = key();
        let vk = VerifierKey::new(LOG, log.public_key()).unwrap();
        let (cp, note) = signed(&log, 6);
        let w = key();
        let cosignature = cosign(&cp, "w", &w, 1_700_000_000).unwrap();
        let state = WitnessState {
            checkpoint: cp,
            note,
            cosignature,
        };
        let text = state.encode();
        assert_eq!(WitnessState::decode(&text, &vk).unwrap(), state);
        let other = VerifierKey::new(LOG, key().public_key()).unwrap();
        assert!(matches!(
            WitnessState::decode(&text, &other),
            Err(StateError::LogKey(_))
        ));
        assert_eq!(
            WitnessState::decode(&text.replacen("v1", "v2", 1), &vk),
            Err(StateError::UnknownFormat)
        );
        assert!(WitnessState::decode(&text[..text.len() - 3], &vk).is_err());
    }
}
