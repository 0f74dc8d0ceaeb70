//! Operator routes: vendors and tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use policy::Action;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::NewToken;
use types::{Role, UserName, VendorName};

use super::json_body;
use crate::App;
use crate::auth::{Caller, Target, authorize, policy_ids, store_now};
use crate::error::ApiError;

#[derive(Deserialize)]
pub(crate) struct CreateVendor {
    name: String,
}

pub(crate) async fn create_vendor(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateVendor>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateVendor, Target::Service).await?;
    let body = json_body(body)?;
    let name = VendorName::parse(&body.name)?;
    let id = crypto::token::random_id()?;
    let entry = caller
        .entry("vendor.create", name.as_str())
        .with_decision(true, &policy_ids(&decision));
    app.store.create_vendor(&id, &name, entry).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))))
}

pub(crate) async fn list_vendors(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &caller, Action::ListVendors, Target::Service).await?;
    let vendors: Vec<_> = app
        .store
        .vendors()
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    Ok(Json(json!({ "vendors": vendors })))
}

#[derive(Deserialize)]
pub(crate) struct CreateToken {
    role: String,
    vendor: Option<String>,
    name: String,
    expires_in_secs: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct CreatedToken {
    id: String,
    /// Shown once; only its hash is kept.
    token: String,
    role: Role,
    vendor: Option<VendorName>,
    name: UserName,
    expires_at: Option<i64>,
}

pub(crate) async fn create_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let decision = authorize(&app, &caller, Action::CreateToken, Target::Service).await?;
    let body = json_body(body)?;
    let role = Role::parse(&body.role)?;
    let user = UserName::parse(&body.name)?;
    let vendor = body.vendor.as_deref().map(VendorName::parse).transpose()?;
    let vendor_record = match (role, &vendor) {
        (Role::VendorAdmin | Role::Auditor, None) => {
            return Err(ApiError::bad_request(
                "vendor_required",
                format!("a {role} token must name its vendor (--vendor)"),
            ));
        }
        (Role::Operator | Role::Committer, Some(_)) => {
            return Err(ApiError::bad_request(
                "vendor_not_allowed",
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
                "invalid_expiry",
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
        Json(CreatedToken {
            token: format!("{id}.{}", secret.expose_secret()),
            id,
            role,
            vendor,
            name: user,
            expires_at,
        }),
    ))
}
