//! Who may do what: exclusive hosts (enrolled by the operator, approved by each vendor), the
//! host groups a model allows, a vendor's user groups, exclusions, embargo windows, a model's
//! access at a glance, and requests waiting for the vendor's approval. Each route asks
//! [`authorize`] first and records its change with its audit entry; a change that widens access
//! goes through [`crate::approvals`], which applies it or files it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use policy::Action;
use store::{Approved, NewHost, PendingAction, PendingRecord, VendorRecord};
use types::{GroupName, HostGroupName, HostName, UserName, VendorName};
use wire::ErrorCode;
use wire::access::{
    AddMember, AllowHostGroup, Approval, ApproveHost, Embargo, EmbargoWindow, EnrollHost, Exclude,
    Excluded, Exclusion, ExclusionList, ExclusionQuery, Filed, GroupMember, GroupMembers,
    HostApproval, HostEnrolled, HostGroupChanged, HostInfo, HostList, HostRevoked, MemberAdded,
    MemberRemoved, ModelAccess, ModelHostGroups, Outcome, PendingList, PendingRequest, RenewHost,
    SetEmbargo, Unexcluded, VendorHost, VendorHostList, VendorSettings, VendorSettingsChanged,
};

use super::json_body;
use super::models::{authorize_model, load_model, vendor_of};
use super::wipe::HostCaller;
use crate::approvals::{self, Change};
use crate::auth::{Caller, Target, authorize, policy_ids};
use crate::error::ApiError;
use crate::state::App;
use crate::suggest;

pub(crate) async fn load_vendor(app: &App, name: &str) -> Result<VendorRecord, ApiError> {
    let name = VendorName::parse(name)?;
    app.store
        .vendor(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("vendor {name}")))
}

// ----- hosts -------------------------------------------------------------------------------

/// Signs a host's request into a client certificate of the host CA and enrolls the host
/// in a host group.
#[utoipa::path(
    post,
    path = "/v1/hosts",
    operation_id = "access_enroll_host",
    tag = "access",
    request_body = EnrollHost,
    responses(
        (status = 201, description = "done", body = HostEnrolled),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn enroll_host(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<EnrollHost>, JsonRejection>,
) -> Result<(StatusCode, Json<HostEnrolled>), ApiError> {
    let decision = authorize(&app, &caller, Action::ManageHosts, Target::Service).await?;
    let request = json_body(body)?;
    let name = HostName::parse(&request.name)?;
    let group = HostGroupName::parse(&request.group)?;
    if request.csr.len() > 64 * 1024 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCsr,
            "the signing request is too large",
        ));
    }
    let issued = crypto::host_ca::sign_host_csr(
        &app.host_ca.cert_pem,
        &app.host_ca.key_pem,
        &request.csr,
        name.as_str(),
        // Dated by the system clock, which TLS stacks check it against.
        store::Clock::system_now(),
    )
    .map_err(|e| ApiError::bad_request(ErrorCode::InvalidCsr, e.to_string()))?;
    let entry = caller
        .entry("host.enroll", "service")
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!(
            "host {name} in group {group}, certificate sha256 {}",
            issued.sha256
        ));
    app.store
        .enroll_host(
            &NewHost {
                id: &crypto::token::random_id()?,
                name: &name,
                group: &group,
                cert_sha256: &issued.sha256,
                not_after: issued.not_after,
                enrolled_by: &caller.actor(),
            },
            entry,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(HostEnrolled {
            name,
            group,
            certificate: issued.cert_pem,
            ca: app.host_ca.cert_pem.clone(),
            cert_sha256: issued.sha256,
            not_after: issued.not_after,
        }),
    ))
}

