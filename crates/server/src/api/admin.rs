//! Operator routes: vendors and tokens (created, listed, revoked).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use policy::Action;
use store::NewToken;
use types::{Role, UserName, VendorName};
use wire::ErrorCode;
use wire::admin::{
    Awaiting, CreateToken, CreateVendor, HeldGrant, RotateToken, TokenCreated, TokenInfo,
    TokenList, TokenRevoked, UserInfo, UserList, VendorCreated, VendorList, WhoAmI,
};

use super::json_body;
use crate::auth::{Caller, Target, allowed_models, allowed_vendors, authorize, policy_ids};
use crate::error::ApiError;
use crate::state::App;

#[utoipa::path(
    post,
    path = "/v1/vendors",
    operation_id = "admin_create_vendor",
    tag = "admin",
    request_body = CreateVendor,
    responses(
        (status = 201, description = "done", body = VendorCreated),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_vendor(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateVendor>, JsonRejection>,
) -> Result<(StatusCode, Json<VendorCreated>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateVendor, Target::Service).await?;
    let body = json_body(body)?;
    let name = VendorName::parse(&body.name)?;
    if audit::NON_VENDOR_RESOURCES.contains(&name.as_str()) {
        // The audit log reads an entry's vendor off its resource; these name the service's own.
        return Err(ApiError::bad_request(
            ErrorCode::InvalidName,
            format!(
                "{name} is reserved (the audit log uses it for the service's own entries): \
                 choose another vendor name"
            ),
        ));
    }
    let id = crypto::token::random_id()?;
    let entry = caller
        .entry("vendor.create", name.as_str())
        .with_decision(true, &policy_ids(&decision));
    app.store.create_vendor(&id, &name, entry).await?;
    Ok((StatusCode::CREATED, Json(VendorCreated { name })))
}

#[utoipa::path(
    get,
    path = "/v1/vendors",
    operation_id = "admin_list_vendors",
    tag = "admin",
    responses(
        (status = 200, description = "done", body = VendorList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_vendors(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<VendorList>, ApiError> {
    authorize(&app, &caller, Action::ListVendors, Target::Service).await?;
    // Only the vendors the caller may see: a committer learns of the vendors where it holds
    // a grant, a vendor's own roles of their vendor. The facts of every vendor are read in
    // one statement.
    let all = app.store.vendors().await?;
    let candidates: Vec<&store::VendorRecord> = all.iter().collect();
    let shown = allowed_vendors(&app, &caller, Action::ReadMetadata, &candidates).await;
    let vendors = all
        .iter()
        .zip(shown)
        .filter(|(_, shown)| *shown)
        .map(|(v, _)| v.name.clone())
        .collect();
    Ok(Json(VendorList { vendors }))
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "admin_create_token",
    tag = "admin",
    request_body = CreateToken,
    responses(
        (status = 201, description = "done", body = TokenCreated),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    let body = json_body(body)?;
    let role = Role::parse(&body.role)?;
    let user = UserName::parse(&body.name)?;
    if caller.credential.bootstrap && role != Role::Operator {
        let entry = caller
            .entry("bootstrap-token.use", "service")
            .with_outcome(audit::Outcome::Denied)
            .with_detail(format!(
                "the bootstrap token may only create an operator token, not a {role} token"
            ));
        app.store.record(entry).await?;
        return Err(ApiError::Denied(crate::auth::BOOTSTRAP_ONLY.into()));
    }
    let vendor = body.vendor.as_deref().map(VendorName::parse).transpose()?;
    let vendor_record = match (role, &vendor) {
        (Role::VendorAdmin | Role::Auditor, None) => {
            return Err(ApiError::bad_request(
                ErrorCode::VendorRequired,
                format!("a {role} token must name its vendor (--vendor)"),
            ));
        }
        (Role::Operator | Role::Committer, Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::VendorNotAllowed,
                format!(
                    "a {role} token is not scoped to a vendor; grants decide a committer's access"
                ),
            ));
        }
        (_, Some(v)) => Some(
            app.store
                .vendor(v)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("vendor {v}")))?,
        ),
        (_, None) => None,
    };
    let expires_at = expiry(body.expires_in_secs, app.store.clock().now())?;
    let id = crypto::token::random_id()?;
    let secret = crypto::token::TokenSecret::generate()?;
    let entry = caller
        .entry(
            "token.create",
            vendor.as_ref().map_or("service".into(), |v| v.to_string()),
        )
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("token {id} role {role} for {user}"));
    let issued = app
        .store
        .issue_token(
            &NewToken {
                id: &id,
                secret_hash: &secret.hash(),
                role,
                vendor_id: vendor_record.as_ref().map(|v| v.id.as_str()),
                user: &user,
                expires_at,
                created_by: &caller.actor(),
                bootstrap: false,
                // The bootstrap token is revoked by the token it creates, atomically.
                consumes: caller
                    .credential
                    .bootstrap
                    .then_some(caller.credential.token_id.as_str()),
            },
            &crypto::token::random_id()?,
            app.config.pending_ttl_secs,
            entry,
        )
        .await?;
    if caller.credential.bootstrap {
        // Spent (revoked with this issue): its file goes too, where this instance wrote it.
        let _ = std::fs::remove_file(app.config.bootstrap_token_file());
    }
    let mut awaiting = Vec::new();
    for (vendor_id, pending) in issued.awaiting {
        let vendor = app
            .store
            .vendor_by_id(&vendor_id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("vendor {vendor_id} vanished")))?;
        awaiting.push(Awaiting {
            vendor: vendor.name,
            pending,
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: format!("{id}.{}", secret.expose_secret()),
            id,
            role,
            vendor,
            name: user,
            expires_at,
            user_id: issued.user_id,
            new_user: issued.new_user,
            awaiting,
        }),
    ))
}

