//! Routes of the native API (`/v1/...`). JSON in and out, except file bytes; every body is a
//! type of the `wire` crate, never a JSON literal. The Hugging Face Hub's read routes
//! (`/api/models/...`, `/{ns}/{name}/resolve/...`) live in [`hub`], with `wire::hub`'s types.

mod access;
mod admin;
mod audit;
mod budget;
mod deletion;
pub(crate) mod fetch;
mod hub;
mod hub_upload;
mod models;
mod upload;
mod wipe;

pub(crate) use audit::activity_event;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::App;

/// The native API's routes, each described by its handler's `#[utoipa::path]`: a route is
/// served only as described (`crate::openapi`). The file route's wildcard is the one exception
/// axum needs spelt its own way; it is added in [`router`] and described through `ApiDoc`.
pub(crate) fn described_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(crate::health::v1_health))
        .routes(routes!(crate::health::healthz))
        .routes(routes!(crate::health::readyz))
        .routes(routes!(admin::create_vendor, admin::list_vendors))
        .routes(routes!(admin::create_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::rotate_token))
        .routes(routes!(admin::whoami))
        .routes(routes!(admin::list_users))
        .routes(routes!(access::enroll_host, access::list_hosts))
        .routes(routes!(access::revoke_host))
        .routes(routes!(access::list_groups))
        .routes(routes!(audit::activity))
        .routes(routes!(
            audit::webhook,
            audit::set_webhook,
            audit::remove_webhook
        ))
        .routes(routes!(access::add_member))
        .routes(routes!(access::remove_member))
        .routes(routes!(access::approve_host, access::list_vendor_hosts))
        .routes(routes!(access::unapprove_host))
        .routes(routes!(access::model_access))
        .routes(routes!(access::exclude, access::list_exclusions))
        .routes(routes!(access::unexclude))
        .routes(routes!(access::set_vendor_settings))
        .routes(routes!(access::list_pending))
        .routes(routes!(access::approve))
        .routes(routes!(access::reject))
        .routes(routes!(deletion::delete_model))
        .routes(routes!(deletion::set_delete_after))
        .routes(routes!(deletion::delete_vendor))
        .routes(routes!(deletion::status))
        .routes(routes!(deletion::list))
        .routes(routes!(deletion::service_key))
        .routes(routes!(access::allow_host_group, access::list_host_groups))
        .routes(routes!(access::disallow_host_group))
        .routes(routes!(access::set_embargo))
        .routes(routes!(budget::show, budget::set))
        .routes(routes!(models::list))
        .routes(routes!(models::info))
        .routes(routes!(models::revision))
        .routes(routes!(models::grant, models::list_grants))
        .routes(routes!(models::revoke))
        .routes(routes!(upload::begin))
        .routes(routes!(upload::put_file))
        .routes(routes!(upload::commit))
        .routes(routes!(wipe::list, wipe::confirm))
        .routes(routes!(access::renew_host))
        .routes(routes!(audit::key))
        .routes(routes!(audit::latest, audit::sign))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(audit::entries))
        .routes(routes!(audit::leaves))
        .routes(routes!(audit::tags))
        .routes(routes!(audit::vendor_key))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(audit::edge))
        .routes(routes!(crate::openapi::serve))
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let (described, _) = described_routes().split_for_parts();
    described
        .route(
            "/v1/models/{vendor}/{model}/revisions/{rev}/files/{*path}",
            get(fetch::file),
        )
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
