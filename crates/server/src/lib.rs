//! custody's HTTPS server.
//!
//! This is the only crate that knows HTTP. Handlers are thin: authenticate the bearer token,
//! ask the policy crate for a decision, call the store and the blob store, and turn the
//! result into JSON or a byte stream. Every error becomes a response in one place,
//! [`error::ApiError`], so a status code and its stable error code are decided once.
//!
//! Start-up ([`init`]) creates the embedded default on an empty data directory: a SQLite
//! database, a blob directory, a key store beside (never inside) the database, a self-signed
//! certificate and a one-time operator bootstrap token.
#![forbid(unsafe_code)]

mod api;
mod approvals;
pub mod auth;
mod certificate;
mod checkpointer;
pub mod config;
mod deletion;
mod error;
mod init;
mod sweep;
mod tls;

use std::sync::Arc;

use blobstore::BlobStore;
use shred::KeyHierarchy;
use store::Store;
use tokio::net::TcpListener;

pub use config::ServerConfig;

/// Shared state of all handlers.
pub(crate) struct App {
    pub store: Store,
    pub blobs: BlobStore,
    pub keys: KeyHierarchy,
    pub config: ServerConfig,
    pub policy: Arc<policy::PolicyEngine>,
    pub host_ca: init::HostCa,
    /// Wakes the deletion runner when a deletion is requested or approved.
    pub deletions: Arc<tokio::sync::Notify>,
    /// Signs the audit log's checkpoints.
    pub checkpointer: checkpointer::Checkpointer,
    /// Signs deletion certificates.
    pub service_key: certificate::ServiceKey,
}

/// What start-up reports to the operator, printed by the CLI. No `Debug`: it holds a token.
pub struct Started {
    pub listen: std::net::SocketAddr,
    pub cert_path: std::path::PathBuf,
    pub fingerprint: String,
    /// Shown once, on the first start of an empty installation.
    pub bootstrap_token: Option<String>,
}

/// Opens (or initialises) the installation, binds the listener and serves until SIGTERM or
/// SIGINT, then shuts down gracefully (`tls::serve`). `on_started` is called once the server
/// accepts connections.
pub async fn run(config: ServerConfig, on_started: impl FnOnce(&Started)) -> anyhow::Result<()> {
    let prepared = init::prepare(&config).await?;
    let listener = TcpListener::bind(config.listen).await?;
    let started = Started {
        listen: listener.local_addr()?,
        cert_path: prepared.cert_path.clone(),
        fingerprint: prepared.fingerprint.clone(),
        bootstrap_token: prepared.bootstrap_token,
    };
    let checkpointer = checkpointer::Checkpointer::new(
        prepared.log_key,
        &config.key_dir(),
        std::time::Duration::from_secs(config.checkpoint_interval_secs.max(1)),
    );
    let service_key = certificate::ServiceKey::open_or_create(&config.key_dir())?;
    let app = Arc::new(App {
        store: prepared.store,
        blobs: prepared.blobs,
        keys: prepared.keys,
        config,
        policy: prepared.policy,
        host_ca: prepared.host_ca,
        deletions: Arc::new(tokio::sync::Notify::new()),
        checkpointer,
        service_key,
    });
    tokio::spawn(sweep::run(app.clone()));
    tokio::spawn(checkpointer::run(app.clone()));
    // Resumes any deletion a crash interrupted, then carries out new ones.
    tokio::spawn(deletion::run(app.clone(), app.deletions.clone()));
    let router = api::router(app.clone());
    on_started(&started);
    let limits = app.config.limits.clone();
    tls::serve(
        listener,
        prepared.tls,
        router,
        &limits,
        tls::termination_signal(),
    )
    .await?;
    // Entries of requests whose clients went away may still be queued.
    app.store.flush_audit().await?;
    tracing::info!("stopped");
    Ok(())
}
