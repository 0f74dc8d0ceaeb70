//! `/healthz` and `/readyz`, for load balancers, Kubernetes probes and the systemd unit.
//!
//! Unauthenticated, so they say nothing but yes or no: `/healthz` answers 200 while the
//! process serves; `/readyz` answers 200 only when the database answers, the key hierarchy is
//! open (the ledger reads and the current epoch's root is there), and the blob storage
//! answers, else 503. Policies are loaded before the server accepts a connection (an invalid
//! set stops the start), so a serving process has them. Which check failed goes to the log,
//! never into the answer. The result is kept for a second, so probes cannot make the server
//! hammer its database or KMS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;

use crate::App;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The process serves (the native API's own name for `/healthz`).
#[utoipa::path(
    get,
    path = "/v1/health",
    operation_id = "health_v1_health",
    tag = "health",
    responses(
        (status = 200, description = "yes", body = String, content_type = "text/plain"),
    ),
)]
pub(crate) async fn v1_health() -> &'static str {
    "ok"
}

/// The process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health_healthz",
    tag = "health",
    responses(
        (status = 200, description = "yes", body = String, content_type = "text/plain"),
    ),
)]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// The database, the key hierarchy and the blob storage answer.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "health_readyz",
    tag = "health",
    responses(
        (status = 200, description = "yes", body = String, content_type = "text/plain"),
        (status = 503, description = "no", body = String, content_type = "text/plain"),
    ),
)]
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if ready(&app).await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The last answer and when it was made.
#[derive(Default)]
pub(crate) struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

async fn ready(app: &App) -> bool {
    // One check at a time; the others wait and share its answer.
    let mut last = app.readiness.last.lock().await;
    if let Some((at, ready)) = *last
        && at.elapsed() < CACHE_FOR
    {
        return ready;
    }
    let failed = first_failure(app).await;
    if let Some(what) = &failed {
        tracing::warn!(check = %what, "not ready");
    }
    *last = Some((Instant::now(), failed.is_none()));
    failed.is_none()
}

/// The first check that fails, described for the log.
async fn first_failure(app: &App) -> Option<String> {
    async fn timed<T, E: std::fmt::Display>(
        what: &str,
        check: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no answer within {CHECK_TIMEOUT:?}")),
        }
    }
    if let Err(e) = timed("database", app.store.ping()).await {
        return Some(e);
    }
    if let Err(e) = timed("key hierarchy", app.keys.refresh()).await {
        return Some(e);
    }
    let epoch = app.keys.current_epoch();
    let Some(info) = app.keys.epoch_info(epoch).filter(|i| i.usable) else {
        return Some(format!(
            "key hierarchy: the current epoch {epoch} is not usable"
        ));
    };
    match timed("root of trust", app.keys.root_status(&info.root, epoch)).await {
        Ok(shred::RootStatus::Present(_)) => {}
        Ok(shred::RootStatus::Gone { .. }) => {
            return Some(format!("root of trust: epoch {epoch}'s root is gone"));
        }
        Err(e) => return Some(e),
    }
    if let Err(e) = timed("blob storage", app.blobs.backend().probe()).await {
        return Some(e);
    }
    None
}
