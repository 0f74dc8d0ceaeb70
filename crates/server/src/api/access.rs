//! Who may do what: exclusive hosts and their certificates, the host groups a model allows,
//! user groups, exclusions, embargo windows, and requests waiting for a second vendor admin. Each route asks [`authorize`] first and records its change with its audit entry.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use policy::Action;
use store::{NewHost, PendingAction, PendingRecord, VendorRecord};
use types::{GroupName, HostGroupName, HostName, UserName, VendorName};
use wire::ErrorCode;
use wire::access::{
    AddMember, AllowHostGroup, Embargo, EnrollHost, Exclude, Excluded, Exclusion, ExclusionList,
    ExclusionQuery, GroupMember, GroupMembers, HostEnrolled, HostGroupChanged, HostInfo, HostList,
    HostRevoked, MemberAdded, MemberRemoved, ModelHostGroups, PendingList, PendingRequest,
    SetEmbargo, Unexcluded, VendorSettings, VendorSettingsChanged,
};

use super::json_body;
use super::models::{authorize_model, load_model};
use crate::App;
use crate::auth::{Caller, Target, authorize, policy_ids, store_now};
use crate::error::ApiError;

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
        store_now(),
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

// ----- host groups of a model -----------------------------------------------------------------

pub(crate) async fn allow_host_group(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<AllowHostGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<HostGroupChanged>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::ManageHosts, &found).await?;
    let group = HostGroupName::parse(&json_body(body)?.group)?;
    let entry = caller
        .entry("host-group.allow", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("host group {group}"));
    app.store
        .allow_host_group(&found.record.id, &group, &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(HostGroupChanged {
            model: found.name,
            host_group: group,
        }),
    ))
}

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

/// Sets a model's window for bytes (Unix seconds, each end optional; both absent clears it).
pub(crate) async fn set_embargo(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<SetEmbargo>, JsonRejection>,
) -> Result<Json<Embargo>, ApiError> {
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
    let entry = caller
        .entry("embargo.set", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!(
            "not_before {:?} not_after {:?}",
            request.not_before, request.not_after
        ));
    app.store
        .set_embargo(
            &found.record.id,
            request.not_before,
            request.not_after,
            entry,
        )
        .await?;
    Ok(Json(Embargo {
        model: found.name,
        not_before: request.not_before,
        not_after: request.not_after,
    }))
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
/// group grants included.
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

pub(crate) async fn unexclude(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, user)): Path<(String, String)>,
    Query(query): Query<ExclusionQuery>,
) -> Result<Json<Unexcluded>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let user = UserName::parse(&user)?;
    let (decision, model_id, resource) =
        authorize_exclusion(&app, &caller, &vendor, query.model.as_deref()).await?;
    let entry = caller
        .entry("unexclude", resource.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user}"));
    app.store
        .unexclude(&vendor.id, model_id.as_deref(), &user, entry)
        .await?;
    Ok(Json(Unexcluded {
        unexcluded: user,
        from: resource,
    }))
}

pub(crate) async fn list_exclusions(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<ExclusionList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::Exclude, Target::Vendor(&vendor)).await?;
    let exclusions = app
        .store
        .exclusions(&vendor.id)
        .await?
        .into_iter()
        .map(|e| Exclusion {
            user: e.user,
            model: e.model,
            created_by: e.created_by,
        })
        .collect();
    Ok(Json(ExclusionList {
        vendor: vendor.name,
        exclusions,
    }))
}

// ----- two-person rule ---------------------------------------------------------------------

/// Turns the two-person rule on (at once) or off (which itself waits for a second admin
/// while the rule is on).
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
        let id = crypto::token::random_id()?;
        let entry = caller
            .entry("two-person.disable.request", vendor.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(format!("pending {id}"));
        app.store
            .create_pending(
                &id,
                &vendor.id,
                &PendingAction::DisableTwoPerson,
                &caller.actor(),
                entry,
            )
            .await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(VendorSettingsChanged {
                vendor: vendor.name,
                two_person: true,
                pending: Some(id),
            }),
        ));
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

fn pending_request(p: PendingRecord, model: Option<String>) -> PendingRequest {
    let request = match p.action {
        PendingAction::Grant { to, expires_at, .. } => wire::access::PendingAction::Grant {
            to: to.to_tagged(),
            expires_at,
        },
        PendingAction::Delete { .. } => wire::access::PendingAction::Delete,
        PendingAction::DisableTwoPerson => wire::access::PendingAction::DisableTwoPerson,
    };
    PendingRequest {
        id: p.id,
        model,
        request,
        requested_by: p.requested_by,
        created_at: p.created_at,
        state: p.state,
        approved_by: p.decided_by,
    }
}

