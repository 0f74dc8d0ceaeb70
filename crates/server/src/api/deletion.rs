//! Deletion requests, their progress and certificates, and `delete_after` times.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use policy::Action;
use store::{PendingAction, VendorRecord};
use wire::ErrorCode;
use wire::access::Outcome;
use wire::deletion::{
    DeleteAfter, DeleteAfterSet, DeletionList, DeletionStarted, DeletionStatus, DeletionSummary,
    HostWipe, ServiceKey,
};

use super::access::{filed_response, load_vendor};
use super::json_body;
use super::models::{authorize_model, load_model, vendor_of};
use crate::approvals::{self, Change};
use crate::auth::{Caller, Target, authorize, policy_ids};
use crate::error::ApiError;
use crate::state::App;

/// Starts a deletion, or files it as pending under the vendor's two-person rule (see
/// [`crate::approvals`]: two of the vendor's people must agree).
async fn request(
    app: &App,
    caller: &Caller,
    vendor: &VendorRecord,
    model_id: Option<&str>,
    resource: &str,
    decision: &policy::Decision,
) -> Result<(StatusCode, Json<DeletionStarted>), ApiError> {
    let needed = approvals::approvals_needed(app, caller, vendor, Change::Destroys).await?;
    if needed > 0 {
        let entry = caller
            .entry("deletion.request.pending", resource)
            .with_decision(true, &policy_ids(decision));
        let action = PendingAction::Delete {
            model_id: model_id.map(str::to_owned),
        };
        let filed = approvals::file(app, caller, vendor, &action, None, needed, entry).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(DeletionStarted {
                message: Some(format!(
                    "nothing is deleted until then: {}",
                    approvals::waiting_message(&filed)
                )),
                deletion: filed.id,
                state: DeletionStarted::PENDING_APPROVAL.into(),
            }),
        ));
    }
    let id = crypto::token::random_id()?;
    let entry = caller
        .entry("deletion.request", resource)
        .with_decision(true, &policy_ids(decision))
        .with_detail(format!("deletion {id}"));
    let record = app
        .store
        .start_deletion(&id, &vendor.id, model_id, &caller.actor(), None, entry)
        .await?;
    app.deletion.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(DeletionStarted {
            deletion: record.id,
            state: record.state.to_string(),
            message: None,
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/models/{vendor}/{model}/delete",
    operation_id = "deletion_delete_model",
    tag = "deletion",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = DeletionStarted),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete_model(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeletionStarted>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::RequestDeletion, &found).await?;
    let vendor = load_vendor(&app, found.record.vendor.as_str()).await?;
    request(
        &app,
        &caller,
        &vendor,
        Some(&found.record.id),
        &found.name,
        &decision,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vendors/{vendor}/delete",
    operation_id = "deletion_delete_vendor",
    tag = "deletion",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = DeletionStarted),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete_vendor(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<(StatusCode, Json<DeletionStarted>), ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    let decision = authorize(
        &app,
        &caller,
        Action::RequestDeletion,
        Target::Vendor(&vendor),
    )
    .await?;
    let resource = vendor.name.to_string();
    request(&app, &caller, &vendor, None, &resource, &decision).await
}

/// A deletion's progress, and its certificate once issued. Readable by the vendor's admins
/// and auditors and the operator; anyone else gets exactly what a made-up id gets.
#[utoipa::path(
    get,
    path = "/v1/deletions/{id}",
    operation_id = "deletion_status",
    tag = "deletion",
    params(("id" = String, Path, description = "id (see the route)")),
    responses(
        (status = 200, description = "done", body = DeletionStatus),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeletionStatus>, ApiError> {
    let missing = || ApiError::NotFound(format!("deletion {id}"));
    if !crypto::token::is_id(&id) {
        return Err(missing());
    }
    let deletion = app.store.deletion(&id).await?.ok_or_else(missing)?;
    let vendor = app
        .store
        .vendor_by_id(&deletion.vendor_id)
        .await?
        .ok_or_else(missing)?;
    match authorize(
        &app,
        &caller,
        Action::ReadDeletions,
        Target::Vendor(&vendor),
    )
    .await
    {
        Ok(_) => {}
        // The refusal is in the audit log; the caller learns nothing of the deletion.
        Err(ApiError::Denied(_) | ApiError::NotFound(_)) => return Err(missing()),
        Err(other) => return Err(other),
    }
    let certificate = deletion
        .certificate
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok());
    // Hosts the signed certificate shows as confirmed: a confirmation it does not show came
    // after it was issued.
    let in_certificate: Option<Vec<String>> = deletion.certificate.as_deref().map(|c| {
        serde_json::from_str::<::certificate::CertificateFile>(c)
            .map(|f| {
                f.certificate
                    .deletion
                    .hosts
                    .into_iter()
                    .filter(|h| h.wipe_confirmed)
                    .map(|h| h.host)
                    .collect()
            })
            .unwrap_or_default()
    });
    let wipes = current_wipes(&app, &deletion.id, in_certificate.as_deref()).await?;
    Ok(Json(DeletionStatus {
        deletion: deletion.id,
        vendor: vendor.name,
        state: deletion.state.to_string(),
        requested_by: deletion.requested_by,
        approved_by: deletion.approved_by,
        requested_at: deletion.requested_at,
        completed_at: deletion.completed_at,
        certificate,
        attempts: deletion.attempts,
        last_error: deletion.last_error,
        retry_at: deletion.retry_at,
        wipes,
    }))
}

/// `GET /v1/vendors/{vendor}/deletions`: the vendor's deletions, newest first, for whoever
/// may follow them (the vendor's admins and auditors, the operator).
#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/deletions",
    operation_id = "deletion_list",
    tag = "deletion",
    params(("vendor" = String, Path, description = "vendor (see the route)")),
    responses(
        (status = 200, description = "done", body = DeletionList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<DeletionList>, ApiError> {
    let vendor = load_vendor(&app, &vendor).await?;
    authorize(
        &app,
        &caller,
        Action::ReadDeletions,
        Target::Vendor(&vendor),
    )
    .await?;
    let mut deletions = Vec::new();
    for d in app.store.deletions_of_vendor(&vendor.id).await? {
        let model = match &d.model_id {
            Some(id) => Some(match app.store.model_by_id(id).await? {
                Some(m) => format!("{}/{}", m.vendor, m.name),
                None => id.clone(),
            }),
            None => None,
        };
        let certified = d.state == store::DeletionState::Certified;
        deletions.push(DeletionSummary {
            deletion: d.id,
            model,
            state: d.state.to_string(),
            requested_by: d.requested_by,
            requested_at: d.requested_at,
            certified_at: d.completed_at.filter(|_| certified),
            last_error: d.last_error,
        });
    }
    Ok(Json(DeletionList {
        vendor: vendor.name,
        deletions,
    }))
}

/// Every host enrollment that received files of the deletion's models, and its wipe
/// confirmation as it stands now.
async fn current_wipes(
    app: &App,
    deletion_id: &str,
    confirmed_in_certificate: Option<&[String]>,
) -> Result<Vec<HostWipe>, ApiError> {
    let confirmations = app.store.wipe_confirmations(deletion_id).await?;
    let mut wipes = Vec::new();
    for model_id in app.store.deletion_models(deletion_id).await? {
        let model = match app.store.model_by_id(&model_id).await? {
            Some(m) => format!("{}/{}", m.vendor, m.name),
            None => model_id.clone(),
        };
        let mut held: std::collections::BTreeMap<String, HostWipe> = Default::default();
        for copy in app.store.host_copies(&model_id).await? {
            let entry = held.entry(copy.host_id.clone()).or_insert_with(|| {
                let confirmed_at = confirmations
                    .iter()
                    .find(|c| c.host_id == copy.host_id && c.model_id == model_id)
                    .map(|c| c.confirmed_at);
                HostWipe {
                    host: copy.host.clone(),
                    host_id: copy.host_id.clone(),
                    model: model.clone(),
                    files: 0,
                    confirmed_at,
                    // The certificate names a host by its name and enrollment.
                    late: confirmed_at.is_some()
                        && confirmed_in_certificate.is_some_and(|hosts| {
                            !hosts.contains(&format!("{} (enrollment {})", copy.host, copy.host_id))
                        }),
                }
            });
            entry.files += 1;
        }
        wipes.extend(held.into_values());
    }
    Ok(wipes)
}

/// The public key deletion certificates are signed with (for `custody verify-certificate
/// --service-key`). Public, but only for authenticated callers, like everything else.
#[utoipa::path(
    get,
    path = "/v1/service-key",
    operation_id = "deletion_service_key",
    tag = "deletion",
    responses(
        (status = 200, description = "done", body = ServiceKey),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn service_key(State(app): State<Arc<App>>, _caller: Caller) -> Json<ServiceKey> {
    Json(ServiceKey {
        service_key: app.deletion.service_key_hex(),
    })
}

/// Sets the time at which the server shreds the model by itself (e.g. release + grace).
/// Scheduling destruction waits for the vendor's approval under the two-person rule; the
/// deletion it starts names who scheduled it and who approved.
#[utoipa::path(
    put,
    path = "/v1/models/{vendor}/{model}/delete-after",
    operation_id = "deletion_set_delete_after",
    tag = "deletion",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = DeleteAfter,
    responses(
        (status = 200, description = "done", body = Outcome<DeleteAfterSet>),
        (status = 202, description = "waits for approval", body = Outcome<DeleteAfterSet>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set_delete_after(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<DeleteAfter>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<DeleteAfterSet>>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::RequestDeletion, &found).await?;
    let at = json_body(body)?.at;
    if at.is_some_and(|t| t <= app.store.clock().now()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTime,
            "delete_after must be in the future; to delete now, use `custody delete`",
        ));
    }
    let vendor = vendor_of(&found);
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Destroys).await?;
    if needed > 0 {
        let entry = caller
            .entry("deletion.schedule.request", found.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(format!("delete_after {at:?}"));
        let action = PendingAction::DeleteAfter {
            model_id: found.record.id.clone(),
            at,
        };
        let filed = approvals::file(&app, &caller, &vendor, &action, None, needed, entry).await?;
        return Ok(filed_response(&filed));
    }
    let entry = caller
        .entry("deletion.schedule", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("delete_after {at:?}"));
    app.store
        .set_delete_after(&found.record.id, at, &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::OK,
        Json(Outcome::Done(DeleteAfterSet {
            model: found.name,
            delete_after: at,
        })),
    ))
}
