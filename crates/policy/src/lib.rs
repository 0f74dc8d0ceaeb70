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
//! Two entry points:
//! - [`PolicyEngine::decide`] over [`Facts`] — the API to use.
//! - [`decide`]`(principal, action, resource)` — the former rule-table signature, kept as a
//!   thin adapter over the embedded policies (see its docs for what it assumes).
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
    Grant,
    Revoke,
    Exclude,
    RequestDeletion,
    Approve,
    ExportAudit,
    ManageHosts,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::CreateVendor,
        Action::CreateToken,
        Action::ListVendors,
        Action::ReadMetadata,
        Action::Fetch,
        Action::Upload,
        Action::Grant,
        Action::Revoke,
        Action::Exclude,
        Action::RequestDeletion,
        Action::Approve,
        Action::ExportAudit,
        Action::ManageHosts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateVendor => "create-vendor",
            Action::CreateToken => "create-token",
            Action::ListVendors => "list-vendors",
            Action::ReadMetadata => "read-metadata",
            Action::Fetch => "fetch",
            Action::Upload => "upload",
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Exclude => "exclude",
            Action::RequestDeletion => "request-deletion",
            Action::Approve => "approve",
            Action::ExportAudit => "export-audit",
            Action::ManageHosts => "manage-hosts",
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
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Exclude => "exclude",
            Action::RequestDeletion => "request_deletion",
            Action::Approve => "approve",
            Action::ExportAudit => "export_audit",
            Action::ManageHosts => "manage_hosts",
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

/// What the action touches, with the facts the former rule table needed.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The service as a whole (vendors, tokens).
    Service,
    /// One vendor (listing its models, creating a model by upload).
    Vendor { vendor: &'a VendorName },
    /// One model, and whether the principal holds a grant on it.
    Model {
        vendor: &'a VendorName,
        granted: bool,
    },
}

/// Host group and host the compatibility adapter assumes (see [`decide`]).
pub const LEGACY_HOST_GROUP: &str = "legacy-unverified";

/// Compatibility adapter: the former signature, decided by the embedded Cedar policies.
///
/// It knows only what the old `Resource` carries, so it assumes: no groups, no exclusions,
/// no embargo, time 0, and — because the server does not yet identify hosts — that every
/// model request comes from a host `legacy-unverified` in a host group allowed for the
/// model. That keeps today's behaviour (a granted committer may fetch) and is the one place
/// the host requirement is waived; it disappears when the server calls
/// [`PolicyEngine::decide`] with real [`Facts`].
pub fn decide(principal: &Principal, action: Action, resource: Resource<'_>) -> Decision {
    let engine = match PolicyEngine::embedded() {
        Ok(engine) => engine,
        Err(e) => {
            return Decision {
                allowed: false,
                policy: "engine-error",
                policies: Vec::new(),
                reason: "the access policy could not be loaded; refusing".into(),
                errors: vec![e.to_string()],
            };
        }
    };
    engine.decide(&legacy_facts(principal, resource), action)
}

fn legacy_facts(principal: &Principal, resource: Resource<'_>) -> Facts {
    let legacy_host = || HostFacts {
        name: LEGACY_HOST_GROUP.to_owned(),
        groups: vec![LEGACY_HOST_GROUP.to_owned()],
        revoked: false,
    };
    let (resource, host) = match resource {
        Resource::Service => (ResourceFacts::Service, None),
        Resource::Vendor { vendor } => (
            ResourceFacts::Vendor(VendorFacts {
                name: vendor.clone(),
                excluded: Vec::new(),
            }),
            None,
        ),
        Resource::Model { vendor, granted } => (
            ResourceFacts::Model(ModelFacts {
                id: format!("{vendor}/*"),
                vendor: vendor.clone(),
                readers: if granted {
                    vec![Grant::forever(principal.user.clone())]
                } else {
                    Vec::new()
                },
                reader_groups: Vec::new(),
                excluded: Vec::new(),
                vendor_excluded: Vec::new(),
                host_groups: vec![LEGACY_HOST_GROUP.to_owned()],
                not_before: None,
                not_after: None,
            }),
            Some(legacy_host()),
        ),
    };
    Facts {
        principal: principal.clone(),
        groups: Vec::new(),
        resource,
        host,
        now: 0,
    }
}
