//! Who may do what: exclusive hosts (`/v1/hosts`), the host groups a model allows, embargo
//! windows, exclusions, the two-person rule and its pending requests, user groups.

use serde::{Deserialize, Serialize};
use types::{GroupName, HostGroupName, HostName, UserName, VendorName};

// ----- hosts ---------------------------------------------------------------------------------

/// `POST /v1/hosts`: sign a host's request into a client certificate and enroll the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollHost {
    pub name: String,
    pub group: String,
    /// The host's certificate signing request (PEM). Only its public key is used.
    pub csr: String,
}

/// `POST /v1/hosts` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    pub hosts: Vec<HostInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: HostName,
    pub group: HostGroupName,
    pub cert_sha256: String,
    pub not_after: i64,
    pub enrolled_by: String,
    pub revoked_at: Option<i64>,
}

/// `POST /v1/hosts/{name}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRevoked {
    pub name: HostName,
    pub revoked: bool,
}

// ----- host groups of a model ----------------------------------------------------------------

/// `POST /v1/models/{vendor}/{model}/host-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowHostGroup {
    pub group: String,
}

/// `POST .../host-groups` (201) and `DELETE .../host-groups/{group}` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGroupChanged {
    /// `vendor/model`.
    pub model: String,
    pub host_group: HostGroupName,
}

/// `GET /v1/models/{vendor}/{model}/host-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelHostGroups {
    pub model: String,
    pub host_groups: Vec<HostGroupName>,
}

// ----- embargo -------------------------------------------------------------------------------

/// `PUT /v1/models/{vendor}/{model}/embargo`: the window for bytes, in Unix seconds; each end
/// optional, both absent clears it. Answered with the same fields and the model's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEmbargo {
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embargo {
    pub model: String,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

// ----- exclusions ----------------------------------------------------------------------------

/// `POST /v1/vendors/{vendor}/exclusions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    pub user: String,
    /// A model of the vendor; absent: every model of the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The query of `DELETE /v1/vendors/{vendor}/exclusions/{user}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `POST .../exclusions` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub excluded: UserName,
    /// `vendor` or `vendor/model`.
    pub from: String,
}

/// `DELETE .../exclusions/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unexcluded {
    pub unexcluded: UserName,
    pub from: String,
}

/// `GET /v1/vendors/{vendor}/exclusions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionList {
    pub vendor: VendorName,
    pub exclusions: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    pub user: UserName,
    /// `None`: every model of the vendor.
    pub model: Option<String>,
    pub created_by: String,
}

// ----- the two-person rule -------------------------------------------------------------------

/// `PUT /v1/vendors/{vendor}/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSettings {
    pub two_person: bool,
}

/// `PUT /v1/vendors/{vendor}/settings`: 200 when set; 202 with `pending` when turning the
/// rule off waits for a second admin (`two_person` is then still `true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorSettingsChanged {
    pub vendor: VendorName,
    pub two_person: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// `GET /v1/vendors/{vendor}/pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingList {
    pub vendor: VendorName,
    pub pending: Vec<PendingRequest>,
}

/// A request waiting for (or given) a second vendor admin's approval; also the answer of
/// `POST /v1/pending/{id}/approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub id: String,
    /// `vendor/model`, when the request concerns one model.
    pub model: Option<String>,
    pub request: PendingAction,
    pub requested_by: String,
    pub created_at: i64,
    /// `pending` or `approved`.
    pub state: String,
    pub approved_by: Option<String>,
}

/// What a pending request will do once approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PendingAction {
    Grant {
        /// `user:NAME` or `group:NAME`.
        to: String,
        expires_at: Option<i64>,
    },
    Delete,
    DisableTwoPerson,
}

impl PendingAction {
    /// `grant`, `delete` or `disable-two-person`, as the body's `kind` says.
    pub fn kind(&self) -> &'static str {
        match self {
            PendingAction::Grant { .. } => "grant",
            PendingAction::Delete => "delete",
            PendingAction::DisableTwoPerson => "disable-two-person",
        }
    }
}

// ----- user groups ---------------------------------------------------------------------------

/// `POST /v1/groups/{group}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

/// `POST /v1/groups/{group}/members` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    pub group: GroupName,
    pub user: UserName,
}

/// `DELETE /v1/groups/{group}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub group: GroupName,
    pub removed: UserName,
}

/// `GET /v1/groups`: every membership, by group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub group: GroupName,
    pub user: UserName,
}
