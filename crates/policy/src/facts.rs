//! The facts one decision needs, as plain Rust data filled by the server per request.
//!
//! Grants and exclusions live in the database. The server passes only the facts relevant to
//! the request: whether the principal holds a direct grant (`readers` holds at most the
//! principal), which of the principal's groups hold one (`reader_groups`), whether the
//! principal is excluded, and the host that presented a client certificate. Passing whole
//! grant lists also works (the tests and the benchmark do), but costs time per request in
//! building the entity store: see `examples/decide_bench.rs`.

use types::{UserName, VendorName};

use crate::Principal;

/// Everything a decision depends on. Nothing else is consulted: no clock, no database.
#[derive(Debug, Clone)]
pub struct Facts {
    pub principal: Principal,
    /// Names of the groups the principal is a member of.
    pub groups: Vec<String>,
    pub resource: ResourceFacts,
    /// The exclusive host the request came from (client certificate), if any.
    pub host: Option<HostFacts>,
    /// Current time, epoch seconds. Used for grant expiry and the embargo window.
    pub now: i64,
    /// Whether the credential the request presents counts for the resource's vendor: a
    /// person's first credential, or one the vendor endorsed (a credential re-issued for an
    /// existing person, or a further admin or auditor, waits for the vendor's approval).
    /// Always true for the service itself.
    pub credential_counts: bool,
}

/// What the action touches.
#[derive(Debug, Clone)]
pub enum ResourceFacts {
    Service,
    Vendor(VendorFacts),
    Model(ModelFacts),
}

#[derive(Debug, Clone)]
pub struct VendorFacts {
    pub name: VendorName,
    /// Users excluded from every model of this vendor.
    pub excluded: Vec<UserName>,
    /// Users holding a live grant (direct or through one of the vendor's groups) on one of
    /// its models: committers see a vendor only then.
    pub readers: Vec<UserName>,
}

/// One model and the data about it that decisions use.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// Unique model id (the store's id, or `vendor/model`).
    pub id: String,
    pub vendor: VendorName,
    /// Direct grants. Expired grants (expires_at <= now) are left out of the entity store.
    pub readers: Vec<Grant<UserName>>,
    /// Group grants (group names). Expired ones are left out likewise.
    pub reader_groups: Vec<Grant<String>>,
    /// Users excluded from this model.
    pub excluded: Vec<UserName>,
    /// Users excluded at the vendor level (every model of the vendor).
    pub vendor_excluded: Vec<UserName>,
    /// Host groups whose hosts may receive this model's bytes.
    pub host_groups: Vec<String>,
    /// Embargo window for bytes, epoch seconds: fetch refused before `not_before` and from
    /// `not_after` on.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

/// A grant to a user or a group, optionally with an expiry (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<T> {
    pub to: T,
    pub expires_at: Option<i64>,
}

impl<T> Grant<T> {
    pub fn forever(to: T) -> Self {
        Grant {
            to,
            expires_at: None,
        }
    }

    pub fn until(to: T, expires_at: i64) -> Self {
        Grant {
            to,
            expires_at: Some(expires_at),
        }
    }

    /// A grant counts while `now < expires_at`.
    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// An exclusive server, identified by its client certificate.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub name: String,
    /// Host groups it belongs to.
    pub groups: Vec<String>,
    /// Revoked hosts never receive bytes.
    pub revoked: bool,
    /// Whether the vendor of the resource approved this host's enrollment: the operator
    /// enrolls hosts, the vendor decides which of them may hold its weights.
    pub vendor_approved: bool,
}
