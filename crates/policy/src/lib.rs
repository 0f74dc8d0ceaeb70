//! Access decisions, default deny.
//!
//! The server asks one question per request — may this principal perform this action on this
//! resource, given these facts — and gets back data: the decision, the id of the rule that
//! decided it and a reason a user can read. Nothing here does IO: the server gathers the facts
//! (the principal from the token, whether a grant exists) and records the decision.
//!
//! Every `match` below ends in a denial; an action is allowed only by a rule that names it.
//! The Cedar-based engine (policies in `policies/`) replaces the rule table while keeping this
//! interface.
#![forbid(unsafe_code)]

use serde::Serialize;
use types::{Role, UserName, VendorName};

/// Who is asking, as established by authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserName,
    pub role: Role,
    /// The vendor a vendor admin or auditor is scoped to.
    pub vendor: Option<VendorName>,
}

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    CreateVendor,
    CreateToken,
    ListVendors,
    /// See a model's name, revisions and file list (no bytes).
    ReadMetadata,
    /// Receive plaintext weight bytes.
    Fetch,
    Upload,
    Grant,
    Revoke,
}

impl Action {
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
        }
    }
}

/// What the action touches, with the facts the decision needs.
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

/// The outcome of one decision. `policy` names the rule that decided, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub policy: &'static str,
    pub reason: String,
}

impl Decision {
    fn allow(policy: &'static str) -> Self {
        Decision {
            allowed: true,
            policy,
            reason: String::new(),
        }
    }

    fn deny(policy: &'static str, reason: impl Into<String>) -> Self {
        Decision {
            allowed: false,
            policy,
            reason: reason.into(),
        }
    }
}

fn own_vendor(principal: &Principal, vendor: &VendorName) -> bool {
    principal.vendor.as_ref() == Some(vendor)
}

/// Decide one request. Anything not explicitly allowed is denied.
pub fn decide(principal: &Principal, action: Action, resource: Resource<'_>) -> Decision {
    use Action::*;
    use Role::*;

    match (principal.role, action, resource) {
        (Operator, CreateVendor | CreateToken | ListVendors, Resource::Service) => {
            Decision::allow("operator-manages-service")
        }
        (Operator, ReadMetadata, Resource::Vendor { .. } | Resource::Model { .. }) => {
            Decision::allow("operator-reads-metadata")
        }
        (Operator, Fetch, _) => Decision::deny(
            "operator-never-reads-weights",
            "operators run the service but never receive weights",
        ),

        (VendorAdmin, Upload | Grant | Revoke | ReadMetadata | Fetch, r) => match r {
            Resource::Vendor { vendor } | Resource::Model { vendor, .. }
                if own_vendor(principal, vendor) =>
            {
                Decision::allow("vendor-admin-owns-vendor")
            }
            _ => Decision::deny(
                "vendor-admin-scoped-to-vendor",
                "a vendor admin acts only on models of their own vendor",
            ),
        },

        (Committer, ReadMetadata | Fetch, Resource::Model { granted, .. }) => {
            if granted {
                Decision::allow("committer-granted")
            } else {
                Decision::deny(
                    "committer-needs-grant",
                    "you have no grant on this model; ask the vendor to grant you access",
                )
            }
        }
        // Committers see only the models granted to them; listing filters per model.
        (Committer, ReadMetadata, Resource::Vendor { .. }) => Decision::allow("committer-lists"),

        (Auditor, ReadMetadata, Resource::Vendor { vendor } | Resource::Model { vendor, .. })
            if own_vendor(principal, vendor) =>
        {
            Decision::allow("auditor-reads-metadata")
        }
        (Auditor, Fetch, _) => Decision::deny(
            "auditor-never-reads-weights",
            "auditors see the record, never the weights",
        ),

        (role, action, _) => Decision::deny(
            "default-deny",
            format!("a {role} may not {} here", action.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, vendor: Option<&str>) -> Principal {
        Principal {
            user: UserName::parse("someone").unwrap(),
            role,
            vendor: vendor.map(|v| VendorName::parse(v).unwrap()),
        }
    }

    /// The decision table as data: (role, scoped vendor, action, resource vendor, granted, allowed).
    #[test]
    fn decision_table() {
        use Action::*;
        use Role::*;
        let acme = "acme";
        let other = "other";
        type Case<'a> = (Role, Option<&'a str>, Action, Option<&'a str>, bool, bool);
        let cases: &[Case] = &[
            (Operator, None, CreateVendor, None, false, true),
            (Operator, None, CreateToken, None, false, true),
            (Operator, None, Fetch, Some(acme), true, false),
            (Operator, None, Upload, Some(acme), false, false),
            (Operator, None, Grant, Some(acme), false, false),
            (VendorAdmin, Some(acme), Upload, Some(acme), false, true),
            (VendorAdmin, Some(acme), Grant, Some(acme), false, true),
            (VendorAdmin, Some(acme), Revoke, Some(acme), false, true),
            (VendorAdmin, Some(acme), Upload, Some(other), false, false),
            (VendorAdmin, Some(acme), Grant, Some(other), false, false),
            (VendorAdmin, Some(acme), Fetch, Some(other), false, false),
            (VendorAdmin, Some(acme), CreateVendor, None, false, false),
            (VendorAdmin, Some(acme), CreateToken, None, false, false),
            (Committer, None, Fetch, Some(acme), false, false),
            (Committer, None, Fetch, Some(acme), true, true),
            (Committer, None, ReadMetadata, Some(acme), false, false),
            (Committer, None, Grant, Some(acme), true, false),
            (Committer, None, Upload, Some(acme), true, false),
            (Committer, None, CreateToken, None, false, false),
            (Auditor, Some(acme), ReadMetadata, Some(acme), false, true),
            (Auditor, Some(acme), ReadMetadata, Some(other), false, false),
            (Auditor, Some(acme), Fetch, Some(acme), true, false),
            (Auditor, Some(acme), Grant, Some(acme), false, false),
        ];
        for &(role, scope, action, vendor, granted, allowed) in cases {
            let principal = who(role, scope);
            let vendor = vendor.map(|v| VendorName::parse(v).unwrap());
            let resource = match &vendor {
                None => Resource::Service,
                Some(vendor) => Resource::Model { vendor, granted },
            };
            let decision = decide(&principal, action, resource);
            assert_eq!(
                decision.allowed, allowed,
                "{role} {scope:?} {action:?} on {vendor:?} granted={granted}: {decision:?}"
            );
            if !decision.allowed {
                assert!(!decision.reason.is_empty());
            }
        }
    }
}