/// `POST /v1/host/renew`: an enrolled, unrevoked host renews its own certificate before it
/// expires, authenticated by that certificate ([`HostCaller`]); the request must name the
/// same host. Signed exactly as at enrollment; the enrollment (and every vendor's approval
/// of it) stays, and the old certificate stops counting.
#[utoipa::path(
    post,
    path = "/v1/host/renew",
    operation_id = "access_renew_host",
    tag = "access",
    request_body = RenewHost,
    responses(
        (status = 200, description = "done", body = HostEnrolled),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn renew_host(
    State(app): State<Arc<App>>,
    caller: HostCaller,
    body: Result<Json<RenewHost>, JsonRejection>,
) -> Result<Json<HostEnrolled>, ApiError> {
    let host = caller.host.clone();
    if host.revoked_at.is_some() {
        let entry = caller
            .entry("host.renew", "service")
            .with_outcome(audit::Outcome::Denied)
            .with_detail("a revoked host may not renew its certificate");
        app.store.record(entry).await?;
        return Err(ApiError::Denied(format!(
            "host {} has been revoked: it may not renew its certificate; the operator enrolls \
             it again (custody host enroll) if it should come back",
            host.name
        )));
    }
    let request = json_body(body)?;
    if request.csr.len() > 64 * 1024 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCsr,
            "the signing request is too large",
        ));
    }
    let named = crypto::host_ca::csr_host_name(&request.csr)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidCsr, e.to_string()))?;
    if named.as_deref() != Some(host.name.as_str()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCsr,
            format!(
                "the signing request names host {}, but this certificate is host {}'s",
                named.as_deref().unwrap_or("(none)"),
                host.name
            ),
        ));
    }
    let issued = crypto::host_ca::sign_host_csr(
        &app.host_ca.cert_pem,
        &app.host_ca.key_pem,
        &request.csr,
        host.name.as_str(),
        // Dated by the system clock, which TLS stacks check it against.
        store::Clock::system_now(),
    )
    .map_err(|e| ApiError::bad_request(ErrorCode::InvalidCsr, e.to_string()))?;
    let entry = caller.entry("host.renew", "service").with_detail(format!(
        "host {} certificate sha256 {} replaced by {}, valid until {}",
        host.name,
        host.cert_sha256,
        issued.sha256,
        crate::approvals::rfc3339(issued.not_after)
    ));
    app.store
        .renew_host(
            &host.id,
            &host.cert_sha256,
            &issued.sha256,
            issued.not_after,
            entry,
        )
        .await?;
    Ok(Json(HostEnrolled {
        name: host.name,
        group: host.group,
        certificate: issued.cert_pem,
        ca: app.host_ca.cert_pem.clone(),
        cert_sha256: issued.sha256,
        not_after: issued.not_after,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "access_list_hosts",
    tag = "access",
    responses(
        (status = 200, description = "done", body = HostList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_hosts(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<HostList>, ApiError> {
    authorize(&app, &caller, Action::ManageHosts, Target::Service).await?;
    let hosts = app
        .store
        .hosts()
        .await?
        .into_iter()
        .map(|h| HostInfo {
            id: h.id,
            name: h.name,
            group: h.group,
            cert_sha256: h.cert_sha256,
            not_after: h.not_after,
            enrolled_by: h.enrolled_by,
            revoked_at: h.revoked_at,
        })
        .collect();
    Ok(Json(HostList { hosts }))
}

#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/revoke",
    operation_id = "access_revoke_host",
    tag = "access",
    params(("name" = String, Path, description = "name (see the route)")),
    responses(
        (status = 200, description = "done", body = HostRevoked),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke_host(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<HostRevoked>, ApiError> {
    let decision = authorize(&app, &caller, Action::ManageHosts, Target::Service).await?;
    let name = HostName::parse(&name)?;
    let entry = caller
        .entry("host.revoke", "service")
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("host {name}"));
    app.store.revoke_host(&name, entry).await?;
    Ok(Json(HostRevoked {
        name,
        revoked: true,
    }))
}

// ----- hosts as a vendor sees them -----------------------------------------------------------

fn vendor_host(h: store::VendorHost) -> VendorHost {
    VendorHost {
        id: h.host.id,
        name: h.host.name,
        group: h.host.group,
        revoked_at: h.host.revoked_at,
        approved_by: h.approved_by,
    }
}

/// Hosts in groups the vendor's models allow, and hosts it approved.
#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/hosts",
    operation_id = "access_list_vendor_hosts",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = VendorHostList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_vendor_hosts(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<VendorHostList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::ManageHosts, Target::Vendor(&vendor)).await?;
    let hosts = app.store.vendor_hosts(&vendor.id).await?;
    Ok(Json(VendorHostList {
        vendor: vendor.name,
        hosts: hosts.into_iter().map(vendor_host).collect(),
    }))
}

/// The vendor's approval of a host's live enrollment: without it the host receives none of
/// the vendor's weights, whatever group it is in.
#[utoipa::path(
    post,
    path = "/v1/vendors/{vendor}/hosts",
    operation_id = "access_approve_host",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    request_body = ApproveHost,
    responses(
        (status = 200, description = "done", body = Outcome<HostApproval>),
        (status = 202, description = "waits for approval", body = Outcome<HostApproval>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn approve_host(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
    body: Result<Json<ApproveHost>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<HostApproval>>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::ManageHosts, Target::Vendor(&vendor)).await?;
    let name = HostName::parse(&json_body(body)?.host)?;
    let host = app
        .store
        .live_host(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("enrolled host {name}")))?;
    let detail = format!("host {name} (enrollment {}, group {})", host.id, host.group);
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
    if needed > 0 {
        let entry = caller
            .entry("host.approve.request", vendor.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(detail);
        let action = PendingAction::ApproveHost {
            host_id: host.id.clone(),
        };
        let filed = approvals::file(&app, &caller, &vendor, &action, None, needed, entry).await?;
        return Ok(filed_response(&filed));
    }
    let entry = caller
        .entry("host.approve", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(detail);
    app.store
        .approve_host(&vendor.id, &host.id, &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Outcome::Done(HostApproval {
            vendor: vendor.name,
            host: host.name,
            host_id: host.id,
            approved: true,
        })),
    ))
}

/// Withdraws the vendor's approval of a host (at once: it narrows access).
#[utoipa::path(
    delete,
    path = "/v1/vendors/{vendor}/hosts/{host}",
    operation_id = "access_unapprove_host",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("host" = String, Path, description = "host (see the route)")),
    responses(
        (status = 200, description = "done", body = HostApproval),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn unapprove_host(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, name)): Path<(String, String)>,
) -> Result<Json<HostApproval>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::ManageHosts, Target::Vendor(&vendor)).await?;
    let name = HostName::parse(&name)?;
    let approved = app
        .store
        .vendor_hosts(&vendor.id)
        .await?
        .into_iter()
        .filter(|h| h.host.name == name && h.approved_by.is_some())
        .map(|h| h.host)
        .collect::<Vec<_>>();
    if approved.is_empty() {
        return Err(ApiError::NotFound(format!("approval of host {name}")));
    }
    let mut last = None;
    for host in approved {
        let entry = caller
            .entry("host.unapprove", vendor.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(format!("host {name} (enrollment {})", host.id));
        app.store
            .unapprove_host(&vendor.id, &host.id, entry)
            .await?;
        last = Some(host);
    }
    let host = last.ok_or_else(|| ApiError::NotFound(format!("approval of host {name}")))?;
    Ok(Json(HostApproval {
        vendor: vendor.name,
        host: host.name,
        host_id: host.id,
        approved: false,
    }))
}

// ----- host groups of a model -----------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/models/{vendor}/{model}/host-groups",
    operation_id = "access_allow_host_group",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = AllowHostGroup,
    responses(
        (status = 200, description = "done", body = Outcome<HostGroupChanged>),
        (status = 202, description = "waits for approval", body = Outcome<HostGroupChanged>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn allow_host_group(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<AllowHostGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<HostGroupChanged>>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::ManageHosts, &found).await?;
    let group = HostGroupName::parse(&json_body(body)?.group)?;
    suggest::known_host_group(&app, &group).await?;
    let vendor = vendor_of(&found);
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
    if needed > 0 {
        let entry = caller
            .entry("host-group.allow.request", found.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(format!("host group {group}"));
        let action = PendingAction::AllowHostGroup {
            model_id: found.record.id.clone(),
            group,
        };
        let filed = approvals::file(&app, &caller, &vendor, &action, None, needed, entry).await?;
        return Ok(filed_response(&filed));
    }
    let entry = caller
        .entry("host-group.allow", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("host group {group}"));
    app.store
        .allow_host_group(&found.record.id, &group, &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Outcome::Done(HostGroupChanged {
            model: found.name,
            host_group: group,
        })),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/models/{vendor}/{model}/host-groups/{group}",
    operation_id = "access_disallow_host_group",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)"), ("group" = String, Path, description = "group (see the route)")),
    responses(
        (status = 200, description = "done", body = HostGroupChanged),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn disallow_host_group(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, group)): Path<(String, String, String)>,
) -> Result<Json<HostGroupChanged>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::ManageHosts, &found).await?;
    let group = HostGroupName::parse(&group)?;
    let entry = caller
        .entry("host-group.disallow", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("host group {group}"));
    app.store
        .disallow_host_group(&found.record.id, &group, entry)
        .await?;
    Ok(Json(HostGroupChanged {
        model: found.name,
        host_group: group,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/host-groups",
    operation_id = "access_list_host_groups",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = ModelHostGroups),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_host_groups(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<ModelHostGroups>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadMetadata, &found).await?;
    let host_groups = app.store.model_host_groups(&found.record.id).await?;
    Ok(Json(ModelHostGroups {
        model: found.name,
        host_groups,
    }))
}

// ----- embargo -----------------------------------------------------------------------------

/// Whether moving the window `old` to `new` allows bytes at some time `old` did not: it opens
/// earlier, or closes later (a missing bound is open-ended).
fn embargo_widens(old: (Option<i64>, Option<i64>), new: (Option<i64>, Option<i64>)) -> bool {
    let opens_earlier = match (old.0, new.0) {
        (Some(o), Some(n)) => n < o,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let closes_later = match (old.1, new.1) {
        (Some(o), Some(n)) => n > o,
        (Some(_), None) => true,
        (None, _) => false,
    };
    opens_earlier || closes_later
}

/// Sets a model's window for bytes (Unix seconds, each end optional; both absent clears it).
/// A window that allows bytes at a time the old one did not is a widening change.
#[utoipa::path(
    put,
    path = "/v1/models/{vendor}/{model}/embargo",
    operation_id = "access_set_embargo",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = SetEmbargo,
    responses(
        (status = 200, description = "done", body = Outcome<Embargo>),
        (status = 202, description = "waits for approval", body = Outcome<Embargo>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set_embargo(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<SetEmbargo>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<Embargo>>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Configure, &found).await?;
    let request = json_body(body)?;
    if let (Some(nb), Some(na)) = (request.not_before, request.not_after)
        && nb >= na
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidWindow,
            "not_before must be earlier than not_after",
        ));
    }
    let detail = format!(
        "not_before {:?} not_after {:?}",
        request.not_before, request.not_after
    );
    let vendor = vendor_of(&found);
    let old = app.store.embargo(&found.record.id).await?;
    if embargo_widens(old, (request.not_before, request.not_after)) {
        let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
        if needed > 0 {
            let entry = caller
                .entry("embargo.set.request", found.name.as_str())
                .with_decision(true, &policy_ids(&decision))
                .with_detail(detail);
            let action = PendingAction::Embargo {
                model_id: found.record.id.clone(),
                not_before: request.not_before,
                not_after: request.not_after,
            };
            let filed =
                approvals::file(&app, &caller, &vendor, &action, None, needed, entry).await?;
            return Ok(filed_response(&filed));
        }
    }
    let entry = caller
        .entry("embargo.set", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(detail);
    app.store
        .set_embargo(
            &found.record.id,
            request.not_before,
            request.not_after,
            entry,
        )
        .await?;
    Ok((
        StatusCode::OK,
        Json(Outcome::Done(Embargo {
            model: found.name,
            not_before: request.not_before,
            not_after: request.not_after,
        })),
    ))
}

// ----- exclusions --------------------------------------------------------------------------

/// Decides an exclusion change on one model of the vendor, or on the whole vendor; returns
/// the decision, the model id (if any) and the resource name for the audit entry.
async fn authorize_exclusion(
    app: &App,
    caller: &Caller,
    vendor: &VendorRecord,
    model: Option<&str>,
) -> Result<(policy::Decision, Option<String>, String), ApiError> {
    Ok(match model {
        Some(model) => {
            let found = load_model(app, vendor.name.as_str(), model).await?;
            let decision = authorize_model(app, caller, Action::Exclude, &found).await?;
            (decision, Some(found.record.id), found.name)
        }
        None => {
            let decision = authorize(app, caller, Action::Exclude, Target::Vendor(vendor)).await?;
            (decision, None, vendor.name.to_string())
        }
    })
}

/// Excludes a user from one model or the whole vendor. An exclusion wins over every grant,
/// group grants included. It narrows access, so it applies at once.
#[utoipa::path(
    post,
    path = "/v1/vendors/{vendor}/exclusions",
    operation_id = "access_exclude",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    request_body = Exclude,
    responses(
        (status = 201, description = "done", body = Excluded),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn exclude(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
    body: Result<Json<Exclude>, JsonRejection>,
) -> Result<(StatusCode, Json<Excluded>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let request = json_body(body)?;
    let user = UserName::parse(&request.user)?;
    let (decision, model_id, resource) =
        authorize_exclusion(&app, &caller, &vendor, request.model.as_deref()).await?;
    let entry = caller
        .entry("exclude", resource.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user}"));
    app.store
        .exclude(
            &vendor.id,
            model_id.as_deref(),
            &user,
            &caller.actor(),
            entry,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Excluded {
            excluded: user,
            from: resource,
        }),
    ))
}

/// Lifts an exclusion: a widening change.
#[utoipa::path(
    delete,
    path = "/v1/vendors/{vendor}/exclusions/{user}",
    operation_id = "access_unexclude",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("user" = String, Path, description = "user (see the route)"), ExclusionQuery),
    responses(
        (status = 200, description = "done", body = Outcome<Unexcluded>),
        (status = 202, description = "waits for approval", body = Outcome<Unexcluded>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn unexclude(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, user)): Path<(String, String)>,
    Query(query): Query<ExclusionQuery>,
) -> Result<(StatusCode, Json<Outcome<Unexcluded>>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let user = UserName::parse(&user)?;
    let (decision, model_id, resource) =
        authorize_exclusion(&app, &caller, &vendor, query.model.as_deref()).await?;
    if !app
        .store
        .is_excluded(&vendor.id, model_id.as_deref(), &user)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "exclusion of {user} from {resource}"
        )));
    }
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
    if needed > 0 {
        let entry = caller
            .entry("unexclude.request", resource.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(format!("user {user}"));
        let subject = app.store.user(&user).await?.map(|u| u.id);
        let action = PendingAction::Unexclude {
            model_id: model_id.clone(),
            user,
        };
        let filed = approvals::file(
            &app,
            &caller,
            &vendor,
            &action,
            subject.as_deref(),
            needed,
            entry,
        )
        .await?;
        return Ok(filed_response(&filed));
    }
    let entry = caller
        .entry("unexclude", resource.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user}"));
    app.store
        .unexclude(&vendor.id, model_id.as_deref(), &user, entry)
        .await?;
    Ok((
        StatusCode::OK,
        Json(Outcome::Done(Unexcluded {
            unexcluded: user,
            from: resource,
        })),
    ))
}

