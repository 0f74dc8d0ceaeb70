//! The state every handler and background job shares. Below the routes (`api`) and the
//! background layer, so their imports only run down.

use std::sync::Arc;

use blobstore::BlobStore;
use shred::KeyHierarchy;
use store::Store;

use crate::checkpointer::Checkpointer;
use crate::config::ServerConfig;
use crate::refusals::Refusals;
use crate::service_identity::HostCa;
use crate::witnesses::Witnesses;

/// Shared state of all handlers.
pub(crate) struct App {
    pub store: Store,
    pub blobs: BlobStore,
    pub keys: Arc<KeyHierarchy>,
    pub config: ServerConfig,
    pub policy: Arc<policy::PolicyEngine>,
    pub host_ca: HostCa,
    /// The deletion service: handlers wake it; the background layer runs it.
    pub deletion: Arc<deletion::Service>,
    /// Signs the audit log's checkpoints.
    pub checkpointer: Arc<Checkpointer>,
    /// The audit log's witnesses, and the client that submits checkpoints to them.
    pub witnesses: Arc<Witnesses>,
    /// The budget of upload part buffers (`limits.max_upload_buffer_bytes`), in KiB.
    pub upload_buffers: Arc<tokio::sync::Semaphore>,
    /// The budget of download read-ahead (`limits.max_download_buffer_bytes`), in KiB.
    pub download_buffers: Arc<tokio::sync::Semaphore>,
    /// Refused authentication of this instance, counted per source and minute.
    pub refusals: Refusals,
    /// Fetches this instance refused for a model's egress budget, counted per minute.
    pub budget_refusals: crate::budgets::BudgetRefusals,
    /// This process, as lease holders are named: random, new at every start.
    pub instance: String,
    /// `/readyz`'s last answer (`health`).
    pub readiness: crate::health::Readiness,
    /// One server per SQLite database: held until the process ends.
    pub(crate) _instance_lock: Option<std::fs::File>,
}