/// Replaces the presented token by a new one with exactly its standing, revoking it: the
/// holder sheds a secret someone else saw (the operator who issued it) without asking any
/// vendor again. Self-service: it acts on the presented credential only, so there is no
/// decision to make beyond authentication.
#[utoipa::path(
    post,
    path = "/v1/tokens/rotate",
    operation_id = "admin_rotate_token",
    tag = "admin",
    request_body = RotateToken,
    responses(
        (status = 201, description = "done", body = TokenCreated),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn rotate_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<RotateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let body = json_body(body)?;
    let expires_at = expiry(body.expires_in_secs, app.store.clock().now())?;
    let old = caller.credential.token_id.clone();
    let id = crypto::token::random_id()?;
    let secret = crypto::token::TokenSecret::generate()?;
    let entry = caller
        .entry("token.rotate", "service")
        .with_detail(format!("token {old} replaced by token {id}"));
    app.store
        .rotate_token(&old, &id, &secret.hash(), expires_at, entry)
        .await?;
    let (_, awaiting) = app.store.credential_status(&id).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: format!("{id}.{}", secret.expose_secret()),
            id,
            role: caller.principal.role,
            vendor: caller.principal.vendor.clone(),
            name: caller.principal.user.clone(),
            expires_at,
            user_id: caller.credential.user_id.clone(),
            new_user: false,
            awaiting: awaiting
                .into_iter()
                .map(|(vendor, pending)| Awaiting { vendor, pending })
                .collect(),
        }),
    ))
}