fn exclusion_bodies(list: Vec<store::ExclusionRecord>) -> Vec<Exclusion> {
    list.into_iter()
        .map(|e| Exclusion {
            user: e.user,
            model: e.model,
            created_by: e.created_by,
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/exclusions",
    operation_id = "access_list_exclusions",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = ExclusionList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_exclusions(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<ExclusionList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::Exclude, Target::Vendor(&vendor)).await?;
    let exclusions = exclusion_bodies(app.store.exclusions(&vendor.id).await?);
    Ok(Json(ExclusionList {
        vendor: vendor.name,
        exclusions,
    }))
}

// ----- the two-person rule -----------------------------------------------------------------

/// Turns the two-person rule on (at once: it narrows) or off (a widening change, which waits
/// for a second person while the rule is on).
#[utoipa::path(
    put,
    path = "/v1/vendors/{vendor}/settings",
    operation_id = "access_set_vendor_settings",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    request_body = VendorSettings,
    responses(
        (status = 200, description = "done", body = VendorSettingsChanged),
        (status = 202, description = "done", body = VendorSettingsChanged),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set_vendor_settings(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
    body: Result<Json<VendorSettings>, JsonRejection>,
) -> Result<(StatusCode, Json<VendorSettingsChanged>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::Configure, Target::Vendor(&vendor)).await?;
    let wanted = json_body(body)?.two_person;
    let current = app.store.requires_approval(&vendor.id).await?;
    if current && !wanted {
        let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
        if needed > 0 {
            let entry = caller
                .entry("two-person.disable.request", vendor.name.as_str())
                .with_decision(true, &policy_ids(&decision));
            let filed = approvals::file(
                &app,
                &caller,
                &vendor,
                &PendingAction::DisableTwoPerson,
                None,
                needed,
                entry,
            )
            .await?;
            return Ok((
                StatusCode::ACCEPTED,
                Json(VendorSettingsChanged {
                    vendor: vendor.name,
                    two_person: true,
                    pending: Some(filed.id),
                }),
            ));
        }
    }
    let entry = caller
        .entry("two-person.set", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("two_person {wanted}"));
    app.store
        .set_requires_approval(&vendor.id, wanted, entry)
        .await?;
    Ok((
        StatusCode::OK,
        Json(VendorSettingsChanged {
            vendor: vendor.name,
            two_person: wanted,
            pending: None,
        }),
    ))
}

// ----- pending requests --------------------------------------------------------------------

/// A request as its reader sees it: names, never internal ids, except where they are the
/// only name (a host enrollment, a token).
async fn pending_request(app: &App, p: PendingRecord) -> Result<PendingRequest, ApiError> {
    let model = match p.action.model_id() {
        Some(id) => app
            .store
            .model_by_id(id)
            .await?
            .map(|m| format!("{}/{}", m.vendor, m.name)),
        None => None,
    };
    let request = match p.action.clone() {
        PendingAction::Grant { to, expires_at, .. } => wire::access::PendingAction::Grant {
            to: to.to_tagged(),
            expires_at,
        },
        PendingAction::Delete { .. } => wire::access::PendingAction::Delete,
        PendingAction::DisableTwoPerson => wire::access::PendingAction::DisableTwoPerson,
        PendingAction::Unexclude { user, .. } => wire::access::PendingAction::Unexclude { user },
        PendingAction::Embargo {
            not_before,
            not_after,
            ..
        } => wire::access::PendingAction::Embargo {
            not_before,
            not_after,
        },
        PendingAction::AllowHostGroup { group, .. } => {
            wire::access::PendingAction::AllowHostGroup { group }
        }
        PendingAction::ApproveHost { host_id } => {
            let host = app
                .store
                .hosts()
                .await?
                .into_iter()
                .find(|h| h.id == host_id)
                .ok_or_else(|| ApiError::Internal(format!("pending approval of host {host_id}")))?;
            wire::access::PendingAction::ApproveHost {
                host: host.name,
                host_id,
            }
        }
        PendingAction::DeleteAfter { at, .. } => wire::access::PendingAction::DeleteAfter { at },
        PendingAction::AddGroupMember { group, user } => {
            wire::access::PendingAction::AddGroupMember { group, user }
        }
        PendingAction::Budget { budget, .. } => wire::access::PendingAction::Budget {
            budget: budget.as_ref().map(super::budget::to_wire),
        },
        PendingAction::EndorseCredential { token_id } => {
            let token = app
                .store
                .token(&token_id)
                .await?
                .ok_or_else(|| ApiError::Internal(format!("pending token {token_id}")))?;
            wire::access::PendingAction::EndorseCredential {
                token_id,
                user: token.user,
                role: token.role,
            }
        }
    };
    let expired = p.expired(app.store.clock().now());
    let approved_by = (p.state == "approved").then(|| p.approvers());
    Ok(PendingRequest {
        model,
        request,
        requested_by: p.requested_by,
        created_at: p.created_at,
        approved_by,
        approvals: p
            .approvals
            .into_iter()
            .map(|a| Approval {
                by: a.approver,
                at: a.approved_at,
            })
            .collect(),
        approvals_needed: p.approvals_needed,
        expires_at: p.expires_at,
        expired,
        state: p.state,
        id: p.id,
    })
}

async fn pending_bodies(app: &App, vendor_id: &str) -> Result<Vec<PendingRequest>, ApiError> {
    let mut pending = Vec::new();
    for p in app.store.pending_for_vendor(vendor_id).await? {
        pending.push(pending_request(app, p).await?);
    }
    Ok(pending)
}

#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/pending",
    operation_id = "access_list_pending",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = PendingList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_pending(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<PendingList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::Approve, Target::Vendor(&vendor)).await?;
    let pending = pending_bodies(&app, &vendor.id).await?;
    Ok(Json(PendingList {
        vendor: vendor.name,
        pending,
    }))
}

/// A pending request and what it concerns: one model, or its vendor as a whole.
struct PendingAt {
    pending: PendingRecord,
    model: Option<store::ModelRecord>,
    vendor: VendorRecord,
}

impl PendingAt {
    /// `None` for an id custody did not make or that names no request.
    async fn find(app: &App, id: &str) -> Result<Option<PendingAt>, ApiError> {
        if !crypto::token::is_id(id) {
            return Ok(None);
        }
        let Some(pending) = app.store.pending(id).await? else {
            return Ok(None);
        };
        let model = match pending.action.model_id() {
            Some(m) => app.store.model_by_id(m).await?,
            None => None,
        };
        let vendor = app
            .store
            .vendor_by_id(&pending.vendor_id)
            .await?
            .ok_or_else(|| ApiError::Internal("pending request of no vendor".into()))?;
        Ok(Some(PendingAt {
            pending,
            model,
            vendor,
        }))
    }

    /// What deciding the request is authorized against.
    fn target(&self) -> Target<'_> {
        match &self.model {
            Some(m) => Target::Model(m),
            None => Target::Vendor(&self.vendor),
        }
    }
}

