//! The OpenAPI 3.1 description of the native API, generated from the code: each route's
//! handler carries its `#[utoipa::path]` (method, path, parameters, bodies as `wire` types,
//! statuses), and `api::described_routes` serves only routes registered from those
//! descriptions. Served at `/v1/openapi.json`, printed by `custody openapi`, and kept in
//! `docs/openapi.json` (tests/e2e/openapi.rs checks all three agree and validates it).
//! The Hugging Face Hub's routes (`api/hub.rs`) follow the Hub's conventions and are not part
//! of it.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "custody",
        description = "Pre-release model weights held in trust: the native API. Every route \
                       but the health routes takes a bearer token; fetching weights also needs \
                       an enrolled exclusive host's client certificate (TLS).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(crate::api::fetch::file),
    modifiers(&BearerToken),
)]
pub(crate) struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The description, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = crate::api::described_routes().split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api
}

/// The description as pretty JSON (`custody openapi`, docs/openapi.json).
pub fn json() -> anyhow::Result<String> {
    Ok(document().to_pretty_json()?)
}

/// This description.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi_serve",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 description", content_type = "application/json")),
)]
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