/// Who the presented token says the caller is, and where it counts. Self-service, like
/// rotation; recorded as a read.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    operation_id = "admin_whoami",
    tag = "admin",
    responses(
        (status = 200, description = "done", body = WhoAmI),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn whoami(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<WhoAmI>, ApiError> {
    let token = app
        .store
        .token(&caller.credential.token_id)
        .await?
        .ok_or_else(|| ApiError::Internal("the presented token vanished".into()))?;
    let (endorsed_by, awaiting) = app.store.credential_status(&token.id).await?;
    app.store.record(caller.entry("whoami", "service")).await?;
    Ok(Json(WhoAmI {
        user: token.user,
        user_id: token.user_id,
        role: token.role,
        vendor: token.vendor,
        token_id: token.id,
        expires_at: token.expires_at,
        all_vendors: token.all_vendors,
        endorsed_by,
        awaiting: awaiting
            .into_iter()
            .map(|(vendor, pending)| Awaiting { vendor, pending })
            .collect(),
        host: match &caller.host {
            Some(crate::auth::CallerHost::Enrolled(h)) => Some(h.name.clone()),
            _ => None,
        },
        grants: held_grants(&app, &caller).await?,
    }))
}

/// The grants the caller holds on models it may see (an exclusion hides the model, as it
/// does everywhere else).
async fn held_grants(app: &App, caller: &Caller) -> Result<Vec<HeldGrant>, ApiError> {
    let mut held = Vec::new();
    for grant in app
        .store
        .grants_held(&caller.principal.user, app.store.clock().now())
        .await?
    {
        if let Some(model) = app.store.model_by_id(&grant.model_id).await? {
            held.push((grant, model));
        }
    }
    // The facts of every model in one statement.
    let models: Vec<&store::ModelRecord> = held.iter().map(|(_, m)| m).collect();
    let shown = allowed_models(app, caller, Action::ReadMetadata, &models).await;
    let mut out = Vec::new();
    for ((grant, model), shown) in held.into_iter().zip(shown) {
        if !shown {
            continue;
        }
        out.push(HeldGrant {
            model: format!("{}/{}", model.vendor, model.name),
            group: grant.group,
            expires_at: grant.expires_at,
        });
    }
    out.sort_by(|a, b| (&a.model, &a.group).cmp(&(&b.model, &b.group)));
    Ok(out)
}

/// Every person the service knows (operator).
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "admin_list_users",
    tag = "admin",
    responses(
        (status = 200, description = "done", body = UserList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_users(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    let users = app
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| UserInfo {
            id: u.id,
            name: u.name,
            created_by: u.created_by,
            created_at: u.created_at,
        })
        .collect();
    Ok(Json(UserList { users }))
}

/// `expires_in_secs` as an expiry time; refused unless in the future.
fn expiry(expires_in_secs: Option<i64>, now: i64) -> Result<Option<i64>, ApiError> {
    match expires_in_secs {
        Some(s) if s <= 0 => Err(ApiError::bad_request(
            ErrorCode::InvalidExpiry,
            "expiry must be in the future",
        )),
        Some(s) => Ok(Some(now.saturating_add(s))),
        None => Ok(None),
    }
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "admin_list_tokens",
    tag = "admin",
    responses(
        (status = 200, description = "done", body = TokenList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_tokens(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    let now = app.store.clock().now();
    let tokens = app
        .store
        .tokens()
        .await?
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            role: t.role,
            vendor: t.vendor,
            name: t.user,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            user_id: t.user_id,
            created_by: t.created_by,
            all_vendors: t.all_vendors,
            endorsed_by: t.endorsed_by,
            expired: t.expires_at.is_some_and(|e| e <= now),
        })
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token: refused from the next request on.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/revoke",
    operation_id = "admin_revoke_token",
    tag = "admin",
    params(("id" = String, Path, description = "id (see the route)")),
    responses(
        (status = 200, description = "done", body = TokenRevoked),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenRevoked>, ApiError> {
    let decision = authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    if !crypto::token::is_id(&id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTokenId,
            "a token id is hexadecimal (the part before the dot)",
        ));
    }
    let entry = caller
        .entry("token.revoke", "service")
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("token {id}"));
    app.store.revoke_token(&id, entry).await?;
    Ok(Json(TokenRevoked { id, revoked: true }))
}
