//! Deletions (crypto-shred) and their certificates, and `delete_after` times.

use serde::{Deserialize, Serialize};
use types::HostName;
use types::VendorName;

/// `POST /v1/models/{vendor}/{model}/delete` and `POST /v1/vendors/{vendor}/delete` (202):
/// the deletion started, or, under the two-person rule, filed as pending
/// ([`DeletionStarted::PENDING_APPROVAL`], with a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletionStarted {
    /// The deletion's id; under the two-person rule, the pending request's.
    pub deletion: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DeletionStarted {
    /// The `state` of a deletion waiting for a second admin.
    pub const PENDING_APPROVAL: &'static str = "pending-approval";

    pub fn is_pending_approval(&self) -> bool {
        self.state == Self::PENDING_APPROVAL
    }
}

/// `GET /v1/deletions/{id}`: a deletion's progress, and its certificate once issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletionStatus {
    pub deletion: String,
    pub vendor: VendorName,
    pub state: String,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    /// The signed certificate, a document of its own format (the `deletion` crate's,
    /// checked by `custody verify-certificate`): carried as it is, never read here.
    pub certificate: Option<serde_json::Value>,
    /// A failing step: how often it failed, why, and when it is tried again (Unix seconds).
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub retry_at: Option<i64>,
    /// Each host that held a copy of a deleted model, and its wipe as it stands now: the
    /// certificate stays as issued, confirmations that came later show here (`late`).
    #[serde(default)]
    pub wipes: Vec<HostWipe>,
}

/// One host enrollment's copies of one deleted model, and whether it confirmed their wipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostWipe {
    pub host: HostName,
    /// The enrollment: a name enrolled again later is another host.
    pub host_id: String,
    /// `vendor/model`.
    pub model: String,
    /// Files of the model the server sent to this host.
    pub files: u64,
    /// When the host confirmed the wipe (Unix seconds), if it has.
    pub confirmed_at: Option<i64>,
    /// The confirmation came after the certificate was issued (so the certificate does not
    /// show it; the audit log's `wipe.confirm` entry does).
    pub late: bool,
}

/// `GET /v1/service-key`: the public key deletion certificates are signed with (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceKey {
    pub service_key: String,
}

/// `PUT /v1/models/{vendor}/{model}/delete-after`: Unix seconds; `null` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAfter {
    pub at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeleteAfterSet {
    pub model: String,
    pub delete_after: Option<i64>,
}

/// `GET /v1/vendors/{vendor}/deletions`: a vendor's deletions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletionList {
    pub vendor: VendorName,
    pub deletions: Vec<DeletionSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletionSummary {
    pub deletion: String,
    /// The model (`VENDOR/MODEL`), or `None` for every model of the vendor.
    pub model: Option<String>,
    pub state: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// When the certificate was issued.
    pub certified_at: Option<i64>,
    /// Why the last attempt at the current step failed, while it is retried.
    pub last_error: Option<String>,
}
