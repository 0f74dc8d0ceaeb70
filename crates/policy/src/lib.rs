//! Access decisions, default deny, with Cedar policies.
//!
//! The server asks one question per request — may this principal perform this action on this
//! resource, given these facts — and gets back data: the decision, the ids of the policies
//! that decided it, a reason a user can read, and any evaluation errors (which make the
//! decision a refusal). The schema and policies live in the top-level `policies/` folder and
//! are strictly validated when loaded; grants, exclusions, host groups and embargo dates are
//! data ([`Facts`]) the server gathers per request, never policies.
//!
//! Nothing here does IO except [`PolicyEngine::load`] and [`validate`] (module `load`), which
//! read a policy directory once at start.
//!
//! The entry point is [`PolicyEngine::decide`] over [`Facts`]. There is no shortcut: every
//! decision goes through the strictly validated policies with the facts of the request.
#![forbid(unsafe_code)]

mod engine;
mod error;
mod facts;
mod load;

#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use serde::Serialize;
use types::{Role, UserName, VendorName};

pub use engine::{Decision, PolicyEngine, Prepared};
pub use error::PolicyError;
pub use facts::{Facts, Grant, HostFacts, ModelFacts, ResourceFacts, VendorFacts};
pub use load::{SCHEMA_FILE, Summary, read_dir, validate};

/// Who is asking, as established by authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserName,
    pub role: Role,
    /// The vendor a vendor admin or auditor is scoped to.
    pub vendor: Option<VendorName>,
}

/// What is being asked for. `as_str` is the stable name used in audit entries and refusal
/// messages; `cedar_name` is the Cedar action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    CreateVendor,
    /// Create or revoke tokens (Cedar `manage_tokens`).
    CreateToken,
    /// List vendors (Cedar `list` on the Service).
    ListVendors,
    /// See a model's name, revisions and file list, or a vendor's models (Cedar `list`).
    ReadMetadata,
    /// Receive plaintext weight bytes.
    Fetch,
    Upload,
    /// Upload a revision derived from one of the model's revisions (Cedar `upload_derived`).
    UploadDerived,
    Grant,
    Revoke,
    Exclude,
    RequestDeletion,
    Approve,
    ExportAudit,
    ManageHosts,
    /// Add or remove members of a vendor's user groups (Cedar `manage_groups`).
    ManageGroups,
    /// Change a vendor's or model's settings: embargo window, two-person rule.
    Configure,
    /// Read a vendor's deletions: their progress and certificates (Cedar `read_deletions`).
    ReadDeletions,
    /// Read everything that decides who receives a model's weights: grants, exclusions,
    /// groups, hosts, embargo, schedule, pending requests (Cedar `read_access`).
    ReadAccess,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Action::CreateVendor,
        Action::CreateToken,
        Action::ListVendors,
        Action::ReadMetadata,
        Action::Fetch,
        Action::Upload,
        Action::UploadDerived,
        Action::Grant,
        Action::Revoke,
        Action::Exclude,
        Action::RequestDeletion,
        Action::Approve,
        Action::ExportAudit,
        Action::ManageHosts,
        Action::ManageGroups,
        Action::Configure,
        Action::ReadDeletions,
        Action::ReadAccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateVendor => "create-vendor",
            Action::CreateToken => "create-token",
            Action::ListVendors => "list-vendors",
            Action::ReadMetadata => "read-metadata",
            Action::Fetch => "fetch",
            Action::Upload => "upload",
            Action::UploadDerived => "upload-derived",
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Exclude => "exclude",
            Action::RequestDeletion => "request-deletion",
            Action::Approve => "approve",
            Action::ExportAudit => "export-audit",
            Action::ManageHosts => "manage-hosts",
            Action::ManageGroups => "manage-groups",
            Action::Configure => "configure",
            Action::ReadDeletions => "read-deletions",
            Action::ReadAccess => "read-access",
        }
    }

    /// The Cedar action id (`Action::"..."` in `policies/`).
    pub fn cedar_name(self) -> &'static str {
        match self {
            Action::CreateVendor => "create_vendor",
            Action::CreateToken => "manage_tokens",
            Action::ListVendors | Action::ReadMetadata => "list",
            Action::Fetch => "fetch",
            Action::Upload => "upload",
            Action::UploadDerived => "upload_derived",
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Exclude => "exclude",
            Action::RequestDeletion => "request_deletion",
            Action::Approve => "approve",
            Action::ExportAudit => "export_audit",
            Action::ManageHosts => "manage_hosts",
            Action::ManageGroups => "manage_groups",
            Action::Configure => "configure",
            Action::ReadDeletions => "read_deletions",
            Action::ReadAccess => "read_access",
        }
    }
}

/// The policy files as built into the binary (the same files `PolicyEngine::load` reads).
pub const EMBEDDED_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    (
        "forbids.cedar",
        include_str!("../../../policies/forbids.cedar"),
    ),
    (
        "permits.cedar",
        include_str!("../../../policies/permits.cedar"),
    ),
];

static EMBEDDED: LazyLock<Result<PolicyEngine, PolicyError>> =
    LazyLock::new(|| PolicyEngine::from_files(EMBEDDED_SCHEMA, EMBEDDED_POLICIES));

impl PolicyEngine {
    /// The engine over the policies embedded at build time (validated once, on first use).
    pub fn embedded() -> Result<&'static PolicyEngine, PolicyError> {
        EMBEDDED.as_ref().map_err(Clone::clone)
    }
}