/// Ends a pending request without carrying it out: any of those who may approve it rejects
/// it, its requester cancels it. A narrowing change, so never itself waiting for approval.
#[utoipa::path(
    post,
    path = "/v1/pending/{id}/reject",
    operation_id = "access_reject",
    tag = "access",
    params(("id" = String, Path, description = "id (see the route)")),
    responses(
        (status = 200, description = "done", body = PendingRequest),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn reject(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PendingRequest>, ApiError> {
    let missing = || ApiError::NotFound(format!("pending request {id}"));
    let found = PendingAt::find(&app, &id).await?.ok_or_else(missing)?;
    let (pending, target) = (&found.pending, found.target());
    let by_requester = pending.requester_id.as_deref() == Some(caller.credential.user_id.as_str());
    let policies = if by_requester {
        "requester-cancels-own-request".to_owned()
    } else {
        // Whoever may not approve the request learns nothing of it.
        match authorize(&app, &caller, Action::Approve, target).await {
            Ok(d) => policy_ids(&d),
            Err(ApiError::NotFound(_) | ApiError::ModelNotFound(_)) => return Err(missing()),
            Err(other) => return Err(other),
        }
    };
    let resource = target.name();
    let action = if by_requester {
        "pending.cancel"
    } else {
        "pending.reject"
    };
    let record = app
        .store
        .reject_pending(&id, &caller.actor(), by_requester, |record| {
            caller
                .entry(action, resource.as_str())
                .with_decision(true, &policies)
                .with_detail(format!(
                    "request {id} ({}) by {}: {}",
                    record.action.kind(),
                    record.requested_by,
                    record.state
                ))
        })
        .await?;
    Ok(Json(pending_request(&app, record).await?))
}

/// Records one person's approval of a request of the vendor, and carries the request out
/// when it has all the approvals it needs.
#[utoipa::path(
    post,
    path = "/v1/pending/{id}/approve",
    operation_id = "access_approve",
    tag = "access",
    params(("id" = String, Path, description = "id (see the route)")),
    responses(
        (status = 200, description = "done", body = PendingRequest),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PendingRequest>, ApiError> {
    let missing = || ApiError::NotFound(format!("pending request {id}"));
    let found = PendingAt::find(&app, &id).await?.ok_or_else(missing)?;
    let target = found.target();
    // A request is the vendor's business: whoever may not approve there learns nothing of it.
    let decision = match authorize(&app, &caller, Action::Approve, target).await {
        Ok(d) => d,
        Err(ApiError::NotFound(_) | ApiError::ModelNotFound(_)) => return Err(missing()),
        Err(other) => return Err(other),
    };
    let actor = caller.actor();
    let approver = store::Approver {
        actor: &actor,
        user_id: &caller.credential.user_id,
    };
    let resource = target.name();
    let result = app
        .store
        .approve_pending(&id, &approver, |record, outcome| {
            let detail = match outcome {
                Approved::Done => format!(
                    "request {id} ({}) by {}: approved by {}, carried out",
                    record.action.kind(),
                    record.requested_by,
                    record.approvers()
                ),
                Approved::Partial { have, need } => format!(
                    "request {id} ({}) by {}: approval {have} of {need}",
                    record.action.kind(),
                    record.requested_by
                ),
            };
            caller
                .entry("approve", resource.as_str())
                .with_decision(true, &policy_ids(&decision))
                .with_detail(detail)
        })
        .await;
    let (record, outcome) = match result {
        Ok(done) => done,
        Err(e @ (store::StoreError::Refused(_) | store::StoreError::Conflict(_))) => {
            let entry = caller
                .entry("approve", resource.as_str())
                .with_decision(false, "approvals-by-distinct-people")
                .with_outcome(audit::Outcome::Denied)
                .with_detail(format!("request {id}: {e}"));
            app.store.record(entry).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if outcome == Approved::Done && matches!(record.action, PendingAction::Delete { .. }) {
        app.deletion.wake();
    }
    Ok(Json(pending_request(&app, record).await?))
}

// ----- a vendor's groups -------------------------------------------------------------------

/// Adds a user to one of the vendor's groups: a widening change (every grant to the group
/// reaches them).
#[utoipa::path(
    post,
    path = "/v1/vendors/{vendor}/groups/{group}/members",
    operation_id = "access_add_member",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("group" = String, Path, description = "group (see the route)")),
    request_body = AddMember,
    responses(
        (status = 200, description = "done", body = Outcome<MemberAdded>),
        (status = 202, description = "waits for approval", body = Outcome<MemberAdded>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn add_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, group)): Path<(String, String)>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<MemberAdded>>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::ManageGroups, Target::Vendor(&vendor)).await?;
    let group = GroupName::parse(&group)?;
    let user = UserName::parse(&json_body(body)?.user)?;
    let person = suggest::known_user(&app, &user).await?;
    let detail = format!("user {user} to group {group}");
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
    if needed > 0 {
        let entry = caller
            .entry("group.add.request", vendor.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(detail);
        let action = PendingAction::AddGroupMember { group, user };
        let filed = approvals::file(
            &app,
            &caller,
            &vendor,
            &action,
            Some(&person.id),
            needed,
            entry,
        )
        .await?;
        return Ok(filed_response(&filed));
    }
    let entry = caller
        .entry("group.add", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(detail);
    let follow_up = approvals::follow_up(&app, &caller, &vendor.id).await?;
    app.store
        .add_group_member(
            &vendor.id,
            &group,
            &user,
            &caller.actor(),
            &follow_up,
            entry,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Outcome::Done(MemberAdded {
            vendor: Some(vendor.name),
            group,
            user,
        })),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/vendors/{vendor}/groups/{group}/members/{user}",
    operation_id = "access_remove_member",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("group" = String, Path, description = "group (see the route)"), ("user" = String, Path, description = "user (see the route)")),
    responses(
        (status = 200, description = "done", body = MemberRemoved),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn remove_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, group, user)): Path<(String, String, String)>,
) -> Result<Json<MemberRemoved>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(&app, &caller, Action::ManageGroups, Target::Vendor(&vendor)).await?;
    let group = GroupName::parse(&group)?;
    let user = UserName::parse(&user)?;
    let entry = caller
        .entry("group.remove", vendor.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user} from group {group}"));
    app.store
        .remove_group_member(&vendor.id, &group, &user, entry)
        .await?;
    Ok(Json(MemberRemoved {
        vendor: Some(vendor.name),
        group,
        removed: user,
    }))
}

async fn member_bodies(app: &App, vendor_id: &str) -> Result<Vec<GroupMember>, ApiError> {
    Ok(app
        .store
        .group_members(vendor_id)
        .await?
        .into_iter()
        .map(|(group, user)| GroupMember { group, user })
        .collect())
}

#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/groups",
    operation_id = "access_list_groups",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = GroupMembers),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_groups(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<GroupMembers>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::ManageGroups, Target::Vendor(&vendor)).await?;
    let members = member_bodies(&app, &vendor.id).await?;
    Ok(Json(GroupMembers {
        vendor: Some(vendor.name),
        members,
    }))
}

