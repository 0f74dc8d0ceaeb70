//! Routes of the native API (`/v1/...`). JSON in and out, except file bytes.

mod admin;
mod fetch;
mod models;
mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::routing::{delete, get, post, put};

use crate::App;
use crate::error::ApiError;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route(
            "/v1/vendors",
            post(admin::create_vendor).get(admin::list_vendors),
        )
        .route("/v1/tokens", post(admin::create_token))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{vendor}/{model}", get(models::info))
        .route(
            "/v1/models/{vendor}/{model}/revisions/{rev}",
            get(models::revision),
        )
        .route(
            "/v1/models/{vendor}/{model}/revisions/{rev}/files/{*path}",
            get(fetch::file),
        )
        .route(
            "/v1/models/{vendor}/{model}/grants",
            post(models::grant).get(models::list_grants),
        )
        .route(
            "/v1/models/{vendor}/{model}/grants/{user}",
            delete(models::revoke),
        )
        .route("/v1/models/{vendor}/{model}/uploads", post(upload::begin))
        .route("/v1/uploads/{id}/files/{index}", put(upload::put_file))
        .route("/v1/uploads/{id}/commit", post(upload::commit))
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .with_state(app)
}

/// Turns axum's plain-text JSON rejection into our error body.
pub(crate) fn json_body<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|axum::Json(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))
}
