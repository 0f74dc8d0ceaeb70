//! The epoch ledger: where the key hierarchy's shared state lives (which epochs exist, each
//! epoch key wrapped under its own root, and which epoch is current).
//!
//! The server keeps it in its database (`store` implements [`EpochLedger`]), so every
//! instance of a scaled-out service sees one hierarchy, and the database's transactions fence
//! it: a model key is committed only while the epoch it is wrapped under is still current, and
//! epoch changes made by a deletion runner that has lost its lease are refused ([`Fence`]).
//!
//! The ledger holds nothing secret: an epoch key is useless without its root, which lives only
//! in the root of trust (root key files or KMS), never in the database.

use async_trait::async_trait;

use crate::{KeyError, RootKind, RootRef};

/// Where an epoch is in its life. Only forward: `Creating -> Live -> Destroying -> Destroyed`
/// (or `Creating` discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochState {
    /// An epoch being made: its root may exist, its key is not committed. Never used.
    Creating,
    /// Committed: its key opens model keys.
    Live,
    /// Its root is being destroyed: no longer used by anyone.
    Destroying,
    /// Its root is destroyed and its wrapped key erased.
    Destroyed,
}

impl EpochState {
    pub fn as_str(self) -> &'static str {
        match self {
            EpochState::Creating => "creating",
            EpochState::Live => "live",
            EpochState::Destroying => "destroying",
            EpochState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<EpochState> {
        Some(match s {
            "creating" => EpochState::Creating,
            "live" => EpochState::Live,
            "destroying" => EpochState::Destroying,
            "destroyed" => EpochState::Destroyed,
            _ => return None,
        })
    }
}

/// One epoch as the ledger records it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub root_kind: RootKind,
    /// A random id of this creation attempt; a root key file is named after it, so a root made
    /// by an attempt that was abandoned can never be mistaken for another attempt's.
    pub attempt: String,
    /// The root's name once made: `root-N-ATTEMPT.key` (`root-N.key` before version 0.2), or
    /// a KMS key ARN.
    pub root: Option<RootRef>,
    /// The epoch key wrapped under the root; `None` until committed and after destruction.
    pub wrapped: Option<Vec<u8>>,
    pub state: EpochState,
}

/// Everything the ledger holds, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Changes whenever anything in the ledger changes.
    pub generation: u64,
    /// The epoch new model keys are wrapped under; 0 before the first epoch.
    pub current: u64,
    /// Every epoch, oldest first.
    pub records: Vec<EpochRecord>,
}

/// A lease's fencing token: work done under a database lease carries it, and the database
/// refuses the work's writes once the lease has been taken over (the token moved on). A
/// paused holder that wakes up after losing its lease can therefore change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name, such as `deletions`.
    pub lease: String,
    /// The token handed out when the lease was acquired; every acquisition increments it.
    pub token: i64,
}

/// The persistent, shared record of the key hierarchy. Every write takes an optional
/// [`Fence`]: with one, it commits only while that lease is still held at that token.
///
/// Contract (checked by the store's suite on SQLite and PostgreSQL):
/// - `begin_epoch` fails with [`KeyError::EpochTaken`] when the epoch has a record already;
/// - `commit_epoch` makes the epoch current only when the current epoch is `epoch - 1` (or
///   none, for epoch 1), in a transaction that excludes concurrent model-key commits;
/// - `begin_destroy` refuses the current epoch, and an epoch that still wraps a live model key;
/// - a write whose fence is stale fails with [`KeyError::Fenced`] and changes nothing;
/// - every successful write changes `generation`.
#[async_trait]
pub trait EpochLedger: Send + Sync {
    /// The generation alone: one cheap read, done before every use of the hierarchy.
    async fn generation(&self) -> Result<u64, KeyError>;
    async fn load(&self) -> Result<LedgerState, KeyError>;
    /// Records the intent to create `epoch` (state `Creating`).
    async fn begin_epoch(
        &self,
        epoch: u64,
        kind: RootKind,
        attempt: &str,
        fence: Option<&Fence>,
    ) -> Result<(), KeyError>;
    /// Records the root made for the attempt, before anything is wrapped under it.
    async fn record_root(
        &self,
        epoch: u64,
        attempt: &str,
        root: &RootRef,
        fence: Option<&Fence>,
    ) -> Result<(), KeyError>;
    /// Stores the wrapped epoch key and makes the epoch current: the commit point.
    async fn commit_epoch(
        &self,
        epoch: u64,
        attempt: &str,
        wrapped: &[u8],
        fence: Option<&Fence>,
    ) -> Result<(), KeyError>;
    /// Forgets an attempt that was never committed (its root already destroyed).
    async fn discard_epoch(
        &self,
        epoch: u64,
        attempt: &str,
        fence: Option<&Fence>,
    ) -> Result<(), KeyError>;
    /// `Live -> Destroying`: from now on no instance uses the epoch.
    async fn begin_destroy(&self, epoch: u64, fence: Option<&Fence>) -> Result<(), KeyError>;
    /// `Destroying -> Destroyed`: the root is gone; the wrapped key is erased.
    async fn finish_destroy(&self, epoch: u64, fence: Option<&Fence>) -> Result<(), KeyError>;
    /// Takes over the epochs of a key store directory of layout v2 (see [`crate::import`]), in
    /// one transaction, only into an empty ledger.
    async fn import(&self, records: &[EpochRecord], current: u64) -> Result<(), KeyError>;
}
