//! The audit log for auditors (`/v1/audit/...`). Hashes are standard base64, as in
//! checkpoints.
//!
//! Two routes are not JSON: `GET /v1/audit/entries?from=A&to=B` answers NDJSON, line i
//! exactly the stored bytes of entry `A + i` (the entry format is the `audit` crate's), with
//! the range served in [`ENTRIES_FROM_HEADER`] and [`ENTRIES_TO_HEADER`]; and
//! `GET /v1/audit/leaves?from=A&to=B` answers the stored leaf hashes, 32 bytes each.

use serde::{Deserialize, Serialize};

/// Header of an entries response: the first entry's sequence number.
pub const ENTRIES_FROM_HEADER: &str = "x-custody-audit-from";
/// Header of an entries response: one past the last entry's sequence number.
pub const ENTRIES_TO_HEADER: &str = "x-custody-audit-to";

/// `GET /v1/audit/key`: the log's verifier key (C2SP vkey) and origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    pub origin: String,
    pub key: String,
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, the log's size now, why the
/// last signing attempt was refused, if it was, and the configured witnesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestCheckpoint {
    pub size: u64,
    pub root: String,
    /// The signed note (C2SP), with the witnesses' cosignature lines kept for it appended.
    pub note: String,
    pub log_size: u64,
    pub refusal: Option<String>,
    /// Omitted when no witness is configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<WitnessStatus>,
}

/// One configured witness of the audit log, as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessStatus {
    pub name: String,
    /// Its verifier key (`name+keyid+base64(0x04 || key)`).
    pub key: String,
    pub url: String,
    /// The tree size it cosigned last (0: none yet).
    pub cosigned_size: u64,
    /// Why the last submission failed, until one succeeds.
    pub last_error: Option<String>,
}

/// `POST /v1/audit/checkpoint`: a checkpoint of the log as it is now (`new`), or the last one
/// when nothing was added; the note carries the cosignatures witnesses gave it in one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: String,
    pub note: String,
    pub new: bool,
}

/// `GET /v1/audit/checkpoints?from=A&to=B`: signed checkpoints with A <= size <= B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointList {
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub size: u64,
    pub root: String,
    pub note: String,
}

/// The query of the ranged routes (`checkpoints`, `entries`, `leaves`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The query of `GET /v1/audit/proof/inclusion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionQuery {
    pub index: u64,
    /// Default: the latest checkpoint's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `GET /v1/audit/proof/inclusion`: entry `index`'s leaf hash and its inclusion proof in the
/// tree of `size` entries, with the signed checkpoint of that size when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
    pub checkpoint: Option<String>,
}

/// The query of `GET /v1/audit/proof/consistency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyQuery {
    pub old: u64,
    /// Default: the latest checkpoint's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<u64>,
}

/// `GET /v1/audit/proof/consistency`: the proof from size `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old: u64,
    pub new: u64,
    pub proof: Vec<String>,
}

/// The query of `GET /v1/audit/edge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeQuery {
    pub size: u64,
}

/// `GET /v1/audit/edge?size=M`: the right edge of the tree of M entries, what an export
/// since a checkpoint of size M continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEdge {
    pub size: u64,
    pub edge: Vec<String>,
}
