//! Who must agree before a change to a vendor's access takes effect.
//!
//! The property (SECURITY.md, "Vendor-held trust"): once a vendor has its first admin, no
//! party other than that vendor's admins can widen access to its weights. So every change
//! that widens access (a grant, lifting an exclusion, an embargo that opens earlier or closes
//! later, allowing a host group, approving a host, adding a group member, endorsing a
//! credential, turning the two-person rule off) or schedules destruction is counted in
//! *people of the vendor* who agreed to it:
//!
//! * a vendor admin's own request counts as one of them;
//! * without the two-person rule one is enough, so an admin's change applies at once, and a
//!   request from anyone else (the operator) waits for one admin;
//! * under the rule two are needed, so even an admin's change waits for a second, distinct
//!   person (checked by user id inside the approving transaction, never by role).
//!
//! Destruction is not a widening: without the rule the operator and the admins may delete at
//! once, as before; under it, deletion waits like everything else.

use store::{NewPending, PendingAction};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::App;

/// What a change does to the vendor's weights.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Someone may receive (or keep receiving) weights they could not before.
    Widens,
    /// Weights will be destroyed (a deletion, a `delete_after` time).
    Destroys,
}

/// A request filed instead of a change applied.
pub(crate) struct Filed {
    pub id: String,
    pub approvals_needed: i64,
    pub expires_at: i64,
}

/// Whether `caller` is an admin of the vendor (its credential counts there, which
/// authorization already required of any admin acting on the vendor).
fn is_admin_of(caller: &Caller, vendor: &store::VendorRecord) -> bool {
    caller.principal.role == types::Role::VendorAdmin
        && caller.principal.vendor.as_ref() == Some(&vendor.name)
}

/// How many more of the vendor's people must approve `change` asked by `caller`: 0 means it
/// applies now.
pub(crate) async fn approvals_needed(
    app: &App,
    caller: &Caller,
    vendor: &store::VendorRecord,
    change: Change,
) -> Result<i64, ApiError> {
    let rule = app.store.requires_approval(&vendor.id).await?;
    let people = match (change, rule) {
        (_, true) => 2,
        (Change::Widens, false) => 1,
        (Change::Destroys, false) => return Ok(0),
    };
    Ok(people - i64::from(is_admin_of(caller, vendor)))
}

/// What a person who filed a request reads: what it waits for and until when.
pub(crate) fn waiting_message(filed: &Filed) -> String {
    let people = if filed.approvals_needed == 1 {
        "one of the vendor's admins".to_owned()
    } else {
        format!("{} of the vendor's admins", filed.approvals_needed)
    };
    format!(
        "this change waits for {people} to approve it (custody approve {}); it expires unapproved at {}",
        filed.id,
        rfc3339(filed.expires_at)
    )
}

/// Unix seconds as RFC 3339, as a person reads times.
pub(crate) fn rfc3339(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How many approvals a credential issued for someone at `vendor_id` needs (the operator
/// issues it, so every one of the vendor's people must come from its admins).
pub(crate) async fn approvals_for_credential(app: &App, vendor_id: &str) -> store::Result<i64> {
    Ok(if app.store.requires_approval(vendor_id).await? {
        2
    } else {
        1
    })
}

/// Files `action` at the vendor as a request needing `needed` approvals, with `entry`.
/// `subject` is the user id of a person whose own standing the request widens (they may not
/// approve it).
pub(crate) async fn file(
    app: &App,
    caller: &Caller,
    vendor: &store::VendorRecord,
    action: &PendingAction,
    subject: Option<&str>,
    needed: i64,
    mut entry: audit::Entry,
) -> Result<Filed, ApiError> {
    let id = crypto::token::random_id()?;
    let pending = format!(
        "pending {id}, needs {needed} approval(s) of {}",
        vendor.name
    );
    entry.detail = Some(match entry.detail.take() {
        Some(detail) => format!("{detail}; {pending}"),
        None => pending,
    });
    let expires_at = app
        .store
        .clock()
        .now()
        .saturating_add(app.config.pending_ttl_secs);
    app.store
        .create_pending(
            &NewPending {
                id: &id,
                vendor_id: &vendor.id,
                action,
                requested_by: &caller.actor(),
                requester_id: Some(&caller.credential.user_id),
                subject_id: subject,
                approvals_needed: needed,
                expires_at,
            },
            entry,
        )
        .await?;
    Ok(Filed {
        id,
        approvals_needed: needed,
        expires_at,
    })
}

/// Follow-up requests of a change `caller` makes at the vendor: endorsing the credentials of
/// a person it gives standing (see `store::FollowUp`).
pub(crate) async fn follow_up(
    app: &App,
    caller: &Caller,
    vendor_id: &str,
) -> store::Result<store::FollowUp> {
    Ok(store::FollowUp {
        approvals_needed: approvals_for_credential(app, vendor_id).await?,
        requested_by: caller.actor(),
        ttl_secs: app.config.pending_ttl_secs,
    })
}
