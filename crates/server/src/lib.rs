//! custody's HTTPS server.
//!
//! This is the only crate that knows HTTP. Handlers (`api`) are thin: authenticate the bearer
//! token, ask the policy crate for a decision, call the store and the blob store, and turn the
//! result into a `wire` body or a byte stream. Every error becomes a response in one place,
//! [`error::ApiError`], so a status code and its stable error code are decided once.
//!
//! Layers, imports running down only: `api` (routes) and `background` (supervised jobs under
//! database leases, among them the `deletion` crate's runner) over `state` (the shared `App`),
//! `auth`, `error` and the components (checkpointer, witnesses, keys, TLS).
//!
//! Start-up ([`init`]) creates the embedded default on an empty data directory: a SQLite
//! database, a blob directory, the root of trust beside (never inside) the data directory,
//! the service identity (a self-signed certificate, the host CA, the audit log and service
//! keys) and a one-time operator bootstrap token. Several instances share one PostgreSQL
//! database, one bucket, one root of trust and one identity (`custody init`); the database
//! pins the identity and fences the key hierarchy, and singleton background work runs under
//! database leases ([`background`]).
#![forbid(unsafe_code)]

mod api;
mod approvals;
#[cfg(feature = "bench")]
pub mod auth;
#[cfg(not(feature = "bench"))]
mod auth;
mod background;
mod budgets;
mod cert_reload;
mod checkpointer;
mod config;
mod error;
mod health;
mod init;
mod keys;
mod logging;
mod metrics;
mod notary;
pub mod openapi;
mod refusals;
mod service_identity;
mod service_key;
mod state;
mod suggest;
mod sweep;
mod tls;
mod webhooks;
pub mod witness;
mod witnesses;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::state::App;

pub use config::{LogFormat, ServerConfig};
pub use init::{Recovered, recover_operator};
pub use service_identity::{IdentityPaths, init_identity};

/// What start-up reports to the operator, printed by the CLI.
pub struct Started {
    pub listen: std::net::SocketAddr,
    /// Where `GET /metrics` is served (plain HTTP), unless metrics are off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub cert_path: std::path::PathBuf,
    pub fingerprint: String,
    /// On the first start of an empty installation: the file the operator bootstrap token was
    /// written to, and when it expires (Unix seconds). The token itself is never printed.
    pub bootstrap_token: Option<(std::path::PathBuf, i64)>,
    /// This instance's name in the database's leases.
    pub instance: String,
    /// Where the root of trust and the audit checkpoint copy are, and warnings.
    pub notices: Vec<String>,
}

/// Opens (or initialises) the installation, binds the listener and serves until SIGTERM or
/// SIGINT, then shuts down gracefully (`tls::serve`), or until a background job fails (an
/// error: the process should exit non-zero). `on_started` is called once the server accepts
/// connections.
pub async fn run(config: ServerConfig, on_started: impl FnOnce(&Started)) -> anyhow::Result<()> {
    let witnesses = witnesses::Witnesses::from_config(&config)?;
    // Ports first: a second server on a busy port must fail before it creates anything.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let metrics_listener = metrics::bind(&config.metrics).await?;
    if metrics_listener.is_some() {
        // Before start-up's own audit entries, so they are counted too.
        metrics::install()?;
    }
    let prepared = init::prepare(&config).await?;
    let instance = format!("{}-{}", std::process::id(), crypto::token::random_id()?);
    let mut notices = prepared.notices;
    notices.push(format!("instance {instance}"));
    let started = Started {
        listen: listener.local_addr()?,
        metrics_listen: metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        cert_path: prepared.cert_path.clone(),
        fingerprint: prepared.fingerprint.clone(),
        bootstrap_token: prepared.bootstrap_token,
        instance: instance.clone(),
        notices,
    };
    for notice in &started.notices {
        tracing::info!("{notice}");
    }
    let refusals = refusals::Refusals::new(
        config.limits.refusals_per_minute_per_source,
        config.limits.refusal_sources_per_minute,
    );
    let kib_budget = |bytes: u64| {
        Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(bytes / 1024)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ))
    };
    let upload_buffers = kib_budget(config.limits.max_upload_buffer_bytes);
    let download_buffers = kib_budget(config.limits.max_download_buffer_bytes);
    let keys = Arc::new(prepared.keys);
    let checkpointer = Arc::new(prepared.checkpointer);
    let witnesses = Arc::new(witnesses);
    let notary = notary::AuditNotary {
        store: prepared.store.clone(),
        checkpointer: checkpointer.clone(),
        witnesses: witnesses.clone(),
    };
    let deletion = Arc::new(deletion::Service::new(
        prepared.store.clone(),
        keys.clone(),
        prepared.blobs.clone(),
        prepared.placement,
        config
            .hostnames
            .first()
            .cloned()
            .unwrap_or_else(|| "custody".into()),
        prepared.service_key.key,
        Arc::new(notary),
    ));
    let app = Arc::new(App {
        store: prepared.store,
        blobs: prepared.blobs,
        keys,
        config,
        policy: prepared.policy,
        host_ca: prepared.host_ca,
        deletion,
        checkpointer,
        witnesses,
        refusals,
        budget_refusals: Default::default(),
        upload_buffers,
        download_buffers,
        instance,
        readiness: health::Readiness::default(),
        _instance_lock: prepared.instance_lock,
    });
    let background = background::start(app.clone());
    let router = api::router(app.clone());
    let (metrics_stop, metrics_stopping) = tokio::sync::watch::channel(false);
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let mut stopping = metrics_stopping;
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            Some(tokio::spawn(metrics::serve(listener, app.clone(), stopped)))
        }
        None => None,
    };
    let reload = match prepared.reloadable_cert {
        Some(cert) => tokio::spawn(cert.watch(app.config.tls_reload_check_secs)),
        None => tokio::spawn(cert_reload::ignore_hangups()),
    };
    on_started(&started);
    let limits = app.config.limits.clone();
    tokio::select! {
        served = tls::serve(
            listener,
            prepared.tls,
            router,
            &limits,
            tls::termination_signal(),
        ) => served?,
        failure = background.failure() => return Err(failure),
    }
    reload.abort();
    let _ = metrics_stop.send(true);
    if let Some(server) = metrics_server {
        // A scrape in progress may finish; a stuck one does not hold the stop.
        match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the metrics listener failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => tracing::warn!("the metrics listener did not close in 5 s; leaving it"),
        }
    }
    // Refusals counted but not yet written, then entries of requests whose clients went
    // away, may still be waiting.
    refusals::flush(&app).await?;
    app.budget_refusals.flush(&app.store).await?;
    app.store.flush_audit().await?;
    tracing::info!("stopped");
    Ok(())
}
