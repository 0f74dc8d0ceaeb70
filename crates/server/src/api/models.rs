//! Model metadata and grants.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use policy::{Action, Decision};
use store::{Grantee, ModelRecord, PendingAction, RevisionRecord};
use types::{CommitId, GroupName, ModelName, UserName, VendorName};
use wire::ErrorCode;
use wire::models::{
    Deleted, FileEntry, Grant, GrantList, GrantPending, GrantRequest, GrantResponse, GrantRevoked,
    Granted, ModelInfo, ModelList, ModelListQuery, ModelSummary, Revision, RevisionFiles,
    RevokeQuery,
};

use super::json_body;
use crate::approvals::{self, Change};
use crate::auth::{Caller, Target, allowed, allowed_models, authorize, policy_ids};
use crate::error::ApiError;
use crate::state::App;
use crate::suggest;

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
        .ok_or_else(|| ApiError::ModelNotFound(format!("model {name}")))?;
    Ok(Found { record, name })
}

/// The vendor of a found model.
pub(crate) fn vendor_of(found: &Found) -> store::VendorRecord {
    vendor_of_model(&found.record)
}

/// The vendor of a model record.
fn vendor_of_model(model: &ModelRecord) -> store::VendorRecord {
    store::VendorRecord {
        id: model.vendor_id.clone(),
        name: model.vendor.clone(),
    }
}

/// Decides `action` on a model. A deleted model serves nothing ("deleted"), its name stays
/// visible only to its vendor's roles and the operator, and its deletion is named only to
/// those who may read the vendor's deletions.
pub(crate) async fn authorize_model(
    app: &App,
    caller: &Caller,
    action: Action,
    found: &Found,
) -> Result<Decision, ApiError> {
    if let Some(deletion) = &found.record.deletion_id {
        let reading = action == Action::ReadMetadata;
        let committer = caller.principal.role == types::Role::Committer;
        if reading && !committer {
            // The vendor's roles and the operator still see the model's record.
            return authorize(app, caller, action, Target::Model(&found.record)).await;
        }
        if committer {
            // Only someone who could see the model learns that it was deleted.
            authorize(
                app,
                caller,
                Action::ReadMetadata,
                Target::Model(&found.record),
            )
            .await?;
        }
        let vendor = vendor_of(found);
        let certificate =
            if allowed(app, caller, Action::ReadDeletions, Target::Vendor(&vendor)).await {
                format!(" (deletion {deletion}: custody deletion {deletion})")
            } else {
                String::new()
            };
        return Err(ApiError::Deleted(format!(
            "{} has been deleted{certificate}; its weights can never be read again",
            found.name
        )));
    }
    authorize(app, caller, action, Target::Model(&found.record)).await
}

/// `main` (or `latest`) names the newest revision the vendor made (never a derived one);
/// otherwise a 40-hex commit id, which reaches derived revisions too.
pub(crate) async fn resolve_revision(
    app: &App,
    found: &Found,
    rev: &str,
) -> Result<RevisionRecord, ApiError> {
    let revision = if rev == "main" || rev == "latest" {
        app.store.latest_revision(&found.record.id).await?
    } else {
        let commit = CommitId::parse(rev)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRevision, e.to_string()))?;
        app.store.revision(&found.record.id, &commit).await?
    };
    revision.ok_or_else(|| ApiError::RevisionNotFound(format!("revision {rev} of {}", found.name)))
}

