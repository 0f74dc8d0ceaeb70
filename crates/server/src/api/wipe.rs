//! `custody wipe` on an exclusive host: which of its copies belong to deleted models, and its
//! confirmation that it removed them.
//!
//! These routes authenticate the host alone, by its client certificate ([`HostCaller`]): no
//! bearer token, because the wipe is the machine's duty, run by whoever operates it, and may
//! come long after the committer who fetched has left. The certificate must belong to an
//! enrolled host; a **revoked** host is accepted here and nowhere else, so a host taken out
//! of service can still report that it wiped what it held (revocation stops bytes, not
//! clean-up). There is no policy decision to make beyond identity: a host sees and confirms
//! only its own copy records (every query is keyed by the authenticated host name), and
//! learns only names of models it fetched. Requests are recorded in the audit log, refusals
//! included.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use store::{Confirmed, HostRecord};
use wire::ErrorCode;
use wire::wipe::{ConfirmWipe, DeletedFile, DeletedModel, WipeConfirmed, WipeList};

use super::json_body;
use crate::auth::PeerCertificate;
use crate::error::ApiError;
use crate::state::App;

/// A request authenticated by an enrolled host's client certificate alone (revoked or not).
pub(crate) struct HostCaller {
    pub host: HostRecord,
    pub request_id: String,
}

impl HostCaller {
    pub(crate) fn entry(&self, action: &str, resource: impl Into<String>) -> audit::Entry {
        let mut entry = audit::Entry::new(format!("host:{}", self.host.name), action, resource)
            .with_request_id(&self.request_id);
        entry.host = Some(self.host.name.to_string());
        entry
    }
}

impl FromRequestParts<Arc<App>> for HostCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let request_id = crypto::token::random_id().unwrap_or_else(|_| "unknown".into());
        const NO_CERT: &str = "this request needs the host's client certificate (CUSTODY_HOST_CERT and CUSTODY_HOST_KEY)";
        const UNKNOWN: &str = "the client certificate does not belong to an enrolled host";
        let (refusal, host_name) = match parts.extensions.get::<PeerCertificate>() {
            None => (NO_CERT, None),
            Some(PeerCertificate(sha)) => match app.store.host_by_cert(sha).await? {
                Some(host) => return Ok(HostCaller { host, request_id }),
                None => (
                    UNKNOWN,
                    Some(format!("unenrolled:{}", &sha[..sha.len().min(16)])),
                ),
            },
        };
        tracing::info!(%request_id, reason = refusal, "host authentication refused");
        let mut entry = audit::Entry::new("anonymous", "host.authenticate", "service")
            .with_request_id(&request_id)
            .with_outcome(audit::Outcome::Denied)
            .with_detail(refusal);
        entry.host = host_name;
        app.store
            .record(entry)
            .await
            .map_err(|e| ApiError::Internal(format!("recording a refusal: {e}")))?;
        Err(ApiError::Unauthenticated(refusal))
    }
}

/// The host's copies of deleted models, grouped by model. Copies belong to this enrollment:
/// a name enrolled again later holds none of the old machine's.
#[utoipa::path(
    get,
    path = "/v1/host/wipe",
    operation_id = "wipe_list",
    tag = "wipe",
    responses(
        (status = 200, description = "done", body = WipeList),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: HostCaller,
) -> Result<Json<WipeList>, ApiError> {
    let copies = app.store.deleted_copies(&caller.host.id).await?;
    let mut models: BTreeMap<String, (String, Vec<DeletedFile>)> = BTreeMap::new();
    for c in copies {
        models
            .entry(c.model_id)
            .or_insert_with(|| (c.model, Vec::new()))
            .1
            .push(DeletedFile {
                commit: c.commit,
                path: c.path,
                bytes: c.bytes,
            });
    }
    let entry = caller
        .entry("wipe.list", "service")
        .with_detail(format!("{} deleted models held", models.len()));
    app.store.record(entry).await?;
    let models = models
        .into_iter()
        .map(|(model_id, (model, files))| DeletedModel {
            model,
            model_id,
            files,
        })
        .collect();
    Ok(Json(WipeList {
        revoked: caller.host.revoked_at.is_some(),
        host: caller.host.name,
        models,
    }))
}

fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The places a confirmation covers, as its audit entry states them. Bounded: the host's word
/// goes into the log, so it may not grow it without limit.
fn searched_text(searched: &[String]) -> Result<String, ApiError> {
    const MAX_PLACES: usize = 64;
    const MAX_PLACE_LEN: usize = 4096;
    if searched.len() > MAX_PLACES || searched.iter().any(|p| p.len() > MAX_PLACE_LEN) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "a wipe confirmation names at most {MAX_PLACES} searched places of at most \
                 {MAX_PLACE_LEN} bytes each"
            ),
        ));
    }
    if searched.is_empty() {
        // An older client that did not say where it looked.
        return Ok("(not stated)".to_owned());
    }
    Ok(searched
        .iter()
        .map(|p| p.escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

/// Records the host's confirmation that it wiped its copies of a deleted model.
#[utoipa::path(
    post,
    path = "/v1/host/wipe",
    operation_id = "wipe_confirm",
    tag = "wipe",
    request_body = ConfirmWipe,
    responses(
        (status = 200, description = "done", body = WipeConfirmed),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn confirm(
    State(app): State<Arc<App>>,
    caller: HostCaller,
    body: Result<Json<ConfirmWipe>, JsonRejection>,
) -> Result<Json<WipeConfirmed>, ApiError> {
    let request = json_body(body)?;
    if !plausible_id(&request.model_id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidId,
            "invalid model id",
        ));
    }
    let model = app
        .store
        .model_by_id(&request.model_id)
        .await?
        .map(|m| format!("{}/{}", m.vendor, m.name))
        .unwrap_or_else(|| request.model_id.clone());
    let files = request.files;
    let searched = searched_text(&request.searched)?;
    let (_, outcome) = app
        .store
        .confirm_wipe(&caller.host.id, &request.model_id, files, |outcome| {
            let (late, repeated) = match outcome {
                Confirmed::Recorded { late } => (late, false),
                Confirmed::Repeated { late } => (late, true),
            };
            let mut detail = format!(
                "{files} local files removed by enrollment {}; searched {searched}",
                caller.host.id
            );
            if late {
                detail.push_str("; after the certificate was issued");
            }
            if repeated {
                detail.push_str("; repeated (the first confirmation stands)");
            }
            caller
                .entry("wipe.confirm", model.as_str())
                .with_detail(detail)
        })
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => ApiError::NotFound(format!(
                "a copy of deleted model {model} on host {}",
                caller.host.name
            )),
            other => other.into(),
        })?;
    let (late, repeated) = match outcome {
        Confirmed::Recorded { late } => (late, false),
        Confirmed::Repeated { late } => (late, true),
    };
    Ok(Json(WipeConfirmed {
        host: caller.host.name,
        model,
        files,
        late,
        repeated,
    }))
}
