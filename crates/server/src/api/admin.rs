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
    CreateToken, CreateVendor, TokenCreated, TokenInfo, TokenList, TokenRevoked, VendorCreated,
    VendorList,
};

use super::json_body;
use crate::App;
use crate::auth::{Caller, Target, authorize, policy_ids, store_now};
use crate::error::ApiError;

pub(crate) async fn create_vendor(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateVendor>, JsonRejection>,
) -> Result<(StatusCode, Json<VendorCreated>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateVendor, Target::Service).await?;
    let body = json_body(body)?;
    let name = VendorName::parse(&body.name)?;
    let id = crypto::token::random_id()?;
    let entry = caller
        .entry("vendor.create", name.as_str())
        .with_decision(true, &policy_ids(&decision));
    app.store.create_vendor(&id, &name, entry).await?;
    Ok((StatusCode::CREATED, Json(VendorCreated { name })))
}

pub(crate) async fn list_vendors(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<VendorList>, ApiError> {
    authorize(&app, &caller, Action::ListVendors, Target::Service).await?;
    let vendors: Vec<_> = app
        .store
        .vendors()
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    Ok(Json(VendorList { vendors }))
}

pub(crate) async fn create_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    let body = json_body(body)?;
    let role = Role::parse(&body.role)?;
    let user = UserName::parse(&body.name)?;
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
    let expires_at = match body.expires_in_secs {
        Some(s) if s <= 0 => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidExpiry,
                "expiry must be in the future",
            ));
        }
        Some(s) => Some(store_now().saturating_add(s)),
        None => None,
    };
    let id = crypto::token::random_id()?;
    let secret = crypto::token::TokenSecret::generate()?;
    let entry = caller
        .entry(
            "token.create",
            vendor.as_ref().map_or("service".into(), |v| v.to_string()),
        )
        .with_decision(true, &policy_ids(&decision))
        .with_detail(format!("token {id} role {role} for {user}"));
    app.store
        .create_token(
            &NewToken {
                id: &id,
                secret_hash: &secret.hash(),
                role,
                vendor_id: vendor_record.as_ref().map(|v| v.id.as_str()),
                user: &user,
                expires_at,
            },
            entry,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: format!("{id}.{}", secret.expose_secret()),
            id,
            role,
            vendor,
            name: user,
            expires_at,
        }),
    ))
}

pub(crate) async fn list_tokens(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
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
        })
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token: refused from the next request on.
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