async fn model_name(app: &App, p: &PendingRecord) -> Result<Option<String>, ApiError> {
    let model_id = match &p.action {
        PendingAction::Grant { model_id, .. } => Some(model_id.as_str()),
        PendingAction::Delete { model_id } => model_id.as_deref(),
        PendingAction::DisableTwoPerson => None,
    };
    Ok(match model_id {
        Some(id) => app
            .store
            .model_by_id(id)
            .await?
            .map(|m| format!("{}/{}", m.vendor, m.name)),
        None => None,
    })
}

pub(crate) async fn list_pending(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<PendingList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(&app, &caller, Action::Approve, Target::Vendor(&vendor)).await?;
    let mut pending = Vec::new();
    for p in app.store.pending_for_vendor(&vendor.id).await? {
        let model = model_name(&app, &p).await?;
        pending.push(pending_request(p, model));
    }
    Ok(Json(PendingList {
        vendor: vendor.name,
        pending,
    }))
}

/// Approves a request of another admin of the same vendor, and carries it out.
pub(crate) async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PendingRequest>, ApiError> {
    if !crypto::token::is_id(&id) {
        return Err(ApiError::NotFound("pending request".into()));
    }
    let pending = app
        .store
        .pending(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("pending request {id}")))?;
    let model = match &pending.action {
        PendingAction::Grant { model_id, .. } => app.store.model_by_id(model_id).await?,
        PendingAction::Delete { model_id: Some(m) } => app.store.model_by_id(m).await?,
        _ => None,
    };
    let vendor_record = app
        .store
        .vendor_by_id(&pending.vendor_id)
        .await?
        .ok_or_else(|| ApiError::Internal("pending request of no vendor".into()))?;
    let target = match &model {
        Some(m) => Target::Model(m),
        None => Target::Vendor(&vendor_record),
    };
    let decision = authorize(&app, &caller, Action::Approve, target).await?;
    if pending.state != "pending" {
        return Err(ApiError::Conflict(format!(
            "request {id} is already {}",
            pending.state
        )));
    }
    if pending.requested_by == caller.actor() {
        let entry = caller
            .entry("approve", target.name())
            .with_decision(false, "two-person-rule")
            .with_outcome(audit::Outcome::Denied)
            .with_detail(format!("own request {id}"));
        app.store.record(entry).await?;
        return Err(ApiError::Denied(
            "you cannot approve your own request: a second vendor admin must approve it".into(),
        ));
    }
    let entry = caller
        .entry("approve", target.name())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("request {id} by {}", pending.requested_by));
    let approved = app
        .store
        .approve_pending(&id, &caller.actor(), entry)
        .await?;
    if matches!(approved.action, PendingAction::Delete { .. }) {
        app.deletions.notify_one();
    }
    let name = model_name(&app, &approved).await?;
    Ok(Json(pending_request(approved, name)))
}

// ----- groups ------------------------------------------------------------------------------

pub(crate) async fn add_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> Result<(StatusCode, Json<MemberAdded>), ApiError> {
    let decision = authorize(&app, &caller, Action::ManageGroups, Target::Service).await?;
    let group = GroupName::parse(&group)?;
    let user = UserName::parse(&json_body(body)?.user)?;
    let entry = caller
        .entry("group.add", "service")
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user} to group {group}"));
    app.store
        .add_group_member(&group, &user, &caller.actor(), entry)
        .await?;
    Ok((StatusCode::CREATED, Json(MemberAdded { group, user })))
}

pub(crate) async fn remove_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((group, user)): Path<(String, String)>,
) -> Result<Json<MemberRemoved>, ApiError> {
    let decision = authorize(&app, &caller, Action::ManageGroups, Target::Service).await?;
    let group = GroupName::parse(&group)?;
    let user = UserName::parse(&user)?;
    let entry = caller
        .entry("group.remove", "service")
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("user {user} from group {group}"));
    app.store.remove_group_member(&group, &user, entry).await?;
    Ok(Json(MemberRemoved {
        group,
        removed: user,
    }))
}

pub(crate) async fn list_groups(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<GroupMembers>, ApiError> {
    authorize(&app, &caller, Action::ManageGroups, Target::Service).await?;
    let members = app
        .store
        .group_members()
        .await?
        .into_iter()
        .map(|(group, user)| GroupMember { group, user })
        .collect();
    Ok(Json(GroupMembers { members }))
}