/// Models the caller may see. Filtering decides per model without recording each check:
/// listing reveals names only, and only those the policy allows.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "models_list",
    tag = "models",
    params(ModelListQuery),
    responses(
        (status = 200, description = "done", body = ModelList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(query): Query<ModelListQuery>,
) -> Result<Json<ModelList>, ApiError> {
    let vendor = query.vendor.as_deref().map(VendorName::parse).transpose()?;
    let mut visible = Vec::new();
    let models: Vec<ModelRecord> = app
        .store
        .models(vendor.as_ref())
        .await?
        .into_iter()
        // A committer's listing never names a deleted model.
        .filter(|m| !(m.deleted_at.is_some() && caller.principal.role == types::Role::Committer))
        .collect();
    // The facts of every model in one statement, not one decision's queries per model.
    let candidates: Vec<&ModelRecord> = models.iter().collect();
    let shown = allowed_models(&app, &caller, Action::ReadMetadata, &candidates).await;
    for (model, shown) in models.iter().zip(shown) {
        if !shown {
            continue;
        }
        let latest = app.store.latest_revision(&model.id).await?;
        visible.push(ModelSummary {
            id: format!("{}/{}", model.vendor, model.name),
            latest: latest.map(|r| r.commit),
            deleted: deleted_mark(&app, &caller, model).await?,
        });
    }
    Ok(Json(ModelList { models: visible }))
}

fn revision_body(r: RevisionRecord) -> Revision {
    Revision {
        commit: r.commit,
        seq: r.seq,
        message: r.message,
        created_by: r.created_by,
        created_at: r.created_at,
        derived_from: r.derived_from,
    }
}

#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}",
    operation_id = "models_info",
    tag = "models",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = ModelInfo),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn info(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<ModelInfo>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadMetadata, &found).await?;
    let revisions = app.store.revisions(&found.record.id).await?;
    let deleted = deleted_mark(&app, &caller, &found.record).await?;
    Ok(Json(ModelInfo {
        id: found.name,
        revisions: revisions.into_iter().map(revision_body).collect(),
        deleted,
    }))
}

/// The mark of a deleted model, as `caller` may see it: when access ended always; which
/// deletion and when it was certified only to those who may read the vendor's deletions.
async fn deleted_mark(
    app: &App,
    caller: &Caller,
    model: &ModelRecord,
) -> Result<Option<Deleted>, ApiError> {
    let Some(at) = model.deleted_at else {
        return Ok(None);
    };
    let vendor = vendor_of_model(model);
    let mut mark = Deleted {
        at,
        deletion: None,
        certified_at: None,
    };
    if let Some(id) = &model.deletion_id
        && allowed(app, caller, Action::ReadDeletions, Target::Vendor(&vendor)).await
    {
        mark.certified_at = app
            .store
            .deletion(id)
            .await?
            .filter(|d| d.certificate.is_some())
            .and_then(|d| d.completed_at);
        mark.deletion = Some(id.clone());
    }
    Ok(Some(mark))
}

#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/revisions/{rev}",
    operation_id = "models_revision",
    tag = "models",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)"), ("rev" = String, Path, description = "rev (see the route)")),
    responses(
        (status = 200, description = "done", body = RevisionFiles),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revision(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, rev)): Path<(String, String, String)>,
) -> Result<Json<RevisionFiles>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadMetadata, &found).await?;
    let revision = resolve_revision(&app, &found, &rev).await?;
    let files = app.store.revision_files(&revision.commit).await?;
    Ok(Json(RevisionFiles {
        id: found.name,
        revision: revision_body(revision),
        files: files
            .into_iter()
            .map(|f| FileEntry {
                path: f.path,
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
    }))
}

pub(crate) fn grantee(user: Option<&str>, group: Option<&str>) -> Result<Grantee, ApiError> {
    match (user, group) {
        (Some(u), None) => Ok(Grantee::User(UserName::parse(u)?)),
        (None, Some(g)) => Ok(Grantee::Group(GroupName::parse(g)?)),
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidGrantee,
            "name exactly one of a user or a group",
        )),
    }
}

