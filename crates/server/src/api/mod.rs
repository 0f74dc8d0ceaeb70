//! Routes of the native API (`/v1/...`). JSON in and out, except file bytes; every body is a
//! type of the `wire` crate, never a JSON literal. The Hugging Face Hub's read routes
//! (`/api/models/...`, `/{ns}/{name}/resolve/...`) live in [`hub`], with `wire::hub`'s types.

mod access;
mod admin;
mod audit;
mod budget;
mod deletion;
mod fetch;
mod hub;
mod hub_upload;
mod models;
mod upload;
mod wipe;

pub(crate) use audit::activity_event;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::routing::{delete, get, post, put};

use crate::error::ApiError;
use crate::state::App;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .route(
            "/v1/vendors",
            post(admin::create_vendor).get(admin::list_vendors),
        )
        .route(
            "/v1/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/v1/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/v1/tokens/rotate", post(admin::rotate_token))
        .route("/v1/whoami", get(admin::whoami))
        .route("/v1/users", get(admin::list_users))
        .route(
            "/v1/hosts",
            post(access::enroll_host).get(access::list_hosts),
        )
        .route("/v1/hosts/{name}/revoke", post(access::revoke_host))
        .route("/v1/vendors/{vendor}/groups", get(access::list_groups))
        .route("/v1/vendors/{vendor}/activity", get(audit::activity))
        .route(
            "/v1/vendors/{vendor}/webhook",
            get(audit::webhook)
                .put(audit::set_webhook)
                .delete(audit::remove_webhook),
        )
        .route(
            "/v1/vendors/{vendor}/groups/{group}/members",
            post(access::add_member),
        )
        .route(
            "/v1/vendors/{vendor}/groups/{group}/members/{user}",
            delete(access::remove_member),
        )
        .route(
            "/v1/vendors/{vendor}/hosts",
            post(access::approve_host).get(access::list_vendor_hosts),
        )
        .route(
            "/v1/vendors/{vendor}/hosts/{host}",
            delete(access::unapprove_host),
        )
        .route(
            "/v1/models/{vendor}/{model}/access",
            get(access::model_access),
        )
        .route(
            "/v1/vendors/{vendor}/exclusions",
            post(access::exclude).get(access::list_exclusions),
        )
        .route(
            "/v1/vendors/{vendor}/exclusions/{user}",
            delete(access::unexclude),
        )
        .route(
            "/v1/vendors/{vendor}/settings",
            put(access::set_vendor_settings),
        )
        .route("/v1/vendors/{vendor}/pending", get(access::list_pending))
        .route("/v1/pending/{id}/approve", post(access::approve))
        .route("/v1/pending/{id}/reject", post(access::reject))
        .route(
            "/v1/models/{vendor}/{model}/delete",
            post(deletion::delete_model),
        )
        .route(
            "/v1/models/{vendor}/{model}/delete-after",
            put(deletion::set_delete_after),
        )
        .route("/v1/vendors/{vendor}/delete", post(deletion::delete_vendor))
        .route("/v1/deletions/{id}", get(deletion::status))
        .route("/v1/vendors/{vendor}/deletions", get(deletion::list))
        .route("/v1/service-key", get(deletion::service_key))
        .route(
            "/v1/models/{vendor}/{model}/host-groups",
            post(access::allow_host_group).get(access::list_host_groups),
        )
        .route(
            "/v1/models/{vendor}/{model}/host-groups/{group}",
            delete(access::disallow_host_group),
        )
        .route(
            "/v1/models/{vendor}/{model}/embargo",
            put(access::set_embargo),
        )
        .route(
            "/v1/models/{vendor}/{model}/budget",
            get(budget::show).put(budget::set),
        )
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
        .route("/v1/host/wipe", get(wipe::list).post(wipe::confirm))
        .route("/v1/host/renew", post(access::renew_host))
        .route("/v1/audit/key", get(audit::key))
        .route("/v1/audit/checkpoint", get(audit::latest).post(audit::sign))
        .route("/v1/audit/checkpoints", get(audit::checkpoints))
        .route("/v1/audit/entries", get(audit::entries))
        .route("/v1/audit/leaves", get(audit::leaves))
        .route("/v1/audit/tags", get(audit::tags))
        .route("/v1/audit/vendor-key", get(audit::vendor_key))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion))
        .route("/v1/audit/proof/consistency", get(audit::consistency))
        .route("/v1/audit/edge", get(audit::edge))
        .merge(hub::routes())
        .merge(hub_upload::routes())
        // Sees the matched route template (`crate::logging`); the fallback is not a route.
        .route_layer(axum::middleware::from_fn(crate::logging::route))
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(axum::middleware::from_fn(crate::logging::observe))
        .with_state(app)
}

/// Turns axum's plain-text JSON rejection into our error body. A body that outgrew the limit
/// while it was read (sent without a length) is 413, as one declared too large is
/// (`tls::json_too_large`).
pub(crate) fn json_body<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|axum::Json(v)| v).map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(
                "the JSON request body is over the server's limit (limits.max_json_body_bytes)"
                    .into(),
            )
        } else {
            ApiError::bad_request(wire::ErrorCode::InvalidRequest, e.body_text())
        }
    })
}