// ----- a model's access at a glance ----------------------------------------------------------

/// Everything that decides who receives a model's weights, in one answer.
#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/access",
    operation_id = "access_model_access",
    tag = "access",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = ModelAccess),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn model_access(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<ModelAccess>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize(
        &app,
        &caller,
        Action::ReadAccess,
        Target::Model(&found.record),
    )
    .await?;
    let vendor = vendor_of(&found);
    let grants = app
        .store
        .grants(&found.record.id)
        .await?
        .into_iter()
        .map(|g| wire::models::Grant {
            to: g.to.to_tagged(),
            granted_by: g.granted_by,
            expires_at: g.expires_at,
        })
        .collect();
    let model_name = found.record.name.to_string();
    let exclusions = exclusion_bodies(
        app.store
            .exclusions(&vendor.id)
            .await?
            .into_iter()
            .filter(|e| e.model.as_deref().is_none_or(|m| m == model_name))
            .collect(),
    );
    let host_groups = app.store.model_host_groups(&found.record.id).await?;
    let hosts = app
        .store
        .vendor_hosts(&vendor.id)
        .await?
        .into_iter()
        .filter(|h| host_groups.contains(&h.host.group))
        .map(vendor_host)
        .collect();
    let (not_before, not_after) = app.store.embargo(&found.record.id).await?;
    let pending = pending_bodies(&app, &vendor.id)
        .await?
        .into_iter()
        .filter(|p| p.model.is_none() || p.model.as_deref() == Some(found.name.as_str()))
        .collect();
    Ok(Json(ModelAccess {
        model: found.name.clone(),
        grants,
        exclusions,
        groups: member_bodies(&app, &vendor.id).await?,
        host_groups,
        hosts,
        embargo: EmbargoWindow {
            not_before,
            not_after,
        },
        delete_after: found.record.delete_after,
        two_person: app.store.requires_approval(&vendor.id).await?,
        pending,
    }))
}

