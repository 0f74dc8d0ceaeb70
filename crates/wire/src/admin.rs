//! Operator routes: vendors (`/v1/vendors`) and tokens (`/v1/tokens`).

use serde::{Deserialize, Serialize};
use types::{GroupName, HostName, Role, UserName, VendorName};

/// `POST /v1/vendors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateVendor {
    pub name: String,
}

/// `POST /v1/vendors` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorCreated {
    pub name: VendorName,
}

/// `GET /v1/vendors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorList {
    pub vendors: Vec<VendorName>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    /// A [`Role`] in its kebab-case form.
    pub role: String,
    /// The vendor a vendor admin's or auditor's token is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Who the token is for; grants name this user.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<i64>,
}

/// `POST /v1/tokens` and `POST /v1/tokens/rotate` (201). No `Debug`: it holds the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub id: String,
    /// `ID.SECRET`, shown once; the server keeps only the secret's hash.
    pub token: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub name: UserName,
    pub expires_at: Option<i64>,
    /// The person the token belongs to.
    #[serde(default)]
    pub user_id: String,
    /// The person was created with this token (false: the name existed, so this is another
    /// credential for that same person).
    #[serde(default)]
    pub new_user: bool,
    /// Vendors whose admins must approve the token before it counts for their models.
    #[serde(default)]
    pub awaiting: Vec<Awaiting>,
}

/// A credential waiting for a vendor's approval: the pending request to approve there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Awaiting {
    pub vendor: VendorName,
    pub pending: String,
}

/// `POST /v1/tokens/rotate`: replace the presented token by a new one with the same standing
/// (the presented one is revoked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<i64>,
}

/// `GET /v1/whoami`: who the presented token says you are, and where it counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub user: UserName,
    pub user_id: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub token_id: String,
    pub expires_at: Option<i64>,
    /// The token counts at every vendor (a person's first credential).
    pub all_vendors: bool,
    /// Vendors that endorsed it.
    pub endorsed_by: Vec<VendorName>,
    /// Vendors where it waits for approval.
    pub awaiting: Vec<Awaiting>,
    /// The exclusive host the request came through, if it presented a certificate.
    pub host: Option<HostName>,
    /// The models the person may see through a live grant, and how (a committer's "my
    /// grants"): fetching also needs an allowed host and an open embargo window.
    #[serde(default)]
    pub grants: Vec<HeldGrant>,
}

/// One grant the caller holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldGrant {
    /// `VENDOR/MODEL`.
    pub model: String,
    /// The vendor's group the grant names; `None`: granted to the person directly.
    pub group: Option<GroupName>,
    pub expires_at: Option<i64>,
}

/// `GET /v1/users` (operator): every person, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub name: UserName,
    pub created_by: String,
    pub created_at: i64,
}

/// `GET /v1/tokens`: every token, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// The part of the token before the dot.
    pub id: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub name: UserName,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub created_by: String,
    /// Counts at every vendor; otherwise only at `endorsed_by`.
    #[serde(default)]
    pub all_vendors: bool,
    #[serde(default)]
    pub endorsed_by: Vec<VendorName>,
    /// Past `expires_at` by the server's clock.
    #[serde(default)]
    pub expired: bool,
}

/// `POST /v1/tokens/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRevoked {
    pub id: String,
    pub revoked: bool,
}
