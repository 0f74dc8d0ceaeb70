//! Who may do what: exclusive hosts (`/v1/hosts`), the host groups a model allows, embargo
//! windows, exclusions, the two-person rule and its pending requests, user groups.

use serde::{Deserialize, Serialize};
use types::{GroupName, HostGroupName, HostName, UserName, VendorName};

// ----- hosts ---------------------------------------------------------------------------------

/// `POST /v1/hosts`: sign a host's request into a client certificate and enroll the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollHost {
    pub name: String,
    pub group: String,
    /// The host's certificate signing request (PEM). Only its public key is used.
    pub csr: String,
}

/// `POST /v1/host/renew`, authenticated by the host's current certificate: a new signing
/// request for the same host name (a new key is better).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewHost {
    pub csr: String,
}

/// `POST /v1/hosts` (201); also the answer to `POST /v1/host/renew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostEnrolled {
    pub name: HostName,
    pub group: HostGroupName,
    /// The host's client certificate (PEM).
    pub certificate: String,
    /// The host CA's certificate (PEM).
    pub ca: String,
    pub cert_sha256: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostList {
    pub hosts: Vec<HostInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    /// The enrollment (a re-enrolled name is a new one).
    #[serde(default)]
    pub id: String,
    pub name: HostName,
    pub group: HostGroupName,
    pub cert_sha256: String,
    pub not_after: i64,
    pub enrolled_by: String,
    pub revoked_at: Option<i64>,
}

/// `POST /v1/hosts/{name}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostRevoked {
    pub name: HostName,
    pub revoked: bool,
}

// ----- host groups of a model ----------------------------------------------------------------

/// `POST /v1/models/{vendor}/{model}/host-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowHostGroup {
    pub group: String,
}

/// `POST .../host-groups` (201) and `DELETE .../host-groups/{group}` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostGroupChanged {
    /// `vendor/model`.
    pub model: String,
    pub host_group: HostGroupName,
}

/// `GET /v1/models/{vendor}/{model}/host-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelHostGroups {
    pub model: String,
    pub host_groups: Vec<HostGroupName>,
}

// ----- embargo -------------------------------------------------------------------------------

/// `PUT /v1/models/{vendor}/{model}/embargo`: the window for bytes, in Unix seconds; each end
/// optional, both absent clears it. Answered with the same fields and the model's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEmbargo {
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Embargo {
    pub model: String,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

// ----- exclusions ----------------------------------------------------------------------------

/// `POST /v1/vendors/{vendor}/exclusions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    pub user: String,
    /// A model of the vendor; absent: every model of the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The query of `DELETE /v1/vendors/{vendor}/exclusions/{user}`.
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
pub struct ExclusionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `POST .../exclusions` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Excluded {
    pub excluded: UserName,
    /// `vendor` or `vendor/model`.
    pub from: String,
}

/// `DELETE .../exclusions/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unexcluded {
    pub unexcluded: UserName,
    pub from: String,
}

/// `GET /v1/vendors/{vendor}/exclusions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExclusionList {
    pub vendor: VendorName,
    pub exclusions: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exclusion {
    pub user: UserName,
    /// `None`: every model of the vendor.
    pub model: Option<String>,
    pub created_by: String,
}

// ----- the two-person rule -------------------------------------------------------------------

/// `PUT /v1/vendors/{vendor}/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorSettings {
    pub two_person: bool,
}

/// `PUT /v1/vendors/{vendor}/settings`: 200 when set; 202 with `pending` when turning the
/// rule off waits for a second admin (`two_person` is then still `true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorSettingsChanged {
    pub vendor: VendorName,
    pub two_person: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// A change that waits for approval instead of applying (202): the two-person rule, or a
/// requester who is not the vendor's admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Filed {
    /// The pending request's id, for `POST /v1/pending/{id}/approve`.
    pub pending: String,
    /// Distinct people of the vendor who must approve it.
    pub approvals_needed: i64,
    /// Unix seconds; unapproved by then, it expires.
    pub expires_at: i64,
    pub message: String,
}

/// The answer of a change that may wait: 202 [`Filed`], or the change's own body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Outcome<T> {
    // First: only a filed request has `pending` and `approvals_needed`.
    Filed(Filed),
    Done(T),
}

/// `GET /v1/vendors/{vendor}/pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingList {
    pub vendor: VendorName,
    pub pending: Vec<PendingRequest>,
}

/// A request waiting for (or given) the vendor's approval; also the answer of
/// `POST /v1/pending/{id}/approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingRequest {
    pub id: String,
    /// `vendor/model`, when the request concerns one model.
    pub model: Option<String>,
    pub request: PendingAction,
    pub requested_by: String,
    pub created_at: i64,
    /// `pending`, `approved`, `rejected` (by someone who may approve it) or `cancelled` (by
    /// its requester).
    pub state: String,
    /// Who approved it, comma-separated, once approved.
    pub approved_by: Option<String>,
    /// Every approval given so far.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    #[serde(default)]
    pub approvals_needed: i64,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: i64,
    /// Still pending past `expires_at`: it can no longer be approved.
    #[serde(default)]
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    /// `role:name`.
    pub by: String,
    pub at: i64,
}