/// Grants read access. Under the vendor's two-person rule the grant waits as a pending
/// request (202) until another of the vendor's people approves it; until then it gives no
/// access (see [`crate::approvals`]).
#[utoipa::path(
    post,
    path = "/v1/models/{vendor}/{model}/grants",
    operation_id = "models_grant",
    tag = "models",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = GrantRequest,
    responses(
        (status = 201, description = "done", body = GrantResponse),
        (status = 202, description = "done", body = GrantResponse),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn grant(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<GrantRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<GrantResponse>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Grant, &found).await?;
    let request = json_body(body)?;
    let to = grantee(request.user.as_deref(), request.group.as_deref())?;
    let vendor = vendor_of(&found);
    // A grant to a name that reaches nobody is a typo, not a decision.
    let subject = match &to {
        Grantee::User(u) => Some(suggest::known_user(&app, u).await?.id),
        Grantee::Group(g) => {
            suggest::known_group(&app, &vendor, g).await?;
            None
        }
    };
    let now = app.store.clock().now();
    let expires_at = match (request.expires_at, request.expires_in_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidExpiry,
                "give a grant's expiry as expires_at or expires_in_secs, not both",
            ));
        }
        (at, None) => at,
        (None, Some(secs)) => Some(now.saturating_add(secs)),
    };
    if let Some(t) = expires_at
        && t <= now
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidExpiry,
            "a grant's expiry must be in the future",
        ));
    }
    let detail = match expires_at {
        Some(t) => format!("to {} until {t}", to.to_tagged()),
        None => format!("to {}", to.to_tagged()),
    };
    let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
    if needed > 0 {
        let entry = caller
            .entry("grant.request", found.name.as_str())
            .with_decision(true, &policy_ids(&decision))
            .with_detail(detail);
        let action = PendingAction::Grant {
            model_id: found.record.id.clone(),
            to,
            expires_at,
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
        return Ok((
            StatusCode::ACCEPTED,
            Json(GrantResponse::Pending(GrantPending {
                model: found.name,
                message: approvals::waiting_message(&filed),
                pending: filed.id,
                approvals_needed: filed.approvals_needed,
                expires_at: filed.expires_at,
            })),
        ));
    }
    let entry = caller
        .entry("grant", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(detail);
    let follow_up = approvals::follow_up(&app, &caller, &vendor.id).await?;
    app.store
        .grant(
            &vendor.id,
            &found.record.id,
            &to,
            &caller.actor(),
            expires_at,
            &follow_up,
            entry,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(GrantResponse::Granted(Granted {
            model: found.name,
            to: to.to_tagged(),
            expires_at,
        })),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/grants",
    operation_id = "models_list_grants",
    tag = "models",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = GrantList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_grants(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<GrantList>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::Grant, &found).await?;
    let grants = app.store.grants(&found.record.id).await?;
    let users = grants
        .iter()
        .filter_map(|g| match &g.to {
            Grantee::User(u) => Some(u.clone()),
            Grantee::Group(_) => None,
        })
        .collect();
    let grants = grants
        .into_iter()
        .map(|g| Grant {
            to: g.to.to_tagged(),
            granted_by: g.granted_by,
            expires_at: g.expires_at,
        })
        .collect();
    Ok(Json(GrantList {
        model: found.name,
        users,
        grants,
    }))
}

/// `DELETE .../grants/{name}`: a user's grant, or a group's with `?group=true`.
#[utoipa::path(
    delete,
    path = "/v1/models/{vendor}/{model}/grants/{user}",
    operation_id = "models_revoke",
    tag = "models",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)"), ("user" = String, Path, description = "user (see the route)"), RevokeQuery),
    responses(
        (status = 200, description = "done", body = GrantRevoked),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model, name)): Path<(String, String, String)>,
    Query(query): Query<RevokeQuery>,
) -> Result<Json<GrantRevoked>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Revoke, &found).await?;
    let to = if query.group {
        grantee(None, Some(&name))?
    } else {
        grantee(Some(&name), None)?
    };
    let entry = caller
        .entry("revoke", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("from {}", to.to_tagged()));
    app.store
        .revoke(&found.record.id, &to, entry)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => {
                ApiError::NotFound(format!("grant of {} to {to}", found.name))
            }
            other => other.into(),
        })?;
    Ok(Json(GrantRevoked {
        model: found.name,
        from: to.to_tagged(),
    }))
}
