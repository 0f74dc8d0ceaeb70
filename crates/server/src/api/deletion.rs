//! Deletion requests, their progress and certificates, and `delete_after` times.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use policy::Action;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{PendingAction, VendorRecord};

use super::access::load_vendor;
use super::json_body;
use super::models::{authorize_model, load_model};
use crate::App;
use crate::auth::{Caller, Target, authorize, policy_ids, store_now};
use crate::error::ApiError;

/// Starts a deletion, or files it as pending under the vendor's two-person rule.
async fn request(
    app: &App,
    caller: &Caller,
    vendor: &VendorRecord,
    model_id: Option<&str>,
    resource: &str,
    decision: &policy::Decision,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = crypto::token::random_id()?;
    if app.store.requires_approval(&vendor.id).await? {
        let entry = caller
            .entry("deletion.request.pending", resource)
            .with_decision(true, &policy_ids(decision))
            .with_detail(format!("pending {id}"));
        app.store
            .create_pending(
                &id,
                &vendor.id,
                &PendingAction::Delete {
                    model_id: model_id.map(str::to_owned),
                },
                &caller.actor(),
                entry,
            )
            .await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "deletion": id,
                "state": "pending-approval",
                "message": "the vendor requires a second admin's approval; nothing is deleted until then",
            })),
        ));
    }
    let entry = caller
        .entry("deletion.request", resource)
        .with_decision(true, &policy_ids(decision))
        .with_detail(format!("deletion {id}"));
    let record = app
        .store
        .start_deletion(&id, &vendor.id, model_id, &caller.actor(), None, entry)
        .await?;
    app.deletions.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "deletion": record.id, "state": record.state })),
    ))
}

pub(crate) async fn delete_model(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

pub(crate) async fn delete_vendor(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(vendor): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

/// A deletion's progress, and its certificate once issued. Readable by whoever may read the
/// vendor's metadata (its admins, auditors, the operator).
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !crypto::token::is_id(&id) {
        return Err(ApiError::NotFound("deletion".into()));
    }
    let deletion = app
        .store
        .deletion(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deletion {id}")))?;
    let vendor = app
        .store
        .vendor_by_id(&deletion.vendor_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deletion {id}")))?;
    authorize(&app, &caller, Action::ReadMetadata, Target::Vendor(&vendor)).await?;
    let certificate: Option<Value> = deletion
        .certificate
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok());
    Ok(Json(json!({
        "deletion": deletion.id,
        "vendor": vendor.name,
        "state": deletion.state,
        "requested_by": deletion.requested_by,
        "approved_by": deletion.approved_by,
        "requested_at": deletion.requested_at,
        "completed_at": deletion.completed_at,
        "certificate": certificate,
        // A failing step: how often it failed, why, and when it is tried again.
        "attempts": deletion.attempts,
        "last_error": deletion.last_error,
        "retry_at": deletion.retry_at,
    })))
}

/// The public key deletion certificates are signed with (for `custody verify-certificate
/// --service-key`). Public, but only for authenticated callers, like everything else.
pub(crate) async fn service_key(State(app): State<Arc<App>>, _caller: Caller) -> Json<Value> {
    Json(json!({ "service_key": app.service_key.public_hex() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteAfter {
    /// Unix seconds; `null` clears it.
    at: Option<i64>,
}

/// Sets the time at which the server shreds the model by itself (e.g. release + grace).
pub(crate) async fn set_delete_after(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<DeleteAfter>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::RequestDeletion, &found).await?;
    let at = json_body(body)?.at;
    if at.is_some_and(|t| t <= store_now()) {
        return Err(ApiError::bad_request(
            "invalid_time",
            "delete_after must be in the future; to delete now, use `custody delete`",
        ));
    }
    let entry = caller
        .entry("deletion.schedule", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("delete_after {at:?}"));
    app.store
        .set_delete_after(&found.record.id, at, entry)
        .await?;
    Ok(Json(json!({ "model": found.name, "delete_after": at })))
}