/// What a pending request will do once approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PendingAction {
    Grant {
        /// `user:NAME` or `group:NAME`.
        to: String,
        expires_at: Option<i64>,
    },
    Delete,
    DisableTwoPerson,
    /// Lift an exclusion (from `model`, or the whole vendor).
    Unexclude {
        user: UserName,
    },
    /// A new embargo window (Unix seconds).
    Embargo {
        not_before: Option<i64>,
        not_after: Option<i64>,
    },
    AllowHostGroup {
        group: HostGroupName,
    },
    /// The vendor's approval of one host enrollment.
    ApproveHost {
        host: HostName,
        host_id: String,
    },
    /// The model shreds itself at `at` (`None`: the schedule is cleared).
    DeleteAfter {
        at: Option<i64>,
    },
    AddGroupMember {
        group: GroupName,
        user: UserName,
    },
    /// A credential that counts for the vendor only once endorsed: a token issued for a
    /// person who already existed, or a further admin or auditor.
    EndorseCredential {
        token_id: String,
        user: UserName,
        role: types::Role,
    },
    /// A model's egress budget that lets more leave than the current one (`None`: removed).
    Budget {
        budget: Option<crate::budget::Budget>,
    },
}

impl PendingAction {
    /// The body's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            PendingAction::Grant { .. } => "grant",
            PendingAction::Delete => "delete",
            PendingAction::DisableTwoPerson => "disable-two-person",
            PendingAction::Unexclude { .. } => "unexclude",
            PendingAction::Embargo { .. } => "embargo",
            PendingAction::AllowHostGroup { .. } => "allow-host-group",
            PendingAction::ApproveHost { .. } => "approve-host",
            PendingAction::DeleteAfter { .. } => "delete-after",
            PendingAction::AddGroupMember { .. } => "add-group-member",
            PendingAction::EndorseCredential { .. } => "endorse-credential",
            PendingAction::Budget { .. } => "budget",
        }
    }
}

// ----- hosts as a vendor sees them -------------------------------------------------------------

/// `POST /v1/vendors/{vendor}/hosts`: approve a host's enrollment for the vendor's weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveHost {
    /// The host's name (its live enrollment is approved).
    pub host: String,
}

/// `POST /v1/vendors/{vendor}/hosts` (201) and `DELETE /v1/vendors/{vendor}/hosts/{host}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostApproval {
    pub vendor: VendorName,
    pub host: HostName,
    pub host_id: String,
    pub approved: bool,
}

/// `GET /v1/vendors/{vendor}/hosts`: hosts in groups the vendor's models allow, and hosts it
/// approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorHostList {
    pub vendor: VendorName,
    pub hosts: Vec<VendorHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorHost {
    pub id: String,
    pub name: HostName,
    pub group: HostGroupName,
    pub revoked_at: Option<i64>,
    /// Who approved it for the vendor; `None`: not approved (it receives nothing).
    pub approved_by: Option<String>,
}

// ----- a model's access at a glance ------------------------------------------------------------

/// `GET /v1/models/{vendor}/{model}/access`: everything that decides who receives the model's
/// weights (the vendor's admins and auditors, and the operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelAccess {
    pub model: String,
    pub grants: Vec<crate::models::Grant>,
    /// Exclusions from this model and from the whole vendor (`model: None`).
    pub exclusions: Vec<Exclusion>,
    /// The vendor's groups and their members.
    pub groups: Vec<GroupMember>,
    pub host_groups: Vec<HostGroupName>,
    /// Hosts in those groups, and whether the vendor approved each.
    pub hosts: Vec<VendorHost>,
    pub embargo: EmbargoWindow,
    pub delete_after: Option<i64>,
    pub two_person: bool,
    /// The vendor's requests waiting for approval.
    pub pending: Vec<PendingRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbargoWindow {
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

// ----- a vendor's user groups ------------------------------------------------------------

/// `POST /v1/vendors/{vendor}/groups/{group}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

/// `POST .../members` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberAdded {
    #[serde(default)]
    pub vendor: Option<VendorName>,
    pub group: GroupName,
    pub user: UserName,
}

/// `DELETE /v1/vendors/{vendor}/groups/{group}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRemoved {
    #[serde(default)]
    pub vendor: Option<VendorName>,
    pub group: GroupName,
    pub removed: UserName,
}

/// `GET /v1/vendors/{vendor}/groups`: every membership of the vendor's groups, by group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupMembers {
    #[serde(default)]
    pub vendor: Option<VendorName>,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupMember {
    pub group: GroupName,
    pub user: UserName,
}
