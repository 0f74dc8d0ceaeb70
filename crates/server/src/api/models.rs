//! Model metadata and grants.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use policy::{Action, Decision, Resource};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ModelRecord, RevisionRecord};
use types::{CommitId, ModelName, UserName, VendorName};

use super::json_body;
use crate::App;
use crate::auth::{Caller, authorize};
use crate::error::ApiError;

/// A model found by name, with its display name `vendor/model`.
pub(crate) struct Found {
    pub record: ModelRecord,
    pub name: String,
}

pub(crate) async fn load_model(app: &App, vendor: &str, model: &str) -> Result<Found, ApiError> {
    let vendor = VendorName::parse(vendor)?;
    let model = ModelName::parse(model)?;
    let name = format!("{vendor}/{model}");
    let record = app
        .store
        .model(&vendor, &model)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {name}")))?;
    Ok(Found { record, name })
}

/// Decides `action` on a model, gathering the facts the policy needs.
pub(crate) async fn authorize_model(
    app: &App,
    caller: &Caller,
    action: Action,
    found: &Found,
) -> Result<Decision, ApiError> {
    let granted = app
        .store
        .is_granted(&found.record.id, &caller.principal.user)
        .await?;
    let resource = Resource::Model {
        vendor: &found.record.vendor,
        granted,
    };
    authorize(app, caller, action, resource, &found.name).await
}

/// `main` (or `latest`) names the newest revision; otherwise a 40-hex commit id.
pub(crate) async fn resolve_revision(
    app: &App,
    found: &Found,
    rev: &str,
) -> Result<RevisionRecord, ApiError> {
    let revision = if rev == "main" || rev == "latest" {
        app.store.latest_revision(&found.record.id).await?
    } else {
        let commit = CommitId::parse(rev)
            .map_err(|e| ApiError::bad_request("invalid_revision", e.to_string()))?;
        app.store.revision(&found.record.id, &commit).await?
    };
    revision.ok_or_else(|| ApiError::NotFound(format!("revision {rev} of {}", found.name)))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    vendor: Option<String>,
}

/// Models the caller may see. Filtering decides per model without recording each check:
/// listing reveals names only, and only those the policy allows.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let vendor = query.vendor.as_deref().map(VendorName::parse).transpose()?;
    let mut visible = Vec::new();
    for model in app.store.models(vendor.as_ref()).await? {
        let granted = app
            .store
            .is_granted(&model.id, &caller.principal.user)
            .await?;
        let resource = Resource::Model {
            vendor: &model.vendor,
            granted,
        };
        if !policy::decide(&caller.principal, Action::ReadMetadata, resource).allowed {
            continue;
        }
        let latest = app.store.latest_revision(&model.id).await?;
        visible.push(json!({
            "id": format!("{}/{}", model.vendor, model.name),
            "latest": latest.map(|r| r.commit),
        }));
    }
    Ok(Json(json!({ "models": visible })))
}

fn revision_json(r: &RevisionRecord) -> Value {
    json!({
        "commit": r.commit,
        "seq": r.seq,
        "message": r.message,
        "created_by": r.created_by,
        "created_at": r.created_at,
    })
}

pub(crate) async fn info(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadMetadata, &found).await?;
    let revisions = app.store.revisions(&found.record.id).await?;
    Ok(Json(json!({
        "id": found.name,
        "revisions": revisions.iter().map(revision_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn revision(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, rev)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadMetadata, &found).await?;
    let revision = resolve_revision(&app, &found, &rev).await?;
    let files = app.store.revision_files(&revision.commit).await?;
    let mut body = revision_json(&revision);
    body["id"] = json!(found.name);
    body["files"] = files
        .iter()
        .map(|f| json!({ "path": f.path, "size": f.size, "sha256": f.sha256 }))
        .collect();
    Ok(Json(body))
}

#[derive(Deserialize)]
pub(crate) struct GrantRequest {
    user: String,
}

pub(crate) async fn grant(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<GrantRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Grant, &found).await?;
    let user = UserName::parse(&json_body(body)?.user)?;
    let entry = caller
        .entry("grant", found.name.as_str())
        .with_decision(true, decision.policy)
        .with_detail(format!("to {user}"));
    app.store
        .grant(&found.record.id, &user, &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "model": found.name, "user": user })),
    ))
}

pub(crate) async fn list_grants(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::Grant, &found).await?;
    let users = app.store.grants(&found.record.id).await?;
    Ok(Json(json!({ "model": found.name, "users": users })))
}

pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, user)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Revoke, &found).await?;
    let user = UserName::parse(&user)?;
    let entry = caller
        .entry("revoke", found.name.as_str())
        .with_decision(true, decision.policy)
        .with_detail(format!("from {user}"));
    app.store
        .revoke(&found.record.id, &user, entry)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => {
                ApiError::NotFound(format!("grant of {} to {user}", found.name))
            }
            other => other.into(),
        })?;
    Ok(Json(json!({ "model": found.name, "user": user })))
}