/// The 202 answer of a change filed for approval.
pub(crate) fn filed_response<T>(filed: &approvals::Filed) -> (StatusCode, Json<Outcome<T>>) {
    (
        StatusCode::ACCEPTED,
        Json(Outcome::Filed(Filed {
            pending: filed.id.clone(),
            approvals_needed: filed.approvals_needed,
            expires_at: filed.expires_at,
            message: approvals::waiting_message(filed),
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::embargo_widens;

    #[test]
    fn a_window_widens_when_it_opens_earlier_or_closes_later() {
        let cases = [
            // (old, new, widens)
            ((Some(10), Some(20)), (Some(10), Some(20)), false),
            ((Some(10), Some(20)), (Some(12), Some(18)), false),
            ((Some(10), Some(20)), (Some(5), Some(20)), true),
            ((Some(10), Some(20)), (Some(10), Some(25)), true),
            ((Some(10), Some(20)), (None, Some(20)), true),
            ((Some(10), Some(20)), (Some(10), None), true),
            ((Some(10), Some(20)), (None, None), true),
            ((None, None), (Some(10), Some(20)), false),
            ((None, None), (None, None), false),
            ((None, Some(20)), (Some(30), None), true),
        ];
        for (old, new, widens) in cases {
            assert_eq!(embargo_widens(old, new), widens, "{old:?} -> {new:?}");
        }
    }
}
