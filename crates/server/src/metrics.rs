//! Prometheus metrics, on a listener of their own (`[metrics]`, default 127.0.0.1:9464).
//!
//! Counters and histograms are recorded where things happen, through the `metrics` facade
//! (requests and bodies in [`crate::logging`], authorization in `auth`, audit appends in the
//! store, storage errors in `error`); figures that live in the database (log size, checkpoint
//! age, deletions by state, open upload sessions) are read at each scrape. Labels are bounded
//! sets: route templates, methods, statuses, policy ids, deletion states. Never a name, a
//! path or a token.
//!
//! The listener is plain HTTP and answers `GET /metrics` only. It is not authenticated: keep it
//! on loopback or a monitoring network (the default is loopback).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::App;
use crate::config::MetricsConfig;

/// Latency buckets (seconds): from a cached authorization to a slow database commit.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Binds the metrics listener (before any state is created, like the main one), or `None`
/// when metrics are off.
pub(crate) async fn bind(config: &MetricsConfig) -> anyhow::Result<Option<TcpListener>> {
    if !config.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening for metrics on {}", config.listen))?;
    Ok(Some(listener))
}

/// The process's recorder: installed by the first server started in the process; later ones
/// (tests) share it.
fn handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// HELP lines: what each metric counts.
fn describe() {
    describe_counter!(
        "custody_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "custody_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's head to its response's head, by method and route template"
    );
    describe_counter!(
        "custody_uploaded_bytes_total",
        Unit::Bytes,
        "File bytes received by uploads (request bodies of the upload file route)"
    );
    describe_counter!(
        "custody_served_bytes_total",
        Unit::Bytes,
        "File bytes sent by downloads, by API (native or hub)"
    );
    describe_gauge!(
        "custody_transfers_in_flight",
        "File transfers whose body is being received or sent, by direction"
    );
    describe_counter!(
        "custody_authorization_decisions_total",
        "Authorization decisions, by outcome (allowed, denied) and deciding policy id"
    );
    describe_counter!(
        "custody_audit_entries_appended_total",
        "Entries appended to the audit log by this instance"
    );
    describe_histogram!(
        "custody_audit_append_duration_seconds",
        Unit::Seconds,
        "Time to append and commit one audit transaction (one entry, or a group commit)"
    );
    describe_gauge!(
        "custody_audit_log_entries",
        "Entries in the audit log (its tree size), read at scrape"
    );
    describe_gauge!(
        "custody_audit_checkpoint_age_seconds",
        Unit::Seconds,
        "Seconds since the latest signed audit checkpoint was stored (absent before the first)"
    );
    describe_gauge!(
        "custody_deletions",
        "Deletions by state (certified is the final state), read at scrape"
    );
    describe_gauge!(
        "custody_deletion_oldest_unfinished_age_seconds",
        Unit::Seconds,
        "Seconds since the oldest deletion that is not certified yet was requested (0: none)"
    );
    describe_gauge!(
        "custody_upload_sessions_open",
        "Upload sessions begun and neither committed nor expired, read at scrape"
    );
    describe_counter!(
        "custody_storage_errors_total",
        "Blob storage failures met by requests, by kind (integrity, backend)"
    );
    describe_counter!(
        "custody_tls_certificate_reloads_total",
        "TLS certificate reloads, by result (loaded, refused)"
    );
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = Router::new().route("/metrics", get(scrape)).with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving metrics")
}

/// Makes sure the recorder is installed before any request is counted.
pub(crate) fn install() -> anyhow::Result<()> {
    handle().map(|_| ())
}

async fn scrape(State(app): State<Arc<App>>) -> axum::response::Response {
    let handle = match handle() {
        Ok(handle) => handle,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // A database that does not answer in time leaves the last figures in place; the request
    // counters still tell.
    match tokio::time::timeout(Duration::from_secs(5), app.store.ops_snapshot()).await {
        Ok(Ok(snapshot)) => record_snapshot(&snapshot, app.store.clock().now()),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: reading the database's figures failed"),
        Err(_) => tracing::warn!("metrics: reading the database's figures timed out"),
    }
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

fn record_snapshot(snapshot: &store::OpsSnapshot, now: i64) {
    metrics::gauge!("custody_audit_log_entries").set(snapshot.audit_entries as f64);
    if let Some(at) = snapshot.latest_checkpoint_at {
        metrics::gauge!("custody_audit_checkpoint_age_seconds")
            .set(now.saturating_sub(at).max(0) as f64);
    }
    // Every known state is set, so a state that emptied reads 0 instead of its last count.
    for state in DELETION_STATES {
        let count = snapshot
            .deletions_by_state
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("custody_deletions", "state" => *state).set(count as f64);
    }
    for (state, count) in &snapshot.deletions_by_state {
        if !DELETION_STATES.contains(&state.as_str()) {
            metrics::gauge!("custody_deletions", "state" => state.clone()).set(*count as f64);
        }
    }
    let oldest = snapshot
        .oldest_unfinished_deletion_at
        .map_or(0, |at| now.saturating_sub(at).max(0));
    metrics::gauge!("custody_deletion_oldest_unfinished_age_seconds").set(oldest as f64);
    metrics::gauge!("custody_upload_sessions_open").set(snapshot.open_upload_sessions as f64);
}

/// The deletion states the database allows (migration 0011); a state added later is exported as it is read: labels of `custody_deletions`.
const DELETION_STATES: &[&str] = &[
    "access_revoked",
    "keys_destroyed",
    "epoch_destroyed",
    "objects_deleted",
    "checked",
    "certified",
];

/// Counts an authorization decision.
pub(crate) fn authorization(allowed: bool, policy: &'static str) {
    let outcome = if allowed { "allowed" } else { "denied" };
    metrics::counter!("custody_authorization_decisions_total", "outcome" => outcome, "policy" => policy)
        .increment(1);
}

/// Counts a storage failure met by a request.
pub(crate) fn storage_error(kind: &'static str) {
    metrics::counter!("custody_storage_errors_total", "kind" => kind).increment(1);
}

/// Counts a TLS certificate reload.
pub(crate) fn tls_reload(loaded: bool) {
    let result = if loaded { "loaded" } else { "refused" };
    metrics::counter!("custody_tls_certificate_reloads_total", "result" => result).increment(1);
}
