//! Operator routes: vendors (`/v1/vendors`) and tokens (`/v1/tokens`).

use serde::{Deserialize, Serialize};
use types::{Role, UserName, VendorName};

/// `POST /v1/vendors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVendor {
    pub name: String,
}

/// `POST /v1/vendors` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorCreated {
    pub name: VendorName,
}

/// `GET /v1/vendors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorList {
    pub vendors: Vec<VendorName>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// `POST /v1/tokens` (201). No `Debug`: it holds the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    /// `ID.SECRET`, shown once; the server keeps only the secret's hash.
    pub token: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub name: UserName,
    pub expires_at: Option<i64>,
}

/// `GET /v1/tokens`: every token, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The part of the token before the dot.
    pub id: String,
    pub role: Role,
    pub vendor: Option<VendorName>,
    pub name: UserName,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// `POST /v1/tokens/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub id: String,
    pub revoked: bool,
}
