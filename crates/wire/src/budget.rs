//! Egress budgets: `PUT /v1/models/{vendor}/{model}/budget` sets a model's budget (200 with
//! [`BudgetView`] when it applies at once, 202 with a filed request when it lets more leave
//! and waits for approval), `GET` shows it with its current use.

use serde::{Deserialize, Serialize};

/// A byte limit: absolute, or a multiple of the model's size in thousandths (2000 = twice
/// the size of the newest revision). JSON: `{"bytes": N}` or `{"model_size_milli": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ByteLimit {
    Bytes(u64),
    ModelSizeMilli(u64),
}

/// A model's budget; each limit `null` for none. The whole budget is replaced by a `PUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The rolling window of both byte limits, in seconds.
    pub window_secs: u64,
    /// Bytes one host may receive per window.
    pub per_host: Option<ByteLimit>,
    /// Bytes one person may receive per window, over all hosts.
    pub per_user: Option<ByteLimit>,
    /// Distinct hosts that may hold the model.
    pub max_hosts: Option<u64>,
    /// Fetches of the model one host may run at once.
    pub per_host_concurrency: Option<u64>,
}

/// `PUT /v1/models/{vendor}/{model}/budget`. `budget: null` removes the budget (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    pub budget: Option<Budget>,
}

/// Bytes one host or person received in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Use {
    /// A host's or a person's name.
    pub name: String,
    pub bytes: u64,
    /// The limit that applies to them, in bytes (`null`: none).
    pub limit: Option<u64>,
}

/// A host's fetches of the model running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InFlight {
    pub host: String,
    pub fetches: u64,
}

/// A model's budget and its current use: `GET /v1/models/{vendor}/{model}/budget`, and the
/// answer of a `PUT` that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// `vendor/model`.
    pub model: String,
    /// `null`: no budget, nothing is limited.
    pub budget: Option<Budget>,
    /// `role:name` of whoever set it, and when (Unix seconds).
    pub set_by: Option<String>,
    pub set_at: Option<i64>,
    /// The size of the newest revision, which multiples are taken of.
    pub model_size: u64,
    /// Bytes per host and per person in the current window (only those with any).
    pub hosts: Vec<Use>,
    pub users: Vec<Use>,
    /// Hosts that count against `max_hosts`: they hold the model and may still fetch it.
    pub holding_hosts: Vec<String>,
    pub in_flight: Vec<InFlight>,
}
