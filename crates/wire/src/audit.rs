//! The audit log for auditors (`/v1/audit/...`). Hashes are standard base64, as in
//! checkpoints.
//!
//! Two routes are not JSON: `GET /v1/audit/entries?from=A&to=B` answers NDJSON, line i
//! exactly the stored bytes of entry `A + i` (the entry format is the `audit` crate's), with
//! the range served in [`ENTRIES_FROM_HEADER`] and [`ENTRIES_TO_HEADER`];
//! `GET /v1/audit/leaves?from=A&to=B` answers the stored leaf hashes, 32 bytes each; and
//! `GET /v1/audit/tags?from=A&to=B` the leaves' vendor tags, 32 bytes each.

use serde::{Deserialize, Serialize};

/// Header of an entries response: the first entry's sequence number.
pub const ENTRIES_FROM_HEADER: &str = "x-custody-audit-from";

/// `?vendor=NAME` on any audit route: the log as that vendor's admins and auditors may see it.
/// Entries of other vendors (and the service's own) then come as a line standing for the
/// entry by hash (`audit::bundle::vendor_line`), and the reads are recorded as the vendor's.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct VendorScopeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

/// `GET /v1/audit/vendor-key?vendor=NAME`: the vendor's audit tag key (hex), which tells its
/// leaves from others' (`audit::leaf`), and the entry that published its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorAuditKey {
    pub vendor: String,
    pub tag_key: String,
    pub published_at: u64,
}
/// Header of an entries response: one past the last entry's sequence number.
pub const ENTRIES_TO_HEADER: &str = "x-custody-audit-to";

/// `GET /v1/audit/key`: the log's verifier key (C2SP vkey) and origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditKey {
    pub origin: String,
    pub key: String,
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, the log's size now, why the
/// last signing attempt was refused, if it was, and the configured witnesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: String,
    pub note: String,
    pub new: bool,
}

/// `GET /v1/audit/checkpoints?from=A&to=B`: signed checkpoints with A <= size <= B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointList {
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub size: u64,
    pub root: String,
    pub note: String,
}

/// The query of the ranged routes (`checkpoints`, `entries`, `leaves`).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The query of `GET /v1/audit/proof/inclusion`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    pub index: u64,
    /// Default: the latest checkpoint's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `GET /v1/audit/proof/inclusion`: entry `index`'s leaf hash and its inclusion proof in the
/// tree of `size` entries, with the signed checkpoint of that size when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
    pub checkpoint: Option<String>,
}

/// The query of `GET /v1/audit/proof/consistency`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub old: u64,
    /// Default: the latest checkpoint's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<u64>,
}

/// `GET /v1/audit/proof/consistency`: the proof from size `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    pub old: u64,
    pub new: u64,
    pub proof: Vec<String>,
}

/// The query of `GET /v1/audit/edge`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct EdgeQuery {
    pub size: u64,
}

/// `GET /v1/audit/edge?size=M`: the right edge of the tree of M entries, what an export
/// since a checkpoint of size M continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreeEdge {
    pub size: u64,
    pub edge: Vec<String>,
}

/// `GET /v1/vendors/{vendor}/activity`: what happened to a vendor's models, read from the
/// audit log (its admins and auditors).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// Only this model's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Start at this log index (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// At most this many events (default and maximum 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Long polling: when nothing matches yet, wait up to this many seconds (at most 25) for
    /// the first event (`custody watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Activity {
    pub vendor: String,
    pub events: Vec<ActivityEvent>,
    /// The log index to continue from, when there may be more.
    pub next: Option<u64>,
    /// The log index to ask from next time to see only what is new (`custody watch`).
    pub resume_from: u64,
}

/// One audit entry about the vendor, as a person reads it; `index` finds it in an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActivityEvent {
    pub index: u64,
    pub time: String,
    pub actor: String,
    pub host: Option<String>,
    pub action: String,
    pub resource: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// The policies behind the decision, when there was one.
    pub policy: Option<String>,
    pub detail: Option<String>,
    /// Files touched (fetched, uploaded) and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// `PUT /v1/vendors/{vendor}/webhook`: where the vendor's events go (its admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// `https://…`, on a host the operator allows.
    pub url: String,
    /// Trust anchors for the receiver's certificate (PEM); none: the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// A vendor's webhook. `secret` (hex) is given once, when the webhook is set: each delivery
/// carries `X-Custody-Signature: v1=<hex HMAC-SHA256(secret, timestamp "." body)>` and
/// `X-Custody-Timestamp: <Unix seconds>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookInfo {
    pub vendor: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Events up to this log index (exclusive) were delivered.
    pub delivered_through: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The body of a webhook delivery: the vendor's events, as the activity view shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    pub vendor: String,
    pub events: Vec<ActivityEvent>,
}
